"""launcher.node.agent and launcher.node.claims: claiming, fencing, the lifecycle of an attempt."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time

from localjob import NoAgents, make_spec, read_records

from launcher import runs
from launcher.backends.local import LocalBackend
from launcher.node import claims as cl
from launcher.node.agent import Agent
from launcher.node.interruption import FileInterruption
from launcher.runs.logs import read_log
from launcher.storage import records
from launcher.storage.metrics_csv import latest_metrics


def storage():
    return LocalBackend().storage()


def prepared(script_args, **kw) -> str:
    return runs.prepare_run(make_spec(script_args=script_args, **kw), NoAgents())


def agent(name: str, node: str = "node-0", tmp=None, **kw) -> Agent:
    return Agent(storage(), name, node, gpus="", work_dir=tmp / node if tmp else None, **kw)


# -- claims -----------------------------------------------------------------------------------
def _race(root: str, run: str, exps: list[str], node: str, out) -> None:
    from launcher.storage.root import Storage

    s = Storage(root)
    won = []
    for exp in exps:
        c = cl.try_claim(s, run, exp, node, stale_s=60)
        if c is not None:
            won.append((exp, c.attempt))
            records.write_status(s, run, exp, state="running", attempt=c.attempt, node=node)
            cl.beat(s, c)
    out.put((node, won))


def test_racing_claimers_never_share_an_experiment(home, workdir):
    name = prepared(["--lr", "range(24)"])
    exps = [f"exp-{i}" for i in range(24)]
    out = multiprocessing.get_context("fork").Queue()
    procs = [
        multiprocessing.get_context("fork").Process(
            target=_race, args=(storage().root_url, name, exps[i:] + exps[:i], f"node-{i}", out)
        )
        for i in range(4)
    ]  # each starts at a different place, so they collide all along
    for p in procs:
        p.start()
    results = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=10)
    won = [exp for _, w in results for exp, _ in w]
    assert sorted(won) == sorted(exps)  # every experiment once, none twice
    assert all(attempt == 1 for _, w in results for _, attempt in w)
    for exp in exps:
        assert records.claim_numbers(storage(), name, exp) == [1]


def test_a_live_attempt_is_not_taken_a_dead_one_is(home, workdir):
    name = prepared([])
    s = storage()
    first = cl.try_claim(s, name, "exp-0", "node-a", stale_s=60)
    assert first.attempt == 1 and not first.resumed
    records.write_status(s, name, "exp-0", state="running", attempt=1, node="node-a")
    cl.beat(s, first)
    assert cl.try_claim(s, name, "exp-0", "node-b", stale_s=60) is None  # fresh heartbeat
    assert not cl.claim_lost(s, first)
    time.sleep(0.3)
    second = cl.try_claim(s, name, "exp-0", "node-b", stale_s=0.2)  # now stale
    assert second.attempt == 2 and second.resumed
    assert cl.claim_lost(s, first)  # the old holder learns at its next heartbeat


def test_a_claim_whose_local_process_died_is_taken_at_once(home, workdir):
    name = prepared([])
    s = storage()
    c = cl.try_claim(s, name, "exp-0", "node-a", stale_s=60)
    records.write_status(s, name, "exp-0", state="running", attempt=1, node="node-a")
    cl.beat(s, c)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    s.write_json(f"runs/{name}/nodes/node-a.json", {"host": socket.gethostname(), "pid": dead.pid})
    assert cl.node_is_dead(s, name, "node-a")
    assert cl.try_claim(s, name, "exp-0", "node-b", stale_s=60).attempt == 2
    # a node on another machine is never judged by pid
    s.write_json(f"runs/{name}/nodes/node-x.json", {"host": "elsewhere", "pid": dead.pid})
    assert not cl.node_is_dead(s, name, "node-x")


def test_orphan_claim_without_status_is_taken_once_stale(home, workdir):
    name = prepared([])
    s = storage()
    assert cl.try_claim(s, name, "exp-0", "node-a", stale_s=60).attempt == 1
    # node-a died before writing "running": status still says queued, attempt 0
    assert cl.try_claim(s, name, "exp-0", "node-b", stale_s=60) is None
    time.sleep(0.3)
    assert cl.try_claim(s, name, "exp-0", "node-b", stale_s=0.2).attempt == 2


def test_finished_experiments_are_never_claimed(home, workdir):
    name = prepared(["--lr", "[1, 2, 3]"])
    s = storage()
    for i, state in enumerate(["succeeded", "failed", "stopped"]):
        records.write_status(s, name, f"exp-{i}", state=state)
        assert cl.try_claim(s, name, f"exp-{i}", "node-a", stale_s=0) is None


# -- the agent, in process --------------------------------------------------------------------
def test_agent_runs_everything_then_exits(home, workdir, tmp_path):
    name = prepared(["--lr", "[1, 2]", "--steps", "2"])
    assert agent(name, tmp=tmp_path).serve() == 0
    s = storage()
    for exp in ("exp-0", "exp-1"):
        st = records.read_status(s, name, exp)
        assert (st["state"], st["exit_code"], st["attempt"], st["node"]) == (
            "succeeded",
            0,
            1,
            "node-0",
        )
        assert st["metrics"]["train_loss"] == 0.5
        assert s.exists(records.exp_key(name, exp, "artifacts", "checkpoints", "best.ckpt"))
    node = s.read_json(f"runs/{name}/nodes/node-0.json")
    assert node["state"] == "exited" and node["pid"] == os.getpid()


def test_interruption_requeues_and_the_next_attempt_resumes(home, workdir, tmp_path):
    record = tmp_path / "record.jsonl"
    name = prepared(["--steps", "40", "--sleep", "0.05", "--record", str(record)])
    notice = tmp_path / "spot-notice"
    a = agent(name, "node-a", tmp_path, interruption=FileInterruption(str(notice)))

    import threading

    def interrupt_after_a_few_steps():
        manifest = records.exp_key(name, "exp-0", "artifacts.json")
        while not storage().exists(manifest):
            time.sleep(0.05)
        time.sleep(0.3)
        notice.write_text("terminate")

    threading.Thread(target=interrupt_after_a_few_steps, daemon=True).start()
    a.serve()
    st = records.read_status(storage(), name, "exp-0")
    assert st["state"] == "queued" and st["attempt"] == 1 and "interrupted" in st["message"]
    saved = json.loads(
        storage().read_text(records.exp_key(name, "exp-0", "artifacts/checkpoints/last.ckpt"))
    )
    assert 0 < saved["step"] < 40

    agent(name, "node-b", tmp_path).serve()
    st = records.read_status(storage(), name, "exp-0")
    assert (st["state"], st["attempt"], st["node"]) == ("succeeded", 2, "node-b")
    second = [r for r in read_records(record) if r["event"] == "start"][1]
    assert second["attempt"] == 2 and second["step"] == saved["step"]
    assert f"start_step={saved['step']}" in read_log(storage(), name, "exp-0")


def test_stop_file_stops_the_script(home, workdir, tmp_path):
    name = prepared(["--steps", "1000", "--sleep", "0.05"])
    storage().write_text(records.exp_key(name, "exp-0", "stop"), "")
    agent(name, tmp=tmp_path).serve()
    st = records.read_status(storage(), name, "exp-0")
    assert st["state"] == "stopped" and st["exit_code"] == -15  # SIGTERM


def test_max_runtime_fails_the_attempt(home, workdir, tmp_path):
    name = prepared(["--steps", "1000", "--sleep", "0.05"], max_runtime=1)
    t0 = time.time()
    agent(name, tmp=tmp_path).serve()
    st = records.read_status(storage(), name, "exp-0")
    assert st["state"] == "failed" and "max_runtime=1" in st["message"]
    assert time.time() - t0 < 10


def test_setup_failure_is_reported_in_status_and_log(home, workdir, tmp_path):
    name = prepared([])
    # a snapshot without the script (the user's ignore rules are checked at launch; this one
    # is broken behind our back)
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz"):
        pass
    storage().write_bytes(f"runs/{name}/code.tar.gz", buf.getvalue())
    agent(name, tmp=tmp_path).serve()
    st = records.read_status(storage(), name, "exp-0")
    assert st["state"] == "failed" and "job.py is not in the code snapshot" in st["message"]
    assert "setup failed" in read_log(storage(), name, "exp-0")


def test_a_fenced_agent_stops_its_script_and_writes_nothing(home, workdir, tmp_path):
    name = prepared(["--steps", "1000", "--sleep", "0.05"])
    a = agent(name, "node-a", tmp_path)
    import threading

    def steal():
        while records.read_status(storage(), name, "exp-0")["state"] != "running":
            time.sleep(0.05)
        storage().create_exclusive(records.claim_key(name, "exp-0", 2), b"{}")
        records.write_status(storage(), name, "exp-0", state="succeeded", attempt=2, node="node-b")

    threading.Thread(target=steal, daemon=True).start()
    t0 = time.time()
    a.serve()
    assert time.time() - t0 < 20
    st = records.read_status(storage(), name, "exp-0")
    assert (st["state"], st["attempt"], st["node"]) == ("succeeded", 2, "node-b")


def test_latest_metrics_reads_the_last_value_of_each_column(tmp_path):
    p = tmp_path / "metrics.csv"
    p.write_text("epoch,step,train_loss,val_acc1\n0,9,0.5,\n0,9,,0.25\n1,19,0.4,\n")
    assert latest_metrics(p) == {"epoch": 1.0, "step": 19.0, "train_loss": 0.4, "val_acc1": 0.25}
    assert latest_metrics(tmp_path / "missing.csv") == {}


def test_agent_command_line(home, workdir, tmp_path):
    name = prepared(["--steps", "1"])
    out = subprocess.run(
        [sys.executable, "-m", "launcher.node.agent", "--root", storage().root_url, "--run", name,
         "--node", "node-9", "--work-dir", str(tmp_path / "w")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[0])["agent"] == "node-9"
    assert records.read_status(storage(), name, "exp-0")["state"] == "succeeded"
    bad = subprocess.run([sys.executable, "-m", "launcher.node.agent", "--root", storage().root_url,
                          "--run", name, "--node", "n", "--interruption", "bogus"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode != 0 and "imds" in bad.stderr


def test_resume_survives_a_manifest_older_than_its_files(home, workdir, tmp_path, monkeypatch):
    from launcher.storage.artifacts import ship_artifacts

    record = tmp_path / "record.jsonl"
    name = prepared(["--steps", "6", "--record", str(record)], retries=1)  # one death allowed
    s = storage()
    old = tmp_path / "old"
    (old / "checkpoints").mkdir(parents=True)
    (old / "checkpoints" / "last.ckpt").write_text(json.dumps({"step": 2}))
    ship_artifacts(s, name, "exp-0", old)
    # attempt 1 uploaded step 4, then its node died before rewriting artifacts.json
    s.write_text(records.exp_key(name, "exp-0", "artifacts/checkpoints/last.ckpt"), '{"step": 4}')
    assert cl.try_claim(s, name, "exp-0", "node-a", stale_s=60).attempt == 1
    records.write_status(s, name, "exp-0", state="running", attempt=1, node="node-a")
    monkeypatch.setenv("LAUNCH_STALE_S", "0.1")
    time.sleep(0.2)
    agent(name, "node-b", tmp_path).serve()
    st = records.read_status(s, name, "exp-0")
    assert (st["state"], st["attempt"]) == ("succeeded", 2)
    (start,) = [r for r in read_records(record) if r["event"] == "start"]
    assert start["step"] == 4
    log = read_log(s, name, "exp-0")
    assert "[launch] warning:" in log and "last.ckpt differs from its manifest" in log


def test_shipping_errors_while_running_do_not_kill_the_training(
    home, workdir, tmp_path, monkeypatch
):
    import launcher.storage.artifacts as artifacts
    from launcher.errors import StorageError

    real = artifacts.ship_artifacts
    errors = [StorageError("503 Slow Down"), StorageError("connection reset by peer")]
    raised = []

    def flaky(*args, **kwargs):
        if errors:  # S3 hiccups (a file renamed away mid-ship is ship_artifacts' own business)
            raised.append(errors.pop(0))
            raise raised[-1]
        return real(*args, **kwargs)

    monkeypatch.setattr(artifacts, "ship_artifacts", flaky)
    name = prepared(["--steps", "8", "--sleep", "0.1"])
    agent(name, tmp=tmp_path).serve()
    st = records.read_status(storage(), name, "exp-0")
    assert st["state"] == "succeeded" and len(raised) == 2
    assert storage().exists(records.exp_key(name, "exp-0", "artifacts/checkpoints/best.ckpt"))


RACE = """
import os, signal, subprocess, sys
agent = os.getppid()
# a scheduler signalling the whole job: the script is ended first, its agent a moment later
helper = subprocess.Popen([sys.executable, "-c", "import os, signal, sys, time; print('ready', "
                           "flush=True); time.sleep(0.3); os.kill(int(sys.argv[1]), "
                           "signal.SIGTERM)", str(agent)], stdout=subprocess.PIPE)
helper.stdout.readline()
os.kill(os.getpid(), signal.SIGTERM)
"""


def test_a_job_wide_sigterm_reaching_the_script_first_hands_back_not_fails(home, workdir, tmp_path):
    (workdir / "race.py").write_text(RACE)
    name = prepared([], script="race.py")
    out = subprocess.run(
        [sys.executable, "-m", "launcher.node.agent", "--root", storage().root_url, "--run", name,
         "--node", "node-0", "--work-dir", str(tmp_path / "w")],
        capture_output=True, text=True, timeout=60,
        env=dict(os.environ, LAUNCH_SIGTERM_RACE_S="10"),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    status = records.read_status(storage(), name, "exp-0")
    assert status["state"] == "queued" and status["interruptions"] == 1, status  # no retry spent
