"""Hostile names and arguments: refused with one clear line, or carried as literal data; never
run as code, never written outside the storage prefix."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from launcher.backends.aws import AwsBackend
from launcher.errors import SpecError
from launcher.storage import records
from tests.launcher.aws.conftest import BUCKET
from tests.launcher.aws.helpers import launch_cli, make_project, play_instance

pytestmark = pytest.mark.aws

HOSTILE = [
    "it's",
    '"quoted"',
    "$(touch CANARY)",
    "`touch CANARY`",
    "x; touch CANARY",
    "two\nlines",
    "../escape",
    "a/../../b",
]


def all_keys() -> list[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def no_canary(root: Path) -> bool:
    return not any(p.name == "CANARY" for p in root.rglob("*"))


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_run_names_are_refused(aws, tmp_path, name):
    project = make_project(tmp_path / "p")
    proc = launch_cli("run", "--backend", "aws", "--name", name, "train.py", cwd=project)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "invalid name" in lines[0], proc.stderr
    assert boto3.client("ec2").describe_instances()["Reservations"] == []
    assert all_keys() == [] and no_canary(tmp_path)


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_datastore_names_are_refused(aws, tmp_path, name):
    project = make_project(tmp_path / "p")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f.txt").write_text("x")
    create = launch_cli("datastore", "create", "--backend", "aws", "--name", name, "--source",
                    str(tmp_path / "src"), cwd=project)  # fmt: skip
    use = launch_cli("run", "--backend", "aws", "--datastore", name, "train.py", cwd=project)
    for proc in (create, use):
        assert proc.returncode != 0
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "datastore" in proc.stderr
    assert all_keys() == [] and no_canary(tmp_path)


@pytest.mark.parametrize(
    "setting, value", [("prefix", "../other"), ("prefix", "a/../b"), ("bucket", "b;rm -rf"),
                       ("bucket", "$(x)"), ("ami", "ami-1'; touch CANARY")],
)  # fmt: skip
def test_hostile_settings_are_refused(aws, monkeypatch, setting, value):
    monkeypatch.setenv(f"LAUNCH_AWS_{setting.upper()}", value)
    with pytest.raises(SpecError, match=f"invalid .*{setting}|invalid AMI"):
        AwsBackend()


def test_hostile_script_arguments_arrive_literally(aws, tmp_path):
    """One argument with every hostile piece at once goes through run.json, the user-data's
    agent and the script's argv unchanged, on a real (played) node."""
    note = 'it\'s "q" $(touch CANARY) `touch CANARY`; touch CANARY\n../../etc/passwd $HOME'
    project = make_project(tmp_path / "p")
    proc = launch_cli("run", "--backend", "aws", "--name", "literal", "train.py", "--steps", "1",
                  "--note", note, cwd=project)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    backend = AwsBackend()
    (node,) = backend.nodes("literal")
    code, out = play_instance(node.extra["instance_id"], tmp_path / "node-0")
    assert code == 0, out
    storage = backend.storage()
    assert records.read_status(storage, "literal", "exp-0")["state"] == "succeeded"
    assert storage.read_text(records.exp_key("literal", "exp-0", "artifacts", "note.txt")) == note
    assert no_canary(tmp_path)
    assert all(k.startswith("launch/") for k in all_keys())
