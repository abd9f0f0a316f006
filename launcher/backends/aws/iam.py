"""The instance profile a node runs with: least privilege, one per run.

A node reads its run's code and datastore and writes its run's state; that is all its role can
do. Objects: the run's prefix ``PREFIX/runs/RUN/`` (read/write) and the run's datastore
``PREFIX/datastores/NAME[/VERSION]/`` (read only), never another run's or the rest of the
bucket's; listing the bucket's key names (see node_policy for why). The user's own keys are
never put on the instance.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from launcher.errors import BackendError, SpecError

# Characters that are wildcards or separators in IAM ARNs and conditions are refused outright.
_ARN_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}
POLICY_NAME = "launch-node-access"


def _part(kind: str, value: str) -> str:
    if not _ARN_PART.fullmatch(value) or ".." in value:
        raise SpecError(
            f"invalid {kind} {value!r} for an IAM policy: letters, digits, '.', '_' and '-' only"
        )
    return value


def node_policy(
    bucket: str, prefix: str, run: str, datastore: str | None = None, version: int | None = None
) -> dict[str, Any]:
    """The role policy of a run's nodes (pure)."""
    for p in prefix.split("/"):
        _part("prefix", p)
    run_prefix = f"{prefix}/runs/{_part('run name', run)}"
    read_prefixes: list[str] = []
    if datastore:
        ds = f"{prefix}/datastores/{_part('datastore name', datastore)}"
        read_prefixes.append(ds if version is None else f"{ds}/{int(version)}")
    bucket_arn = f"arn:aws:s3:::{_part('bucket', bucket)}"
    statements: list[dict[str, Any]] = [
        # Listing is bucket-wide on purpose: without s3:ListBucket, S3 answers a read of a key
        # that does not exist (a claim not made yet, no stop flag) with 403 instead of 404, and
        # the agent relies on "missing". A prefix condition would not help: a HEAD carries no
        # s3:prefix. Names become visible; contents stay out of reach.
        {"Sid": "ListBucket", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket_arn},
        {
            "Sid": "ReadWriteRun",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
            "Resource": f"{bucket_arn}/{run_prefix}/*",
        },
    ]
    if read_prefixes:
        statements.append(
            {
                "Sid": "ReadDatastore",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": [f"{bucket_arn}/{rp}/*" for rp in read_prefixes],
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def profile_name(root_url: str, run: str) -> str:
    """One role/profile name per (storage root, run); within IAM's 64 characters."""
    digest = hashlib.sha256(f"{root_url}\0{run}".encode()).hexdigest()[:10]
    return f"launch-{run[:45]}-{digest}"


def _code(e: Exception) -> str:
    return getattr(e, "response", {}).get("Error", {}).get("Code", "")


def ensure_instance_profile(
    iam: Any, name: str, policy: dict[str, Any], tags: list[dict[str, str]]
) -> str:
    """Create (or update) the role, its policy and its instance profile; returns the profile ARN.

    Idempotent: re-submitting a run reuses what exists and rewrites the policy.
    """
    from botocore.exceptions import ClientError

    try:
        try:
            iam.create_role(
                RoleName=name,
                AssumeRolePolicyDocument=json.dumps(TRUST_POLICY),
                Description="launch node: reads/writes only its run's S3 prefix",
                Tags=tags,
            )
        except ClientError as e:
            if _code(e) != "EntityAlreadyExists":
                raise
        iam.put_role_policy(
            RoleName=name, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(policy)
        )
        try:
            profile = iam.create_instance_profile(InstanceProfileName=name, Tags=tags)
            profile = profile["InstanceProfile"]
        except ClientError as e:
            if _code(e) != "EntityAlreadyExists":
                raise
            profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        if not any(r["RoleName"] == name for r in profile.get("Roles", [])):
            iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    except ClientError as e:
        raise BackendError(f"cannot set up instance profile {name}: {_code(e)}: {e}") from None
    return profile["Arn"]


def delete_instance_profile(iam: Any, name: str) -> bool:
    """Remove the run's profile, policy and role; False if there was nothing to remove."""
    from botocore.exceptions import ClientError

    def quiet(call, **kw) -> bool:
        try:
            call(**kw)
            return True
        except ClientError as e:
            if _code(e) == "NoSuchEntity":
                return False
            raise BackendError(f"cannot delete instance profile {name}: {_code(e)}") from None

    removed = quiet(iam.remove_role_from_instance_profile, InstanceProfileName=name, RoleName=name)
    removed |= quiet(iam.delete_instance_profile, InstanceProfileName=name)
    removed |= quiet(iam.delete_role_policy, RoleName=name, PolicyName=POLICY_NAME)
    removed |= quiet(iam.delete_role, RoleName=name)
    return removed
