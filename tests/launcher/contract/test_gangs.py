"""The multi-node cases of the contract suite, for every backend that declares
``Capabilities.gangs``: one experiment across 2 nodes (rendezvous, variables, every rank's log),
two gangs at once within --max-nodes, a killed rank's node stopping the gang and the retry
resuming from rank 0's checkpoint, and one rank failing the whole experiment with no rank left
running."""

from __future__ import annotations

import pytest

from launcher.processes import process_alive
from launcher.runs.logs import read_log
from launcher.storage import records
from tests.launcher.contract.test_contract import TIMEOUT, finish
from tests.launcher.local.localjob import read_records
from tests.launcher.waiting import wait_for


@pytest.fixture
def gang_harness(harness):
    if not harness.backend().capabilities.gangs:
        pytest.skip(f"backend {harness.name} does not run experiments across nodes")
    return harness


def starts(record) -> list[dict]:
    return [e for e in read_records(record) if e["event"] == "start"]


def test_one_experiment_runs_across_two_nodes(gang_harness, tmp_path):
    h, record = gang_harness, tmp_path / "record.jsonl"
    name = h.launch(name="gang", script="gangjob.py", nodes=2, gpus=0,
                    script_args=["--steps", "2", "--record", str(record)])  # fmt: skip
    row, (view,) = finish(h, name)
    assert row.status == "succeeded" and view.attempt == 1, view.message
    assert len(set(view.nodes)) == 2  # two nodes, rank 0 first
    storage = h.backend().storage()
    for rank in (0, 1):  # every rank's own log, each summed over both
        log = read_log(storage, name, "exp-0", rank)
        assert f"rank {rank} of 2 joined" in log and "step 2 sum 3" in log
    envs = {e["rank"]: e["env"] for e in starts(record)}
    assert sorted(envs) == [0, 1]
    for rank, env in envs.items():
        assert env["NODE_RANK"] == env["LAUNCH_NODE_RANK"] == str(rank)
        assert env["WORLD_SIZE"] == "2" and env["LAUNCH_NUM_NODES"] == "2"
        assert env["LAUNCH_GPUS_PER_NODE"] == "0"
        assert env["MASTER_ADDR"] == env["LAUNCH_NODE_IPS"].split(",")[0]
        assert env["MASTER_PORT"] == envs[0]["MASTER_PORT"]
    # only rank 0's outputs are the experiment's
    manifest = storage.read_json(records.exp_key(name, "exp-0", "artifacts.json"))
    assert "checkpoints/last.ckpt" in manifest


def test_two_gangs_run_at_once_within_max_nodes(gang_harness, tmp_path):
    h, record = gang_harness, tmp_path / "record.jsonl"
    # each experiment's rank 0 waits until the other's is running too (or exits 2): both
    # succeed only if the two gangs ran at the same time
    meet = tmp_path / "meet"
    args = ["--steps", "2", "--lr", "[0.1, 0.01]", "--record", str(record), "--meet", str(meet)]
    name = h.launch(name="gangs", script="gangjob.py", nodes=2, max_nodes=4, gpus=0,
                    script_args=args)  # fmt: skip
    row, views = finish(h, name)
    assert row.status == "succeeded" and row.done == 2, [v.message for v in views]
    assert len({n for v in views for n in v.nodes}) == 4  # each gang on its own two nodes
    events = read_records(record)
    span = {}
    for exp in ("exp-0", "exp-1"):
        times = [e["time"] for e in events if e["exp"] == exp and e["rank"] == 0]
        span[exp] = (min(times), max(times))
    # and the recorded times agree: each started before the other ended
    assert span["exp-0"][0] < span["exp-1"][1] and span["exp-1"][0] < span["exp-0"][1]


def test_a_killed_rank_stops_the_gang_and_the_retry_resumes(gang_harness, tmp_path):
    h, record = gang_harness, tmp_path / "record.jsonl"
    name = h.launch(name="gangkill", script="gangjob.py", nodes=2, retries=1, gpus=0, script_args=[
        "--steps", "40", "--sleep", "0.2", "--record", str(record)])  # fmt: skip
    storage = h.backend().storage()
    ckpt = records.exp_key(name, "exp-0", "artifacts", "checkpoints", "last.ckpt")

    def shipped_step() -> int:
        manifest = storage.read_json(records.exp_key(name, "exp-0", "artifacts.json"), default={})
        return storage.read_json(ckpt)["step"] if "checkpoints/last.ckpt" in manifest else 0

    wait_for(lambda: h.play(name) or shipped_step() >= 3, timeout=TIMEOUT,
             what="a shipped checkpoint")  # fmt: skip
    status = records.read_status(storage, name, "exp-0")
    rank1 = status["nodes"][1]
    first = {e["rank"]: e["pid"] for e in starts(record)}
    h.kill(name, rank1)
    row, (view,) = finish(h, name)
    assert row.status == "succeeded" and view.attempt == 2, view.message
    attempts = starts(record)
    assert {e["attempt"] for e in attempts} == {1, 2}
    resumed = [e["step"] for e in attempts if e["attempt"] == 2]
    assert len(resumed) == 2 and min(resumed) >= 3  # both ranks resumed, not from step 0
    assert not any(process_alive(pid) for pid in first.values())  # attempt 1 ended on each


def test_one_rank_failing_fails_the_experiment_and_ends_every_rank(gang_harness, tmp_path):
    h, record = gang_harness, tmp_path / "record.jsonl"
    args = ["--steps", "200", "--sleep", "0.1", "--fail-rank", "1", "--record", str(record)]
    name = h.launch(name="gangfail", script="gangjob.py", nodes=2, gpus=0, script_args=args)
    row, (view,) = finish(h, name)
    assert row.status == "failed" and view.state == "failed"
    assert "rank 1" in view.message and "code 1" in view.message, view.message
    pids = [e["pid"] for e in starts(record)]
    assert len(pids) == 2
    assert not any(process_alive(p) for p in pids)  # no rank's script left running
    wait_for(lambda: not h.live_nodes(name), timeout=TIMEOUT, what="every node to leave")
