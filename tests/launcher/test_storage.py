"""Storage: an unreachable backend (network, credentials) is one StorageError naming the URL."""

from __future__ import annotations

import pytest

from launcher.errors import StorageError
from launcher.storage.root import Storage


class Unreachable:
    """An fsspec filesystem whose every call fails as a dropped connection would."""

    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise ConnectionError("Could not connect to the endpoint URL")

        return fail


@pytest.mark.parametrize(
    "call, op",
    [
        (lambda s: s.exists("runs/r/stop"), "check"),
        (lambda s: s.list("datastores"), "list"),
        (lambda s: s.walk("runs/r"), "list"),
        (lambda s: s.modified("runs/r/run.json"), "check"),
        (lambda s: s.read_json("runs/r/run.json", default=None), "read"),
        (lambda s: s.write_json("runs/r/x.json", {}), "write"),
        (lambda s: s.delete("runs/r", recursive=True), "delete"),
    ],
)
def test_an_unreachable_root_is_one_storage_error(call, op):
    s = Storage("s3://bucket/prefix")
    s._fs, s._root = Unreachable(), "bucket/prefix"
    with pytest.raises(StorageError) as e:
        call(s)
    assert str(e.value).startswith(f"{op} s3://bucket/prefix/")
    assert "ConnectionError: Could not connect" in str(e.value)
