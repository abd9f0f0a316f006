"""The `launch` command end to end on the local backend (click's CliRunner, plus subprocesses
where the import footprint is the point)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner
from localjob import read_records

from launcher.cli.app import cli
from launcher.runs.index import RunIndex


def launch(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


CPU = ["--instance", "t3.medium", "--gpus", "0"]


def test_run_wait_status_logs_artifacts_delete(home, workdir, tmp_path):
    r = launch("run", *CPU, "--name", "demo", "--wait", "job.py", "--steps", "2")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0] == "demo"
    assert "succeeded" in r.stdout

    r = launch("status")
    assert r.exit_code == 0
    header, line = r.stdout.splitlines()
    assert header.split() == ["NAME", "BACKEND", "INSTANCE", "STATUS", "DONE", "AGE", "COST"]
    assert line.split()[:5] == ["demo", "local", "t3.medium", "succeeded", "1/1"]

    r = launch("status", "demo")
    assert "demo: succeeded, 1/1 done" in r.stdout
    row = [ln for ln in r.stdout.splitlines() if ln.startswith("exp-0")][0].split()
    assert row[:5] == ["exp-0", "-", "succeeded", "0", "1"] and row[5] == "val_acc1=0.5"

    data = json.loads(launch("status", "demo", "--json").stdout)
    assert data["run"]["status"] == "succeeded" and data["experiments"][0]["exit_code"] == 0
    assert json.loads(launch("status", "--json").stdout)[0]["name"] == "demo"

    for target in ("demo", "demo/exp-0"):
        r = launch("logs", target)
        assert r.exit_code == 0 and "step 2" in r.stdout
    assert "step 2" in launch("logs", "demo", "-f").stdout  # finished: prints and returns

    r = launch("artifacts", "list", "demo")
    assert "checkpoints/last.ckpt" in r.stdout and "metrics.csv" in r.stdout
    dest = tmp_path / "pulled"
    r = launch("artifacts", "pull", "demo", "--dest", str(dest))
    assert r.exit_code == 0
    assert json.loads((dest / "demo" / "exp-0" / "checkpoints" / "last.ckpt").read_text()) == {
        "step": 2
    }

    r = launch("metrics", "demo")
    assert r.exit_code == 0 and "exp-0" in r.stdout and "BEST VAL_ACC1" in r.stdout

    r = launch("delete", "demo", input="n\n")
    assert r.exit_code == 1 and RunIndex().get("demo") is not None  # aborted
    r = launch("delete", "demo", "--yes")
    assert r.exit_code == 0 and RunIndex().get("demo") is None


def test_sweep_with_grid_spellings_and_follow(home, workdir):
    grid_flags = ["--instance_type", "t3.medium", "--gpus", "0", "--max_nodes", "2",
                  "--disk_size", "50"]  # fmt: skip
    r = launch("run", *grid_flags, "--follow", "job.py", "--lr", "[0.1, 0.2]", "--steps", "1")
    assert r.exit_code == 0, r.output
    assert "[exp-0] start_step=0 attempt=1 lr=0.1" in r.stdout
    assert "[exp-1] start_step=0 attempt=1 lr=0.2" in r.stdout


def test_script_args_reach_the_script_byte_for_byte(home, workdir, tmp_path):
    record = tmp_path / "record.jsonl"
    nasty = ["; rm -rf / #", "$(id)", "`id`", "'single' \"double\"", "line1\nline2", "*",
             "--flag=$HOME", "", "-x", "a|b&c>d", "\\back\\slash", "ünï©ødé"]  # fmt: skip
    r = launch("run", *CPU, "--wait", "job.py", "--steps", "1", "--record", str(record), *nasty)
    assert r.exit_code == 0, r.output
    (start,) = [rec for rec in read_records(record) if rec["event"] == "start"]
    assert start["argv"] == ["--steps", "1", "--record", str(record), *nasty]


def test_spec_file_env_and_flag_overrides(home, workdir, tmp_path):
    record = tmp_path / "record.jsonl"
    (workdir / "job.yaml").write_text(textwrap.dedent(f"""\
        script: job.py
        script_args: ["--steps", "1", "--record", "{record}"]
        instance_type: t3.medium
        gpus: 0
        name: from-spec
        env: {{MY_A: from-spec}}
    """))  # fmt: skip
    r = launch("run", "--spec", "job.yaml", "--name", "override", "--env", "MY_B=x=y", "--wait")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0] == "override"
    env = read_records(record)[0]["env"]
    assert env["MY_A"] == "from-spec" and env["MY_B"] == "x=y"


def test_dry_run_shows_the_plan_and_writes_nothing(home, workdir):
    r = launch("run", "--dry-run", "--instance", "g4dn.xlarge", "--max-nodes", "2",
               "job.py", "--lr", "[0.1, 0.01]", "--bs", "[8, 16]")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "4 experiment(s) of job.py on local" in r.stdout
    assert "exp-3" in r.stdout and "--lr 0.01 --bs 16" in r.stdout
    assert (
        "2 x g4dn.xlarge, 1 GPU(s)" in r.stdout
        and "cost estimate on AWS: $1.052/hour on-demand for 2 x g4dn.xlarge" in r.stdout
    )
    assert not (home / "store").exists() and not (home / "runs.sqlite3").exists()


def test_failed_run_with_wait_exits_non_zero(home, workdir):
    r = launch("run", *CPU, "--wait", "job.py", "--exit", "4", "--steps", "1")
    assert r.exit_code == 1
    assert "failed" in r.stdout and "exited with code 4" in r.stdout


def test_stop_a_running_experiment(home, workdir):
    from tests.launcher.waiting import wait_for

    r = launch("run", *CPU, "--name", "long", "job.py", "--steps", "1000", "--sleep", "0.05")
    assert r.exit_code == 0
    wait_for(lambda: "step 1" in launch("logs", "long").stdout, what="the script to run")
    r = launch("stop", "long")
    assert r.exit_code == 0 and "long: stopped" in r.stdout
    r = launch("stop", "long")  # again: nothing left to stop, and no wait for agents
    assert r.exit_code == 0 and r.stdout == "long already stopped; nothing to stop\n"
    row = [ln for ln in launch("status", "long").stdout.splitlines() if ln.startswith("exp-0")]
    assert row[0].split()[2:4] == ["stopped", "SIGTERM"]  # the signal, not -15


def test_datastore_commands_and_a_run_that_mounts_one(home, workdir, tmp_path):
    src = tmp_path / "data"
    (src / "train").mkdir(parents=True)
    (src / "train" / "a.txt").write_text("A")
    (src / "b.txt").write_text("BB")
    r = launch("datastore", "create", "--name", "toy", "--source", str(src))
    assert r.exit_code == 0 and r.stdout == "toy:1\n"  # the progress bar is on stderr
    r = launch("datastore", "list")
    assert r.stdout.splitlines()[1].split()[:3] == ["toy", "1", "2"]

    record = tmp_path / "record.jsonl"
    r = launch("run", *CPU, "--datastore", "toy", "--wait", "job.py", "--steps", "1",
               "--record", str(record))  # fmt: skip
    assert r.exit_code == 0, r.output
    data_dir = read_records(record)[0]["env"]["LAUNCH_DATASTORE_DIR"]
    with open(os.path.join(data_dir, "train", "a.txt")) as f:
        assert f.read() == "A"

    r = launch("datastore", "delete", "toy:1", "--yes")
    assert r.exit_code == 0
    assert launch("datastore", "list").stdout.count("toy") == 0


def test_predict_uses_the_best_experiments_checkpoint(home, workdir, tmp_path):
    # a stand-in trainer.predict in the working directory shadows the real one (no torch here)
    (workdir / "trainer").mkdir()
    (workdir / "trainer" / "__init__.py").write_text("")
    (workdir / "trainer" / "predict.py").write_text(
        "import json, sys\nprint('PREDICT', json.dumps(sys.argv[1:]))\n"
    )
    r = launch("run", *CPU, "--name", "pred", "--wait", "job.py", "--steps", "[1, 3]")
    assert r.exit_code == 0, r.output
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not really a video")
    out = subprocess.run(
        [sys.executable, "-m", "launcher", "predict", "pred", str(video), "--top-k", "2"],
        capture_output=True, text=True, timeout=60, cwd=workdir,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("PREDICT")][0]
    args = json.loads(line.split(" ", 1)[1])
    # exp-1 ran 3 steps: the higher val_acc1, so its best.ckpt, pulled locally
    assert args == ["launch_artifacts/pred/exp-1/checkpoints/best.ckpt", str(video), "--top_k", "2"]
    assert (workdir / args[0]).is_file()


def test_instances_and_config(home):
    r = launch("instances", "--gpus", "4")
    names = [ln.split()[0] for ln in r.stdout.splitlines()[1:]]
    assert "g4dn.12xlarge" in names and "g4dn.xlarge" not in names
    r = launch("config", "set", "aws.bucket", "my-bucket")
    assert r.exit_code == 0 and r.stdout == "aws.bucket = my-bucket\n"
    assert launch("config", "get", "aws.bucket").stdout == "my-bucket\n"
    listing = launch("config", "list").stdout.splitlines()
    assert "aws.bucket = my-bucket" in listing
    assert any(ln.startswith("aws.region (unset): ") for ln in listing)  # what can be set
    assert launch("config", "unset", "aws.bucket").stdout == "aws.bucket unset\n"
    assert launch("config", "get", "aws.bucket").exit_code == 1


def test_config_defaults_backend_applies_to_run_unless_a_flag_or_spec_says(home, workdir):
    monkey_env = {"LAUNCH_AWS_BUCKET": ""}  # no bucket anywhere: choosing aws is an error
    assert launch("config", "set", "defaults.backend", "aws").exit_code == 0
    r = CliRunner(env=monkey_env).invoke(cli, ["run", "--dry-run", *CPU, "job.py"])
    assert r.exit_code == 1 and "bucket" in r.stderr
    r = launch("run", "--dry-run", "--backend", "local", *CPU, "job.py")
    assert r.exit_code == 0 and "of job.py on local" in r.stdout
    (workdir / "spec.yaml").write_text("backend: local\nscript: job.py\ninstance_type: t3.medium\n")
    r = launch("run", "--dry-run", "--spec", "spec.yaml")
    assert r.exit_code == 0 and "of job.py on local" in r.stdout


def test_artifacts_pull_takes_run_slash_exp_and_list_says_when_empty(home, workdir, tmp_path):
    r = launch("run", *CPU, "--name", "two", "--wait", "job.py", "--steps", "[1, 2]")
    assert r.exit_code == 0, r.output
    r = launch("artifacts", "pull", "two/exp-1", "--dest", str(tmp_path / "d"))
    assert r.exit_code == 0
    assert {p.split("/two/")[1].split("/")[0] for p in r.stdout.split()} == {"exp-1"}
    r = launch("artifacts", "pull", "two/exp-1", "-e", "exp-0")
    assert r.exit_code == 2 and "different experiments" in r.stderr
    # Grid's habits: `artifacts RUN` pulls, --download_dir is --dest
    r = launch("artifacts", "two", "--download_dir", str(tmp_path / "grid"))
    assert r.exit_code == 0, r.output
    assert (tmp_path / "grid" / "two" / "exp-0" / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "grid" / "two" / "exp-1" / "checkpoints" / "last.ckpt").is_file()
    from localjob import NoAgents, make_spec

    from launcher.runs import prepare_run

    prepare_run(make_spec(name="quiet"), NoAgents())  # queued: nothing shipped yet
    r = launch("artifacts", "list", "quiet")
    assert (r.exit_code, r.stdout, r.stderr) == (0, "", "quiet has no artifacts yet\n")


def _imported(args: list[str], env: dict) -> set[str]:
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "launcher", *args],
                         capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return {ln.split("|")[-1].strip() for ln in out.stderr.splitlines() if "|" in ln}


def test_help_and_status_import_no_torch_and_no_boto3(home, workdir):
    assert launch("run", *CPU, "--name", "one", "--wait", "job.py", "--steps", "1").exit_code == 0
    for args in (["--help"], ["status"], ["status", "one"]):
        modules = _imported(args, dict(os.environ))
        heavy = {m for m in modules if m.split(".")[0] in ("torch", "boto3", "botocore", "s3fs")}
        assert not heavy, f"launch {' '.join(args)} imported {sorted(heavy)[:5]}"
        assert "launcher.cli.app" in modules


@pytest.mark.parametrize(
    "module", ["launcher.cli.app", "launcher.runs.state", "launcher.node.agent"]
)
def test_launcher_modules_import_light(module):
    code = (
        f"import sys, {module}; "
        "print(sorted(m for m in sys.modules if m.startswith(('torch', 'boto3'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_logs_follow_streams_until_the_run_ends(home, workdir):
    r = launch("run", *CPU, "--name", "live", "job.py", "--steps", "5", "--sleep", "0.2")
    assert r.exit_code == 0
    r = launch("logs", "live", "--follow")
    assert r.exit_code == 0
    assert r.stdout.index("start_step=0") < r.stdout.index("step 5")
    assert launch("status", "live").stdout.startswith("live: succeeded")


@pytest.mark.slow
def test_real_trainer_killed_mid_run_resumes_from_last_ckpt(motion):
    """trainer/train.py through `launch run`: its agent is SIGKILLed mid-training, `launch
    status` starts a replacement, which restores the shipped last.ckpt and finishes the run."""
    import signal

    from launcher.backends.local import LocalBackend
    from launcher.processes import process_alive
    from launcher.storage.records import read_status
    from tests.launcher.waiting import wait_for

    r = launch("run", *CPU, "--retries", "1", "--name", "real", "--datastore", "motion",
               "trainer/train.py",
               "--backbone", "demo_cnn", "--no-hflip", "--max_epochs", "40", "--batch_size", "4",
               "--num_workers", "0")  # fmt: skip
    assert r.exit_code == 0, r.output
    storage = LocalBackend().storage()

    def epochs_done() -> float:
        return read_status(storage, "real", "exp-0").get("metrics", {}).get("epoch", -1)

    wait_for(lambda: epochs_done() >= 3, timeout=240, interval=0.5, what="three epochs")
    (node,) = LocalBackend().nodes("real")
    os.killpg(node.extra["pid"], signal.SIGKILL)
    wait_for(lambda: not process_alive(node.extra["pid"]), timeout=10, what="the kill")

    r = launch("status", "real")  # reconciles: a replacement agent
    assert "restarted 1 agent(s)" in r.stderr
    r = CliRunner().invoke(cli, ["logs", "real", "-f"])
    assert r.exit_code == 0
    assert "resuming from" in r.stdout and "attempt 2" in r.stdout
    status = launch("status", "real", "--json")
    exp = json.loads(status.stdout)["experiments"][0]
    assert exp["state"] == "succeeded" and exp["attempt"] == 2
    assert exp["metrics"]["epoch"] == 39


def test_status_of_one_run_shows_its_nodes(home, workdir, monkeypatch):
    import time

    from launcher.backends.base import NodeInfo
    from launcher.backends.local import LocalBackend

    assert launch("run", *CPU, "--name", "demo", "--wait", "job.py", "--steps", "1").exit_code == 0
    out = launch("status", "demo").stdout.splitlines()
    header = out.index([ln for ln in out if ln.startswith("NODE")][0])
    assert out[header].split() == ["NODE", "STATE", "INSTANCE", "ZONE", "SPOT", "STARTED"]
    assert out[header + 1].split()[:5] == ["node-0", "terminated", "local", "-", "no"]
    assert out[header + 1].endswith("ago")

    # a cloud backend's node: zone, spot, its cost so far (extra), in the table and in --json
    node = NodeInfo("node-0", "running", "g4dn.xlarge", "us-east-1b", True, time.time() - 600,
                    extra={"instance_id": "i-0abc", "cost": 0.0263})  # fmt: skip
    monkeypatch.setattr(LocalBackend, "nodes", lambda self, run: [node])
    out = launch("status", "demo").stdout.splitlines()
    header = out.index([ln for ln in out if ln.startswith("NODE")][0])
    assert out[header].split()[-1] == "COST"
    assert out[header + 1].split() == ["node-0", "running", "g4dn.xlarge", "us-east-1b", "yes",
                                       "10m", "ago", "$0.03"]  # fmt: skip
    (n,) = json.loads(launch("status", "demo", "--json").stdout)["nodes"]
    assert (n["node_id"], n["zone"], n["spot"], n["extra"]["instance_id"]) == (
        "node-0", "us-east-1b", True, "i-0abc",
    )  # fmt: skip

    def no_nodes_here(self, run):
        raise AssertionError("`launch status` of all runs must not ask for nodes")

    monkeypatch.setattr(LocalBackend, "nodes", no_nodes_here)
    r = launch("status")
    assert r.exit_code == 0 and "demo" in r.stdout


def test_metrics_before_any_are_logged_shows_dashes_and_params(home, workdir):
    from localjob import NoAgents, make_spec

    from launcher.runs import prepare_run
    from launcher.storage.artifacts import ship_artifacts

    name = prepare_run(make_spec(name="lb", script_args=["--lr", "[0.1, 0.01]"]), NoAgents())
    r = launch("metrics", name)
    assert r.exit_code == 0 and "None" not in r.stdout
    rows = [ln.split() for ln in r.stdout.splitlines()[1:]]
    assert rows == [["-", "exp-0", "lr=0.1", "queued", "-", "-"],
                    ["-", "exp-1", "lr=0.01", "queued", "-", "-"]]  # fmt: skip

    art = workdir.parent / "art"
    art.mkdir()
    (art / "metrics.csv").write_text("epoch,step,val_acc1\n0,9,0.25\n1,19,0.5\n")
    ship_artifacts(NoAgents().storage(), name, "exp-1", art)
    r = launch("metrics", name)
    assert r.stdout.splitlines()[0].split() == ["RANK", "EXPERIMENT", "PARAMS", "STATUS", "BEST",
                                                "VAL_ACC1", "EPOCH"]  # fmt: skip
    rows = [ln.split() for ln in r.stdout.splitlines()[1:]]
    assert rows == [["1", "exp-1", "lr=0.01", "queued", "0.5", "1"],
                    ["-", "exp-0", "lr=0.1", "queued", "-", "-"]]  # fmt: skip


def test_metrics_with_plot_reads_each_experiment_once(home, workdir, monkeypatch):
    from collections import Counter

    from localjob import NoAgents, make_spec

    from launcher.runs import prepare_run
    from launcher.storage.artifacts import ship_artifacts
    from launcher.storage.root import Storage

    name = prepare_run(make_spec(name="lb", script_args=["--lr", "[0.1, 0.01]"]), NoAgents())
    art = workdir.parent / "art"
    art.mkdir()
    for exp, acc in (("exp-0", "0.25"), ("exp-1", "0.5")):
        (art / "metrics.csv").write_text(f"epoch,step,val_acc1\n0,9,0.1\n1,19,{acc}\n")
        ship_artifacts(NoAgents().storage(), name, exp, art)
    reads: Counter = Counter()
    real = Storage.read_bytes

    def counted(self, key):
        reads[key] += 1
        return real(self, key)

    monkeypatch.setattr(Storage, "read_bytes", counted)
    png = workdir / "curves.png"
    r = launch("metrics", name, "--plot", str(png))
    assert r.exit_code == 0, r.output
    rows = [ln.split() for ln in r.stdout.splitlines()[1:]]
    assert [row[:2] for row in rows] == [["1", "exp-1"], ["2", "exp-0"]]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    per_exp = {k: n for k, n in reads.items() if "/experiments/" in k}
    assert sorted(per_exp) == [
        f"runs/{name}/experiments/{e}/{f}"
        for e in ("exp-0", "exp-1")
        for f in ("artifacts/metrics.csv", "params.json", "status.json")
    ]
    assert set(per_exp.values()) == {1}


def test_datastore_list_shows_an_incomplete_version(home, tmp_path):
    from launcher.backends.local import LocalBackend

    src = tmp_path / "data"
    src.mkdir()
    (src / "a.txt").write_text("A")
    assert launch("datastore", "create", "--name", "toy", "--source", str(src)).exit_code == 0
    # an interrupted create of version 2: its files are there, its MANIFEST.json is not
    LocalBackend().storage().write_json("datastores/toy/2/UPLOADING.json", {"files": {}})
    rows = [ln.split() for ln in launch("datastore", "list").stdout.splitlines()[1:]]
    assert rows[0][:4] == ["toy", "1", "1", "1"]
    assert rows[1] == ["toy", "2", "incomplete", "-", "-"]


def test_datastore_delete_asks_naming_the_versions_and_checks_first(home, tmp_path):
    src = tmp_path / "data"
    src.mkdir()
    (src / "a.txt").write_text("A")
    for _ in range(2):
        assert launch("datastore", "create", "--name", "toy", "--source", str(src)).exit_code == 0
    r = launch("datastore", "delete", "toy", input="n\n")
    assert r.exit_code == 1 and "delete datastore toy (versions 1, 2)?" in r.stdout
    r = launch("datastore", "delete", "nosuch")  # no question about a thing that is not there
    assert r.exit_code == 1 and "?" not in r.stdout and "nosuch" in r.stderr
    r = launch("datastore", "delete", "toy", input="y\n")
    assert r.exit_code == 0 and r.stdout.splitlines()[-1] == "deleted toy:1, toy:2"


def test_logs_of_an_experiment_without_output_say_so(home, workdir):
    from localjob import NoAgents, make_spec

    from launcher.runs import prepare_run

    prepare_run(make_spec(name="idle"), NoAgents())
    r = launch("logs", "idle")
    assert (r.exit_code, r.stdout, r.stderr) == (0, "", "(no output yet; exp-0 is queued)\n")
