"""Storage roots for the launcher's tests: a tmp ``file://`` root, and the same code on ``s3://``
against a local moto server (started once per session, only when an s3 test runs)."""

from __future__ import annotations

import uuid

import pytest

from launcher.storage.root import Storage

BUCKET = "launch-tests"


@pytest.fixture(scope="session")
def moto_s3():
    """A local moto S3 server: endpoint URL and client options; nothing reaches AWS."""
    pytest.importorskip("moto.server")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        "config_kwargs": {"retries": {"max_attempts": 1}},
        "use_listings_cache": False,
        "skip_instance_cache": True,
    }
    import boto3

    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=BUCKET)
    yield options
    server.stop()


def _file_storage(tmp_path) -> Storage:
    return Storage(f"file://{tmp_path / 'store'}")


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.aws)])
def storage(request, tmp_path) -> Storage:
    """An empty storage root: a tmp file:// folder, or a fresh prefix in the moto bucket."""
    if request.param == "file":
        return _file_storage(tmp_path)
    options = request.getfixturevalue("moto_s3")
    return Storage(f"s3://{BUCKET}/t-{uuid.uuid4().hex[:12]}", **options)


@pytest.fixture
def file_storage(tmp_path) -> Storage:
    """A tmp file:// root, for behaviour only a file system has (read-only files, no copy)."""
    return _file_storage(tmp_path)
