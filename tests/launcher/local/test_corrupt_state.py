"""State that went wrong is one clear line, and everything else still works (issue 8, points 7, 8
and 11): a `launch run` killed between reserving its name and writing run.json, a relative
LAUNCH_HOME, and truncated or garbled records (run.json, status.json, artifacts.json, a
datastore's MANIFEST.json, a local node record, the SQLite index)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner
from localjob import NoAgents, make_spec

from launcher import runs
from launcher.backends.local import LocalBackend
from launcher.cli.app import cli
from launcher.processes import process_alive
from launcher.storage.artifacts import list_artifacts
from tests.launcher.waiting import wait_for

CPU = ["--instance", "t3.medium", "--gpus", "0"]
LONG = ["--steps", "600", "--sleep", "0.1"]


def launch(*args: str):
    return CliRunner().invoke(cli, list(args))


def warnings_of(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def agent_pids(run: str) -> list[int]:
    return [n.extra["pid"] for n in LocalBackend().nodes(run)]


def truncate(path, keep: int = 7) -> None:
    data = path.read_bytes()
    os.chmod(path, 0o644)
    path.write_bytes(data[:keep])


# -- 7: a `launch run` killed after reserving its name, before run.json ---------------------------
# The real CLI in its own process, blocked where run.json is about to be written (code and
# params are stored by then), so the test can kill -9 it exactly there.
BLOCKED_LAUNCH = textwrap.dedent(
    """
    import pathlib, sys, time
    from launcher.storage.root import Storage

    marker = pathlib.Path(sys.argv[1])
    real = Storage.write_json

    def write_json(self, key, obj):
        if key.endswith("/run.json"):
            marker.write_text("about to write run.json")
            time.sleep(600)
        return real(self, key, obj)

    Storage.write_json = write_json
    from launcher.cli import main

    sys.argv = ["launch", *sys.argv[2:]]
    main()
    """
)


def start_blocked_launch(tmp_path, workdir, name: str) -> tuple[subprocess.Popen, object]:
    script, marker = tmp_path / "blocked_launch.py", tmp_path / f"{name}.marker"
    script.write_text(BLOCKED_LAUNCH)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(marker), "run", "--name", name, *CPU, "job.py"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    wait_for(lambda: marker.exists() or proc.poll() is not None, timeout=60,
             what="the launch to reach run.json")  # fmt: skip
    assert proc.poll() is None, proc.communicate()
    return proc, marker


def kill_launch(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)  # reaped: its pid is gone, as after a real kill -9


def test_killed_launch_is_listed_incomplete_and_delete_removes_it(home, workdir, tmp_path):
    proc, _ = start_blocked_launch(tmp_path, workdir, "half")
    store = home / "store" / "runs" / "half"
    assert (store / "reserved").exists() and (store / "code.tar.gz").exists()
    # while its creator lives the run is being created: not listed, the name taken
    assert "half" not in launch("status").output
    kill_launch(proc)

    result = launch("status")
    assert result.exit_code == 0, result.output
    line = next(r for r in result.stdout.splitlines() if r.startswith("half "))
    assert "incomplete" in line
    (warning,) = warnings_of(result)
    assert "half" in warning and "run.json" in warning and "launch delete half" in warning

    detail = launch("status", "half")
    assert detail.exit_code == 0 and "half: incomplete" in detail.stdout, detail.output
    assert "launch delete half" in detail.stderr

    deleted = launch("delete", "-y", "half")
    assert deleted.exit_code == 0, deleted.output
    assert not store.exists()
    assert "half" not in launch("status").output


def test_rerun_of_the_name_reclaims_it_once_its_creator_is_gone(home, workdir, tmp_path):
    proc, _ = start_blocked_launch(tmp_path, workdir, "again")
    refused = launch("run", "--name", "again", *CPU, "job.py")  # its creator still runs
    assert refused.exit_code == 1 and "already exists" in refused.stderr, refused.output
    kill_launch(proc)
    assert "incomplete" in launch("status").stdout  # indexed as incomplete meanwhile

    rerun = launch("run", "--name", "again", "--wait", *CPU, "job.py")
    assert rerun.exit_code == 0, rerun.output
    row, (view,) = runs.run_detail("again")
    assert row.status == "succeeded" and view.state == "succeeded"
    status = launch("status")
    assert "incomplete" not in status.output and "again" in status.stdout


# -- 8: a relative LAUNCH_HOME --------------------------------------------------------------------
def test_a_run_under_a_relative_launch_home_finishes(home, workdir):
    env = dict(os.environ, LAUNCH_HOME=".launch")
    proc = subprocess.run(
        [sys.executable, "-m", "launcher", "run", "--wait", *CPU, "job.py"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    try:
        assert proc.returncode == 0, proc.stderr
        assert "succeeded" in proc.stderr
        assert not (workdir / ".launch" / ".launch").exists()
        assert (workdir / ".launch" / "store" / "runs").is_dir()
    finally:
        for record in (workdir / ".launch").glob("nodes/*/*.json"):
            with contextlib.suppress(ProcessLookupError, ValueError, KeyError):
                os.killpg(json.loads(record.read_text())["pid"], signal.SIGKILL)


# -- 11: corrupt records --------------------------------------------------------------------------
def test_a_truncated_run_json_is_one_line_and_stop_and_delete_still_work(home, workdir):
    bad = runs.prepare_run(make_spec(name="bad", script_args=LONG), LocalBackend())
    good = runs.prepare_run(make_spec(name="good"), LocalBackend())
    runs.wait_run(good, poll=0.2, timeout=60)
    wait_for(lambda: runs.run_detail(bad)[1][0].state == "running", what="bad running")
    (pid,) = agent_pids(bad)
    truncate(home / "store" / "runs" / "bad" / "run.json")

    result = launch("status")
    assert result.exit_code == 0, result.output
    assert any(r.startswith("good ") and "succeeded" in r for r in result.stdout.splitlines())
    assert any(r.startswith("bad ") and "corrupt" in r for r in result.stdout.splitlines())
    (warning,) = warnings_of(result)
    assert "runs/bad/run.json is not valid JSON" in warning and "launch delete bad" in warning

    detail = launch("status", "bad")
    assert detail.exit_code == 0 and "bad: corrupt" in detail.stdout, detail.output
    assert "exp-0" in detail.stdout  # its experiments, from storage

    stopped = launch("stop", "bad")
    assert stopped.exit_code == 0, stopped.output
    assert not process_alive(pid)  # its agent was stopped, not left running
    deleted = launch("delete", "-y", "bad")
    assert deleted.exit_code == 0, deleted.output
    assert not (home / "store" / "runs" / "bad").exists()
    assert not (home / "nodes" / "bad").exists()
    assert "good" in launch("status").stdout


def test_delete_of_a_corrupt_run_the_index_never_saw_stops_its_agent(home, workdir):
    bad = runs.prepare_run(make_spec(name="unseen", script_args=LONG), LocalBackend())
    wait_for(lambda: runs.run_detail(bad)[1][0].state == "running", what="unseen running")
    (pid,) = agent_pids(bad)
    truncate(home / "store" / "runs" / "unseen" / "run.json")
    (home / "runs.sqlite3").unlink()  # another machine: only storage knows the run

    deleted = launch("delete", "-y", "unseen")
    assert deleted.exit_code == 0, deleted.output
    wait_for(lambda: not process_alive(pid), timeout=30, what="its agent to end")
    assert not (home / "store" / "runs" / "unseen").exists()


def test_a_corrupt_index_is_set_aside_and_rebuilt(home, workdir):
    # the run is made in another process, as a user's earlier `launch run` was: an index
    # connection still open in this one would keep reading the old pages through its WAL
    cmd = [sys.executable, "-c", "from launcher.cli.app import main; main()", "run", "--name",
           "kept", "--instance", "t3.medium", "--gpus", "0", "--wait", "job.py"]  # fmt: skip
    assert subprocess.run(cmd, capture_output=True, timeout=120).returncode == 0
    (home / "runs.sqlite3").write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    for suffix in ("-wal", "-shm"):
        (home / f"runs.sqlite3{suffix}").unlink(missing_ok=True)

    result = launch("status")
    assert result.exit_code == 0, result.output
    assert any(r.startswith("kept ") and "succeeded" in r for r in result.stdout.splitlines())
    (warning,) = warnings_of(result)
    assert "runs.sqlite3" in warning and "rebuilt" in warning
    assert launch("status").stderr == ""  # rebuilt once


def test_a_truncated_status_json_of_a_queued_experiment_stops_nothing(home, workdir):
    spec = make_spec(name="trunc", script_args=["--lr", "[0.1, 0.2, 0.3]"], max_nodes=1)
    name = runs.prepare_run(spec, NoAgents())
    status = home / "store" / "runs" / name / "experiments" / "exp-1" / "status.json"
    status.write_text('{"state": "que')  # a crash mid-write
    LocalBackend().submit(name, spec)

    row, views = runs.wait_run(name, poll=0.2, timeout=90)
    assert row.status == "succeeded", [(v.id, v.state, v.message) for v in views]
    assert [v.state for v in views] == ["succeeded"] * 3


def _truncated_manifest_run(home) -> tuple[str, int]:
    # long enough (40 x 0.1 s) that the manifest is cut while the script still runs, so a
    # ship comes after it even on a loaded machine
    spec = make_spec(name="arts", script_args=["--steps", "40", "--sleep", "0.1"])
    name = runs.prepare_run(spec, LocalBackend())
    manifest = home / "store" / "runs" / name / "experiments" / "exp-0" / "artifacts.json"
    wait_for(manifest.exists, timeout=30, what="a first ship")
    (pid,) = agent_pids(name)
    truncate(manifest)
    final = home / "store" / "runs" / name / "experiments" / "exp-0" / "final.json"
    assert not final.exists(), "the run ended before its manifest was cut: the test proves nothing"
    return name, pid


def test_a_truncated_artifacts_json_mid_run_does_not_kill_the_agent(home, workdir):
    name, pid = _truncated_manifest_run(home)
    row, (view,) = runs.wait_run(name, poll=0.2, timeout=60)
    assert row.status == "succeeded", view.message
    assert view.attempt == 1  # the same agent finished it: none died, none was replaced
    log = (home / "nodes" / name / "node-0.log").read_text()
    assert "Traceback" not in log, log
    wait_for(lambda: not process_alive(pid), timeout=30, what="the agent to end on its own")


def test_the_next_ship_rewrites_a_truncated_artifacts_json(home, workdir):
    name, _ = _truncated_manifest_run(home)
    runs.wait_run(name, poll=0.2, timeout=60)
    shipped = {a.path for a in list_artifacts(LocalBackend().storage(), name)}
    assert "checkpoints/best.ckpt" in shipped


def test_a_corrupt_datastore_manifest_hides_no_other_datastore(home, workdir, tmp_path):
    src = tmp_path / "data"
    src.mkdir()
    (src / "a.txt").write_text("a")
    for name in ("first", "second"):
        assert launch("datastore", "create", "--name", name, "--source", str(src)).exit_code == 0
    manifest = home / "store" / "datastores" / "first" / "1" / "MANIFEST.json"
    truncate(manifest)

    result = launch("datastore", "list")
    assert result.exit_code == 0, result.output
    rows = {r.split()[0]: r for r in result.stdout.splitlines()[1:] if r.strip()}
    assert "corrupt" in rows["first"] and "1 B" in rows["second"], result.stdout
    (warning,) = warnings_of(result)
    assert "first/1/MANIFEST.json" in warning and "launch datastore delete first:1" in warning


def test_a_garbled_node_record_leaves_its_agent_visible(home, workdir):
    spec = make_spec(name="garbled", script_args=[*LONG, "--lr", "[0.1, 0.2]"], max_nodes=1)
    name = runs.prepare_run(spec, LocalBackend())
    wait_for(lambda: runs.run_detail(name)[1][0].state == "running", what="exp-0 running")
    nodes = home / "nodes" / name
    (pid,) = agent_pids(name)
    (nodes / "node-0.json").write_text('{"node": "node-0", "pi')

    for _ in range(3):  # status reconciles: a live agent must still count
        result = launch("status", name)
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in nodes.glob("*.json")) == ["node-0.json"]  # no second agent
    assert "node-0.json is unreadable" in result.stderr and f"pid {pid}" in result.stderr

    stopped = launch("stop", name)
    assert stopped.exit_code == 0, stopped.output
    assert not process_alive(pid)  # stop could signal it
    assert [v.state for v in runs.run_detail(name)[1]] == ["stopped", "stopped"]


@pytest.mark.parametrize("content", ["", '{"nodes": 1}', '{"node": "node-0", "pi'])
def test_an_unreadable_node_record_without_its_pid_counts_alive_until_stale(
    home, workdir, monkeypatch, content
):
    from launcher.backends.local import _alive

    nodes = home / "nodes" / "r"
    nodes.mkdir(parents=True)
    (nodes / "node-0.json").write_text(content)
    (record,) = LocalBackend()._records("r")
    assert record["node"] == "node-0" and _alive(record)  # can't be judged: assume it runs
    monkeypatch.setenv("LAUNCH_STALE_S", "0")
    assert not _alive(record)
