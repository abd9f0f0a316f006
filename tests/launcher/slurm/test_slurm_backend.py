"""The slurm backend on a real 2-node cluster: Slurm's own requeue and time limit resume the
experiment from last.ckpt (attempt 2, no retry spent), stop leaves nothing queued, an outside
scancel shows as cancelled, and bad input is one line naming what Slurm said."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap

import pytest
from click.testing import CliRunner

from launcher import runs
from launcher.cli.app import cli
from launcher.runs.logs import read_log
from launcher.storage import records
from tests.launcher.local.localjob import JOB, read_records
from tests.launcher.waiting import wait_for

pytestmark = pytest.mark.slurm
TIMEOUT = 180

# attempt 1 checkpoints and runs until SIGTERM; a resumed attempt finds the checkpoint and ends
UNTIL_SIGNALLED = textwrap.dedent("""
    import json, os, signal, sys, time
    from pathlib import Path
    ckpt = Path(os.environ["LAUNCH_ARTIFACTS_DIR"]) / "checkpoints" / "last.ckpt"
    if ckpt.exists():
        print("resumed from", ckpt.read_text(), flush=True)
        sys.exit(0)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_text(json.dumps({"step": 1}))
    def on_term(*_):
        print("SIGTERM: checkpoint saved", flush=True)
        sys.exit(143)
    signal.signal(signal.SIGTERM, on_term)
    print("running until signalled", flush=True)
    while True:
        time.sleep(0.2)
""")


@pytest.fixture
def project(slurm_home, tmp_path, monkeypatch):
    d = tmp_path / "project"
    d.mkdir()
    (d / "job.py").write_text(JOB)
    (d / "until_signalled.py").write_text(UNTIL_SIGNALLED)
    monkeypatch.chdir(d)
    return d


def launch(*args: str):
    return CliRunner().invoke(cli, list(args))


def start(*args: str) -> str:
    r = launch("run", "--backend", "slurm", *args)
    assert r.exit_code == 0, r.output
    return r.stdout.strip().splitlines()[-1]


def slurm(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=True).stdout


def backend():
    from launcher.backends.slurm import SlurmBackend

    return SlurmBackend()


def wait_running(name: str, exp: str = "exp-0") -> dict:
    storage = backend().storage()
    return wait_for(lambda: (st := records.read_status(storage, name, exp))["state"] == "running"
                    and st, timeout=TIMEOUT, what=f"{exp} running")  # fmt: skip


def task_of(status: dict) -> str:
    job, task, _ = status["node"][1:].split("-")
    return f"{job}_{task}"


def test_scontrol_requeue_resumes_from_last_ckpt_at_attempt_2(project, tmp_path):
    record = tmp_path / "record.jsonl"
    name = start("--name", "requeue", "job.py", "--steps", "60", "--sleep", "0.15",
                 "--record", str(record))  # fmt: skip
    storage = backend().storage()
    ckpt = records.exp_key(name, "exp-0", "artifacts", "checkpoints", "last.ckpt")

    def shipped_step() -> int:
        manifest = storage.read_json(records.exp_key(name, "exp-0", "artifacts.json"), default={})
        ok = "checkpoints/last.ckpt" in manifest
        return json.loads(storage.read_text(ckpt))["step"] if ok else 0

    status = wait_running(name)
    wait_for(lambda: shipped_step() >= 5, timeout=TIMEOUT, what="a shipped checkpoint")
    slurm("scontrol", "requeue", task_of(status))
    row, (view,) = runs.wait_run(name, timeout=TIMEOUT)
    assert row.status == "succeeded" and view.attempt == 2, view.message
    final = records.read_status(storage, name, "exp-0")
    assert final.get("interruptions") == 1  # handed back: no retry spent (retries is 0)
    starts = [e["step"] for e in read_records(record) if e["event"] == "start"]
    assert starts[0] == 0 and starts[-1] >= 5  # the second life resumed from last.ckpt
    assert view.node.endswith("-r1")  # the requeued task's second life


def test_time_limit_signal_hands_back_and_the_task_requeues_itself(project):
    # --time=2: Slurm warns the batch shell (USR1) 90 s before, at about 30 s
    assert launch("config", "set", "slurm.sbatch_args", "--", "--time=2").exit_code == 0
    name = start("--name", "timelimit", "until_signalled.py")
    status = wait_running(name)
    row, (view,) = runs.wait_run(name, timeout=TIMEOUT)
    storage = backend().storage()
    assert row.status == "succeeded" and view.attempt == 2
    assert records.read_status(storage, name, "exp-0").get("interruptions") == 1
    log = read_log(storage, name, "exp-0")
    assert "SIGTERM: checkpoint saved" in log and 'resumed from {"step": 1}' in log
    job, task = task_of(status).split("_")
    out = (backend().log_dir(name) / f"{job}_{task}.out").read_text()
    assert "handed back; requeueing" in out


def test_stop_leaves_nothing_in_squeue(project):
    name = start("--name", "stopme", "--max-nodes", "2", "job.py", "--steps", "400",
                 "--sleep", "0.1", "--lr", "[1, 2, 3]")  # fmt: skip
    wait_running(name)
    r = launch("stop", name)
    assert r.exit_code == 0, r.output
    assert slurm("squeue", "-h", f"--name={name}") == ""
    row, views = runs.run_detail(name)
    assert row.status == "stopped" and all(v.state == "stopped" for v in views)


def test_status_after_an_outside_scancel_says_cancelled(project):
    name = start("--name", "scancelled", "--max-nodes", "2", "job.py", "--steps", "400",
                 "--sleep", "0.1", "--lr", "[1, 2, 3]")  # fmt: skip
    status = wait_running(name)
    slurm("scancel", task_of(status).split("_")[0])
    wait_for(lambda: not any(n.live for n in backend().nodes(name)), timeout=TIMEOUT,
             what="the tasks to end")  # fmt: skip
    r = launch("status", name)
    assert r.exit_code == 0, r.output
    assert "cancelled in Slurm" in r.stdout
    row, views = runs.run_detail(name)
    assert row.status == "stopped"
    assert all("cancelled in Slurm" in v.message for v in views)
    before = {n.node_id for n in backend().nodes(name)}
    runs.run_detail(name)
    assert {n.node_id for n in backend().nodes(name)} == before  # nothing resubmitted


def one_line_error(result) -> str:
    assert result.exit_code != 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.mark.parametrize(
    "settings, args, expected",
    [
        ({"slurm.partition": "nope"}, [], "Slurm has no partition 'nope' (sinfo lists: debug)"),
        ({"slurm.account": "other"}, [],
         "Invalid account or account/partition combination"),
        ({}, ["--gpus", "1"], "--gpus 1: partition debug's nodes have at most 0 GPU(s)"),
        ({"slurm.root": "/proc/launch-root"}, [], "cannot be written from this machine"),
        ({}, ["--instance", "g4dn.xlarge"], "--instance does not apply on backend 'slurm'"),
        ({}, ["--spot"], "--spot does not apply on backend 'slurm'"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_naming_what_slurm_said(project, settings, args, expected):
    for key, value in settings.items():
        assert launch("config", "set", key, value).exit_code == 0
    line = one_line_error(launch("run", "--backend", "slurm", *args, "job.py"))
    assert expected in line, line
    assert slurm("squeue", "-h") == ""  # nothing queued


def test_sbatch_missing_is_one_line(project, monkeypatch):
    monkeypatch.setenv("PATH", os.path.dirname(os.sys.executable))
    line = one_line_error(launch("run", "--backend", "slurm", "job.py"))
    assert "sbatch not found on PATH" in line, line
