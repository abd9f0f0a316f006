"""The slurm tests' cluster: started once per session (tests/launcher/slurm/cluster.py), skipped
with the command that installs it where Slurm is absent."""

from __future__ import annotations

import os

import pytest

from tests.launcher.slurm.cluster import Cluster, missing


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real 2-node cluster (n1, n2) on this machine; SLURM_CONF points the clients at it."""
    why = missing()
    if why:
        pytest.skip(why)
    cluster = Cluster(tmp_path_factory.mktemp("slurm-cluster"))
    before = os.environ.get("SLURM_CONF")
    try:
        cluster.start()
        os.environ["SLURM_CONF"] = str(cluster.conf)
        yield cluster
    finally:
        cluster.stop()
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before


@pytest.fixture
def slurm_home(slurm_cluster, tmp_path, monkeypatch):
    """A LAUNCH_HOME whose slurm runs go to that cluster, with short beats; the cluster."""
    home = tmp_path / "launch-home"
    monkeypatch.setenv("LAUNCH_HOME", str(home))
    monkeypatch.setenv("LAUNCH_HEARTBEAT_S", "0.5")
    monkeypatch.setenv("LAUNCH_ARTIFACT_SYNC_S", "0.5")
    monkeypatch.setenv("LAUNCH_STOP_GRACE_S", "3")
    monkeypatch.delenv("LAUNCH_SLURM_ROOT", raising=False)
    yield slurm_cluster
    slurm_cluster.cancel_all()
