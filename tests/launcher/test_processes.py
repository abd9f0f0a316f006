"""launcher.processes: a process is judged by its pid and the start time recorded at spawn."""

from __future__ import annotations

import os
import subprocess
import sys

from launcher.processes import process_alive, process_start


def test_a_just_spawned_child_is_alive_every_time():
    # /proc/PID/cmdline of a child reads empty until its exec completes; the start time does
    # not, so a check made the instant Popen returns must never call the child dead. The child
    # waits for its stdin to close, so it cannot have ended (a zombie, rightly not alive)
    # between the two checks on a loaded machine
    for _ in range(300):
        child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                                 stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)  # fmt: skip
        start = process_start(child.pid)
        assert start is not None and process_alive(child.pid, start)
        child.stdin.close()
        child.wait()
        assert not process_alive(child.pid, start)  # reaped: gone


def test_a_zombie_and_a_reused_pid_are_not_alive():
    child = subprocess.Popen(["sleep", "30"])
    start = process_start(child.pid)
    assert process_alive(child.pid, start)
    assert not process_alive(child.pid, "linux:1")  # same pid, another start: someone else
    child.kill()
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
    assert not process_alive(child.pid, start) and not process_alive(child.pid)
    child.wait()


def test_bad_records_are_not_alive():
    for pid in (None, "12", -1, 0, True, 2**22 + 12345):
        assert not process_alive(pid)
    assert process_alive(os.getpid(), process_start(os.getpid()))
