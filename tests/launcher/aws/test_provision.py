"""Launching against moto: what the instances are, zone fallback, and errors before creation."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError, NoCredentialsError

from launcher.backends.aws import AwsBackend
from launcher.errors import BackendError, CapacityError
from tests.launcher.aws.helpers import make_project, prepare

pytestmark = pytest.mark.aws


class RefusingEc2:
    """The real (moto) EC2 client, except run_instances refuses some subnets like AWS does."""

    def __init__(self, real, refuse: set[str], code: str = "InsufficientInstanceCapacity"):
        self.real, self.refuse, self.code = real, refuse, code
        self.calls: list[str] = []

    def run_instances(self, **kw):
        self.calls.append(kw["SubnetId"])
        if not kw.get("DryRun") and (kw["SubnetId"] in self.refuse or "*" in self.refuse):
            raise ClientError(
                {"Error": {"Code": self.code, "Message": f"no {kw['InstanceType']} here"}},
                "RunInstances",
            )
        return self.real.run_instances(**kw)

    def __getattr__(self, name):
        return getattr(self.real, name)


def only_self_rule(group: dict) -> bool:
    """The group's inbound rules are exactly one: all traffic from the group itself."""
    (perm,) = group["IpPermissions"]
    return (
        perm["IpProtocol"] == "-1"
        and [p["GroupId"] for p in perm["UserIdGroupPairs"]] == [group["GroupId"]]
        and not perm.get("IpRanges")
        and not perm.get("Ipv6Ranges")
        and not perm.get("PrefixListIds")
    )


def subnets_by_zone() -> dict[str, str]:
    subnets = boto3.client("ec2").describe_subnets()["Subnets"]
    return {s["AvailabilityZone"]: s["SubnetId"] for s in subnets if s["DefaultForAz"]}


def instances(run: str | None = None) -> list[dict]:
    filters = [{"Name": "tag:launch:run", "Values": [run]}] if run else []
    pages = boto3.client("ec2").describe_instances(Filters=filters)["Reservations"]
    return [i for r in pages for i in r["Instances"]]


def test_submit_launches_locked_down_nodes(aws, tmp_path):
    backend = AwsBackend(profile_wait_s=0)
    run = prepare(backend, make_project(tmp_path / "p"), "locked", ["--lr", "[0.1, 0.2, 0.3]"],
                  max_nodes=2, disk_size=60)  # fmt: skip
    ec2 = boto3.client("ec2")
    found = instances(run)
    assert len(found) == 2  # max_nodes, not one per experiment
    for inst in found:
        assert inst["InstanceType"] == "g4dn.xlarge"
        assert inst["MetadataOptions"]["HttpTokens"] == "required"
        tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
        assert tags["launch:run"] == run and tags["launch:owner"].startswith("arn:aws:")
        assert tags["launch:root"] == "s3://launch-test-bucket/launch"
        groups = ec2.describe_security_groups(
            GroupIds=[g["GroupId"] for g in inst["SecurityGroups"]]
        )
        ((group,),) = [groups["SecurityGroups"]]
        assert only_self_rule(group)
        vol_id = inst["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
        vol = ec2.describe_volumes(VolumeIds=[vol_id])["Volumes"][0]
        assert (vol["Size"], vol["VolumeType"], vol["Encrypted"]) == (60, "gp3", True)
        assert inst["IamInstanceProfile"]["Arn"].split("/")[-1].startswith(f"launch-{run}-")
        attr = ec2.describe_instance_attribute(
            InstanceId=inst["InstanceId"], Attribute="instanceInitiatedShutdownBehavior"
        )
        assert attr["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    assert sorted(t["Value"] for i in found for t in i["Tags"] if t["Key"] == "launch:node") == [
        "node-0",
        "node-1",
    ]
    record = backend.storage().read_json(f"runs/{run}/nodes/node-0.json")
    assert record["instance_id"] in {i["InstanceId"] for i in found}
    # a second run reuses the security group: one per VPC
    prepare(backend, make_project(tmp_path / "p"), "again")
    named = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["launch-nodes"]}]
    )
    assert len(named["SecurityGroups"]) == 1


def test_first_zone_without_capacity_falls_back(aws, tmp_path):
    zones = subnets_by_zone()
    fake = RefusingEc2(boto3.client("ec2"), {zones["us-east-1a"]})
    backend = AwsBackend(clients={"ec2": fake}, profile_wait_s=0)
    run = prepare(backend, make_project(tmp_path / "p"), "fallback", spot=True)
    (inst,) = instances(run)
    assert inst["Placement"]["AvailabilityZone"] == "us-east-1b"
    assert inst["InstanceLifecycle"] == "spot"
    assert fake.calls[1:] == [zones["us-east-1a"], zones["us-east-1b"]]  # after the dry run
    record = backend.storage().read_json(f"runs/{run}/nodes/node-0.json")
    assert "InsufficientInstanceCapacity" in record["failed_zones"]["us-east-1a"]


