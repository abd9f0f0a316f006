"""The script's whole process tree, started and ended by the agent.

The script runs in its own process group (so the agent can signal it without signalling itself)
and dies with the agent (PR_SET_PDEATHSIG). The agent is a child subreaper
(PR_SET_CHILD_SUBREAPER): children the script leaves behind, even in a session of their own,
are re-parented to the agent instead of init, so it can find and end them. The tree ends when the
experiment ends, is stopped, or its agent dies: the tree is written to ``tree.json`` in the work
dir at every check, and the local backend ends what a dead agent left there.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from launcher.processes import die_with_parent, process_alive, process_start

PR_SET_CHILD_SUBREAPER = 36


def set_subreaper(on: bool) -> None:
    """Orphaned descendants come back to this process while on (Linux; a no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)


def _child_setup() -> None:  # pragma: no cover - runs in the child between fork and exec
    os.setpgid(0, 0)
    die_with_parent()


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process (from /proc; empty where there is none)."""
    out = {}
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open(f"/proc/{name}/stat") as f:
                        out[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
    return out


class ScriptTree:
    """A running script and everything it started."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.pgid = proc.pid

    @classmethod
    def start(cls, cmd: list[str], *, cwd: Path, env: dict, log) -> ScriptTree:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, preexec_fn=_child_setup)  # fmt: skip
        return cls(proc)

    def poll(self) -> int | None:
        return self.proc.poll()

    def members(self) -> list[int]:
        """The script (while it runs) and every process below it or re-parented to the agent."""
        parents = _parents()
        me = os.getpid()
        roots = {self.proc.pid} | {p for p, pp in parents.items() if pp == me}
        found, todo = set(), list(roots)
        while todo:
            p = todo.pop()
            if p in found or p == me:
                continue
            found.add(p)
            todo.extend(c for c, pp in parents.items() if pp == p)
        return sorted(p for p in found if process_alive(p))

    def record(self, path: Path) -> None:
        """Write the tree (pids with start times) for whoever cleans up after this agent."""
        tree = [{"pid": p, "start": process_start(p)} for p in self.members()]
        tmp = path.with_name(f".{path.name}.tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps({"pgid": self.pgid, "processes": tree}))
            os.replace(tmp, path)

    def _signal_all(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)
        for p in self.members():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, sig)

    def end(self, grace: float) -> tuple[int, bool]:
        """End the whole tree: SIGTERM, SIGKILL after ``grace`` seconds for what is left.
        Returns the script's exit code and whether it ignored SIGTERM (had to be killed)."""
        ignored = False
        if self.proc.poll() is None and grace > 0:
            self._signal_all(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                ignored = True
        self.reap(grace=min(grace, 2.0))
        return self.proc.wait(), ignored

    def reap(self, grace: float = 2.0) -> None:
        """Kill and collect every process still in the tree (children that outlived the
        script), with a short bounded wait."""
        if self.proc.poll() is None:
            self._signal_all(signal.SIGKILL)
            self.proc.wait()
        deadline = time.monotonic() + grace
        me = os.getpid()
        while True:
            left = [p for p in self.members() if p != self.proc.pid]
            for p in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(p, signal.SIGKILL)
            for p, parent in _parents().items():  # re-parented to us: ours to collect
                if parent == me and p != self.proc.pid:
                    with contextlib.suppress(ChildProcessError, OSError):
                        os.waitpid(p, os.WNOHANG)
            if not left or time.monotonic() > deadline:
                return
            time.sleep(0.05)


def end_recorded_tree(path: Path) -> int:
    """End what a dead agent's ``tree.json`` lists (pids whose start time still matches);
    how many processes were signalled."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return 0
    n = 0
    for entry in data.get("processes") or []:
        pid, start = entry.get("pid"), entry.get("start")
        if start and process_alive(pid, start):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                n += 1
    return n
