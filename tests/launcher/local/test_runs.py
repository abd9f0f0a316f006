"""launcher.runs.state on the local backend: run -> agents -> status -> logs -> artifacts, sweeps,
retries, stop, delete, and the index that keeps `launch status` fast."""

from __future__ import annotations

import json
import time

import pytest
from localjob import NoAgents, at_once, make_spec, read_records

from launcher import runs
from launcher.backends.local import LocalBackend
from launcher.errors import NotFoundError, SpecError
from launcher.processes import process_alive
from launcher.runs.index import RunIndex, RunRow
from launcher.runs.logs import read_log
from launcher.storage import records
from launcher.storage.artifacts import list_artifacts, pull_artifacts
from launcher.storage.records import check_name
from tests.launcher.waiting import wait_for


def test_run_status_logs_artifacts_end_to_end(home, workdir, tmp_path):
    record = tmp_path / "record.jsonl"
    spec = make_spec(script_args=["--steps", "3", "--record", str(record)], env={"MY_VAR": "v"})
    name = runs.prepare_run(spec, LocalBackend())
    storage = LocalBackend().storage()
    assert storage.exists(f"runs/{name}/code.tar.gz")
    assert json.loads(storage.read_text(f"runs/{name}/run.json"))["spec"]["script"] == "job.py"

    row, views = runs.wait_run(name, poll=0.2, timeout=60)
    assert row.status == "succeeded" and (row.done, row.total) == (1, 1)
    (v,) = views
    assert (v.state, v.exit_code, v.attempt) == ("succeeded", 0, 1)
    assert v.metrics["val_acc1"] == pytest.approx(2 / 3)  # the last logged value

    log = read_log(storage, name, "exp-0")
    assert "start_step=0" in log and "step 3" in log

    (start,) = [r for r in read_records(record) if r["event"] == "start"]
    env = start["env"]
    assert env["LAUNCH_RUN"] == name and env["LAUNCH_EXPERIMENT"] == "exp-0"
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["MY_VAR"] == "v"
    assert env["LAUNCH_ARTIFACTS_DIR"].endswith("exp-0")

    paths = {a.path for a in list_artifacts(storage, name)}
    assert {"checkpoints/last.ckpt", "checkpoints/best.ckpt", "metrics.csv", "labels.txt"} <= paths
    pulled = pull_artifacts(storage, name, dest=tmp_path / "pulled")
    ckpt = tmp_path / "pulled" / name / "exp-0" / "checkpoints" / "last.ckpt"
    assert ckpt in pulled and json.loads(ckpt.read_text()) == {"step": 3}

    assert RunIndex().get(name).status == "succeeded"


def test_sweep_runs_each_point_with_at_most_max_nodes_at_once(home, workdir, tmp_path):
    record = tmp_path / "record.jsonl"
    args = ["--lr", "[0.1, 0.01]", "--bs", "[1, 2]", "--steps", "2", "--sleep", "0.4",
            "--record", str(record)]  # fmt: skip
    name = runs.prepare_run(make_spec(script_args=args, max_nodes=2), LocalBackend())
    row, views = runs.wait_run(name, poll=0.2, timeout=90)
    assert row.status == "succeeded" and row.total == 4
    assert [v.params for v in views] == [
        {"lr": 0.1, "bs": 1}, {"lr": 0.1, "bs": 2}, {"lr": 0.01, "bs": 1}, {"lr": 0.01, "bs": 2},
    ]  # fmt: skip

    recs = read_records(record)
    starts = {r["exp"]: r for r in recs if r["event"] == "start"}
    ends = {r["exp"]: r for r in recs if r["event"] == "end"}
    assert sorted(starts) == sorted(ends) == ["exp-0", "exp-1", "exp-2", "exp-3"]
    for v in views:  # each got its own args
        lr, bs = str(v.params["lr"]), str(v.params["bs"])
        assert starts[v.id]["argv"][:4] == ["--lr", lr, "--bs", bs]
    # how many ran at once, from the recorded intervals
    events = sorted(
        [(s["time"], 1) for s in starts.values()] + [(e["time"], -1) for e in ends.values()]
    )
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    assert peak == 2

    storage = LocalBackend().storage()
    for v in views:
        assert f"lr={v.params['lr']}" in read_log(storage, name, v.id)
        assert {a.experiment for a in list_artifacts(storage, name, v.id)} == {v.id}


