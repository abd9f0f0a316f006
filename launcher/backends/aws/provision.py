"""Sending: check credentials, find zones, make the security group (and the run's placement
group), launch with zone fallback.

Errors become one clear line. Credentials and permissions are checked first (STS, then a DryRun
``run_instances``), before anything is created. A zone without capacity is skipped for the next
one (subnets of the default VPC in other zones); if every zone refuses, the error says what
each zone answered. Quota errors stop at once: another zone would not help.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from launcher.errors import BackendError, CapacityError

log = logging.getLogger(__name__)

# Per zone: another zone may have room.
CAPACITY_CODES = {
    "InsufficientInstanceCapacity",
    "InsufficientHostCapacity",
    "InsufficientCapacity",
    "SpotMaxPriceTooLow",
    "capacity-not-available",
    "InsufficientFreeAddressesInSubnet",
    "Unsupported",  # the type is not offered in this zone
}
# Per account/region: no zone will help.
QUOTA_CODES = {
    "VcpuLimitExceeded",
    "MaxSpotInstanceCountExceeded",
    "InstanceLimitExceeded",
    "PendingVerification",
}
CREDENTIAL_CODES = {
    "AuthFailure",
    "UnrecognizedClientException",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "UnauthorizedOperation",
    "AccessDenied",
    "AccessDeniedException",
    "OptInRequired",
}


def error_code(e: BaseException) -> str:
    return getattr(e, "response", {}).get("Error", {}).get("Code", "") if e else ""


def _message(e: BaseException) -> str:
    return getattr(e, "response", {}).get("Error", {}).get("Message", "") or str(e)


def credential_error(e: BaseException, doing: str) -> BackendError | None:
    """A one-line BackendError if ``e`` is about credentials or permissions, else None."""
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError, TokenRetrievalError

    if isinstance(e, NoCredentialsError | PartialCredentialsError | TokenRetrievalError):
        return BackendError(
            f"no AWS credentials while {doing}: configure them (aws configure, AWS_PROFILE, "
            "or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
        )
    code = error_code(e)
    if code in CREDENTIAL_CODES:
        return BackendError(f"AWS refused credentials or permission while {doing}: {code}")
    return None


def check_credentials(sts: Any) -> str:
    """The caller's ARN (the owner tag); a clear error when credentials are missing or bad."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return sts.get_caller_identity()["Arn"]
    except (ClientError, BotoCoreError) as e:
        err = credential_error(e, "checking the caller identity")
        raise err or BackendError(f"cannot reach AWS STS: {type(e).__name__}: {e}") from None


@dataclass(frozen=True)
class Zone:
    name: str
    subnet_id: str
    vpc_id: str


def default_zones(ec2: Any, instance_type: str) -> tuple[list[Zone], list[str]]:
    """Default-VPC subnets, one per zone that offers the type; plus the zones that do not."""
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise BackendError(
            "the region has no default VPC; create one (aws ec2 create-default-vpc) first"
        )
    vpc_id = vpcs[0]["VpcId"]
    subnets = ec2.describe_subnets(
        Filters=[
            {"Name": "vpc-id", "Values": [vpc_id]},
            {"Name": "default-for-az", "Values": ["true"]},
        ]
    )["Subnets"]
    offered = {
        o["Location"]
        for o in ec2.describe_instance_type_offerings(
            LocationType="availability-zone",
            Filters=[{"Name": "instance-type", "Values": [instance_type]}],
        )["InstanceTypeOfferings"]
    }
    zones, skipped = [], []
    for sn in sorted(subnets, key=lambda s: s["AvailabilityZone"]):
        if offered and sn["AvailabilityZone"] not in offered:
            skipped.append(sn["AvailabilityZone"])
            continue
        zones.append(Zone(sn["AvailabilityZone"], sn["SubnetId"], vpc_id))
    if not zones:
        raise CapacityError(f"{instance_type} is not offered in any zone of the default VPC")
    return zones, skipped


