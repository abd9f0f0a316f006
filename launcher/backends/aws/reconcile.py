"""What is really there: a run's instances (found by their tags) against its state in S3.

EC2 is the truth about instances, S3 the truth about experiments. An instance that is gone
(terminated, stopped) while S3 still says it runs an experiment died without finishing it:
that experiment goes back to the queue so another node (or a replacement) takes the next
attempt and resumes from the last shipped checkpoint. Cost so far is instance hours times the
catalog's hourly price (the spot price for spot instances).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

from launcher.backends.aws.ec2 import TAG_NODE, TAG_ROOT, TAG_RUN
from launcher.backends.base import NodeInfo
from launcher.storage import records

LIVE = ("pending", "running")
_STATES = {
    "pending": "pending",
    "running": "running",
    "stopping": "stopped",
    "stopped": "stopped",
    "shutting-down": "terminated",
    "terminated": "terminated",
}
_WHEN = re.compile(r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) GMT\)")


def find_instances(ec2: Any, root_url: str, run: str | None = None) -> list[dict[str, Any]]:
    """Every instance tagged with this storage root (and run), in any state EC2 still shows."""
    filters = [{"Name": f"tag:{TAG_ROOT}", "Values": [root_url]}]
    if run is not None:
        filters.append({"Name": f"tag:{TAG_RUN}", "Values": [run]})
    found = []
    for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
        for reservation in page["Reservations"]:
            found.extend(reservation["Instances"])
    return found


def tag(instance: dict[str, Any], key: str) -> str:
    return next((t["Value"] for t in instance.get("Tags", []) if t["Key"] == key), "")


def _ended_at(instance: dict[str, Any]) -> float | None:
    """When a stopped/terminated instance went down (EC2 puts it in StateTransitionReason)."""
    m = _WHEN.search(instance.get("StateTransitionReason") or "")
    if not m:
        return None
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()


def hourly_price(instance_type: str, spot: bool) -> float | None:
    """The catalog's price for the type, or None when the catalog does not know it."""
    from launcher.errors import LaunchError
    from launcher.spec import catalog

    try:
        it = catalog.get_instance(instance_type)
    except LaunchError:
        return None
    return it.spot_price_hour if spot else it.price_hour


def node_info(instance: dict[str, Any], now: float | None = None) -> NodeInfo:
    """One instance as the generic code sees a node, with its cost so far in ``extra``."""
    now = time.time() if now is None else now
    state = _STATES.get(instance["State"]["Name"], instance["State"]["Name"])
    spot = instance.get("InstanceLifecycle") == "spot"
    started = instance["LaunchTime"].timestamp() if instance.get("LaunchTime") else None
    ended = _ended_at(instance) if state in ("stopped", "terminated") else None
    if state in ("stopped", "terminated") and ended is None:
        ended = now  # EC2 gave no time: count up to now, never less than was spent
    price = hourly_price(instance["InstanceType"], spot)
    hours = max(0.0, ((ended or now) - started) / 3600) if started else 0.0
    return NodeInfo(
        node_id=tag(instance, TAG_NODE) or instance["InstanceId"],
        state=state,
        instance_type=instance["InstanceType"],
        zone=instance.get("Placement", {}).get("AvailabilityZone", ""),
        spot=spot,
        started_at=started,
        ended_at=ended,
        extra={
            "instance_id": instance["InstanceId"],
            "ec2_state": instance["State"]["Name"],
            "reason": (instance.get("StateReason") or {}).get("Message", ""),
            "price_hour": price,
            "hours": round(hours, 4),
            "cost": None if price is None else round(hours * price, 4),
        },
    )


def requeue_orphans(storage: Any, run: str, nodes: list[NodeInfo]) -> list[str]:
    """Experiments S3 says are running on a node that is gone: put them back in the queue.

    The dead attempt keeps its claim number, so the next claim is a new attempt that restores
    the shipped artifacts first (resume from last.ckpt). Returns the experiments re-queued.
    """

    gone = {n.node_id: n for n in nodes if n.state in ("stopped", "terminated", "dead")}
    if not gone:
        return []
    record = storage.read_json(f"runs/{run}/run.json", default=None) or {}
    requeued = []
    for exp in (e["id"] for e in record.get("experiments", [])):
        status = records.read_status(storage, run, exp)
        if status.get("state") != "running" or status.get("node") not in gone:
            continue
        # Only the attempt the dead node holds: a later claim means someone took it already.
        taken = records.claim_numbers(storage, run, exp)
        if taken and taken[-1] != int(status.get("attempt") or 0):
            continue
        node = gone[status["node"]]
        node.state = "dead"
        why = node.extra.get("reason") or node.extra.get("ec2_state", "")
        records.write_status(
            storage,
            run,
            exp,
            state="queued",
            message=f"node {node.node_id} ({node.extra.get('instance_id')}) went away "
            f"while running attempt {status.get('attempt')} ({why}); re-queued",
        )
        requeued.append(exp)
    return requeued


def open_experiments(storage: Any, run: str, record: dict[str, Any]) -> list[str]:
    """Experiments of the run's record (run.json) not finished yet (queued or running)."""

    return [
        e["id"]
        for e in record.get("experiments", [])
        if records.read_status(storage, run, e["id"]).get("state") not in records.TERMINAL
    ]
