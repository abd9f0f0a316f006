"""The node role reaches only its run's prefix and its datastore, read-only."""

from __future__ import annotations

import json

import pytest

from launcher.backends.aws import iam
from launcher.errors import SpecError

pytestmark = pytest.mark.aws


def test_policy_is_scoped_to_the_run_and_datastore():
    doc = iam.node_policy("bkt", "launch", "run-1", "kinetics", 2)
    actions, resources = set(), set()
    for st in doc["Statement"]:
        assert st["Effect"] == "Allow"
        acts = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        res = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        actions |= set(acts)
        resources |= set(res)
    assert actions == {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject"}
    assert resources == {
        "arn:aws:s3:::bkt",
        "arn:aws:s3:::bkt/launch/runs/run-1/*",
        "arn:aws:s3:::bkt/launch/datastores/kinetics/2/*",
    }
    by_sid = {st["Sid"]: st for st in doc["Statement"]}
    # the datastore is read-only; only the run's prefix is writable
    assert by_sid["ReadDatastore"]["Action"] == "s3:GetObject"
    # listing names only, on this bucket only
    assert by_sid["ListBucket"] == {
        "Sid": "ListBucket",
        "Effect": "Allow",
        "Action": "s3:ListBucket",
        "Resource": "arn:aws:s3:::bkt",
    }
    assert by_sid["ReadWriteRun"]["Resource"] == "arn:aws:s3:::bkt/launch/runs/run-1/*"
    assert "*" not in json.dumps(doc).replace("/*", "")  # no wildcard but the trailing /*


def test_policy_without_datastore_or_version():
    doc = iam.node_policy("bkt", "a/b", "r")
    assert [st["Sid"] for st in doc["Statement"]] == ["ListBucket", "ReadWriteRun"]
    latest = iam.node_policy("bkt", "a/b", "r", "ds")
    assert "arn:aws:s3:::bkt/a/b/datastores/ds/*" in latest["Statement"][2]["Resource"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"run": "r*"},
        {"run": "../x"},
        {"datastore": "ds?"},
        {"datastore": "a/../../b"},
        {"prefix": "p/.."},
        {"bucket": "b*"},
    ],
)
def test_wildcards_and_traversal_are_refused(kwargs):
    args = {"bucket": "bkt", "prefix": "launch", "run": "run-1", "datastore": "ds"} | kwargs
    with pytest.raises(SpecError, match="letters, digits"):
        iam.node_policy(args["bucket"], args["prefix"], args["run"], args["datastore"])


def test_profile_name_fits_iam_limits():
    name = iam.profile_name("s3://b/launch", "r" * 63)
    assert len(name) <= 64 and name.startswith("launch-")
    assert iam.profile_name("s3://b/launch", "x") != iam.profile_name("s3://c/launch", "x")


def test_profile_is_created_once_and_deleted(aws):
    import boto3

    client = boto3.client("iam")
    policy = iam.node_policy("bkt", "launch", "run-1")
    tags = [{"Key": "launch:run", "Value": "run-1"}]
    arn = iam.ensure_instance_profile(client, "launch-run-1-abc", policy, tags)
    assert arn == iam.ensure_instance_profile(client, "launch-run-1-abc", policy, tags)
    prof = client.get_instance_profile(InstanceProfileName="launch-run-1-abc")["InstanceProfile"]
    assert [r["RoleName"] for r in prof["Roles"]] == ["launch-run-1-abc"]
    stored = client.get_role_policy(RoleName="launch-run-1-abc", PolicyName=iam.POLICY_NAME)
    assert stored["PolicyDocument"] == policy
    role = client.get_role(RoleName="launch-run-1-abc")["Role"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "ec2.amazonaws.com"
    }
    assert iam.delete_instance_profile(client, "launch-run-1-abc") is True
    assert iam.delete_instance_profile(client, "launch-run-1-abc") is False
    assert client.list_roles()["Roles"] == []