def self_rule(group_id: str) -> dict[str, Any]:
    """The one inbound rule of the nodes' group: all traffic, from members of the group itself.

    The ranks of a gang reach each other on ports they pick at run time (the rendezvous port,
    NCCL's and gloo's ephemeral ones), so the rule cannot name ports; it names who, and only
    the group's own instances qualify. Nothing outside it (no address range, no port 22)."""
    return {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group_id}]}


def _strays(permissions: list[dict[str, Any]], group_id: str) -> tuple[list[dict], bool]:
    """Inbound permissions other than :func:`self_rule` (to revoke), and whether it is there."""
    strays, present = [], False
    for perm in permissions:
        pairs = perm.get("UserIdGroupPairs") or []
        own = [p for p in pairs if p.get("GroupId") == group_id]
        if perm.get("IpProtocol") == "-1" and own:
            present = True
            other = {k: perm[k] for k in ("IpRanges", "Ipv6Ranges", "PrefixListIds") if perm.get(k)}
            others = [p for p in pairs if p.get("GroupId") != group_id]
            if others:
                other["UserIdGroupPairs"] = others
            if other:
                strays.append({"IpProtocol": "-1", **other})
        else:
            strays.append(perm)
    return strays, present


def ensure_security_group(ec2: Any, vpc_id: str, tags: list[dict[str, str]], name: str) -> str:
    """The nodes' security group in a VPC: created if missing, its only inbound rule
    :func:`self_rule`. Idempotent: a group made before gangs existed gains the rule.

    Nodes call out (S3, package index) and, in a gang, to each other; nothing else may reach
    them. Other inbound rules found on the group (someone added them) are revoked: the group is
    the launcher's and that is its promise.
    """
    from botocore.exceptions import ClientError

    def find() -> dict[str, Any] | None:
        found = ec2.describe_security_groups(
            Filters=[
                {"Name": "vpc-id", "Values": [vpc_id]},
                {"Name": "group-name", "Values": [name]},
            ]
        )["SecurityGroups"]
        return found[0] if found else None

    group = find()
    if group is None:
        try:
            created = ec2.create_security_group(
                GroupName=name,
                Description="launch nodes: inbound only from this group",
                VpcId=vpc_id,
                TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}],
            )
            group = {"GroupId": created["GroupId"], "IpPermissions": []}
        except ClientError as e:
            if error_code(e) != "InvalidGroup.Duplicate":
                raise
            group = find()  # another submit made it a moment ago
            if group is None:
                raise BackendError(f"security group {name} exists but cannot be found") from None
    gid = group["GroupId"]
    strays, present = _strays(group.get("IpPermissions") or [], gid)
    if strays:
        log.warning("revoking inbound rules found on security group %s", gid)
        ec2.revoke_security_group_ingress(GroupId=gid, IpPermissions=strays)
    if not present:
        try:
            ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[self_rule(gid)])
        except ClientError as e:
            if error_code(e) != "InvalidPermission.Duplicate":  # a concurrent submit added it
                raise
    return gid


def ensure_placement_group(ec2: Any, name: str, tags: list[dict[str, str]]) -> str:
    """The run's cluster placement group (its nodes on one low-latency network segment), made
    if missing. Idempotent; a group of that name with another strategy is an error."""
    from botocore.exceptions import ClientError

    try:
        ec2.create_placement_group(
            GroupName=name,
            Strategy="cluster",
            TagSpecifications=[{"ResourceType": "placement-group", "Tags": tags}],
        )
        return name
    except ClientError as e:
        if error_code(e) != "InvalidPlacementGroup.Duplicate":
            err = credential_error(e, "creating the placement group")
            raise err or BackendError(
                f"cannot create placement group {name}: {error_code(e)}: {_message(e)}"
            ) from None
    (group,) = ec2.describe_placement_groups(GroupNames=[name])["PlacementGroups"]
    if group.get("Strategy") != "cluster":
        raise BackendError(
            f"placement group {name} exists with strategy {group.get('Strategy')}, not cluster"
        )
    return name


