"""A local moto server standing in for AWS, shared by the session and reset between tests.

The environment is pinned at import, before any boto3/s3fs client can exist: dummy credentials,
no profile files, and an endpoint that goes nowhere until the server is up, so a test can never
reach real AWS by accident.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_SESSION_TOKEN="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_REGION="us-east-1",
    AWS_MAX_ATTEMPTS="1",
    AWS_CONFIG_FILE=os.devnull,
    AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    AWS_ENDPOINT_URL="http://127.0.0.1:9",  # discard port: nothing answers before the server
    AWS_EC2_METADATA_DISABLED="true",
)
os.environ.pop("AWS_PROFILE", None)

BUCKET = "launch-test-bucket"
# moto knows this public parameter (it does not know the Deep Learning AMI's).
AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"


@pytest.fixture(scope="session")
def moto_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    yield endpoint
    server.stop()


@pytest.fixture
def aws(moto_endpoint, tmp_path, monkeypatch):
    """A clean moto account with the launcher's bucket, and a LAUNCH_HOME configured for it."""
    import boto3
    import requests
    import s3fs

    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=30).raise_for_status()
    s3fs.S3FileSystem.clear_instance_cache()
    home = tmp_path / "launch_home"
    home.mkdir()
    (home / "config.yaml").write_text(
        f"aws:\n  bucket: {BUCKET}\n  prefix: launch\n  ami_parameter: {AMI_PARAMETER}\n"
    )
    monkeypatch.setenv("LAUNCH_HOME", str(home))
    monkeypatch.delenv("LAUNCH_AWS_BUCKET", raising=False)
    monkeypatch.delenv("LAUNCH_AWS_AMI", raising=False)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    yield moto_endpoint
    s3fs.S3FileSystem.clear_instance_cache()


def user_data_of(instance_id: str) -> str:
    import boto3

    attr = boto3.client("ec2").describe_instance_attribute(
        InstanceId=instance_id, Attribute="userData"
    )
    return base64.b64decode(attr["UserData"]["Value"]).decode()


SHUTDOWN_SHIM = """#!/bin/bash
# Plays the instance's power-off: shutdown behaviour is terminate, so `now` terminates it.
echo "shutdown $*" >> "$LAUNCH_TEST_LOG"
if [ "$2" = "now" ]; then
    aws ec2 terminate-instances --instance-ids "$LAUNCH_TEST_INSTANCE" > /dev/null
fi
"""
PYTHON3_SHIM = """#!/bin/bash
# The instance's python3: `-m venv DIR` makes DIR/bin/python this same shim, `-m pip` is logged
# (the package is already installed here, and there is no index), anything else runs for real.
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
    dir="${@: -1}"; mkdir -p "$dir/bin"; cp "$0" "$dir/bin/python"; exit 0
fi
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then echo "pip $*" >> "$LAUNCH_TEST_LOG"; exit 0; fi
exec REAL_PYTHON "$@"
"""


def play_instance(
    instance_id: str, work: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Be the instance moto will not be: run its real user-data with bash.

    The one change is the work directory (``/opt/launch`` is not writable here). ``shutdown``
    and ``python3`` are shims (logged power-off that terminates the instance; pip logged),
    the ``aws`` CLI and the agent are the real ones, against the same moto server.
    """
    script = user_data_of(instance_id)
    lines = script.splitlines()
    assert sum(line.startswith("LAUNCH_WORK_DIR=") for line in lines) == 1
    script = "\n".join(
        f"LAUNCH_WORK_DIR={work}" if line.startswith("LAUNCH_WORK_DIR=") else line for line in lines
    )
    shims = work.parent / f"{work.name}-shims"
    shims.mkdir(parents=True, exist_ok=True)
    (shims / "shutdown").write_text(SHUTDOWN_SHIM)
    (shims / "python3").write_text(PYTHON3_SHIM.replace("REAL_PYTHON", sys.executable))
    for shim in shims.iterdir():
        shim.chmod(0o755)
    (work.parent / f"{work.name}-user-data.sh").write_text(script)
    full_env = dict(os.environ)
    full_env.update(
        PATH=f"{shims}:{Path(sys.executable).parent}:/usr/bin:/bin",
        LAUNCH_TEST_LOG=str(work.parent / f"{work.name}-calls.log"),
        LAUNCH_TEST_INSTANCE=instance_id,
        LAUNCH_HEARTBEAT_S="0.3",
        LAUNCH_ARTIFACT_SYNC_S="0.5",
        LAUNCH_STOP_GRACE_S="5",
    )
    full_env.update(env or {})
    return subprocess.run(
        ["bash", "-c", script], env=full_env, capture_output=True, text=True, timeout=timeout
    )
