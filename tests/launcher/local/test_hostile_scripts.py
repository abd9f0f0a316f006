"""Hostile and crashing scripts: whatever a script does to its files, its processes or its
agent, the run ends in bounded time, with its results kept and no process left behind (checked
in the process table), and attempts never exceed retries + 1."""

from __future__ import annotations

import json
import os
import signal
import textwrap
import threading
import time

import pytest
from localjob import make_spec

from launcher import runs
from launcher.backends.local import LocalBackend
from launcher.node import claims as cl
from launcher.processes import process_alive
from launcher.runs.logs import read_log
from launcher.storage import records
from launcher.storage.artifacts import list_artifacts
from tests.launcher.waiting import wait_for


def script(workdir, name: str, body: str) -> str:
    (workdir / name).write_text(textwrap.dedent(body))
    return name


def launch(name: str, **kw) -> str:
    return runs.prepare_run(make_spec(name=name, **kw), LocalBackend())


def wait_done(name: str, timeout: float = 60):
    """`launch run --wait`: reconcile until the run ends."""
    return runs.wait_run(name, poll=0.2, timeout=timeout)


def storage():
    return LocalBackend().storage()


def test_bad_metrics_and_deleted_outputs_do_not_crash_the_agent(home, workdir):
    job = script(
        workdir,
        "vandal.py",
        """
        import os, pathlib, shutil, time
        art = pathlib.Path(os.environ["LAUNCH_ARTIFACTS_DIR"])
        (art / "metrics.csv").write_bytes(b"epoch,step,val_acc1\\n0,1,\\xff\\xfe\\n0,2,0.5\\n")
        (art / "big.csv").write_text("x")
        time.sleep(1)  # the agent reads the metrics at its beats
        with open(art / "metrics.csv", "a") as f:
            f.write("1,3," + "9" * (200 * 1024) + "\\n")  # a field over csv's 128 KiB limit
        time.sleep(1)
        shutil.rmtree(art)  # its own outputs folder, gone
        time.sleep(1)
        print("vandal done", flush=True)
    """,
    )
    name = launch("vandal", script=job)
    row, (view,) = wait_done(name)
    assert (row.status, view.attempt, view.exit_code) == ("succeeded", 1, 0)
    assert "vandal done" in read_log(storage(), name, "exp-0")


def test_a_script_that_kills_its_agent_spends_its_attempts_then_fails(home, workdir):
    job = script(
        workdir,
        "parricide.py",
        """
        import os, signal, time
        time.sleep(0.5)
        os.kill(os.getppid(), signal.SIGKILL)  # the agent, without a word
        time.sleep(30)
    """,
    )
    name = launch("parricide", script=job, retries=1)
    row, (view,) = wait_done(name, timeout=90)
    assert row.status == "failed"
    assert view.attempt == 2  # retries + 1, never more
    assert records.claim_numbers(storage(), name, "exp-0") == [1, 2]
    assert "gave up" in view.message and "no retry is left" in view.message
    for _ in range(3):  # more status calls start nothing more
        runs.run_detail(name)
    wait_for(lambda: all(n.state != "running" for n in LocalBackend().nodes(name)),
             timeout=30, what="the last agent, which found nothing to do, to exit")  # fmt: skip
    assert len(LocalBackend().nodes(name)) <= 3  # one per attempt, and one that gave up


def test_metrics_with_a_huge_field_still_lists(home, workdir):
    from click.testing import CliRunner

    from launcher.cli import cli

    job = script(
        workdir,
        "huge.py",
        """
        import os, pathlib
        art = pathlib.Path(os.environ["LAUNCH_ARTIFACTS_DIR"])
        (art / "metrics.csv").write_text(
            "epoch,step,val_acc1,note\\n0,1,0.5," + "n" * (300 * 1024) + "\\n1,2,0.75,\\n")
    """,
    )
    name = launch("huge", script=job)
    wait_done(name)
    r = CliRunner().invoke(cli, ["metrics", name])
    assert r.exit_code == 0, r.output
    assert "0.75" in r.output


def test_heartbeat_beats_through_a_ship_longer_than_the_stale_timeout(home, workdir, monkeypatch):
    from launcher.node.agent import Agent
    from launcher.storage import artifacts as art

    monkeypatch.setenv("LAUNCH_STALE_S", "2")
    job = script(
        workdir,
        "quick.py",
        """
        import os, pathlib
        pathlib.Path(os.environ["LAUNCH_ARTIFACTS_DIR"], "model.ckpt").write_text("weights")
    """,
    )
    name = runs.prepare_run(make_spec(name="slowship", script=job), runs_noagents())
    real = art.ship_artifacts

    def slow_ship(*a, **kw):
        time.sleep(6)  # three stale timeouts: a multi-GB checkpoint to S3
        return real(*a, **kw)

    monkeypatch.setattr(art, "ship_artifacts", slow_ship)
    takers, done = [], threading.Event()

    def take():  # another agent keeps trying to take the experiment, once node-a holds it
        first = storage().path(records.claim_key(name, "exp-0", 1))
        while not done.is_set() and not os.path.exists(first):
            time.sleep(0.01)
        while not done.is_set():
            claim = cl.try_claim(storage(), name, "exp-0", "node-b", stale_s=2)
            if claim:
                takers.append(claim)
            time.sleep(0.2)

    t = threading.Thread(target=take)
    t.start()
    try:
        Agent(storage(), name, "node-a", work_dir=home / "w").serve()
    finally:
        done.set()
        t.join()
    assert takers == []
    status = records.read_status(storage(), name, "exp-0")
    assert (status["state"], status["attempt"]) == ("succeeded", 1)
    assert [a.path for a in list_artifacts(storage(), name, "exp-0")] == ["model.ckpt"]


