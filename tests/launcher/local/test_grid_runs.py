"""Grid's command lines run to the end on the local backend (the dry runs are in
tests/launcher/test_grid.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from localjob import JOB, read_records

from launcher.cli.app import cli


def launch(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def run_json(name: str) -> dict:
    return json.loads((Path(os.environ["LAUNCH_HOME"]) / f"store/runs/{name}/run.json").read_text())


def tutorial(mount_dir: Path, *extra: str) -> list[str]:
    """The seed tutorial's Grid run, verbatim but for a writable mount dir and a 2-point sweep."""
    return ["--grid_name", "transformers-run", "--grid_strategy", "grid_search",
            "--grid_disk_size", "200", "--grid_max_nodes", "10",
            "--grid_datastore_mount_dir", str(mount_dir), "--grid_instance_type", "p3.2xlarge",
            "--grid_credential", "cc-b87v8", "--grid_framework", "lightning", "--grid_gpus", "1",
            *extra, "train.py", "--gpus", "1", "--max_epochs", "[5, 10]"]  # fmt: skip


@pytest.fixture
def toy(home, workdir, tmp_path):
    """train.py (the fast stand-in trainer) in the working directory and a datastore ``toy``."""
    (workdir / "train.py").write_text(JOB)
    src = tmp_path / "data"
    (src / "train").mkdir(parents=True)
    (src / "train" / "a.txt").write_text("A")
    assert launch("datastore", "create", "--name", "toy", "--source", str(src)).exit_code == 0
    return tmp_path / "record.jsonl"


def test_the_tutorials_grid_run_sweeps_to_success(toy, tmp_path):
    args = tutorial(tmp_path / "mnt" / "datastore", "--grid_datastore_name", "toy", "--wait")
    r = launch("run", *args, "--record", str(toy))
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0] == "transformers-run"
    assert "run transformers-run succeeded" in r.stderr
    starts = [x for x in read_records(toy) if x["event"] == "start"]
    assert sorted(x["argv"][3] for x in starts) == ["10", "5"]
    for x in starts:
        assert (Path(x["env"]["LAUNCH_DATASTORE_DIR"]) / "train" / "a.txt").read_text() == "A"
    run = run_json("transformers-run")
    assert run["spec"]["instance_type"] == "p3.2xlarge" and run["spec"]["max_nodes"] == 10


def test_the_datastore_appears_at_the_grid_mount_dir(toy, tmp_path):
    mount = tmp_path / "mnt" / "datastore"
    r = launch("run", *tutorial(mount, "--grid_datastore_name", "toy", "--wait"), "--record",
               str(toy))  # fmt: skip
    assert r.exit_code == 0, r.output
    assert (mount / "train" / "a.txt").read_text() == "A"


def tiny_wheel(folder: Path) -> Path:
    """A wheel of a one-module package, made by hand: pip installs it with no index."""
    import zipfile

    wheel = folder / "tinydep-1.0-py3-none-any.whl"
    meta = "tinydep-1.0.dist-info"
    files = {"tinydep.py": "ANSWER = 42\n",
             f"{meta}/METADATA": "Metadata-Version: 2.1\nName: tinydep\nVersion: 1.0\n",
             f"{meta}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n"}  # fmt: skip
    files[f"{meta}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{meta}/RECORD"])
    with zipfile.ZipFile(wheel, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return wheel


def test_description_kept_and_dependency_file_installed_on_the_node(toy, workdir, home):
    tiny_wheel(workdir)
    (workdir / "requirements.txt").write_text("./tinydep-1.0-py3-none-any.whl\n")
    (workdir / "uses_dep.py").write_text("import tinydep\nprint('answer', tinydep.ANSWER)\n")
    r = launch("run", "--instance", "t3.medium", "--gpus", "0", "--name", "described",
               "--description", "baseline on toy", "--dependency_file", "requirements.txt",
               "--wait", "uses_dep.py")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "note: --dependency_file requirements.txt: checked; each node pip-installs" in r.stderr
    run = run_json("described")
    assert run["spec"]["description"] == "baseline on toy"
    assert run["spec"]["dependency_file"] == "requirements.txt"
    assert "answer 42" in launch("logs", "described").stdout
    assert "baseline on toy" in launch("status", "described").stdout


def test_auto_resume_retries_a_failed_experiment(toy):
    r = launch("run", "--instance", "t3.medium", "--gpus", "0", "--auto_resume", "--wait",
               "train.py", "--fail-first", "--record", str(toy))  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "note: --auto_resume:" in r.stderr
    attempts = [x["attempt"] for x in read_records(toy) if x["event"] == "start"]
    assert attempts == [1, 2]


@pytest.mark.parametrize("where", ["under-a-file", "non-empty"])
def test_a_mount_dir_that_cannot_be_made_is_a_one_line_error_at_launch(toy, tmp_path, where):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    mount = tmp_path / "a-file" / "datastore" if where == "under-a-file" else tmp_path / "full"
    for extra in (["--dry-run"], ["--wait"]):
        r = launch("run", *tutorial(mount, "--grid_datastore_name", "toy", *extra))
        assert r.exit_code == 1
        (error,) = [ln for ln in r.stderr.splitlines() if not ln.startswith(("note:", "warning:"))]
        assert error.startswith(f"error: datastore_mount_dir {mount} ")
        assert "pick" in error
    assert launch("status").stdout.strip() == ""  # nothing was launched