def test_random_search_is_reproducible(home, workdir):
    args = ["--lr", "loguniform(1e-4, 1e-1, 2)", "--bs", "[8, 16, 32]"]

    def params(name):
        spec = make_spec(script_args=args, strategy="random_search", trials=3, seed=7, name=name)
        runs.prepare_run(spec, NoAgents())
        storage = NoAgents().storage()
        return [storage.read_json(f"runs/{name}/experiments/exp-{i}/params.json") for i in range(3)]

    first, second = params("rs-a"), params("rs-b")
    assert first == second
    assert len({json.dumps(p["params"]) for p in first}) > 1


def test_code_is_frozen_at_launch(home, workdir):
    name = runs.prepare_run(make_spec(script_args=["--steps", "1"]), NoAgents())
    (workdir / "job.py").write_text("print('EDITED AFTER LAUNCH')\n")
    LocalBackend().submit(name, make_spec(script="job.py"))
    row, _ = runs.wait_run(name, poll=0.2, timeout=60)
    log = read_log(LocalBackend().storage(), name, "exp-0")
    assert row.status == "succeeded" and "step 1" in log and "EDITED" not in log


def test_retries_rerun_a_failed_experiment(home, workdir):
    spec = make_spec(script_args=["--fail-first", "--steps", "1"], retries=1)
    name = runs.prepare_run(spec, LocalBackend())
    row, (v,) = runs.wait_run(name, poll=0.2, timeout=60)
    assert row.status == "succeeded" and v.attempt == 2
    log = read_log(LocalBackend().storage(), name, "exp-0")
    assert "failing on purpose" in log and "attempt 2" in log


def test_failure_without_retries_fails_the_run(home, workdir):
    name = runs.prepare_run(make_spec(script_args=["--exit", "5", "--steps", "1"]), LocalBackend())
    row, (v,) = runs.wait_run(name, poll=0.2, timeout=60)
    assert row.status == "failed" and (v.state, v.exit_code) == ("failed", 5)
    assert "exited with code 5" in v.message


def test_stop_run_kills_the_script_and_marks_it_stopped(home, workdir, tmp_path):
    record = tmp_path / "record.jsonl"
    args = ["--steps", "1000", "--sleep", "0.1", "--record", str(record)]
    name = runs.prepare_run(make_spec(script_args=args), LocalBackend())
    start = wait_for(lambda: read_records(record), what="the script to start")[0]
    row = runs.stop_run(name)
    assert row.status == "stopped"
    _, (v,) = runs.run_detail(name)
    assert v.state == "stopped" and v.message == "stopped by the user"
    wait_for(lambda: not process_alive(start["pid"]), timeout=10, what="the script to die")


def test_stop_does_not_wait_for_a_heartbeat_on_the_local_backend(
    home, workdir, tmp_path, monkeypatch
):
    monkeypatch.setenv("LAUNCH_HEARTBEAT_S", "30")  # agents would notice the stop file late
    record = tmp_path / "record.jsonl"
    args = ["--steps", "1000", "--sleep", "0.1", "--record", str(record)]
    name = runs.prepare_run(make_spec(script_args=args), LocalBackend())
    wait_for(lambda: read_records(record), what="the script to start")
    time.sleep(0.5)  # a few steps: checkpoints to ship at the end
    started = time.time()
    row = runs.stop_run(name)
    assert time.time() - started < 10
    _, (v,) = runs.run_detail(name)
    assert row.status == "stopped" and v.message == "stopped by the user"
    assert "checkpoints/last.ckpt" in {a.path for a in list_artifacts(LocalBackend().storage(),
                                                                      name)}  # fmt: skip


def test_stop_run_stops_the_local_nodes_once(home, workdir, tmp_path, monkeypatch):
    calls = []
    real = LocalBackend.stop

    def counted(self, run):
        stopped = real(self, run)
        calls.append([n.node_id for n in stopped])
        return stopped

    monkeypatch.setattr(LocalBackend, "stop", counted)
    record = tmp_path / "record.jsonl"
    args = ["--steps", "1000", "--sleep", "0.1", "--record", str(record)]
    name = runs.prepare_run(make_spec(script_args=args), LocalBackend())
    wait_for(lambda: read_records(record), what="the script to start")
    row = runs.stop_run(name)
    assert row.status == "stopped"
    assert calls == [["node-0"]]  # one call, and it found the running agent


