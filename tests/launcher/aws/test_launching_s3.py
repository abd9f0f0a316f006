"""A sweep's experiment files on S3: written in one batched pass, before run.json."""

from __future__ import annotations

import pytest

from launcher.backends.aws import AwsBackend
from launcher.runs import launching
from launcher.spec.jobspec import JobSpec
from launcher.storage import records

pytestmark = pytest.mark.aws


def test_a_sweeps_files_are_written_in_one_batch_then_run_json(aws, monkeypatch):
    storage = AwsBackend().storage()
    spec = JobSpec.from_dict(
        {"script": "train.py", "script_args": ["--lr", "range(300)"], "backend": "aws"}
    )
    puts = []
    pipe = storage.fs.pipe  # s3fs binds its sync methods per instance

    def counted(path, value=None, **kw):
        puts.append(len(path) if isinstance(path, dict) else 1)
        return pipe(path, value, **kw)

    monkeypatch.setattr(storage.fs, "pipe", counted)
    launching._write_run(storage, "big", spec, spec.experiments(), b"code")
    assert puts == [300]  # one batch (concurrent puts), not 300 round trips one after another
    assert len(storage.list("runs/big/experiments")) == 300
    record = storage.read_json("runs/big/run.json")
    last = record["experiments"][-1]
    assert storage.read_json(records.exp_key("big", "exp-299", "params.json")) == last
    assert records.read_status(storage, "big", "exp-299") == records.queued_status()
    statuses = records.read_statuses(storage, "big", [e["id"] for e in record["experiments"]])
    assert statuses == {e["id"]: records.queued_status() for e in record["experiments"]}
