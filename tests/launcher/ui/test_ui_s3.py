"""The dashboard over an S3 root (a local moto server): the same views and server, any backend.
The local index is deleted first, so what the pages show can only come from storage."""

from __future__ import annotations

import json
import os
import urllib.request

import pytest

from launcher.storage import records
from tests.launcher.ui.uihelpers import UiServer, add_log_piece, metrics_csv, ship_metrics

pytestmark = pytest.mark.aws
pytest.importorskip("starlette", reason="the ui extra (launch-video[ui]) is not installed")
BUCKET = "launch-tests"  # made by tests/launcher/conftest.py's moto_s3


@pytest.fixture
def s3_run(moto_s3, tmp_path, monkeypatch):
    """A finished 2-point sweep on the aws backend's storage, written as agents write it."""
    import s3fs

    endpoint = moto_s3["client_kwargs"]["endpoint_url"]
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
                 "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                 "AWS_EC2_METADATA_DISABLED": "true", "AWS_MAX_ATTEMPTS": "1"}.items():  # fmt: skip
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("LAUNCH_AWS_BUCKET", raising=False)
    home = tmp_path / "launch-home"
    home.mkdir()
    prefix = f"ui-{tmp_path.name[-12:]}".replace("_", "-")
    (home / "config.yaml").write_text(f"aws:\n  bucket: {BUCKET}\n  prefix: {prefix}\n")
    monkeypatch.setenv("LAUNCH_HOME", str(home))
    s3fs.S3FileSystem.clear_instance_cache()
    work = tmp_path / "project"
    work.mkdir()
    (work / "train.py").write_text("print('hi')\n")
    monkeypatch.chdir(work)

    from launcher.backends.aws import AwsBackend
    from launcher.runs import prepare_run
    from launcher.spec.jobspec import JobSpec

    class NoInstances(AwsBackend):
        def submit(self, run, spec):
            return []

    spec = JobSpec.load(None, workdir=work, script="train.py", script_args=["--lr", "[0.1, 0.01]"],
                        name="s3-sweep", backend="aws", instance_type="g4dn.xlarge")  # fmt: skip
    name = prepare_run(spec, NoInstances(), workdir=work)
    storage = NoInstances().storage()
    for i, (exp, best) in enumerate((("exp-0", 0.4), ("exp-1", 0.7))):
        records.write_status(storage, name, exp, state="running", attempt=1, node="i-1",
                             started=1.0 + i)  # fmt: skip
        ship_metrics(storage, name, exp, metrics_csv(best, 2), tmp_path / "art" / exp)
        add_log_piece(storage, name, exp, f"{exp} on s3\n")
        records.finish(storage, name, exp, state="succeeded", exit_code=0, ended=50.0 + i)
    (home / "runs.sqlite3").unlink()  # storage is the truth: the pages must find it there
    yield name
    s3fs.S3FileSystem.clear_instance_cache()


def test_pages_read_an_s3_root(s3_run):
    from launcher.ui import views

    runs = views.runs_page()["runs"]
    assert [(r["name"], r["backend"], r["status"]) for r in runs] == [(s3_run, "aws",
                                                                       "succeeded")]  # fmt: skip
    page = views.run_page(s3_run)
    assert {e["id"]: (e["params"]["lr"], e["best"]) for e in page["experiments"]} == {
        "exp-0": (0.1, 0.4), "exp-1": (0.01, 0.7)}  # fmt: skip
    assert page["cost_per_hour"] is not None  # the aws backend knows its prices
    assert views.log_tail(s3_run, "exp-1")["text"] == "exp-1 on s3\n"
    assert views.experiment_metrics(s3_run, "exp-1")["curves"]["val_acc1"][-1] == (1, 0.7)
    server = UiServer()
    try:
        with urllib.request.urlopen(f"{server.base}/api/runs/{s3_run}/exp-0/log", timeout=60) as r:
            assert json.loads(r.read())["text"] == "exp-0 on s3\n"
        with urllib.request.urlopen(f"{server.base}/download/{s3_run}/exp-0/metrics.csv",
                                    timeout=60) as r:  # fmt: skip
            assert r.read().decode() == metrics_csv(0.4, 2)
    finally:
        server.stop()
