"""The batch script and the sbatch command of a run: pure functions, no Slurm needed.

One ``sbatch`` per submission: a job array named after the run, each task one of the run's
agents (``python -m launcher.node.agent``), the same agent every backend runs, so claims keep
exactly-once and recovery. The script:

- names the agent ``jJOB-TASK-rRESTART`` (a requeued task is a new node: the attempt its previous
  life held is judged by its own heartbeat, never by the new agent's);
- runs the agent without any ``SLURM_*`` variable, so neither it nor the script (Lightning's
  SLURMEnvironment, its auto-requeue on USR1) takes the experiment for a Slurm-managed training;
- turns Slurm's warning (``--signal=B:USR1@90``: the batch shell alone gets it, 90 s before the
  time limit) into SIGTERM for the agent, which stops the script (the trainer saves last.ckpt),
  ships, and hands the experiment back without spending a retry; then the task requeues itself
  (``scontrol requeue``) and its next life resumes. A preemption or ``scontrol requeue`` reaches
  every process of the job as SIGTERM, with the same hand-back, and Slurm requeues it
  (``--requeue``);
- waits for the agent through signals (the shell must outlive it: Slurm kills the job's
  processes once the batch shell exits).
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass

#: Seconds before the time limit at which Slurm warns the batch shell.
SIGNAL_LEAD_S = 90
#: Added to max_runtime for --time: setup before the script, the last ship after it.
TIME_MARGIN_S = 300


@dataclass(frozen=True)
class BatchValues:
    run: str
    root_url: str
    python: str
    max_runtime: int | None = None


BATCH_SCRIPT = """\
#!/bin/bash
# launch run {run}: each array task is one of the run's agents (launcher/backends/slurm)
#SBATCH --requeue
#SBATCH --signal=B:USR1@{lead}
task="${{SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}}_${{SLURM_ARRAY_TASK_ID:-0}}"
node="j${{SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}}-${{SLURM_ARRAY_TASK_ID:-0}}-r${{SLURM_RESTART_COUNT:-0}}"
work="${{TMPDIR:-/tmp}}/launch-{run}-$node"
handed_back=0
(
    for v in ${{!SLURM_@}}; do unset "$v"; done
    exec {agent} --node "$node" --work-dir "$work"
) &
agent=$!
trap 'handed_back=1; kill -TERM $agent 2>/dev/null' USR1
trap 'kill -TERM $agent 2>/dev/null' TERM
rc=0
while kill -0 $agent 2>/dev/null; do wait $agent; rc=$?; done
rm -rf "$work"
if [ $handed_back = 1 ]; then
    echo "[launch] time limit near: the experiment was handed back; requeueing $task"
    scontrol requeue "$task"
fi
exit $rc
"""


def batch_script(v: BatchValues) -> str:
    agent = [v.python, "-m", "launcher.node.agent", "--root", v.root_url, "--run", v.run]
    if v.max_runtime:
        agent += ["--max-runtime", str(int(v.max_runtime))]
    return BATCH_SCRIPT.format(run=v.run, lead=SIGNAL_LEAD_S, agent=shlex.join(agent))


def time_limit(max_runtime: int | None) -> str | None:
    """sbatch --time (minutes) for an experiment's max_runtime plus setup and the last ship."""
    if not max_runtime:
        return None
    return str(math.ceil((int(max_runtime) + TIME_MARGIN_S) / 60))


def sbatch_argv(
    run: str, spec: dict, tasks: int, settings, output: str, *, throttle: int | None = None
) -> list[str]:
    """sbatch's arguments (the script comes on stdin): an array of ``tasks`` agents, at most
    ``throttle`` (default: all of them) at once."""
    argv = ["sbatch", "--parsable", f"--job-name={run}", f"--output={output}", "--open-mode=append",
            f"--array=0-{tasks - 1}%{throttle or tasks}", "--nodes=1", "--ntasks=1"]  # fmt: skip
    gpus = int(spec.get("gpus") or 0)
    if gpus:
        argv.append(f"--gres=gpu:{gpus}")
    if spec.get("cpus"):
        argv.append(f"--cpus-per-task={int(spec['cpus'])}")
    if spec.get("memory"):
        argv.append(f"--mem={math.ceil(float(spec['memory']) * 1024)}M")
    limit = time_limit(spec.get("max_runtime"))
    if limit:
        argv.append(f"--time={limit}")
    for flag, value in (("partition", settings.partition), ("account", settings.account),
                        ("qos", settings.qos)):  # fmt: skip
        if value:
            argv.append(f"--{flag}={value}")
    return argv + list(settings.sbatch_args)


def parse_job_id(stdout: str) -> str:
    """``sbatch --parsable`` prints ``JOBID`` or ``JOBID;CLUSTER``."""
    line = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    job = line.split(";")[0].strip()
    if not job.isdigit():
        raise ValueError(f"sbatch printed no job id: {stdout.strip()[:200]!r}")
    return job
