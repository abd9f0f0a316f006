"""Storage is the truth: a run launched from one machine is seen and handled from another that
has only the same bucket configured (a fresh LAUNCH_HOME, no index), as a teammate's laptop."""

from __future__ import annotations

import os
import shutil

import pytest

from launcher.backends.aws import AwsBackend
from tests.launcher.aws.helpers import launch_cli, make_project, play_instance, prepare

pytestmark = pytest.mark.aws


def test_status_logs_pull_predict_stop_delete_from_a_second_machine(aws, tmp_path, monkeypatch):
    first_home = os.environ["LAUNCH_HOME"]
    backend = AwsBackend(profile_wait_s=0)
    run = prepare(backend, make_project(tmp_path / "p"), "shared", ["--steps", "2"], max_nodes=1)
    (node,) = backend.nodes(run)
    code, out = play_instance(node.extra["instance_id"], tmp_path / "node-0")
    assert code == 0, out

    second = tmp_path / "second-laptop"
    second.mkdir()
    shutil.copy(os.path.join(first_home, "config.yaml"), second / "config.yaml")  # same bucket
    monkeypatch.setenv("LAUNCH_HOME", str(second))
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()

    def launch(*args: str):
        return launch_cli(*args, cwd=cwd)

    listing = launch("status")
    assert listing.returncode == 0, listing.stderr
    assert "shared" in listing.stdout and "succeeded" in listing.stdout
    detail = launch("status", "shared")
    assert "shared: succeeded, 1/1 done" in detail.stdout, detail.stderr
    assert "step 2" in launch("logs", "shared").stdout
    pulled = launch("artifacts", "pull", "shared", "--dest", "out")
    assert pulled.returncode == 0, pulled.stderr
    assert (cwd / "out" / "shared" / "exp-0" / "checkpoints" / "best.ckpt").is_file()
    video = cwd / "clip.mp4"
    video.write_bytes(b"\0")
    predicted = launch("predict", "shared", str(video), "--dest", "pred")
    # the run's best checkpoint is found and pulled here; the stand-in trainer's checkpoint is
    # JSON, so the classifier itself refuses it (test_e2e_aws runs a real one)
    assert "pred/shared/exp-0/checkpoints/best.ckpt" in predicted.stderr
    assert (cwd / "pred" / "shared" / "exp-0" / "checkpoints" / "best.ckpt").is_file()
    assert launch("stop", "shared").returncode == 0
    deleted = launch("delete", "shared", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert not backend.storage().exists(f"runs/{run}/run.json")
    monkeypatch.setenv("LAUNCH_HOME", first_home)
    gone = launch("status", "shared")
    assert gone.returncode == 1 and "not found" in gone.stderr
