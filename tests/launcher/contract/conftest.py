"""The backend contract suite's fixture: one harness per backend, the same tests for all.

A harness gives the tests a backend, a project holding the stand-in job, and the few things a
test must do *as the machine* rather than through the launcher: let nodes run (the local
backend's agents are real processes already; an EC2 instance in moto is played by running its
real user-data), and kill a node the hard way. A new backend joins the suite by adding one
harness class here and its name to ``HARNESSES``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.launcher.contract.gangjob import GANG_JOB
from tests.launcher.local.localjob import JOB

# A script that ignores SIGTERM: only SIGKILL ends it.
STUBBORN = """
import os, signal, time
from pathlib import Path
signal.signal(signal.SIGTERM, signal.SIG_IGN)
art = Path(os.environ["LAUNCH_ARTIFACTS_DIR"])
(art / "note.txt").write_text("ignoring SIGTERM")
print("ignoring SIGTERM", flush=True)
while True:
    time.sleep(0.1)
"""


class Harness:
    name = ""

    def __init__(self, tmp_path: Path, monkeypatch):
        self.tmp = tmp_path
        self.project = tmp_path / "project"
        self.project.mkdir()
        (self.project / "job.py").write_text(JOB)
        (self.project / "stubborn.py").write_text(STUBBORN)
        (self.project / "gangjob.py").write_text(GANG_JOB)
        monkeypatch.chdir(self.project)
        monkeypatch.setenv("LAUNCH_HEARTBEAT_S", "0.3")
        monkeypatch.setenv("LAUNCH_ARTIFACT_SYNC_S", "0.3")
        monkeypatch.setenv("LAUNCH_STOP_GRACE_S", "2")

    def backend(self):
        raise NotImplementedError

    def spec(self, **fields):
        from launcher.spec.jobspec import JobSpec

        fields.setdefault("script", "job.py")
        return JobSpec.load(None, workdir=self.project, backend=self.name, **fields)

    def launch(self, **fields) -> str:
        from launcher.runs import prepare_run

        name = prepare_run(self.spec(**fields), self.backend(), workdir=self.project)
        self.play(name)
        return name

    def play(self, run: str) -> None:
        """Make every node the backend started for ``run`` actually run (idempotent)."""

    def kill(self, run: str, node_id: str) -> None:
        """The node dies without a word: no cleanup, no last heartbeat."""
        raise NotImplementedError

    def live_nodes(self, run: str) -> list[str]:
        return sorted(n.node_id for n in self.backend().nodes(run) if n.live)

    def close(self) -> None:
        pass


class LocalHarness(Harness):
    name = "local"

    def __init__(self, tmp_path, monkeypatch):
        super().__init__(tmp_path, monkeypatch)
        self.home = tmp_path / "launch-home"
        monkeypatch.setenv("LAUNCH_HOME", str(self.home))
        monkeypatch.setenv("LAUNCH_STALE_S", "3")

    def backend(self):
        from launcher.backends.local import LocalBackend

        return LocalBackend()

    def spec(self, **fields):
        fields.setdefault("instance_type", "t3.medium")
        fields.setdefault("gpus", 0)
        return super().spec(**fields)

    def kill(self, run, node_id):
        from launcher.processes import process_alive
        from tests.launcher.waiting import wait_for

        (node,) = [n for n in self.backend().nodes(run) if n.node_id == node_id]
        os.killpg(node.extra["pid"], signal.SIGKILL)  # the agent and its script
        wait_for(lambda: not process_alive(node.extra["pid"]), timeout=10, what="the kill")

    def close(self):
        for record in self.home.glob("nodes/*/*.json"):
            with contextlib.suppress(ProcessLookupError, PermissionError, ValueError, KeyError):
                os.killpg(json.loads(record.read_text())["pid"], signal.SIGKILL)


class AwsHarness(Harness):
    name = "aws"

    def __init__(self, tmp_path, monkeypatch):
        super().__init__(tmp_path, monkeypatch)
        self.played: dict[str, subprocess.Popen] = {}  # instance id -> the process playing it

    def backend(self):
        from launcher.backends.aws import AwsBackend

        return AwsBackend(profile_wait_s=0)

    def spec(self, **fields):
        fields.setdefault("instance_type", "g4dn.xlarge")
        return super().spec(**fields)

    def play(self, run):
        from tests.launcher.aws.helpers import start_instance

        for n in self.backend().nodes(run):
            iid = n.extra["instance_id"]
            if n.live and iid not in self.played:
                env = {"LAUNCH_HEARTBEAT_S": "0.3", "LAUNCH_ARTIFACT_SYNC_S": "0.3",
                       "LAUNCH_STOP_GRACE_S": "2"}  # fmt: skip
                self.played[iid] = start_instance(iid, self.tmp / "nodes" / iid, env)

    def kill(self, run, node_id):
        import boto3

        (node,) = [n for n in self.backend().nodes(run) if n.node_id == node_id]
        iid = node.extra["instance_id"]
        proc = self.played.pop(iid)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        boto3.client("ec2").terminate_instances(InstanceIds=[iid])

    def close(self):
        for proc in self.played.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class SlurmHarness(LocalHarness):
    """The real test cluster (tests/launcher/slurm): Slurm runs the array tasks itself; a kill
    is SIGKILL to a task's agent (its script dies with it), so the task ends FAILED."""

    name = "slurm"

    def backend(self):
        from launcher.backends.slurm import SlurmBackend

        return SlurmBackend()

    def spec(self, **fields):
        return Harness.spec(self, **fields)

    def kill(self, run, node_id):
        from launcher.processes import process_alive
        from tests.launcher.waiting import wait_for

        record = self.backend().storage().read_json(f"runs/{run}/nodes/{node_id}.json")
        os.kill(record["pid"], signal.SIGKILL)
        wait_for(lambda: not process_alive(record["pid"]), timeout=10, what="the kill")
        wait_for(lambda: node_id not in self.live_nodes(run), timeout=30, what="its task to end")

    def close(self):
        pass  # the slurm_home fixture cancels every job


HARNESSES = {"local": LocalHarness, "aws": AwsHarness, "slurm": SlurmHarness}


@pytest.fixture(params=["local", pytest.param("aws", marks=pytest.mark.aws),
                        pytest.param("slurm", marks=pytest.mark.slurm)])  # fmt: skip
def harness(request, tmp_path, monkeypatch):
    if request.param == "aws":
        request.getfixturevalue("aws")  # the moto server and a LAUNCH_HOME configured for it
    if request.param == "slurm":
        request.getfixturevalue("slurm_home")  # the test cluster; LAUNCH_HOME comes next
    h = HARNESSES[request.param](tmp_path, monkeypatch)
    yield h
    h.close()


from tests.launcher.aws.conftest import aws, moto_endpoint  # noqa: E402, F401 - AWS fixtures
from tests.launcher.slurm.conftest import slurm_cluster, slurm_home  # noqa: E402, F401
