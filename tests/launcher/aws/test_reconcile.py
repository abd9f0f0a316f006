"""Reconcile: instances found by tags against S3; a vanished node's experiment is re-queued and
replaced within the run's budget; cost so far from instance hours."""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime

import boto3
import pytest

from launcher.backends.aws import AwsBackend
from launcher.backends.aws.reconcile import node_info
from launcher.node import claims as cl
from launcher.spec.catalog import get_instance
from launcher.storage import records
from tests.launcher.aws.helpers import make_project, prepare, start_instance
from tests.launcher.waiting import wait_for

pytestmark = pytest.mark.aws


def statuses(storage, run: str) -> dict[str, dict]:
    record = storage.read_json(f"runs/{run}/run.json")
    return {e["id"]: records.read_status(storage, run, e["id"]) for e in record["experiments"]}


def test_cost_so_far_uses_hours_and_the_catalog_price():
    launched = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    inst = {
        "InstanceId": "i-1",
        "InstanceType": "g4dn.xlarge",
        "State": {"Name": "terminated"},
        "LaunchTime": launched,
        "StateTransitionReason": "User initiated (2026-01-01 12:30:00 GMT)",
        "Tags": [{"Key": "launch:node", "Value": "node-3"}],
        "Placement": {"AvailabilityZone": "us-east-1b"},
    }
    info = node_info(inst)
    price = get_instance("g4dn.xlarge").price_hour
    assert (info.node_id, info.state, info.zone, info.spot) == ("node-3", "terminated",
                                                                "us-east-1b", False)  # fmt: skip
    assert info.extra["hours"] == 2.5 and info.extra["cost"] == round(2.5 * price, 4)
    spot = node_info(dict(inst, InstanceLifecycle="spot"))
    assert spot.extra["cost"] == round(2.5 * get_instance("g4dn.xlarge").spot_price_hour, 4)
    running = node_info(dict(inst, State={"Name": "running"}), now=launched.timestamp() + 1800)
    assert running.state == "running" and running.ended_at is None
    assert running.extra["hours"] == 0.5


def test_vanished_node_is_requeued_and_replaced_within_budget(aws, tmp_path):
    backend = AwsBackend(profile_wait_s=0)
    run = prepare(backend, make_project(tmp_path / "p"), "crash",
                  ["--steps", "200", "--sleep", "0.2"], max_nodes=1, retries=1)  # fmt: skip
    storage = backend.storage()
    (node,) = backend.nodes(run)
    proc = start_instance(node.extra["instance_id"], tmp_path / "node-0")

    def running():
        return records.read_status(storage, run, "exp-0")["state"] == "running"

    wait_for(running, timeout=60, interval=0.3)
    # the machine vanishes: no agent cleanup, no power-off script; EC2 says terminated
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    boto3.client("ec2").terminate_instances(InstanceIds=[node.extra["instance_id"]])

    # asking what exists changes nothing (it used to re-queue and launch from here)
    assert [n.state for n in backend.nodes(run)] == ["terminated"]
    assert records.read_status(storage, run, "exp-0")["state"] == "running"
    done = backend.reconcile(run, statuses(storage, run))
    assert done.requeued == ["exp-0"] and [n.node_id for n in done.started] == ["node-1"]
    status = records.read_status(storage, run, "exp-0")
    assert status["state"] == "queued" and "node-0" in status["message"]
    assert node.extra["instance_id"] in status["message"]
    states = {n.node_id: n.state for n in backend.nodes(run)}
    assert len(states) == 2 and states["node-0"] == "terminated"
    assert states["node-1"] in ("pending", "running")
    assert backend.reconcile(run, statuses(storage, run)).started == []  # idempotent
    # the next claim is a new attempt that resumes
    claim = cl.try_claim(storage, run, "exp-0", "node-1")
    assert claim is not None and claim.attempt == 2 and claim.resumed


def test_budget_and_stop_bound_replacements(aws, tmp_path):
    backend = AwsBackend(profile_wait_s=0)
    run = prepare(backend, make_project(tmp_path / "p"), "broken", max_nodes=1)
    ec2 = boto3.client("ec2")
    launched = []
    storage = backend.storage()
    for _ in range(4):  # every node dies at boot (a broken image): each status replaces it
        live = [n for n in backend.nodes(run) if n.live]
        if not live:
            break
        launched += [n.node_id for n in live]
        ec2.terminate_instances(InstanceIds=[n.extra["instance_id"] for n in live])
        done = backend.reconcile(run, statuses(storage, run))
    assert "budget" in done.summary()
    # budget: max_nodes + experiments x (retries + 1) = 1 + 1 = 2 instances in all
    assert launched == ["node-0", "node-1"]
    assert len(backend.nodes(run)) == 2

    run2 = prepare(backend, make_project(tmp_path / "p"), "stopped", max_nodes=1)
    storage.write_text(f"runs/{run2}/stop", "")
    backend.stop(run2)
    assert backend.reconcile(run2, statuses(storage, run2)).started == []
    assert [n.state for n in backend.nodes(run2)] == ["terminated"]  # no replacement


def test_replace_can_be_turned_off(aws, tmp_path):
    backend = AwsBackend(profile_wait_s=0, replace=False)
    run = prepare(backend, make_project(tmp_path / "p"), "manual", max_nodes=1)
    backend.stop(run)
    assert [n.state for n in backend.nodes(run)] == ["terminated"]
    storage = backend.storage()
    assert backend.reconcile(run, statuses(storage, run)).started == []
