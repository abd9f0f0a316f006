"""Pure: the ``run_instances`` request for one node, or one gang of nodes, of a run. Sending it
is provision.py's job.

Everything a node must be is decided here, so it is tested without AWS: the instance type, an
encrypted gp3 root volume deleted with the instance, spot or on-demand, IMDSv2 only, a security
group whose only inbound rule is traffic from the group itself (the ranks of a gang talk to each
other; nothing else may reach a node), an instance profile scoped to the run's prefix, the run's
cluster placement group if asked, tags naming the run, node, owner and storage root, and
termination (not stop) when the node powers itself off.

A gang of N nodes is one request with ``MinCount=MaxCount=N``: EC2 starts all of them or none.
Its instances share the request's user-data and tags, so they are named by their place in it:
the gang's nodes are consecutive (``node-4``, ``node-5``), the tags name the first and the count,
and the instance with ``ami-launch-index`` i is the i-th of them (the user-data reads its index
from IMDSv2; the launcher tags each instance with its own name once EC2 answers).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from launcher.errors import SpecError

TAG_RUN = "launch:run"
TAG_NODE = "launch:node"
TAG_OWNER = "launch:owner"
TAG_ROOT = "launch:root"  # two storage roots may hold runs of the same name
TAG_GANG = "launch:gang"  # the first node of a multi-node request; its instances follow it
TAG_GANG_SIZE = "launch:gang-size"
TAG_LAUNCH_INDEX = "launch:launch-index"  # an instance's place in its request (informational)
SECURITY_GROUP_NAME = "launch-nodes"
USER_DATA_LIMIT = 16 * 1024  # EC2 refuses larger user-data (before base64)


@dataclass(frozen=True)
class NodeRequest:
    """What one node (or gang: ``count`` nodes from ``node`` on) needs; every field is already
    validated by the caller."""

    run: str
    node: str  # the first node of the request
    instance_type: str
    image_id: str
    root_device_name: str  # from the AMI: /dev/sda1 on Ubuntu, /dev/xvda on Amazon Linux
    disk_size: int  # GiB
    spot: bool
    subnet_id: str
    security_group_id: str
    instance_profile_arn: str
    user_data: str
    owner: str
    root_url: str
    count: int = 1  # nodes in this request, all or none
    placement_group: str | None = None  # the run's cluster placement group

    @property
    def nodes(self) -> list[str]:
        return gang_nodes(self.node, self.count)


def node_number(node: str) -> int:
    """``node-7`` -> 7; -1 for a name not of that shape."""
    tail = node.removeprefix("node-")
    return int(tail) if tail.isdigit() else -1


def gang_nodes(first: str, count: int) -> list[str]:
    """The names of a request's nodes: ``count`` consecutive ones from ``first``."""
    if count == 1:
        return [first]
    start = node_number(first)
    if start < 0:
        raise SpecError(f"a gang's first node must be named node-K, not {first!r}")
    return [f"node-{start + i}" for i in range(count)]


def node_tags(
    run: str, node: str, owner: str, root_url: str, count: int = 1
) -> list[dict[str, str]]:
    """The tags every resource of a request carries; reconcile finds instances by them. One
    node is named by them; a gang's instances by its first node and their launch index."""
    common = [
        {"Key": TAG_RUN, "Value": run},
        {"Key": TAG_OWNER, "Value": owner},
        {"Key": TAG_ROOT, "Value": root_url},
    ]
    if count == 1:
        return [{"Key": "Name", "Value": f"launch-{run}-{node}"},
                {"Key": TAG_NODE, "Value": node}, *common]  # fmt: skip
    last = gang_nodes(node, count)[-1]
    return [
        {"Key": "Name", "Value": f"launch-{run}-{node}..{last}"},
        {"Key": TAG_GANG, "Value": node},
        {"Key": TAG_GANG_SIZE, "Value": str(count)},
        *common,
    ]


def instance_tags(run: str, node: str, launch_index: int) -> list[dict[str, str]]:
    """What the launcher tags each instance of a gang with once EC2 answered: its own name."""
    return [
        {"Key": "Name", "Value": f"launch-{run}-{node}"},
        {"Key": TAG_NODE, "Value": node},
        {"Key": TAG_LAUNCH_INDEX, "Value": str(launch_index)},
    ]


def placement_group_name(root_url: str, run: str) -> str:
    """One cluster placement group per (storage root, run), like its instance profile."""
    digest = hashlib.sha256(f"{root_url}\0{run}".encode()).hexdigest()[:10]
    return f"launch-{run[:45]}-{digest}"


def client_token(req: NodeRequest) -> str:
    """The idempotency token of a request (64 characters at most)."""
    key = "\0".join((req.root_url, req.run, req.node, req.subnet_id))
    if req.count != 1:
        key += f"\0{req.count}"
    return "launch-" + hashlib.sha256(key.encode()).hexdigest()[:40]


def run_instances_request(req: NodeRequest, *, dry_run: bool = False) -> dict[str, Any]:
    """Keyword arguments for ``ec2.run_instances`` launching exactly ``req.count`` nodes."""
    if len(req.user_data.encode()) > USER_DATA_LIMIT:
        size = len(req.user_data.encode())
        raise SpecError(f"user-data is {size} bytes; EC2 allows 16 KiB")
    if req.count < 1:
        raise SpecError(f"a request launches at least one node, not {req.count}")
    tags = node_tags(req.run, req.node, req.owner, req.root_url, req.count)
    params: dict[str, Any] = {
        "ImageId": req.image_id,
        "InstanceType": req.instance_type,
        # All or nothing: a gang that EC2 can only partly start is no use to its experiment.
        "MinCount": req.count,
        "MaxCount": req.count,
        "SubnetId": req.subnet_id,
        "SecurityGroupIds": [req.security_group_id],
        "IamInstanceProfile": {"Arn": req.instance_profile_arn},
        "UserData": req.user_data,  # boto3 base64-encodes it
        "BlockDeviceMappings": [
            {
                "DeviceName": req.root_device_name,
                "Ebs": {
                    "VolumeSize": int(req.disk_size),
                    "VolumeType": "gp3",
                    "Encrypted": True,
                    "DeleteOnTermination": True,
                },
            }
        ],
        # IMDSv2 only: a token is required, and one network hop keeps it off containers.
        "MetadataOptions": {
            "HttpTokens": "required",
            "HttpEndpoint": "enabled",
            "HttpPutResponseHopLimit": 1,
        },
        # The node powers itself off when done or out of time; off must mean gone, not billed.
        "InstanceInitiatedShutdownBehavior": "terminate",
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": tags},
            {"ResourceType": "volume", "Tags": tags},
        ],
        # One idempotency token per root, run, node and subnet: a retried send cannot start a
        # second instance, while zone fallback (another subnet) is a new request.
        "ClientToken": client_token(req),
    }
    if req.placement_group:
        params["Placement"] = {"GroupName": req.placement_group}
    if req.spot:
        params["InstanceMarketOptions"] = {
            "MarketType": "spot",
            "SpotOptions": {
                "SpotInstanceType": "one-time",
                "InstanceInterruptionBehavior": "terminate",
            },
        }
    if dry_run:
        params["DryRun"] = True
        params.pop("ClientToken")
    return params
