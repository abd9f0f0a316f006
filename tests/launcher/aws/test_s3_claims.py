"""Claims on S3: the conditional put really is exclusive, and one node sees another's writes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest

from launcher.backends.aws import AwsBackend
from launcher.storage.root import Storage
from tests.launcher.aws.conftest import BUCKET

pytestmark = pytest.mark.aws


def test_create_exclusive_has_one_winner(aws):
    storage = AwsBackend().storage()
    key = "runs/r/experiments/exp-0/claims/000001"
    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda i: storage.create_exclusive(key, str(i).encode()), range(16)))
    assert won.count(True) == 1
    assert storage.read_bytes(key) == str(won.index(True)).encode()


def test_another_writer_is_seen_after_a_listing(aws):
    """The agent opens ``Storage(ROOT)`` with no options: its listings must not hide a claim
    another node makes after it looked (s3fs caches listings unless told not to)."""
    storage = Storage(f"s3://{BUCKET}/launch")
    assert storage.create_exclusive("runs/r/claims/000001", b"1")
    assert storage.list("runs/r/claims") == ["000001"]
    boto3.client("s3").put_object(Bucket=BUCKET, Key="launch/runs/r/claims/000002", Body=b"2")
    assert storage.exists("runs/r/claims/000002")
    assert storage.read_bytes("runs/r/claims/000002") == b"2"
    assert not storage.create_exclusive("runs/r/claims/000002", b"x")
