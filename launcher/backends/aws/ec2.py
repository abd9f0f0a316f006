"""Pure: the ``run_instances`` request for one node of a run. Sending it is provision.py's job.

Everything a node must be is decided here, so it is tested without AWS: the instance type, an
encrypted gp3 root volume deleted with the instance, spot or on-demand, IMDSv2 only, a security
group with no inbound rules, an instance profile scoped to the run's prefix, tags naming the
run, node, owner and storage root, and termination (not stop) when the node powers itself off.
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
SECURITY_GROUP_NAME = "launch-nodes"
USER_DATA_LIMIT = 16 * 1024  # EC2 refuses larger user-data (before base64)


@dataclass(frozen=True)
class NodeRequest:
    """What one node needs; every field is already validated by the caller."""

    run: str
    node: str
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


def node_tags(run: str, node: str, owner: str, root_url: str) -> list[dict[str, str]]:
    """The tags every resource of a node carries; reconcile finds instances by them."""
    return [
        {"Key": "Name", "Value": f"launch-{run}-{node}"},
        {"Key": TAG_RUN, "Value": run},
        {"Key": TAG_NODE, "Value": node},
        {"Key": TAG_OWNER, "Value": owner},
        {"Key": TAG_ROOT, "Value": root_url},
    ]


def client_token(req: NodeRequest) -> str:
    """The idempotency token of a node's request (64 characters at most)."""
    key = "\0".join((req.root_url, req.run, req.node, req.subnet_id))
    return "launch-" + hashlib.sha256(key.encode()).hexdigest()[:40]


def run_instances_request(req: NodeRequest, *, dry_run: bool = False) -> dict[str, Any]:
    """Keyword arguments for ``ec2.run_instances`` launching exactly one node."""
    if len(req.user_data.encode()) > USER_DATA_LIMIT:
        size = len(req.user_data.encode())
        raise SpecError(f"user-data is {size} bytes; EC2 allows 16 KiB")
    tags = node_tags(req.run, req.node, req.owner, req.root_url)
    params: dict[str, Any] = {
        "ImageId": req.image_id,
        "InstanceType": req.instance_type,
        "MinCount": 1,
        "MaxCount": 1,
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
