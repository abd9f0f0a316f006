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

from launcher.backends.aws.ec2 import (
    TAG_GANG,
    TAG_GANG_SIZE,
    TAG_NODE,
    TAG_ROOT,
    TAG_RUN,
    gang_nodes,
)
from launcher.backends.base import NodeInfo
from launcher.storage import records

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


def node_name(instance: dict[str, Any]) -> str:
    """The node an instance is: its own tag, else its place in its gang's request (the tag is
    set just after launch), else its instance id."""
    own = tag(instance, TAG_NODE)
    if own:
        return own
    first, size = tag(instance, TAG_GANG), tag(instance, TAG_GANG_SIZE)
    index = instance.get("AmiLaunchIndex")
    if first and size.isdigit() and isinstance(index, int) and 0 <= index < int(size):
        return gang_nodes(first, int(size))[index]
    return instance["InstanceId"]


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
        node_id=node_name(instance),
        state=state,
        instance_type=instance["InstanceType"],
        zone=instance.get("Placement", {}).get("AvailabilityZone", ""),
        spot=spot,
        started_at=started,
        ended_at=ended,
        extra={
            "instance_id": instance["InstanceId"],
            "private_ip": instance.get("PrivateIpAddress", ""),
            # its place in the request that launched it (informational: a rank is a gang slot)
            "launch_index": instance.get("AmiLaunchIndex"),
            "gang": tag(instance, TAG_GANG) or None,
            "ec2_state": instance["State"]["Name"],
            "reason": (instance.get("StateReason") or {}).get("Message", ""),
            "price_hour": price,
            "hours": round(hours, 4),
            "cost": None if price is None else round(hours * price, 4),
        },
    )


# A node record with no instance yet (being launched), or whose instance EC2 does not list yet
# (describe_instances is eventually consistent), counts as live this long.
def launch_grace_s() -> float:
    from launcher.config import env_float

    return env_float("LAUNCH_GRACE_S", 600.0)


def node_key(run: str, node: str) -> str:
    return records.run_key(run, "nodes", f"{node}.json")


def node_records(storage: Any, run: str) -> list[dict[str, Any]]:
    """Every node record of the run (one per node ever reserved), unreadable ones as stubs: a
    record being written still holds its name."""
    out = []
    for name in storage.list(records.run_key(run, "nodes")):
        if not name.endswith(".json"):
            continue
        try:
            body = storage.read_json(records.run_key(run, "nodes", name), default=None)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {"reserved": time.time()}  # created a moment ago: being written
        out.append({**body, "node": name.removesuffix(".json")})
    return out


def live_count(infos: list[NodeInfo], node_records: list[dict[str, Any]]) -> int:
    """Nodes that are live or about to be: live instances, plus young records whose instance
    EC2 does not show (yet)."""
    listed = {n.node_id for n in infos}
    live = sum(1 for n in infos if n.live)
    now = time.time()
    for r in node_records:
        if r["node"] in listed or r.get("failed"):
            continue
        since = float(r.get("launched") or r.get("reserved") or 0)
        live += now - since < launch_grace_s()
    return live


def why_gone(node: NodeInfo) -> str:
    """``i-0abc terminated: Server.SpotInstanceTermination`` for a node that is gone."""
    reason = node.extra.get("reason")
    return f"{node.extra.get('instance_id')} {node.extra.get('ec2_state')}" + (
        f": {reason}" if reason else ""
    )
