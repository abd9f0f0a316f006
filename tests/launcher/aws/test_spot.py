"""Spot interruption: the IMDSv2 notice, and an experiment that moves to another node and
resumes from its checkpoint."""

from __future__ import annotations

import json
import time

import boto3
import pytest

from launcher import runs
from launcher.backends.aws import AwsBackend
from launcher.backends.aws.interruption import ImdsInterruption
from launcher.storage import records
from tests.launcher.aws.helpers import FakeImds, calls_log, make_project, prepare, start_instance
from tests.launcher.waiting import wait_for

pytestmark = pytest.mark.aws


@pytest.fixture
def imds():
    fake = FakeImds()
    yield fake
    fake.close()


def test_notice_needs_a_token_and_latches(imds):
    watcher = ImdsInterruption(imds.endpoint)
    assert watcher.pending() is False
    assert watcher.pending() is False
    assert len(imds.tokens) == 1 and imds.reads == 2  # one token, reused
    imds.interrupt()
    assert watcher.pending() is True
    imds.notice = None  # a notice is final: the node goes regardless
    assert watcher.pending() is True
    assert watcher.notice["action"] == "terminate"


def test_revoked_token_is_renewed(imds):
    watcher = ImdsInterruption(imds.endpoint)
    assert watcher.pending() is False
    imds.tokens.clear()
    imds.interrupt()
    assert watcher.pending() is True
    assert len(imds.tokens) == 1


def test_endpoint_from_botocore_setting_and_unreachable_is_no_notice(monkeypatch):
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9/")
    watcher = ImdsInterruption(timeout=0.5)
    assert watcher.endpoint == "http://127.0.0.1:9"
    started = time.monotonic()
    assert watcher.pending() is False
    assert time.monotonic() - started < 2


def test_interrupted_spot_node_is_replaced_and_the_experiment_resumes(aws, tmp_path, imds):
    backend = AwsBackend(profile_wait_s=0)
    run = prepare(backend, make_project(tmp_path / "p"), "spotty",
                  ["--steps", "40", "--sleep", "0.1"], spot=True, max_nodes=1)  # fmt: skip
    storage = backend.storage()
    (first,) = backend.nodes(run)
    assert first.spot and first.node_id == "node-0"

    node0 = start_instance(first.extra["instance_id"], tmp_path / "node-0",
                           {"AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.endpoint})  # fmt: skip

    def checkpoint_shipped():
        key = records.exp_key(run, "exp-0", "artifacts", "checkpoints", "last.ckpt")
        return storage.exists(key) and json.loads(storage.read_bytes(key))["step"] >= 3

    wait_for(checkpoint_shipped, timeout=60, interval=0.3)
    imds.interrupt()
    out, _ = node0.communicate(timeout=60)
    assert node0.returncode == 0, out
    status = records.read_status(storage, run, "exp-0")
    assert (status["state"], status["attempt"], status["node"]) == ("queued", 1, "node-0"), status
    # the node powered itself off, which terminated it
    assert "shutdown -h now" in calls_log(tmp_path / "node-0").read_text()
    ec2 = boto3.client("ec2")
    desc = ec2.describe_instances(InstanceIds=[first.extra["instance_id"]])
    assert desc["Reservations"][0]["Instances"][0]["State"]["Name"] in (
        "shutting-down",
        "terminated",
    )

    # `launch status` sees the experiment left with no live node: one replacement, spot again
    assert runs.run_detail(run)[0].message == "restarted 1 agent(s)"
    live = [n for n in backend.nodes(run) if n.live]
    assert [n.node_id for n in live] == ["node-1"] and live[0].spot
    runs.run_detail(run)
    assert len(backend.nodes(run)) == 2  # asking again launches nothing more

    out = start_instance(live[0].extra["instance_id"], tmp_path / "node-1",
                         {"AWS_EC2_METADATA_SERVICE_ENDPOINT": FakeImds().endpoint})  # fmt: skip
    text, _ = out.communicate(timeout=90)
    assert out.returncode == 0, text
    status = records.read_status(storage, run, "exp-0")
    assert (status["state"], status["attempt"], status["node"]) == ("succeeded", 2, "node-1")
    starts = storage.read_text(records.exp_key(run, "exp-0", "artifacts", "starts.txt")).split()
    assert starts[0] == "0" and len(starts) == 2 and int(starts[1]) >= 3  # resumed, not step 0
    final = json.loads(
        storage.read_bytes(records.exp_key(run, "exp-0", "artifacts/checkpoints/best.ckpt"))
    )
    assert final["step"] == 40
    # finished: no replacement, and nothing left running
    assert all(n.state == "terminated" for n in backend.nodes(run))
