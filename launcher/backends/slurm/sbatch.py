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
- gives each agent a fresh work dir (``mktemp``: a re-created cluster reuses job ids);
- waits for the agent through signals (the shell must outlive it: Slurm kills the job's
  processes once the batch shell exits).

A task of a ``--nodes N`` run is an N-node allocation (``--nodes=N --ntasks-per-node=1``) whose
batch shell runs one agent per node through ``srun --kill-on-bad-exit=1`` (one agent dying
ends the others, so the task ends as one unit). Slurm's warning is passed on with ``scancel
--signal=TERM`` of the job's steps, not to srun, which takes a SIGTERM as "kill the tasks now". Each
agent is ``jJOB-TASK-rRESTART-nNODEID``, in the group ``JOB_TASK_RRESTART`` (it forms gangs only
with the agents of its own allocation), and its ``--addr`` is its node's NodeAddr (what
``scontrol show node`` says; ``LAUNCH_NODE_ADDR`` overrides it). The SLURM_* variables srun
needs stay in the batch shell: each node's command reads what it uses, then scrubs them before
it starts the agent.
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
    nodes: int = 1
    gpus: int = 0  # per node


BATCH_SCRIPT = """\
#!/bin/bash
# launch run {run}: each array task is {what} (launcher/backends/slurm)
#SBATCH --requeue
#SBATCH --signal=B:USR1@{lead}
task="${{SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}}_${{SLURM_ARRAY_TASK_ID:-0}}"
node="j${{SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}}-${{SLURM_ARRAY_TASK_ID:-0}}-r${{SLURM_RESTART_COUNT:-0}}"
handed_back=0
{start}
agent=$!
trap 'handed_back=1; {stop}' USR1
trap '{on_term}' TERM
rc=0
while kill -0 $agent 2>/dev/null; do wait $agent; rc=$?; done
{cleanup}
if [ $handed_back = 1 ]; then
    echo "[launch] time limit near: the experiment was handed back; requeueing $task"
    scontrol requeue "$task"
fi
exit $rc
"""

# One agent on the batch node, in a subshell without SLURM_* (scontrol requeue needs them here).
ONE_NODE = """\
work=$(mktemp -d "${{TMPDIR:-/tmp}}/launch-{run}-$node.XXXXXX")
(
    for v in ${{!SLURM_@}}; do unset "$v"; done
    exec {agent} --node "$node" --work-dir "$work"
) &"""

# One agent per node of the allocation: srun runs RANK_COMMAND on each (it reads its node's id,
# name and address while SLURM_* is set, then drops them and waits for its agent, as above).
GANG = """\
export LAUNCH_SLURM_NODE_BASE="$node"
read -r -d '' rank_command <<'RANK'
node="$LAUNCH_SLURM_NODE_BASE-n$SLURM_NODEID"
group="${{LAUNCH_SLURM_NODE_BASE#j}}"; group="${{group//-/_}}"
where="$SLURMD_NODENAME"
addr="${{LAUNCH_NODE_ADDR:-$(scontrol show node "$where" 2>/dev/null \\
    | sed -n 's/.*NodeAddr=\\([^ ]*\\).*/\\1/p' | head -n 1)}}"
addr="${{addr:-$(hostname -I 2>/dev/null | cut -d' ' -f1)}}"
echo "[launch] agent $node on Slurm node $where (addr $addr) of $SLURM_JOB_NODELIST"
work=$(mktemp -d "${{TMPDIR:-/tmp}}/launch-{run}-$node.XXXXXX")
for v in ${{!SLURM_@}} ${{!SLURMD_@}} ${{!SRUN_@}} LAUNCH_SLURM_NODE_BASE; do unset "$v"; done
{agent} --node "$node" --work-dir "$work" --group "$group" --addr "$addr" &
a=$!
trap 'kill -TERM $a 2>/dev/null' TERM
rc=0
while kill -0 $a 2>/dev/null; do wait $a; rc=$?; done
rm -rf "$work"
exit $rc
RANK
srun --nodes={nodes} --ntasks={nodes} --ntasks-per-node=1 --kill-on-bad-exit=1{gres} \\
    bash -c "$rank_command" &"""


def batch_script(v: BatchValues) -> str:
    agent = [v.python, "-m", "launcher.node.agent", "--root", v.root_url, "--run", v.run]
    if v.max_runtime:
        agent += ["--max-runtime", str(int(v.max_runtime))]
    agent_cmd = shlex.join(agent)
    if v.nodes > 1:
        # each node's agent sees its node's GPUs (CUDA_VISIBLE_DEVICES, set by Slurm per node)
        gres = f" --gres=gpu:{int(v.gpus)}" if v.gpus else ""
        start = GANG.format(run=v.run, agent=agent_cmd, nodes=int(v.nodes), gres=gres)
        what = f"an allocation of {v.nodes} nodes, an agent on each (one gang)"
        cleanup = ""
        # SIGTERM to srun would make it kill its tasks at once ("forcing job termination"):
        # scancel signals the job's steps instead (every process of them, not this shell);
        # a job-wide SIGTERM (requeue, preemption) reaches the steps from Slurm itself
        stop, on_term = 'scancel --signal=TERM "$SLURM_JOB_ID"', ":"
    else:
        start = ONE_NODE.format(run=v.run, agent=agent_cmd)
        what = "one of the run's agents"
        cleanup = 'rm -rf "$work"'
        stop = on_term = "kill -TERM $agent 2>/dev/null"
    return BATCH_SCRIPT.format(run=v.run, lead=SIGNAL_LEAD_S, what=what, start=start,
                               cleanup=cleanup, stop=stop, on_term=on_term)  # fmt: skip


def time_limit(max_runtime: int | None) -> str | None:
    """sbatch --time (minutes) for an experiment's max_runtime plus setup and the last ship."""
    if not max_runtime:
        return None
    return str(math.ceil((int(max_runtime) + TIME_MARGIN_S) / 60))


def sbatch_argv(
    run: str, spec: dict, tasks: int, settings, output: str, *, throttle: int | None = None
) -> list[str]:
    """sbatch's arguments (the script comes on stdin): an array of ``tasks`` tasks (each one
    agent, or ``nodes`` of them for a multi-node run), at most ``throttle`` (default: all of
    them) at once."""
    argv = ["sbatch", "--parsable", f"--job-name={run}", f"--output={output}", "--open-mode=append",
            f"--array=0-{tasks - 1}%{throttle or tasks}"]  # fmt: skip
    nodes = int(spec.get("nodes") or 1)  # one agent per node; --gres, --cpus, --mem are per node
    argv += (
        [f"--nodes={nodes}", "--ntasks-per-node=1"] if nodes > 1 else ["--nodes=1", "--ntasks=1"]
    )
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
