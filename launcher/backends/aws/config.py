"""Where the AWS backend's settings come from: bucket, prefix, region, the node AMI, and the
address nodes give each other.

Precedence, highest first: explicit arguments (``AwsBackend(bucket=...)``), environment
(``LAUNCH_AWS_BUCKET``, ``LAUNCH_AWS_PREFIX``, ``LAUNCH_AWS_AMI``, ``LAUNCH_AWS_NODE_ADDR``),
``launch config set aws.KEY``, then defaults.

``aws.node_addr`` is the address every node of a gang publishes for the others to reach it at
(rank 0's becomes ``MASTER_ADDR``). Unset (the default), each node asks IMDSv2 for its private
``local-ipv4``, which is what the security group's self rule admits. Set it when nodes must be
reached some other way: a tunnel or overlay network that forwards to them, or, as the tests do,
nodes that are really processes on one machine (``127.0.0.1`` for moto's made-up private IPs).

Credentials, region and endpoint follow the standard AWS chain (profiles,
``AWS_REGION``/``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``...): nothing here hard-codes an
endpoint, so the same code talks to AWS or to a local moto server.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from launcher.errors import BackendError, SpecError

# Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04): NVIDIA driver, CUDA, python3 and
# the aws CLI, no framework; the node pip-installs the pinned stack from the snapshot.
DEFAULT_AMI_PARAMETER = (
    "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
)
DEFAULT_PREFIX = "launch"

# S3 bucket naming rules (the subset that matters: no dots tricks, no upper case).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*")
_AMI = re.compile(r"ami-[0-9a-f]{8,17}")
_ADDR = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:-]{0,252}")  # an IPv4/IPv6 address or a host name


@dataclass(frozen=True)
class AwsSettings:
    """The resolved settings of one AwsBackend."""

    bucket: str
    prefix: str
    region: str
    ami: str | None  # explicit AMI id, or None to resolve ami_parameter in the region
    ami_parameter: str
    node_addr: str | None = None  # every node's address for its gang, or None: IMDS local-ipv4

    @property
    def root_url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def _setting(config: dict, key: str) -> Any:
    aws = config.get("aws") if isinstance(config, dict) else None
    return aws.get(key) if isinstance(aws, dict) else None


def default_region() -> str | None:
    """The region of the standard chain (env, profile), or None when nothing names one."""
    import botocore.session

    return botocore.session.get_session().get_config_variable("region")


def resolve_settings(
    bucket: str | None = None,
    prefix: str | None = None,
    region: str | None = None,
    ami: str | None = None,
    config: dict | None = None,
) -> AwsSettings:
    """Settings from arguments, environment and ``launch config``; refuses what is missing/bad."""
    if config is None:
        from launcher.config import load_config

        config = load_config()
    bucket = bucket or os.environ.get("LAUNCH_AWS_BUCKET") or _setting(config, "bucket")
    if not bucket:
        raise SpecError(
            "no S3 bucket for the aws backend: set LAUNCH_AWS_BUCKET or "
            "`launch config set aws.bucket BUCKET`"
        )
    bucket = str(bucket)
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise SpecError(
            f"invalid S3 bucket name {bucket!r}: 3-63 lower-case letters, digits, '.' and '-'"
        )
    prefix = str(
        prefix or os.environ.get("LAUNCH_AWS_PREFIX") or _setting(config, "prefix") or "launch"
    ).strip("/")
    if not _PREFIX.fullmatch(prefix) or any(p in ("..", ".") for p in prefix.split("/")):
        raise SpecError(
            f"invalid S3 prefix {prefix!r}: '/'-separated parts of letters, digits, '.', '_', '-'"
        )
    region = region or _setting(config, "region") or default_region()
    if not region:
        raise SpecError(
            "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION, a profile's region) or "
            "`launch config set aws.region REGION`"
        )
    ami = ami or os.environ.get("LAUNCH_AWS_AMI") or _setting(config, "ami")
    if ami and not _AMI.fullmatch(str(ami)):
        raise SpecError(f"invalid AMI id {ami!r}: expected ami- followed by 8-17 hex digits")
    parameter = str(_setting(config, "ami_parameter") or DEFAULT_AMI_PARAMETER)
    addr = os.environ.get("LAUNCH_AWS_NODE_ADDR") or _setting(config, "node_addr")
    if addr and not _ADDR.fullmatch(str(addr)):
        raise SpecError(f"invalid aws.node_addr {addr!r}: an IP address or a host name")
    return AwsSettings(
        str(bucket), prefix, str(region), ami and str(ami), parameter, addr and str(addr) or None
    )


def resolve_ami(settings: AwsSettings, ssm_client: Any) -> str:
    """The AMI id for the settings' region: the configured one, or the public SSM parameter's."""
    if settings.ami:
        return settings.ami
    from botocore.exceptions import ClientError

    try:
        value = ssm_client.get_parameter(Name=settings.ami_parameter)["Parameter"]["Value"]
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        raise BackendError(
            f"cannot resolve the node AMI in {settings.region} from SSM parameter "
            f"{settings.ami_parameter} ({code}); set one with `launch config set aws.ami AMI_ID`"
        ) from None
    if not _AMI.fullmatch(value):
        raise BackendError(f"SSM parameter {settings.ami_parameter} holds {value!r}, not an AMI id")
    return value
