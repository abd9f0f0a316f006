"""What Slurm says of a run's jobs: one ``squeue`` call per look (and one ``sacct`` for jobs
squeue has already forgotten), parsed into :class:`Task` records.

A task's node name is the one its agent reports (``jJOB-TASK-rRESTART``, see sbatch.py; with
``-nNODEID`` per node of a multi-node task), so an experiment's status (``node``) is matched to
the task life that ran it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from launcher.errors import BackendError

#: squeue/sacct states that still hold (or will hold) an agent.
LIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_FED",
        "REQUEUE_HOLD", "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "STOPPED",
        "RESV_DEL_HOLD"}  # fmt: skip
PENDING = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD"}

SQUEUE_FIELDS = ["ArrayJobID", "ArrayTaskID", "State", "RestartCnt", "StartTime", "EndTime",
                 "NodeList", "Reason"]  # fmt: skip


@dataclass
class Task:
    job: str  # the array's job id
    task: int
    state: str  # Slurm's long state name: PENDING, RUNNING, CANCELLED, TIMEOUT...
    restarts: int = 0
    nodelist: str = ""
    reason: str = ""
    started: str = ""
    ended: str = ""

    @property
    def node(self) -> str:
        return f"j{self.job}-{self.task}-r{self.restarts}"

    @property
    def live(self) -> bool:
        return self.state in LIVE


def node_names(task_node: str, size: int) -> list[str]:
    """The agents' names of a task life ``jJOB-TASK-rRESTART``: itself, or one per node of a
    multi-node allocation, ``...-nNODEID`` (Slurm's SLURM_NODEID, 0 to size - 1)."""
    return [task_node] if size <= 1 else [f"{task_node}-n{k}" for k in range(size)]


def slurm_command(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackendError(
            f"{name} not found on PATH: run launch on the cluster's login node, where Slurm's "
            "commands (sbatch, squeue, scancel) are installed"
        )
    return path


def run_slurm(argv: list[str], *, input: str | None = None, timeout: float = 60) -> str:
    """Run a Slurm command; its stdout, or BackendError quoting what Slurm said."""
    argv = [slurm_command(argv[0]), *argv[1:]]
    try:
        done = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BackendError(f"{argv[0]} did not answer in {timeout:g}s") from None
    if done.returncode:
        said = (done.stderr or done.stdout).strip().replace("\n", " / ")
        raise BackendError(f"{argv[0].rsplit('/', 1)[-1]} refused: {said}")
    return done.stdout


def _tasks_of(field: str) -> list[int]:
    """``3``, ``[0-4%2]``, ``0-4%2``, ``1,3-5`` -> the task ids (squeue folds pending ones)."""
    field = field.strip().strip("[]").split("%")[0]
    out: list[int] = []
    for part in filter(None, field.split(",")):
        a, _, b = part.partition("-")
        if a.isdigit() and (not b or b.isdigit()):
            out.extend(range(int(a), int(b or a) + 1))
    return out


def parse_squeue(text: str, jobs: set[str]) -> list[Task]:
    """``squeue -h -r -t all -O Field:|,...`` output -> tasks of ``jobs`` (array job ids)."""
    out = []
    for line in text.splitlines():
        cols = [c.strip() for c in line.split("|")]
        if len(cols) < len(SQUEUE_FIELDS) or cols[0] not in jobs:
            continue
        job, tasks, state, restarts, start, end, nodelist, reason = cols[: len(SQUEUE_FIELDS)]
        for t in _tasks_of(tasks if tasks not in ("", "N/A") else "0"):
            out.append(Task(job, t, state.upper(), int(restarts) if restarts.isdigit() else 0,
                            nodelist, reason, start, end))  # fmt: skip
    return out


_SACCT_ID = re.compile(r"(\d+)_(\[?[\d,%-]+\]?)$|(\d+)$")


def parse_sacct(text: str, jobs: set[str]) -> list[Task]:
    """``sacct -X -n -P -o JobID,State,Restarts... `` output -> tasks of ``jobs``."""
    out = []
    for line in text.splitlines():
        cols = line.split("|")
        if len(cols) < 2:
            continue
        m = _SACCT_ID.match(cols[0].strip())
        if not m:
            continue
        job, tasks = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), "0")
        if job not in jobs:
            continue
        state = cols[1].split()[0].upper() if cols[1].strip() else "UNKNOWN"  # "CANCELLED by 0"
        for t in _tasks_of(tasks):
            out.append(Task(job, t, state))
    return out


def query(jobs: set[str], name: str) -> list[Task]:
    """The tasks of ``jobs`` (all named ``name``): one squeue call; one sacct call for jobs
    squeue no longer lists (where accounting is off, those are simply absent)."""
    if not jobs:
        return []
    fields = ",".join(f"{f}:|" for f in SQUEUE_FIELDS[:-1]) + f",{SQUEUE_FIELDS[-1]}:200|"
    text = run_slurm(["squeue", "-h", "-r", "-t", "all", f"--name={name}", "-O", fields])
    tasks = parse_squeue(text, jobs)
    forgotten = jobs - {t.job for t in tasks}
    if forgotten:
        try:
            text = run_slurm(["sacct", "-X", "-n", "-P", "-j", ",".join(sorted(forgotten)),
                              "-o", "JobID,State"])  # fmt: skip
        except BackendError:  # accounting disabled: nothing more to learn
            text = ""
        tasks += parse_sacct(text, forgotten)
    return tasks
