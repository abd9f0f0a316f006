"""A local moto server standing in for AWS, shared by the session and reset between tests.

The environment is pinned at import, before any boto3/s3fs client can exist: dummy credentials,
no profile files, and an endpoint that goes nowhere until the server is up, so a test can never
reach real AWS by accident.
"""

from __future__ import annotations

import os

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
    """A clean moto account with the launcher's bucket, and a LAUNCH_HOME configured for it.

    ``aws.node_addr: 127.0.0.1``: the played instances are processes on this machine, so the
    address a gang's nodes publish is loopback, not moto's made-up private IP (the setting a
    user sets for nodes reached through a tunnel)."""
    import boto3
    import requests
    import s3fs

    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=30).raise_for_status()
    s3fs.S3FileSystem.clear_instance_cache()
    home = tmp_path / "launch_home"
    home.mkdir()
    (home / "config.yaml").write_text(
        f"aws:\n  bucket: {BUCKET}\n  prefix: launch\n  ami_parameter: {AMI_PARAMETER}\n"
        "  node_addr: 127.0.0.1\n"
    )
    monkeypatch.setenv("LAUNCH_HOME", str(home))
    monkeypatch.delenv("LAUNCH_AWS_BUCKET", raising=False)
    monkeypatch.delenv("LAUNCH_AWS_AMI", raising=False)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    yield moto_endpoint
    from tests.launcher.aws.helpers import close_played_imds

    close_played_imds()
    s3fs.S3FileSystem.clear_instance_cache()
