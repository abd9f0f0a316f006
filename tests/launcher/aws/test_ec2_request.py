"""The run_instances request is pure: every property of a node is decided and checked here."""

from __future__ import annotations

import pytest

from launcher.backends.aws.ec2 import NodeRequest, client_token, run_instances_request
from launcher.errors import SpecError

pytestmark = pytest.mark.aws


def make(**over) -> NodeRequest:
    fields = dict(
        run="sweep-1",
        node="node-0",
        instance_type="g4dn.xlarge",
        image_id="ami-0123456789abcdef0",
        root_device_name="/dev/sda1",
        disk_size=120,
        spot=False,
        subnet_id="subnet-1",
        security_group_id="sg-1",
        instance_profile_arn="arn:aws:iam::123456789012:instance-profile/p",
        user_data="#!/bin/bash\ntrue\n",
        owner="arn:aws:iam::123456789012:user/alice",
        root_url="s3://bucket/launch",
    )
    fields.update(over)
    return NodeRequest(**fields)


def test_on_demand_request_has_every_safety_property():
    p = run_instances_request(make())
    assert p["InstanceType"] == "g4dn.xlarge" and p["MinCount"] == p["MaxCount"] == 1
    assert p["BlockDeviceMappings"] == [
        {
            "DeviceName": "/dev/sda1",
            "Ebs": {
                "VolumeSize": 120,
                "VolumeType": "gp3",
                "Encrypted": True,
                "DeleteOnTermination": True,
            },
        }
    ]
    assert p["MetadataOptions"]["HttpTokens"] == "required"
    assert p["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert p["SecurityGroupIds"] == ["sg-1"] and p["SubnetId"] == "subnet-1"
    assert p["IamInstanceProfile"] == {"Arn": "arn:aws:iam::123456789012:instance-profile/p"}
    assert "InstanceMarketOptions" not in p and "DryRun" not in p
    tags = {t["Key"]: t["Value"] for t in p["TagSpecifications"][0]["Tags"]}
    assert tags == {
        "Name": "launch-sweep-1-node-0",
        "launch:run": "sweep-1",
        "launch:node": "node-0",
        "launch:owner": "arn:aws:iam::123456789012:user/alice",
        "launch:root": "s3://bucket/launch",
    }
    assert {s["ResourceType"] for s in p["TagSpecifications"]} == {"instance", "volume"}
    # nothing of the user's credentials travels with the request
    assert "AWS_SECRET" not in repr(p) and "KeyName" not in p


def test_spot_request_is_one_time_and_terminates():
    p = run_instances_request(make(spot=True))
    assert p["InstanceMarketOptions"] == {
        "MarketType": "spot",
        "SpotOptions": {
            "SpotInstanceType": "one-time",
            "InstanceInterruptionBehavior": "terminate",
        },
    }


def test_client_token_is_stable_per_node_and_subnet():
    assert client_token(make()) == client_token(make())
    assert client_token(make()) != client_token(make(node="node-1"))
    assert client_token(make()) != client_token(make(subnet_id="subnet-2"))
    assert client_token(make()) != client_token(make(root_url="s3://other/launch"))
    assert len(client_token(make())) <= 64


def test_dry_run_has_no_token():
    p = run_instances_request(make(), dry_run=True)
    assert p["DryRun"] is True and "ClientToken" not in p


def test_oversized_user_data_is_refused():
    with pytest.raises(SpecError, match="16 KiB"):
        run_instances_request(make(user_data="#" * 20000))


def test_gang_request_is_all_or_nothing_and_named_by_its_first_node():
    p = run_instances_request(make(node="node-2", count=2))
    assert p["MinCount"] == p["MaxCount"] == 2
    tags = {t["Key"]: t["Value"] for t in p["TagSpecifications"][0]["Tags"]}
    assert tags["launch:gang"] == "node-2" and tags["launch:gang-size"] == "2"
    assert "launch:node" not in tags  # each instance is tagged with its own once it exists
    assert tags["Name"] == "launch-sweep-1-node-2..node-3"
    assert make(node="node-2", count=2).nodes == ["node-2", "node-3"]
    assert client_token(make(node="node-2", count=2)) != client_token(make(node="node-2"))
    assert "Placement" not in p


def test_placement_group_is_requested_by_name():
    p = run_instances_request(make(count=2, placement_group="launch-sweep-1-abc"))
    assert p["Placement"] == {"GroupName": "launch-sweep-1-abc"}


@pytest.mark.parametrize("bad", [{"count": 0}, {"node": "head", "count": 2}])
def test_impossible_gangs_are_refused(bad):
    with pytest.raises(SpecError):
        run_instances_request(make(**bad))
