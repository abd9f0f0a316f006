"""What every backend promises, tested the same way on each (see conftest.py's harnesses):
submit, exclusive claims, status, logs, --max-nodes, a killed node's experiment re-queued and
resumed from its checkpoint, concurrent reconcilers starting only the missing nodes, queries
that change nothing, stop (even of a script that ignores SIGTERM), and delete."""

from __future__ import annotations

import json
import threading
import time

from launcher import runs
from launcher.runs.index import RunIndex
from launcher.runs.logs import read_log
from launcher.storage import records
from tests.launcher.local.localjob import read_records
from tests.launcher.waiting import wait_for

TIMEOUT = 90  # seconds for a whole run on a loaded 2-core CI machine


def finish(harness, name: str) -> tuple:
    """Wait for a run to end as `launch run --wait` does (reconciling), playing new nodes."""

    def done():
        harness.play(name)
        row, views = runs.run_detail(name)
        return (row, views) if row.finished else None

    return wait_for(done, timeout=TIMEOUT, interval=0.5, what=f"run {name} to finish")


def test_submit_runs_each_experiment_once_within_max_nodes(harness, tmp_path):
    record = tmp_path / "record.jsonl"
    args = ["--steps", "3", "--sleep", "0.2", "--lr", "[0.1, 0.01, 0.001]", "--record", str(record)]
    name = harness.launch(name="sweep", max_nodes=2, script_args=args)
    row, views = finish(harness, name)
    assert row.status == "succeeded" and row.done == row.total == 3
    storage = harness.backend().storage()
    for v in views:  # exclusive claims: one attempt each, never two agents on one experiment
        assert v.state == "succeeded" and v.attempt == 1 and v.exit_code == 0
        assert records.claim_numbers(storage, name, v.id) == [1]
        assert "step 3" in read_log(storage, name, v.id)
    events = read_records(record)
    assert sorted(e["exp"] for e in events if e["event"] == "start") == ["exp-0", "exp-1", "exp-2"]
    # --max-nodes: never more than 2 experiments running at any moment
    spans = {e["exp"]: [] for e in events}
    for e in events:
        spans[e["exp"]].append(e["time"])
    for t in (s[0] for s in spans.values()):
        assert sum(1 for s in spans.values() if s[0] <= t < s[-1]) <= 2
    argvs = [e["argv"] for e in events if e["event"] == "start"]
    assert {a[a.index("--lr") + 1] for a in argvs} == {"0.1", "0.01", "0.001"}


def test_killed_node_is_requeued_and_the_next_attempt_resumes(harness, tmp_path):
    record = tmp_path / "record.jsonl"
    name = harness.launch(name="crash", max_nodes=1, retries=1, script_args=[
        "--steps", "30", "--sleep", "0.15", "--record", str(record)])  # fmt: skip
    storage = harness.backend().storage()
    ckpt = records.exp_key(name, "exp-0", "artifacts", "checkpoints", "last.ckpt")

    def shipped_step() -> int:
        manifest = storage.read_json(records.exp_key(name, "exp-0", "artifacts.json"), default={})
        return (
            json.loads(storage.read_text(ckpt))["step"]
            if "checkpoints/last.ckpt" in manifest
            else 0
        )

    wait_for(lambda: shipped_step() >= 3, timeout=TIMEOUT, what="a shipped checkpoint")
    (victim,) = harness.live_nodes(name)
    harness.kill(name, victim)
    saved = shipped_step()
    row, (view,) = runs.run_detail(name)  # `launch status`: the one step that reconciles
    assert "re-queued exp-0" in row.message and "restarted 1 agent(s)" in row.message
    row, (view,) = finish(harness, name)
    assert row.status == "succeeded" and view.attempt == 2
    starts = [e["step"] for e in read_records(record) if e["event"] == "start"]
    assert starts[0] == 0 and starts[-1] >= saved > 0  # resumed from the restored checkpoint


def test_concurrent_reconcilers_start_only_the_missing_nodes(harness):
    name = harness.launch(name="storm", max_nodes=2, script_args=[
        "--steps", "400", "--sleep", "0.1", "--lr", "[1, 2, 3]"])  # fmt: skip
    wait_for(lambda: len(harness.live_nodes(name)) == 2, timeout=TIMEOUT, what="two nodes")
    storage = harness.backend().storage()
    wait_for(lambda: sum(records.read_status(storage, name, e)["state"] == "running"
                         for e in ("exp-0", "exp-1", "exp-2")) == 2,
             timeout=TIMEOUT, what="two experiments running")  # fmt: skip
    before = {n.node_id for n in harness.backend().nodes(name)}
    victim = harness.live_nodes(name)[0]
    harness.kill(name, victim)
    barrier = threading.Barrier(8)
    errors = []

    def status():  # eight `launch status RUN` at once, each with its own backend and index
        barrier.wait()
        try:
            runs.run_detail(name, RunIndex())
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=status) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    after = {n.node_id for n in harness.backend().nodes(name)}
    assert len(after - before) == 1  # exactly the one missing node
    assert len(harness.live_nodes(name)) == 2
    runs.stop_run(name)


def test_queries_stop_and_delete_never_start_a_node(harness):
    name = harness.launch(
        name="quiet", max_nodes=1, script_args=["--steps", "400", "--sleep", "0.1"]
    )
    storage = harness.backend().storage()
    wait_for(lambda: records.read_status(storage, name, "exp-0")["state"] == "running",
             timeout=TIMEOUT, what="exp-0 running")  # fmt: skip
    (victim,) = harness.live_nodes(name)
    harness.kill(name, victim)
    nodes = {n.node_id for n in harness.backend().nodes(name)}
    ctx = runs.RunContext(name)
    ctx.refresh()  # what stop, delete and listing without reconcile read
    ctx.cost()
    runs.list_runs(reconcile=False)
    assert records.read_status(storage, name, "exp-0")["state"] == "running"  # not re-queued
    runs.stop_run(name)
    assert {n.node_id for n in harness.backend().nodes(name)} == nodes  # nothing started
    assert runs.run_detail(name)[0].status == "stopped"
    runs.delete_run(name)
    assert {n.node_id for n in harness.backend().nodes(name) if n.live} == set()
    assert not storage.exists(records.run_key(name, "run.json"))
    assert RunIndex().get(name) is None


def test_stop_ends_a_script_that_ignores_sigterm(harness):
    name = harness.launch(name="stubborn", script="stubborn.py", max_nodes=1)
    storage = harness.backend().storage()
    wait_for(lambda: "ignoring SIGTERM" in read_log(storage, name, "exp-0"),
             timeout=TIMEOUT, what="the script to start")  # fmt: skip
    t0 = time.monotonic()
    row = runs.stop_run(name)
    assert time.monotonic() - t0 < 30
    assert row.status == "stopped"
    wait_for(lambda: not harness.live_nodes(name), timeout=TIMEOUT, what="every node to end")
    status = records.read_status(storage, name, "exp-0")
    assert status["state"] == "stopped"