def runs_noagents():
    from localjob import NoAgents

    return NoAgents()


def test_a_success_is_never_overwritten_by_a_taker(home, workdir):
    name = runs.prepare_run(make_spec(name="fenced"), runs_noagents())
    s = storage()
    assert cl.try_claim(s, name, "exp-0", "node-a", stale_s=60).attempt == 1
    records.write_status(s, name, "exp-0", state="running", attempt=1, node="node-a")
    taker = cl.try_claim(s, name, "exp-0", "node-b", stale_s=0)  # judged attempt 1 dead
    assert taker is not None and taker.attempt == 2
    # attempt 1 was alive after all and succeeds first; the taker's finish changes nothing
    assert records.finish(s, name, "exp-0", state="succeeded", attempt=1, exit_code=0)
    assert not records.finish(s, name, "exp-0", state="failed", attempt=2, exit_code=1)
    status = records.read_status(s, name, "exp-0")
    assert (status["state"], status["attempt"]) == ("succeeded", 1)
    assert cl.claim_lost(s, taker)  # the taker's heartbeat sees it and stops its script
    assert cl.try_claim(s, name, "exp-0", "node-c", stale_s=0) is None


@pytest.mark.parametrize("content", [b"", b'{"node": "node-a", "att'])
def test_an_unreadable_claim_goes_stale_by_its_storage_time(home, workdir, content):
    name = runs.prepare_run(make_spec(name="badclaim"), runs_noagents())
    s = storage()
    key = records.claim_key(name, "exp-0", 1)
    s.write_bytes(key, content)  # a node killed between creating its claim and writing it
    records.write_status(s, name, "exp-0", state="running", attempt=1, node="node-a")
    assert cl.try_claim(s, name, "exp-0", "node-b", stale_s=60) is None  # fresh: being written
    old = time.time() - 120
    os.utime(s.path(key), (old, old))
    claim = cl.try_claim(s, name, "exp-0", "node-b", stale_s=60)
    assert claim is not None and claim.attempt == 2


SPAWNER = """
    import os, subprocess, sys, time, pathlib, json
    out = pathlib.Path(sys.argv[1])
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    kids = [subprocess.Popen(sleeper).pid,                              # same group
            subprocess.Popen(sleeper, start_new_session=True).pid]      # its own session
    pid = os.fork()
    if pid == 0:  # a double fork: the grandchild is orphaned at once
        if os.fork() == 0:
            os.setsid()
            out.with_suffix(".orphan").write_text(str(os.getpid()))
            time.sleep(600)
        os._exit(0)
    os.waitpid(pid, 0)
    while not out.with_suffix(".orphan").exists():
        time.sleep(0.05)
    kids.append(int(out.with_suffix(".orphan").read_text()))
    out.write_text(json.dumps(kids))
    print("spawned", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def spawned(path):
    wait_for(path.exists, timeout=30, what="the script's children")
    pids = json.loads(path.read_text())
    assert all(process_alive(p) for p in pids)
    return pids


@pytest.mark.parametrize("ending", ["exit", "stop-exp", "stop-run", "agent-killed"])
def test_no_process_outlives_its_experiment(home, workdir, tmp_path, ending):
    job = script(workdir, "spawner.py", SPAWNER)
    out = tmp_path / "kids.json"
    linger = "0.5" if ending == "exit" else "600"
    name = launch(f"tree-{ending.replace('-', '')}", script=job, script_args=[str(out), linger])
    kids = spawned(out)
    if ending == "stop-exp":
        runs.stop_run(f"{name}/exp-0")
    elif ending == "stop-run":
        runs.stop_run(name)
    elif ending == "agent-killed":
        (node,) = LocalBackend().nodes(name)
        tree = home / "work" / name / node.node_id / "tree.json"

        def on_record():
            try:
                listed = {p["pid"] for p in json.loads(tree.read_text())["processes"]}
            except (OSError, ValueError):
                return False
            return set(kids) <= listed

        wait_for(on_record, timeout=30, what="the children on the agent's record")
        os.kill(node.extra["pid"], signal.SIGKILL)  # the agent alone; its script's tree stays
        wait_for(lambda: not process_alive(node.extra["pid"]), timeout=10, what="the kill")
        runs.stop_run(name)  # the backend ends what the dead agent left
    else:
        wait_done(name)
    wait_for(lambda: not any(process_alive(p) for p in kids), timeout=30,
             what="every child of the script to end")  # fmt: skip


def test_stop_of_a_script_that_ignores_sigterm_ships_and_says_so(home, workdir):
    job = script(
        workdir,
        "stubborn.py",
        """
        import os, pathlib, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        art = pathlib.Path(os.environ["LAUNCH_ARTIFACTS_DIR"])
        print("ignoring SIGTERM", flush=True)
        while True:
            (art / "progress.txt").write_text(str(time.time()))
            time.sleep(0.1)
    """,
    )
    name = launch("stubborn", script=job)
    wait_for(lambda: "ignoring SIGTERM" in read_log(storage(), name, "exp-0"),
             timeout=30, what="the script to start")  # fmt: skip
    t0 = time.monotonic()
    row = runs.stop_run(name)
    assert time.monotonic() - t0 < 25  # LAUNCH_STOP_GRACE_S=2 here: bounded, well before that
    status = records.read_status(storage(), name, "exp-0")
    assert row.status == "stopped" and status["state"] == "stopped"
    assert "ignored SIGTERM and was killed after 2s" in status["message"]
    assert "progress.txt" in [a.path for a in list_artifacts(storage(), name, "exp-0")]