def delete_placement_group(
    ec2: Any,
    name: str,
    *,
    wait_s: float = 300.0,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Delete the run's placement group; False if there was none. EC2 refuses while an instance
    is still in it (a node shutting down after stop): waits up to ``wait_s``, then says so."""
    from botocore.exceptions import ClientError

    waited = 0.0
    while True:
        try:
            ec2.delete_placement_group(GroupName=name)
            return True
        except ClientError as e:
            code = error_code(e)
            if code == "InvalidPlacementGroup.Unknown":
                return False
            if code == "InvalidPlacementGroup.InUse" and waited < wait_s:
                sleep(5.0)
                waited += 5.0
                continue
            raise BackendError(
                f"cannot delete placement group {name}: {code}: {_message(e)}"
                + (
                    "; its instances are still shutting down, delete again in a minute"
                    if code == "InvalidPlacementGroup.InUse"
                    else ""
                )  # fmt: skip
            ) from None


def dry_run(ec2: Any, params: dict[str, Any]) -> None:
    """``run_instances(DryRun=True)``: permission, AMI and type checks before creating anything."""
    from botocore.exceptions import ClientError

    try:
        ec2.run_instances(**params)
    except ClientError as e:
        code = error_code(e)
        if code == "DryRunOperation":
            return
        err = credential_error(e, "checking permission to launch instances")
        if err:
            raise err from None
        raise BackendError(f"EC2 would refuse the launch: {code}: {_message(e)}") from None
    raise BackendError("EC2 ignored DryRun=True; refusing to go on")


@dataclass
class LaunchResult:
    instances: list[dict[str, Any]]  # every instance of the request, or none
    zone: Zone | None
    failures: dict[str, str] = field(default_factory=dict)  # zone -> what it answered

    @property
    def instance(self) -> dict[str, Any] | None:
        return self.instances[0] if self.instances else None


def _profile_not_ready(e: BaseException) -> bool:
    # IAM is eventually consistent: a fresh instance profile is unknown to EC2 for a few seconds.
    return error_code(e) == "InvalidParameterValue" and "iam" in _message(e).lower()


def launch_with_fallback(
    ec2: Any,
    build: Callable[[Zone], dict[str, Any]],
    zones: list[Zone],
    *,
    profile_wait_s: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
) -> LaunchResult:
    """Send one request (one instance, or a gang's ``MinCount=MaxCount=N``) to the first zone
    with capacity for all of it.

    Capacity errors move on to the next zone; quota and credential errors raise at once.
    Returns the instances, or none with every zone's answer when all refused.
    """
    from botocore.exceptions import ClientError

    result = LaunchResult([], None)
    for zone in zones:
        waited = 0.0
        while True:
            try:
                resp = ec2.run_instances(**build(zone))
            except ClientError as e:
                code = error_code(e)
                if _profile_not_ready(e) and waited < profile_wait_s:
                    sleep(5.0)
                    waited += 5.0
                    continue
                if code in CAPACITY_CODES:
                    result.failures[zone.name] = f"{code}: {_message(e)}"
                    log.info("no capacity in %s (%s); trying the next zone", zone.name, code)
                    break
                if code in QUOTA_CODES:
                    raise CapacityError(
                        f"AWS quota reached ({code}): {_message(e)}; ask for a higher limit in "
                        "Service Quotas or lower --max-nodes"
                    ) from None
                err = credential_error(e, "launching an instance")
                if err:
                    raise err from None
                raise BackendError(
                    f"run_instances failed in {zone.name}: {code}: {_message(e)}"
                ) from None
            result.instances, result.zone = list(resp["Instances"]), zone
            return result
    return result


def describe_failures(instance_type: str, spot: bool, failures: dict[str, str]) -> str:
    market = "spot" if spot else "on-demand"
    per_zone = "; ".join(f"{z}: {why}" for z, why in failures.items())
    return f"no {market} capacity for {instance_type} in any zone tried ({per_zone})"
