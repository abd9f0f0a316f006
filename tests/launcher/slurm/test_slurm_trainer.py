"""The real trainer through `--backend slurm --max-nodes 2`: a 2x2 sweep on the 2-node cluster,
never more than 2 tasks running (squeue sampled), then artifacts pull and predict."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from launcher.cli.app import cli

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[3]
TINY = ["--backbone", "demo_cnn", "--crop_size", "32", "--num_frames", "8", "--sampling_rate",
        "4", "--batch_size", "3", "--num_workers", "0", "--no_hflip", "--clips_per_video", "1",
        "--max_epochs", "1"]  # fmt: skip


def launch(*args: str) -> str:
    r = CliRunner().invoke(cli, list(args))
    assert r.exit_code == 0, f"launch {' '.join(args)}:\n{r.output}"
    return r.stdout


def test_a_2x2_trainer_sweep_within_max_nodes_then_pull_and_predict(
    slurm_home, tmp_path, monkeypatch
):
    from trainer.sample_data import make_motion_dataset

    project = tmp_path / "project"
    shutil.copytree(REPO / "trainer", project / "trainer",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    monkeypatch.chdir(project)
    classes = ("left", "right", "up")
    data = make_motion_dataset(tmp_path / "motion", videos_per_class=3, num_frames=16,
                               size=(32, 32), classes=classes)  # fmt: skip
    launch("datastore", "create", "--name", "motion", "--source", str(data), "--backend", "slurm")
    name = launch("run", "--backend", "slurm", "--max-nodes", "2", "--name", "sweep",
                  "--datastore", "motion", "trainer/train.py", *TINY, "--lr", "[0.01, 0.001]",
                  "--seed", "[1, 2]").strip().splitlines()[-1]  # fmt: skip
    running, done = [], threading.Event()

    def sample():  # what squeue says runs, every half second until the run ends
        while not done.wait(0.5):
            out = subprocess.run(["squeue", "-h", f"--name={name}", "-t", "R", "-o", "%i"],
                                 capture_output=True, text=True).stdout  # fmt: skip
            running.append(len(out.split()))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        from launcher import runs

        row, views = runs.wait_run(name, timeout=900)
    finally:
        done.set()
        sampler.join()
    assert row.status == "succeeded" and len(views) == 4, [v.message for v in views]
    assert running and max(running) <= 2 and max(running) >= 1
    launch("artifacts", "pull", name)
    for v in views:
        assert (project / "launch_artifacts" / name / v.id / "checkpoints" / "best.ckpt").is_file()
    video = next((data / "val" / "left").glob("*.mp4"))
    out = subprocess.run([sys.executable, "-m", "launcher", "predict", name, str(video), "--json"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    predicted = json.loads(out)
    (label,) = predicted["predictions"].values()
    assert (label if isinstance(label, str) else label[0]) in classes, predicted
