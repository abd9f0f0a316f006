"""The real trainer across two local nodes: `launch run --nodes 2 --wait trainer/train.py`
trains one model with DDP (gloo on CPU, the ranks meeting on 127.0.0.1), with no extra flags:
rank 0's log says world size 2, rank 1's log is kept, one set of artifacts (rank 0's) is
shipped, and `launch predict` works from them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from launcher.backends.local import LocalBackend
from launcher.cli.app import cli
from launcher.runs.logs import read_log
from launcher.storage import records

CPU = ["--instance", "t3.medium", "--gpus", "0"]


def launch(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.mark.slow
def test_real_trainer_on_two_nodes_then_predict(motion, tmp_path):
    data = motion
    r = launch("run", *CPU, "--nodes", "2", "--name", "ddp", "--datastore", "motion", "--wait",
               "trainer/train.py", "--backbone", "demo_cnn", "--no-hflip", "--max_epochs", "2",
               "--batch_size", "2", "--num_workers", "0")  # fmt: skip
    assert r.exit_code == 0, r.output
    storage = LocalBackend().storage()
    rank0, rank1 = (read_log(storage, "ddp", "exp-0", rank) for rank in (0, 1))
    assert "world size 2" in rank0 and "rank 0 of 2" in rank0
    assert "rank 1 of 2" in rank1 and "world size" not in rank1  # rank 0 says it, once
    (exp,) = json.loads(launch("status", "ddp", "--json").stdout)["experiments"]
    assert exp["state"] == "succeeded" and len(set(exp["nodes"])) == 2
    # one set of artifacts: rank 0's, where Lightning writes the checkpoints
    manifest = storage.read_json(records.exp_key("ddp", "exp-0", "artifacts.json"))
    assert "checkpoints/last.ckpt" in manifest and "metrics.csv" in manifest
    dest = tmp_path / "pulled"
    assert launch("artifacts", "pull", "ddp", "--dest", str(dest)).exit_code == 0
    assert (dest / "ddp" / "exp-0" / "checkpoints" / "last.ckpt").is_file()
    video = next((data / "val").rglob("*.mp4"))
    predict = [sys.executable, "-c", "from launcher.cli.app import main; main()", "predict"]
    done = subprocess.run([*predict, "ddp", str(video), "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (label,) = json.loads(done.stdout)["predictions"].values()
    classes = {p.name for p in (data / "train").iterdir()}
    assert (label if isinstance(label, str) else label[0]) in classes


@pytest.mark.slow
def test_real_trainer_rank_1_killed_resumes_both_ranks_from_last_ckpt(motion):
    """kill -9 of rank 1's agent mid-training: rank 0 stops too, the retry (attempt 2) restores
    last.ckpt on both ranks and continues from its epoch, not from 0."""
    import os
    import signal

    from launcher.processes import process_alive
    from launcher.storage.records import read_status
    from tests.launcher.waiting import wait_for

    r = launch("run", *CPU, "--nodes", "2", "--retries", "1", "--name", "ddpkill", "--datastore",
               "motion", "trainer/train.py", "--backbone", "demo_cnn", "--no-hflip",
               "--max_epochs", "30", "--batch_size", "2", "--num_workers", "0")  # fmt: skip
    assert r.exit_code == 0, r.output
    storage = LocalBackend().storage()

    def epochs_done() -> float:
        return read_status(storage, "ddpkill", "exp-0").get("metrics", {}).get("epoch", -1)

    wait_for(lambda: epochs_done() >= 3, timeout=240, interval=0.5, what="three epochs")
    rank1 = read_status(storage, "ddpkill", "exp-0")["nodes"][1]
    (node,) = [n for n in LocalBackend().nodes("ddpkill") if n.node_id == rank1]
    os.killpg(node.extra["pid"], signal.SIGKILL)
    wait_for(lambda: not process_alive(node.extra["pid"]), timeout=10, what="the kill")
    r = CliRunner().invoke(cli, ["logs", "ddpkill/exp-0", "-f"])  # reconciles while following
    assert r.exit_code == 0
    assert "attempt 2" in r.stdout and "resuming from" in r.stdout
    (exp,) = json.loads(launch("status", "ddpkill", "--json").stdout)["experiments"]
    assert exp["state"] == "succeeded" and exp["attempt"] == 2
    assert exp["metrics"]["epoch"] == 29
    assert rank1 not in exp["nodes"]  # attempt 2's rank 1 is the replacement node
    assert "resuming from" in read_log(storage, "ddpkill", "exp-0", 1)  # rank 1 resumed too
