"""Fixtures for the local backend's tests: a private LAUNCH_HOME with fast timings, a working
directory holding a small job script, and cleanup of every agent a test started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from localjob import JOB


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private LAUNCH_HOME with heartbeats, staleness and grace periods in tenths of seconds;
    every agent started under it is killed (with its scripts) at teardown."""
    h = tmp_path / "launch-home"
    monkeypatch.setenv("LAUNCH_HOME", str(h))
    monkeypatch.setenv("LAUNCH_HEARTBEAT_S", "0.2")
    monkeypatch.setenv("LAUNCH_STALE_S", "3")
    monkeypatch.setenv("LAUNCH_ARTIFACT_SYNC_S", "0.2")
    monkeypatch.setenv("LAUNCH_STOP_GRACE_S", "2")
    yield h
    for record in h.glob("nodes/*/*.json"):
        try:
            pid = json.loads(record.read_text())["pid"]
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, ValueError, KeyError):
            pass


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A project folder with job.py (the fake trainer) as the current directory."""
    w = tmp_path / "project"
    w.mkdir()
    (w / "job.py").write_text(JOB)
    monkeypatch.chdir(w)
    return w


@pytest.fixture
def motion(home, tmp_path, monkeypatch) -> Path:
    """Sample videos (trainer.sample_data's motion kind) in a datastore ``motion``, with the
    repo's folder (where trainer/ is) as the current directory; the videos' folder."""
    from click.testing import CliRunner

    import launcher
    from launcher.cli.app import cli

    monkeypatch.chdir(Path(launcher.__file__).resolve().parent.parent)
    data = tmp_path / "data"
    make = ["-m", "trainer.sample_data", "--out", str(data), "--kind", "motion"]
    subprocess.run([sys.executable, *make, "--videos-per-class", "4"], check=True)
    created = CliRunner().invoke(cli, ["datastore", "create", "--name", "motion", "--source",
                                       str(data)])  # fmt: skip
    assert created.exit_code == 0, created.output
    return data
