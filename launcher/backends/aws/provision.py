"""Sending: check credentials, find zones, make the security group, launch with zone fallback.

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


def ensure_security_group(ec2: Any, vpc_id: str, tags: list[dict[str, str]], name: str) -> str:
    """The nodes' security group in a VPC: created if missing, never any inbound rule.

    Nodes only call out (S3, package index); nothing may reach them. Inbound rules found on the
    group (someone added them) are revoked: the group is the launcher's and that is its promise.
    """
    found = ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "group-name", "Values": [name]}]
    )["SecurityGroups"]
    if found:
        group = found[0]
        if group.get("IpPermissions"):
            log.warning("revoking inbound rules found on security group %s", group["GroupId"])
            ec2.revoke_security_group_ingress(
                GroupId=group["GroupId"], IpPermissions=group["IpPermissions"]
            )
        return group["GroupId"]
    created = ec2.create_security_group(
        GroupName=name,
        Description="launch nodes: no inbound access",
        VpcId=vpc_id,
        TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}],
    )
    return created["GroupId"]


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
    instance: dict[str, Any] | None
    zone: Zone | None
    failures: dict[str, str] = field(default_factory=dict)  # zone -> what it answered


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
    """Launch one instance in the first zone with capacity.

    Capacity errors move on to the next zone; quota and credential errors raise at once.
    Returns the instance, or ``instance=None`` with every zone's answer when all refused.
    """
    from botocore.exceptions import ClientError

    result = LaunchResult(None, None)
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
            result.instance, result.zone = resp["Instances"][0], zone
            return result
    return result


def describe_failures(instance_type: str, spot: bool, failures: dict[str, str]) -> str:
    market = "spot" if spot else "on-demand"
    per_zone = "; ".join(f"{z}: {why}" for z, why in failures.items())
    return f"no {market} capacity for {instance_type} in any zone tried ({per_zone})"