def test_stopping_one_experiment_is_prompt_and_the_agent_goes_on(
    home, workdir, tmp_path, monkeypatch
):
    monkeypatch.setenv("LAUNCH_HEARTBEAT_S", "30")  # the agent would notice the stop key late
    monkeypatch.setenv("LAUNCH_STALE_S", "120")
    record = tmp_path / "record.jsonl"
    args = ["--steps", "[1000, 2]", "--sleep", "0.1", "--record", str(record)]
    name = runs.prepare_run(make_spec(script_args=args, max_nodes=1), LocalBackend())
    first = wait_for(lambda: read_records(record), what="the first script to start")[0]
    exp = first["env"]["LAUNCH_EXPERIMENT"]
    assert exp == "exp-0"  # the one with 1000 steps
    wait_for(lambda: runs.run_detail(name)[1][0].state == "running", what="exp-0 running")
    started = time.time()
    runs.stop_run(f"{name}/{exp}")
    assert time.time() - started < 5  # not a 30 s heartbeat
    views = {v.id: v for v in runs.run_detail(name)[1]}
    assert (views[exp].state, views[exp].message) == ("stopped", "stopped by the user")
    wait_for(lambda: not process_alive(first["pid"]), timeout=10, what="the script to die")
    # the same agent goes on to the next experiment, which runs to the end
    row, views = runs.wait_run(name, poll=0.2, timeout=60)
    assert sorted((v.id, v.state) for v in views) == [("exp-0", "stopped"), ("exp-1", "succeeded")]
    assert sorted(p.name for p in (home / "nodes" / name).glob("*.json")) == ["node-0.json"]


def test_stop_queued_experiments_never_start(home, workdir):
    name = runs.prepare_run(make_spec(script_args=["--lr", "[1, 2, 3]"]), NoAgents())
    row = runs.stop_run(name, wait=0)
    assert row.status == "stopped" and row.done == 3


def test_delete_run_removes_everything(home, workdir):
    name = runs.prepare_run(make_spec(script_args=["--steps", "1"]), LocalBackend())
    runs.wait_run(name, poll=0.2, timeout=60)
    runs.delete_run(name)
    assert not LocalBackend().storage().exists(f"runs/{name}")
    assert RunIndex().get(name) is None and not (home / "nodes" / name).exists()
    with pytest.raises(NotFoundError, match=name):
        runs.run_detail(name)


def test_a_new_experiment_reads_the_same_as_one_never_written(home, workdir):
    name = runs.prepare_run(make_spec(script_args=["--lr", "[1, 2]"]), NoAgents())
    storage = LocalBackend().storage()
    assert not storage.exists(f"runs/{name}/experiments/exp-0/status.json")  # written when run
    written = records.read_status(storage, name, "exp-0")
    assert (
        written
        == records.queued_status()
        == records.read_statuses(storage, name, ["exp-1"])["exp-1"]
    )
    assert written["state"] == "queued" and written["attempt"] == 0
    row, views = runs.run_detail(name)
    shown = [(v.state, v.attempt, v.exit_code, v.metrics, v.message) for v in views]
    assert shown == [("queued", 0, None, {}, "")] * 2 and row.status == "queued"


def test_run_names(home, workdir):
    spec = make_spec(name="my-run")
    assert runs.prepare_run(spec, NoAgents()) == "my-run"
    with pytest.raises(SpecError, match="already exists"):
        runs.prepare_run(spec, NoAgents())
    generated = runs.new_run_name("trainer/Train_Video.py")
    assert check_name(generated).startswith("train-video-")
    for bad in ("Bad_Name", "nl\n", "-lead", "x" * 64):  # a trailing newline too: fullmatch
        with pytest.raises(SpecError, match="invalid run name"):
            check_name(bad)


def test_index_is_rebuilt_from_storage(home, workdir):
    name = runs.prepare_run(make_spec(name="adopt-me"), NoAgents())
    (home / "runs.sqlite3").unlink()
    row, _ = runs.run_detail(name)
    assert row.name == name and RunIndex().get(name) is not None


def test_listing_reads_storage_only_for_unfinished_runs(home, workdir):
    index = RunIndex()
    # finished rows pointing at storage that does not exist: refreshing any would fail
    index.upsert_many([RunRow(name=f"old-{i}", backend="local", root="file:///nonexistent",
                              created=float(i), status="succeeded", done=1, total=1)
                       for i in range(1000)])  # fmt: skip
    live = runs.prepare_run(make_spec(name="live", script_args=["--steps", "1"]), NoAgents())
    rows = runs.list_runs(index)
    assert len(rows) == 1001 and rows[0].name == live
    # the unfinished run had no agent: listing it started one (reconcile)
    runs.wait_run(live, poll=0.2, timeout=60)


def test_two_launches_racing_for_one_name(home, workdir):
    results = []

    def launch_it():
        try:
            results.append(runs.prepare_run(make_spec(name="same"), NoAgents()))
        except SpecError as e:
            results.append(e)

    at_once(launch_it, 3)
    assert results.count("same") == 1
    assert sum(isinstance(r, SpecError) for r in results) == 2


