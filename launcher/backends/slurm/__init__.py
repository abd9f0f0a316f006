"""The slurm backend: a run is a Slurm job array, each task one of the run's agents.

Run it on a cluster's login node (``sbatch``, ``squeue``, ``scancel`` on PATH; ``SLURM_CONF``
and the rest of Slurm's environment are honoured by those commands). The storage root
(``slurm.root``, default ``$LAUNCH_HOME/slurm``) must be shared with the compute nodes.

- ``submit``: one ``sbatch`` per run, ``--array=0-(K-1)%K`` with K = the nodes the run wants
  (:func:`wanted_nodes`: ``max_nodes``, or fewer when there are fewer experiments). Each task is a
  pool agent that claims experiments until none is left, exactly as on every backend, so
  ``--max-nodes`` is the array's size and throttle, retries and recovery are the common code, and
  a 100,000-experiment sweep is still one small array. Slurm queues the tasks until it has room.
  With ``--nodes N`` a task is an N-node allocation running one agent per node through ``srun``
  (they form the experiment's gang among themselves), K counts tasks (``max_nodes // N``
  experiments at once) and the node names are ``jJOB-TASK-rRESTART-nNODEID``. Resources, per
  node: ``--gres=gpu:N``, ``--cpus-per-task``, ``--mem``, ``--time`` = max_runtime plus a
  margin (a task that reaches it hands its experiment back and requeues, see sbatch.py).
- ``nodes``: one ``squeue`` (plus one ``sacct`` for jobs squeue has forgotten); read-only.
- ``reconcile``: Slurm requeues what it preempts or requeues itself, so this only handles what
  Slurm will not: an experiment left ``running`` by a task that ended (killed, failed, node
  failure, time-out) is re-queued, and missing agents (fewer live tasks than wanted) come back as
  one new small array, within the run's budget of ``max_nodes + experiments x (retries + 1) x
  nodes`` nodes. A batch is submitted only by whoever creates its record
  ``runs/RUN/slurm/batch-N.json`` exclusively, so concurrent ``launch status`` submit it once.
  A task cancelled from outside (``scancel``) cancels the run: its unfinished experiments are
  stopped, saying so, and nothing is resubmitted.
- ``stop``: ``scancel`` of the run's jobs (the agents stop their scripts and ship first);
  ``delete`` also removes the task logs.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from launcher.backends.base import (
    Backend,
    Capabilities,
    NodeInfo,
    Reconciled,
    missing_nodes,
    requeue_orphans,
    wanted_nodes,
)
from launcher.backends.slurm import queue
from launcher.backends.slurm.config import SlurmSettings, resolve_settings
from launcher.backends.slurm.sbatch import BatchValues, batch_script, parse_job_id, sbatch_argv
from launcher.errors import BackendError, SpecError

if TYPE_CHECKING:
    from launcher.spec.jobspec import JobSpec
    from launcher.storage.root import Storage

log = logging.getLogger("launcher")

#: A batch record reserved but without a job id yet counts as live this long (its sbatch runs).
RESERVE_GRACE_S = 120.0


class SlurmBackend(Backend):
    """A job array per run on the Slurm cluster this machine submits to."""

    name = "slurm"
    capabilities = Capabilities(spot=False, multi_node=True, stop=True, gpus=True, cost=False,
                                graceful_stop=True, instances=False, gangs=True)  # fmt: skip

    def __init__(self, settings: SlurmSettings | None = None):
        self.settings = settings or resolve_settings()
        self._storage: Storage | None = None
        # what the last reconcile saw, handed once to the nodes() call of the same refresh (a
        # `launch status` is one squeue), when that reconcile changed nothing
        self._seen: dict[str, tuple[float, list[queue.Task]]] = {}
        self._sizes: dict[str, int] = {}  # run -> nodes per task (its spec's nodes)

    @classmethod
    def configured(cls) -> bool:
        """Listed by ``launch status`` once it has a root: slurm.root set, or the default one
        made by a first run."""
        try:
            url = resolve_settings().root_url
        except SpecError:
            return False
        return not url.startswith("file://") or Path(url[7:]).is_dir()

    def storage(self) -> Storage:
        if self._storage is None:
            from launcher.storage.root import Storage

            url = self.settings.root_url
            if url.startswith("file://") and not Path(url[7:]).exists():
                self._check_root()  # a root that cannot even be made: say so before writing
            self._storage = Storage(url)
        return self._storage

    # -- records of what was submitted ------------------------------------------------------------
    def _batches(self, run: str) -> list[dict]:
        out = []
        storage = self.storage()
        for name in storage.list(f"runs/{run}/slurm"):
            if name.startswith("batch-") and name.endswith(".json"):
                try:
                    record = storage.read_json(f"runs/{run}/slurm/{name}", default=None)
                except ValueError:  # being written: reserved a moment ago
                    record = None
                record = record or {"number": int(name[6:-5]), "reserved": time.time()}
                out.append(record)
        return sorted(out, key=lambda r: r["number"])

    def _jobs(self, batches: list[dict]) -> set[str]:
        return {str(b["job"]) for b in batches if b.get("job")}

    def _size(self, run: str) -> int:
        """Nodes per task: the run's ``nodes`` (read once; a run's spec never changes)."""
        if run not in self._sizes:
            record = self.storage().read_json(f"runs/{run}/run.json", default=None) or {}
            self._sizes[run] = max(1, int((record.get("spec") or {}).get("nodes") or 1))
        return self._sizes[run]

    def _tasks(self, run: str, batches: list[dict] | None = None) -> list[queue.Task]:
        batches = self._batches(run) if batches is None else batches
        return queue.query(self._jobs(batches), run)

    # -- submit -----------------------------------------------------------------------------------
    def submit(self, run: str, spec: JobSpec) -> list[NodeInfo]:
        self.check(spec)
        record = self.storage().read_json(f"runs/{run}/run.json")
        size = max(1, int(spec.nodes or 1))
        count = wanted_nodes(int(spec.max_nodes), len(record["experiments"]), size) // size
        return self._submit_batch(run, record["spec"], count, number=0, first=True)

    def check(self, spec: JobSpec) -> None:
        """What Slurm would refuse, said before anything is queued: sbatch missing, a partition
        that does not exist, more GPUs than its nodes have; and a root this machine cannot write."""
        queue.slurm_command("sbatch")
        out = queue.run_slurm(["sinfo", "-h", "-o", "%P|%G"])
        rows = [[c.strip() for c in line.split("|")] for line in out.splitlines() if "|" in line]
        default = next((r[0][:-1] for r in rows if r[0].endswith("*")), None)
        names = sorted({r[0].rstrip("*") for r in rows})
        partition = self.settings.partition or default
        if partition is None:
            raise BackendError("Slurm names no default partition (sinfo marks none with *); "
                               "`launch config set slurm.partition NAME`")  # fmt: skip
        if partition not in names:
            raise BackendError(f"Slurm has no partition {partition!r} (sinfo lists: "
                               f"{', '.join(names) or 'none'}); `launch config set "
                               "slurm.partition NAME`")  # fmt: skip
        gres = [r[1] for r in rows if r[0].rstrip("*") == partition]
        most = max((_gpus_in(g) for g in gres), default=0)
        if int(spec.gpus or 0) > most:
            said = ", ".join(sorted(set(gres)))
            raise BackendError(f"--gpus {spec.gpus}: partition {partition}'s nodes have at most "
                               f"{most} GPU(s) (sinfo Gres: {said})")  # fmt: skip
        self._check_root()

    def _check_root(self) -> None:
        """A file:// root must be a folder this login node can write (by trying it)."""
        url = self.settings.root_url
        if not url.startswith("file://"):
            return
        path = Path(url[7:])
        probe = path / f".write-test-{socket.gethostname()}-{os.getpid()}"
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise BackendError(f"the storage root {path} cannot be written from this machine "
                               f"({e.strerror or e}); the cluster's nodes must share it: `launch "
                               "config set slurm.root /shared/path` (or s3://BUCKET/PREFIX)"
                               ) from None  # fmt: skip

    def _submit_batch(self, run: str, spec: dict, count: int, *, number: int,
                      first: bool = False) -> list[NodeInfo]:  # fmt: skip
        storage = self.storage()
        key = f"runs/{run}/slurm/batch-{number:06d}.json"
        body = {"number": number, "tasks": count, "reserved": time.time(),
                "host": socket.gethostname(), "pid": os.getpid()}  # fmt: skip
        if not storage.create_exclusive(key, json.dumps(body).encode()):
            return []  # another caller submits this batch
        output = self.log_dir(run) / "%A_%a.out"
        output.parent.mkdir(parents=True, exist_ok=True)
        argv = sbatch_argv(run, spec, count, self.settings, str(output))
        size = max(1, int(spec.get("nodes") or 1))
        script = batch_script(BatchValues(run=run, root_url=self.settings.root_url,
                                          python=sys.executable, nodes=size,
                                          gpus=int(spec.get("gpus") or 0),
                                          max_runtime=spec.get("max_runtime")))  # fmt: skip
        try:
            job = parse_job_id(queue.run_slurm(argv, input=script))
        except (BackendError, ValueError) as e:
            storage.write_json(key, dict(body, failed=str(e), tasks=0))
            if first:
                raise BackendError(str(e)) from None
            raise
        storage.write_json(key, dict(body, job=job, submitted=time.time()))
        log.info("submitted Slurm job %s (%d task(s) of %d node(s)) for %s", job, count, size, run)
        return [NodeInfo(node_id=n, state="pending", instance_type="slurm",
                         extra={"job": job, "task": t})
                for t in range(count)
                for n in queue.node_names(f"j{job}-{t}-r0", size)]  # fmt: skip

    def log_dir(self, run: str) -> Path:
        """Where Slurm writes the tasks' own output (the agents' lines), on the shared home."""
        from launcher.config import launch_home

        return launch_home() / "slurm-logs" / run

    # -- inspect ----------------------------------------------------------------------------------
    def nodes(self, run: str) -> list[NodeInfo]:
        seen = self._seen.pop(run, None)
        fresh = seen is not None and time.monotonic() - seen[0] < 2.0
        tasks = seen[1] if fresh else self._tasks(run)
        return [info for t in tasks for info in _node_infos(t, self._size(run))]

    # -- reconcile --------------------------------------------------------------------------------
    def reconcile(self, run: str, statuses: Mapping[str, dict]) -> Reconciled:
        storage = self.storage()
        batches = self._batches(run)  # before squeue: a batch submitted after is seen by neither
        tasks = self._tasks(run, batches)
        cancelled = [t for t in tasks if t.state == "CANCELLED"]
        if cancelled:
            return self._cancelled(run, statuses, tasks, cancelled)
        gone = _gone(statuses, tasks, self._jobs(batches))
        requeued = requeue_orphans(storage, run, statuses, gone)
        done = Reconciled(requeued=requeued)
        if requeued:
            statuses = {**statuses, **{e: {"state": "queued"} for e in requeued}}
        record = storage.read_json(f"runs/{run}/run.json")
        spec = record["spec"]
        now = time.time()
        pending = sum(int(b.get("tasks") or 0) for b in batches
                      if not b.get("job") and not b.get("failed")
                      and now - float(b.get("reserved") or 0) < RESERVE_GRACE_S)  # fmt: skip
        size = max(1, int(spec.get("nodes") or 1))  # nodes per task
        live = (sum(t.live for t in tasks) + pending) * size
        want = -(-missing_nodes(int(spec["max_nodes"]), statuses, live, size) // size)  # tasks
        # the nodes' budget, max_nodes + experiments x (retries + 1) x nodes, counted in tasks
        tries = int(spec.get("retries") or 0) + 1
        spent = sum(int(b.get("tasks") or 0) for b in batches)
        budget = int(spec["max_nodes"]) // size + len(record["experiments"]) * tries - spent
        count = min(want, budget)
        if want > 0 and budget <= 0:
            done.notes.append(f"no replacement: the run's budget of {spent} Slurm tasks is spent")
        if count <= 0:
            if not requeued:
                self._seen[run] = (time.monotonic(), tasks)
            return done
        number = max((int(b["number"]) for b in batches), default=-1) + 1
        try:
            done.started = self._submit_batch(run, spec, count, number=number)
        except BackendError as e:
            done.notes.append(f"replacement not submitted: {e}")
        return done

    def _cancelled(self, run: str, statuses: Mapping[str, dict], tasks: list[queue.Task],
                   cancelled: list[queue.Task]) -> Reconciled:  # fmt: skip
        """Someone ran ``scancel`` on the run's job: stop what no live task still runs."""
        from launcher.storage import records

        ids = sorted({f"{t.job}_{t.task}" for t in cancelled})
        said = (
            f"cancelled in Slurm (scancel of {', '.join(ids[:4])}{'...' if len(ids) > 4 else ''})"
        )
        alive = {n for t in tasks if t.live for n in queue.node_names(t.node, self._size(run))}
        now, stopped = time.time(), []
        for exp, st in statuses.items():
            if st.get("state") in records.TERMINAL:
                continue
            if st.get("state") == "running" and st.get("node") in alive:
                continue
            records.finish(self.storage(), run, exp, state="stopped", ended=now,
                           attempt=int(st.get("attempt") or 0), message=said)  # fmt: skip
            stopped.append(exp)
        return Reconciled(stopped=stopped, notes=[f"the run was {said}; nothing resubmitted"])

    # -- stop and delete --------------------------------------------------------------------------
    def stop(self, run: str) -> list[NodeInfo]:
        """scancel the run's jobs, then wait (bounded) until Slurm lists none of them live: each
        agent stops its script, ships and exits within Slurm's KillWait."""
        from launcher.config import env_float

        batches = self._batches(run)
        jobs = self._jobs(batches)
        if not jobs:
            return []
        live = [t for t in queue.query(jobs, run) if t.live]
        if live:
            queue.run_slurm(["scancel", *sorted(jobs)])
        deadline = time.time() + env_float("LAUNCH_STOP_GRACE_S", 10.0) + 60
        while time.time() < deadline and any(t.live for t in queue.query(jobs, run)):
            time.sleep(0.5)
        stopped = [info for t in live for info in _node_infos(t, self._size(run))]
        for n in stopped:
            n.state = "terminated"
        return stopped

    def delete(self, run: str) -> None:
        import shutil

        self.stop(run)
        shutil.rmtree(self.log_dir(run), ignore_errors=True)


def _gpus_in(gres: str) -> int:
    """GPUs a node's Gres says it has: ``gpu:4``, ``gpu:a100:4(S:0-1)``, ``(null)``."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def _gone(statuses: Mapping[str, dict], tasks: list[queue.Task], jobs: set[str]) -> dict[str, str]:
    """node -> why, for each running experiment whose task life is over: the task ended, Slurm
    requeued it (a new life, another node name), or Slurm no longer knows it. A gang's node
    names end in ``-nNODEID``; the task's life is the rest."""
    by_task = {(t.job, t.task): t for t in tasks}
    gone = {}
    for st in statuses.values():
        node = st.get("node") or ""
        if st.get("state") != "running" or not node.startswith("j"):
            continue
        job, _, rest = node[1:].partition("-")
        task, _, restart = rest.partition("-r")
        restart = restart.partition("-n")[0]
        if job not in jobs or not task.isdigit():
            continue
        t = by_task.get((job, int(task)))
        if t is None:
            gone[node] = f"Slurm no longer lists task {job}_{task}"
        elif not t.live:
            gone[node] = f"Slurm task {job}_{task} ended {t.state}"
        elif str(t.restarts) != restart and t.state == "RUNNING":
            # only once the next life runs: until then the old one may still be handing the
            # experiment back (Slurm's SIGTERM, KillWait), and squeue counts the restart at once
            gone[node] = f"Slurm requeued task {job}_{task}"
    return gone


def _node_infos(t: queue.Task, size: int) -> list[NodeInfo]:
    """A task's nodes: one, or ``size`` (the agents srun runs on its allocation's nodes)."""
    state = ("pending" if t.state in queue.PENDING else "running") if t.live else "terminated"
    return [NodeInfo(node_id=n, state=state, instance_type="slurm",
                     extra={"job": t.job, "task": t.task, "slurm_state": t.state,
                            "nodelist": t.nodelist, "reason": t.reason})
            for n in queue.node_names(t.node, size)]  # fmt: skip
