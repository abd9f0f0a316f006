"""What the launcher asks of the OS about processes: is this one (still) the one we started, and
tie a child's life to its parent's.

A process is identified by its pid *and* its start time, recorded when it is spawned: the start
time is readable the moment ``fork`` returns (unlike ``/proc/PID/cmdline``, which reads empty
until the child's ``exec`` completes, so judging by the command line saw live agents as dead), and
a pid reused by another process has another start time. On Linux the start time is field 22 of
``/proc/PID/stat`` (clock ticks since boot, fixed for the process's life and immune to wall-clock
steps); elsewhere psutil's create time when psutil is installed. This is the one liveness
function of the launcher: the local backend's nodes, claims and datastore creators all use it.
"""

from __future__ import annotations

import os
import signal
import sys


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (which may hold spaces and ')')."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_start(pid: int) -> str | None:
    """An opaque token for when ``pid`` started, or None if there is no such process (or this
    platform cannot tell). Two processes with the same pid never share a token."""
    if sys.platform.startswith("linux"):
        fields = _stat_fields(pid)
        # fields[0] is the state (field 3), so starttime (field 22) is fields[19]
        return f"linux:{fields[19]}" if fields and len(fields) > 19 else None
    try:
        import psutil
    except ImportError:
        return None
    try:
        return f"psutil:{psutil.Process(pid).create_time():.3f}"
    except (psutil.Error, OSError):
        return None


def process_alive(pid: object, start: str | None = None) -> bool:
    """Whether ``pid`` runs (a zombie awaiting its parent does not) and, given the ``start`` token
    recorded at spawn, is still that same process rather than a reuse of its pid."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    fields = _stat_fields(pid) if sys.platform.startswith("linux") else None
    if fields and fields[0] in ("Z", "X"):
        return False
    if start is None:
        return True
    now = process_start(pid)
    return now is None or now == start  # None: exited a moment ago, or this platform cannot tell


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask the kernel to SIGKILL this process when its parent dies, however the parent dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