def test_no_capacity_anywhere_says_what_each_zone_said(aws, tmp_path):
    fake = RefusingEc2(boto3.client("ec2"), {"*"}, code="SpotMaxPriceTooLow")
    backend = AwsBackend(clients={"ec2": fake}, profile_wait_s=0)
    with pytest.raises(CapacityError) as err:
        prepare(backend, make_project(tmp_path / "p"), "nowhere", spot=True)
    msg = str(err.value)
    assert msg.startswith("no spot capacity for g4dn.xlarge in any zone tried")
    for zone in ("us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d", "us-east-1f"):
        assert f"{zone}: SpotMaxPriceTooLow" in msg
    assert "us-east-1e" not in msg  # not offered there: never tried
    assert instances() == []


def test_quota_stops_at_once(aws, tmp_path):
    fake = RefusingEc2(boto3.client("ec2"), {"*"}, code="VcpuLimitExceeded")
    backend = AwsBackend(clients={"ec2": fake}, profile_wait_s=0)
    with pytest.raises(CapacityError, match=r"quota reached \(VcpuLimitExceeded\)"):
        prepare(backend, make_project(tmp_path / "p"), "quota")
    assert len(fake.calls) == 2  # the dry run and one zone: no other zone would help
    assert "\n" not in str(CapacityError)


class FailingSts:
    def __init__(self, exc):
        self.exc = exc

    def get_caller_identity(self):
        raise self.exc


@pytest.mark.parametrize(
    "exc, expected",
    [
        (NoCredentialsError(), "no AWS credentials"),
        (ClientError({"Error": {"Code": "ExpiredToken", "Message": "x"}}, "GetCallerIdentity"),
         "refused credentials or permission while checking the caller identity: ExpiredToken"),
        (ClientError({"Error": {"Code": "InvalidClientTokenId", "Message": "x"}}, "Get"),
         "InvalidClientTokenId"),
    ],
)  # fmt: skip
def test_credentials_are_checked_before_anything_is_created(aws, tmp_path, exc, expected):
    backend = AwsBackend(clients={"sts": FailingSts(exc)}, profile_wait_s=0)
    with pytest.raises(BackendError, match=expected) as err:
        prepare(backend, make_project(tmp_path / "p"), "creds")
    assert "\n" not in str(err.value)
    ec2 = boto3.client("ec2")
    assert [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]] == ["default"]
    assert boto3.client("iam").list_roles()["Roles"] == []
    assert instances() == []


def test_permission_refused_by_dry_run_creates_nothing(aws, tmp_path):
    class NoPermission(RefusingEc2):
        def run_instances(self, **kw):
            raise ClientError(
                {"Error": {"Code": "UnauthorizedOperation", "Message": "not allowed"}}, "Run"
            )

    backend = AwsBackend(clients={"ec2": NoPermission(boto3.client("ec2"), set())})
    with pytest.raises(BackendError, match="permission to launch instances: Unauthorized"):
        prepare(backend, make_project(tmp_path / "p"), "denied")
    assert boto3.client("iam").list_roles()["Roles"] == []
    assert len(boto3.client("ec2").describe_security_groups()["SecurityGroups"]) == 1


def test_missing_ami_parameter_is_a_clear_error(aws, tmp_path, monkeypatch):
    (tmp_path / "launch_home" / "config.yaml").write_text("aws:\n  bucket: launch-test-bucket\n")
    backend = AwsBackend(profile_wait_s=0)
    with pytest.raises(BackendError, match="launch config set aws.ami"):
        prepare(backend, make_project(tmp_path / "p"), "noami")


def test_stop_and_delete_leave_nothing_running(aws, tmp_path):
    backend = AwsBackend(profile_wait_s=0)
    run = prepare(backend, make_project(tmp_path / "p"), "stopme", ["--lr", "[1, 2]"], max_nodes=2)
    stopped = backend.stop(run)
    assert sorted(n.node_id for n in stopped) == ["node-0", "node-1"]
    assert {i["State"]["Name"] for i in instances(run)} <= {"shutting-down", "terminated"}
    assert backend.stop(run) == []
    backend.delete(run)
    assert boto3.client("iam").list_instance_profiles()["InstanceProfiles"] == []


def test_fresh_instance_profile_is_waited_for():
    """IAM is eventually consistent: EC2 may not know a new profile for a few seconds."""
    from launcher.backends.aws.provision import Zone, launch_with_fallback

    class NotYet:
        calls = 0

        def run_instances(self, **kw):
            self.calls += 1
            if self.calls < 3:
                msg = "Value (arn:x) for parameter iamInstanceProfile.arn is invalid."
                raise ClientError({"Error": {"Code": "InvalidParameterValue", "Message": msg}}, "R")
            return {"Instances": [{"InstanceId": "i-1"}]}

    slept: list[float] = []
    ec2 = NotYet()
    zones = [Zone("us-east-1a", "subnet-a", "vpc"), Zone("us-east-1b", "subnet-b", "vpc")]
    result = launch_with_fallback(ec2, lambda z: {"SubnetId": z.subnet_id}, zones,
                                  profile_wait_s=60, sleep=slept.append)  # fmt: skip
    assert result.instance == {"InstanceId": "i-1"} and result.zone == zones[0]
    assert slept == [5.0, 5.0] and result.failures == {}
    ec2.calls = 0
    with pytest.raises(BackendError, match="iamInstanceProfile"):
        launch_with_fallback(ec2, lambda z: {"SubnetId": z.subnet_id}, zones,
                             profile_wait_s=5, sleep=slept.append)  # fmt: skip
