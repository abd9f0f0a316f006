"""The embedded default backend: agents as processes on this machine, storage under LAUNCH_HOME.

Nothing else needs to be installed or running. Each agent is started detached from the CLI (its
own session, output to a node log), so closing the terminal changes nothing; each is pinned to its
share of the GPUs with CUDA_VISIBLE_DEVICES. Node records (pid, log) live in
``$LAUNCH_HOME/nodes/RUN/NODE.json``; whether a node lives is asked of the OS every time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
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
)
from launcher.config import env_float, launch_home
from launcher.node.script import end_recorded_tree
from launcher.processes import process_alive, process_start
from launcher.storage.root import Storage

if TYPE_CHECKING:
    from launcher.spec.jobspec import JobSpec

log = logging.getLogger("launcher")


def detect_gpus() -> int:
    """NVIDIA GPUs on this machine, asked of the driver (never of torch, which is slow to load)."""
    proc_dir = Path("/proc/driver/nvidia/gpus")
    if proc_dir.is_dir():
        return len(list(proc_dir.iterdir()))
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return 0
        return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
    return 0


def assign_gpus(node_index: int, gpus: int, available: int) -> str:
    """CUDA_VISIBLE_DEVICES for one node: its own slice when there are enough, else a share of
    what there is (wrapping), else none (CPU)."""
    if gpus <= 0 or available <= 0:
        return ""
    take = min(gpus, available)
    return ",".join(str((node_index * gpus + j) % available) for j in range(take))


class LocalBackend(Backend):
    """Agents as detached local processes."""

    name = "local"
    capabilities = Capabilities(spot=False, multi_node=True, stop=True, gpus=True, cost=False,
                                graceful_stop=True, gangs=True)  # fmt: skip

    def __init__(self, home: Path | str | None = None):
        self.home = Path(home) if home else launch_home()

    def storage(self) -> Storage:
        return Storage(f"file://{self.home / 'store'}")

    # -- node records -----------------------------------------------------------------------
    def _nodes_dir(self, run: str) -> Path:
        return self.home / "nodes" / run

    def _records(self, run: str) -> list[dict]:
        """The run's node records. One that cannot be read (written atomically, so garbled only
        from outside) is never dropped: its agent would go unseen, and a second one would start
        beside it. Its pid comes from the record's pid file (``NODE.PID.pid``, holding the start
        time); without one the node counts as alive until the stale timeout has passed since the
        record was written, so no second agent starts while the first may still run."""
        out = []
        d = self._nodes_dir(run)
        if not d.is_dir():
            return out
        for p in sorted(d.glob("*.json")):
            try:
                record = json.loads(p.read_text())
                if not isinstance(record, dict) or not isinstance(record.get("node"), str):
                    raise ValueError("not a node record")
            except (OSError, ValueError) as e:
                record = _from_pid_file(p)
                log.warning("node record %s is unreadable (%s); %s. Delete it once that agent "
                            "is gone", p, e.__class__.__name__,
                            f"its agent is pid {record['pid']}" if record.get("pid")
                            else "its agent cannot be judged")  # fmt: skip
            out.append(record)
        return out

    def submit(self, run: str, spec: JobSpec) -> list[NodeInfo]:
        """Start the run's first agents: ``nodes`` per experiment, up to max_nodes."""
        experiments = self.storage().list(f"runs/{run}/experiments")
        return self._top_up(run, spec, {e: {} for e in experiments} or {"": {}})

    def reconcile(self, run: str, statuses: Mapping[str, dict]) -> Reconciled:
        """Re-queue what dead agents held, then start the missing agents. A lock file makes
        concurrent callers (several `launch status` at once) start them once between them."""
        from launcher.spec.jobspec import JobSpec

        storage = self.storage()
        record = storage.read_json(f"runs/{run}/run.json")
        dead = [r for r in self._records(run) if not _alive(r)]
        self._end_orphans(run, dead)
        gone = {r["node"]: f"its agent (pid {r.get('pid')}) exited" for r in dead}
        requeued = requeue_orphans(storage, run, statuses, gone)
        if requeued:  # their status changed: count them as unfinished below
            statuses = {**statuses, **{e: {"state": "queued"} for e in requeued}}
        started = self._top_up(run, JobSpec.from_dict(record["spec"]), statuses)
        return Reconciled(requeued=requeued, started=started)

    def _top_up(self, run: str, spec: JobSpec, statuses: Mapping[str, dict]) -> list[NodeInfo]:
        import fcntl

        d = self._nodes_dir(run)
        d.mkdir(parents=True, exist_ok=True)
        with open(d / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            records = self._records(run)
            alive = sum(1 for r in records if _alive(r))
            count = missing_nodes(int(spec.max_nodes), statuses, alive, int(spec.nodes))
            if count == 0:
                return []
            available = detect_gpus()
            total_gpus = int(spec.gpus or 0) * (alive + count)
            if spec.gpus and available < total_gpus:
                cpu = " (CPU only)" if not available else ""
                log.warning(
                    "this machine has %d GPU(s), %d requested (%d per node x %d nodes); "
                    "running on what is there%s",
                    available, total_gpus, spec.gpus, alive + count, cpu,
                )  # fmt: skip
            started = []
            index = len(records)
            for _ in range(count):
                while (d / f"node-{index}.json").exists():
                    index += 1
                gpus = assign_gpus(index, int(spec.gpus or 0), available)
                started.append(self._spawn(run, f"node-{index}", gpus, spec))
                index += 1
        return started

    def _spawn(self, run: str, node: str, gpus: str, spec: JobSpec) -> NodeInfo:
        d = self._nodes_dir(run)
        log_path = d / f"{node}.log"
        work_dir = self.home / "work" / run / node
        cmd = [sys.executable, "-m", "launcher.node.agent", "--root", self.storage().root_url,
               "--run", run, "--node", node, "--gpus", gpus, "--addr", "127.0.0.1",
               "--work-dir", str(work_dir)]  # fmt: skip
        if spec.max_runtime:
            cmd += ["--max-runtime", str(spec.max_runtime)]
        env = dict(os.environ, LAUNCH_HOME=str(self.home))
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the terminal closing; killable as a group
                close_fds=True,
                env=env,
                cwd=str(self.home),
            )
        now = time.time()
        # the start time is readable as soon as Popen returns (the fork is done), unlike the
        # command line, which reads empty until the child's exec completes
        record = {"node": node, "pid": proc.pid, "pid_start": process_start(proc.pid),
                  "pgid": proc.pid, "gpus": gpus, "log": str(log_path),
                  "started": now}  # fmt: skip
        # the pid in a file name too: a garbled record still names its agent (see _records)
        (d / f"{node}.{proc.pid}.pid").write_text(record["pid_start"] or "")
        tmp = d / f".{node}.json.tmp"
        tmp.write_text(json.dumps(record))
        os.replace(tmp, d / f"{node}.json")
        return _node_info(record, alive=True)

    def nodes(self, run: str) -> list[NodeInfo]:
        out = []
        for r in self._records(run):
            alive = _alive(r)
            out.append(_node_info(r, alive))
        return out

    def stop(self, run: str) -> list[NodeInfo]:
        """SIGTERM each live agent: it ends its script's tree (SIGKILL after the grace period
        if the script ignores SIGTERM), ships what there is and exits. An agent that does not
        answer in time is killed, and the tree it had on record ended."""
        grace = env_float("LAUNCH_STOP_GRACE_S", 10.0)
        live = [n for n in self.nodes(run) if n.state == "running" and n.extra.get("pid")]
        for n in live:
            _signal_group(int(n.extra["pid"]), signal.SIGTERM)
        deadline = time.time() + grace + 15  # the script's grace, then the last ship
        while time.time() < deadline and any(
            process_alive(n.extra["pid"], n.extra["pid_start"]) for n in live
        ):
            time.sleep(0.1)
        for n in live:
            if process_alive(n.extra["pid"], n.extra["pid_start"]):
                _signal_group(int(n.extra["pid"]), signal.SIGKILL)
            n.state = "terminated"
        self._end_orphans(run)
        return live

    def _end_orphans(self, run: str, dead: list[dict] | None = None) -> None:
        """End what dead agents' scripts left running (the trees they had on record); ``dead``:
        their node records, when the caller has just read them."""
        if dead is None:
            dead = [r for r in self._records(run) if not _alive(r)]
        for r in dead:
            end_recorded_tree(self.home / "work" / run / r["node"] / "tree.json")

    def notify_stop(self, run: str, node: str) -> bool:
        """SIGUSR1 to that node's agent alone (not its group): it beats at once, finds the stop
        key and stops that experiment only, then goes on to the next."""
        for r in self._records(run):
            if r["node"] == node and r.get("pid") and _alive(r):
                try:
                    os.kill(int(r["pid"]), signal.SIGUSR1)
                except (ProcessLookupError, PermissionError):
                    return False
                return True
        return False

    def delete(self, run: str) -> None:
        self._end_orphans(run)
        shutil.rmtree(self._nodes_dir(run), ignore_errors=True)
        shutil.rmtree(self.home / "work" / run, ignore_errors=True)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _alive(record: dict) -> bool:
    """Whether a node record's agent still runs: its pid, started at the recorded time. An
    unreadable record without a pid file (see LocalBackend._records) is alive until the stale
    timeout has passed since it was written."""
    if record.get("unknown_since") is not None:
        from launcher.config import stale_timeout

        return time.time() - record["unknown_since"] < stale_timeout()
    return process_alive(record.get("pid"), record.get("pid_start"))


def _from_pid_file(path: Path) -> dict:
    """What a garbled node record can still tell: its node from the file name, its agent's pid
    (and start time) from the pid file written beside it."""
    node = path.stem
    record: dict = {"node": node, "log": str(path.with_suffix(".log"))}
    for pid_file in path.parent.glob(f"{node}.*.pid"):
        pid = pid_file.name[len(node) + 1 : -len(".pid")]
        if pid.isdigit():
            try:
                start = pid_file.read_text().strip() or None
            except OSError:
                start = None
            return dict(record, pid=int(pid), pid_start=start, pgid=int(pid))
    try:
        since = path.stat().st_mtime
    except OSError:
        since = time.time()
    return dict(record, unknown_since=since)


def _node_info(record: dict, alive: bool) -> NodeInfo:
    extra = {k: record.get(k) for k in ("pid", "pid_start", "gpus", "log")}
    return NodeInfo(node_id=record["node"], state="running" if alive else "terminated",
                    instance_type="local", started_at=record.get("started"),
                    extra=extra)  # fmt: skip