def test_a_submit_failing_after_a_node_started_fails_the_run_and_stops_it(home, workdir):
    from launcher.errors import BackendError

    class OneNodeThenQuota(LocalBackend):
        def submit(self, run, spec):
            super().submit(run, spec)
            raise BackendError("vCPU quota exceeded after 1 node")

    spec = make_spec(name="partial", script_args=["--steps", "1000", "--sleep", "0.05"])
    with pytest.raises(BackendError, match="quota exceeded"):
        runs.prepare_run(spec, OneNodeThenQuota())
    assert [n.state for n in LocalBackend().nodes("partial")] == ["terminated"]
    row = RunIndex().get("partial")
    assert row.status == "failed" and "submit failed: vCPU quota exceeded" in row.message
    row, (v,) = runs.run_detail("partial")
    assert row.status == "failed"
    assert (v.state, v.message) == ("failed", "submit failed: vCPU quota exceeded after 1 node")
    runs.delete_run("partial")
    assert RunIndex().get("partial") is None


def test_bad_credentials_at_submit_remove_the_run_and_keep_the_error(home, workdir):
    from launcher.errors import BackendError

    class BadCredentials(LocalBackend):
        def submit(self, run, spec):
            raise BackendError("AWS credentials are invalid (InvalidClientTokenId)")

        def nodes(self, run):  # the same credentials fail here too
            raise BackendError("AWS credentials are invalid (InvalidClientTokenId)")

    with pytest.raises(BackendError, match="InvalidClientTokenId"):
        runs.prepare_run(make_spec(name="creds"), BadCredentials())
    assert not LocalBackend().storage().exists("runs/creds")
    assert RunIndex().get("creds") is None


@pytest.mark.parametrize("damage", ["delete", "corrupt"])
def test_status_lists_what_storage_holds_when_the_index_is_lost(home, workdir, damage):
    from click.testing import CliRunner

    from launcher.cli import cli

    names = [runs.prepare_run(make_spec(name=f"kept-{i}"), NoAgents()) for i in range(3)]
    index = home / "runs.sqlite3"
    if damage == "delete":
        index.unlink()
    else:
        index.write_bytes(b"\0garbage" * 512)
        for extra in ("runs.sqlite3-wal", "runs.sqlite3-shm"):
            (home / extra).unlink(missing_ok=True)
    r = CliRunner().invoke(cli, ["status"])
    assert r.exit_code == 0, r.output
    assert "no runs yet" not in r.output
    listed = [line.split()[0] for line in r.stdout.splitlines()[1:]]
    assert sorted(listed) == names


def test_max_experiments_lets_a_big_sweep_through_written_whole_run_json_last(
    home, workdir, monkeypatch
):
    from launcher.runs import launching
    from launcher.storage.root import Storage

    order = []
    write_files, write_json = launching._write_files, Storage.write_json

    def files_then(storage, files):
        write_files(storage, files)
        order.append(len(files))

    def json_then(storage, key, obj):
        write_json(storage, key, obj)
        order.append(key)

    monkeypatch.setattr(launching, "_write_files", files_then)
    monkeypatch.setattr(Storage, "write_json", json_then)
    spec = make_spec(script_args=["--lr", "range(2000)"], max_experiments=2000)
    name = runs.prepare_run(spec, NoAgents())
    assert order == [2000, f"runs/{name}/run.json"]  # every experiment's files, then run.json
    storage = LocalBackend().storage()
    record = storage.read_json(f"runs/{name}/run.json")
    assert len(record["experiments"]) == 2000 and record["spec"]["max_experiments"] == 2000
    assert len(storage.list(f"runs/{name}/experiments")) == 2000
    for exp in ("exp-0", "exp-1999"):
        params = storage.read_json(f"runs/{name}/experiments/{exp}/params.json")
        assert params == next(e for e in record["experiments"] if e["id"] == exp)
        assert records.read_status(storage, name, exp) == records.queued_status()
    assert params["args"] == ["--lr", "1999"]


def test_a_failed_experiment_write_leaves_no_run(home, workdir, monkeypatch):
    import errno
    import os

    from launcher.errors import StorageError

    real_open, opened = os.open, []

    def full_disk(path, flags, mode=0o777, **kw):
        if str(path).endswith(".json") and "/experiments/" in str(path):
            opened.append(path)
            if len(opened) > 5:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, mode, **kw)

    spec = make_spec(name="full", script_args=["--lr", "range(10)"])
    with monkeypatch.context() as m, pytest.raises(StorageError, match=r"exp-0/params.json and 9"):
        m.setattr(os, "open", full_disk)
        runs.prepare_run(spec, NoAgents())
    assert not LocalBackend().storage().exists("runs/full")  # whole or absent
    assert runs.prepare_run(spec, NoAgents()) == "full"
