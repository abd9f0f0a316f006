"""The local backend: detached agents, GPU pinning, and recovery from a killed agent."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

import pytest
from localjob import NoAgents, at_once, make_spec, read_records

from launcher import runs
from launcher.backends.local import LocalBackend, assign_gpus, detect_gpus
from launcher.processes import process_alive
from launcher.storage import records
from tests.launcher.waiting import wait_for


def test_assign_gpus():
    assert [assign_gpus(i, 1, 4) for i in range(4)] == ["0", "1", "2", "3"]
    assert [assign_gpus(i, 2, 4) for i in range(2)] == ["0,1", "2,3"]
    assert assign_gpus(2, 2, 4) == "0,1"  # more nodes than GPUs: they share
    assert assign_gpus(0, 4, 2) == "0,1"  # fewer GPUs than asked: what is there
    assert assign_gpus(0, 1, 0) == "" and assign_gpus(0, 0, 8) == ""


@pytest.mark.skipif(Path("/proc/driver/nvidia").exists(), reason="this machine has NVIDIA GPUs")
def test_gpu_request_on_a_machine_without_gpus_warns_and_runs_on_cpu(
    home, workdir, tmp_path, caplog
):
    assert detect_gpus() == 0
    record = tmp_path / "record.jsonl"
    spec = make_spec(
        instance_type="g4dn.12xlarge",
        gpus=2,
        max_nodes=2,
        script_args=["--lr", "[1, 2]", "--steps", "1", "--record", str(record)],
    )
    with caplog.at_level(logging.WARNING, logger="launcher"):
        name = runs.prepare_run(spec, LocalBackend())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "0 GPU(s), 4 requested" in warnings[0]
    runs.wait_run(name, poll=0.2, timeout=60)
    envs = [r["env"] for r in read_records(record) if r["event"] == "start"]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["", ""]


def test_agents_are_detached_and_reported(home, workdir):
    name = runs.prepare_run(make_spec(script_args=["--lr", "[1, 2, 3]", "--steps", "1"],
                                      max_nodes=2), LocalBackend())  # fmt: skip
    nodes = LocalBackend().nodes(name)
    assert sorted(n.node_id for n in nodes) == ["node-0", "node-1"]
    for n in nodes:
        pid = n.extra["pid"]
        # own session: closing the terminal (SIGHUP to the CLI's session) does not reach it
        assert os.getsid(pid) == pid != os.getsid(0)
        assert Path(n.extra["log"]).name == f"{n.node_id}.log"
    runs.wait_run(name, poll=0.2, timeout=60)
    wait_for(lambda: all(n.state == "terminated" for n in LocalBackend().nodes(name)),
             timeout=20, what="the agents to exit once nothing is left")  # fmt: skip
    assert "agent" in (home / "nodes" / name / "node-0.log").read_text()


def test_submit_tops_up_to_max_nodes_only(home, workdir):
    spec = make_spec(script_args=["--lr", "[1, 2]", "--steps", "1000"], max_nodes=2)
    name = runs.prepare_run(spec, LocalBackend())
    assert LocalBackend().submit(name, spec) == []  # both agents alive: nothing to add
    stopped = LocalBackend().stop(name)
    assert len(stopped) == 2
    assert all(n.state == "terminated" for n in LocalBackend().nodes(name))


def test_the_script_dies_with_its_agent(home, workdir, tmp_path):
    record = tmp_path / "record.jsonl"
    spec = make_spec(script_args=["--steps", "1000", "--sleep", "0.05", "--record", str(record)])
    name = runs.prepare_run(spec, LocalBackend())
    script_pid = wait_for(lambda: read_records(record), what="the script")[0]["pid"]
    (node,) = LocalBackend().nodes(name)
    os.kill(node.extra["pid"], signal.SIGKILL)  # the agent alone, not its group
    wait_for(lambda: not process_alive(script_pid), timeout=10, what="PR_SET_PDEATHSIG")
    runs.stop_run(name, wait=0)


def test_killed_agent_experiment_resumes_from_its_checkpoint(home, workdir, tmp_path):
    record = tmp_path / "record.jsonl"
    spec = make_spec(script_args=["--steps", "30", "--sleep", "0.1", "--record", str(record)],
                     retries=1)  # a node death spends an attempt  # fmt: skip
    name = runs.prepare_run(spec, LocalBackend())
    storage = LocalBackend().storage()
    ckpt_key = records.exp_key(name, "exp-0", "artifacts", "checkpoints", "last.ckpt")

    def shipped_step() -> int:
        manifest = storage.read_json(records.exp_key(name, "exp-0", "artifacts.json"), default={})
        if "checkpoints/last.ckpt" not in manifest:
            return 0
        return json.loads(storage.read_text(ckpt_key))["step"]

    wait_for(lambda: shipped_step() >= 5, timeout=30, what="a shipped checkpoint")
    (node,) = LocalBackend().nodes(name)
    os.killpg(node.extra["pid"], signal.SIGKILL)  # the agent, no goodbye
    wait_for(lambda: not process_alive(node.extra["pid"]), timeout=10, what="the kill")
    saved = shipped_step()
    first_script = read_records(record)[0]["pid"]  # in its own group: dies with its agent
    wait_for(lambda: not process_alive(first_script), timeout=10, what="PR_SET_PDEATHSIG")

    # status never lies: the run has no live agent, so looking at it starts a replacement
    row, (v,) = runs.run_detail(name)
    assert "re-queued exp-0" in row.message and "restarted 1 agent(s)" in row.message
    row, (v,) = runs.wait_run(name, poll=0.2, timeout=90)
    assert row.status == "succeeded", v.message
    assert v.attempt == 2 and v.node == "node-1"
    starts = [r for r in read_records(record) if r["event"] == "start"]
    assert [s["attempt"] for s in starts] == [1, 2]
    assert starts[1]["step"] == saved > 0  # resumed from the checkpoint, not from 0
    assert json.loads(storage.read_text(ckpt_key)) == {"step": 30}


def test_stop_with_no_agent_left_closes_the_run(home, workdir, tmp_path):
    record = tmp_path / "record.jsonl"
    spec = make_spec(script_args=["--steps", "1000", "--sleep", "0.05", "--record", str(record)])
    name = runs.prepare_run(spec, LocalBackend())
    wait_for(lambda: read_records(record), what="the script")
    (node,) = LocalBackend().nodes(name)
    os.killpg(node.extra["pid"], signal.SIGKILL)
    wait_for(lambda: not process_alive(node.extra["pid"]), timeout=10, what="the kill")
    row = runs.stop_run(name, wait=0.5)
    assert row.status == "stopped"
    _, (v,) = runs.run_detail(name)
    assert v.state == "stopped"


def test_a_dead_agent_is_replaced_while_another_is_still_busy(home, workdir, tmp_path):
    record = tmp_path / "record.jsonl"
    spec = make_spec(max_nodes=2, retries=1, script_args=["--steps", "[20, 60]", "--sleep", "0.1",
                                                "--record", str(record)])  # fmt: skip
    name = runs.prepare_run(spec, LocalBackend())
    storage = LocalBackend().storage()
    wait_for(lambda: records.read_status(storage, name, "exp-0")["state"] == "running"
             and records.read_status(storage, name, "exp-1")["state"] == "running",
             what="both experiments to run")  # fmt: skip
    victim = records.read_status(storage, name, "exp-0")["node"]
    (node,) = [n for n in LocalBackend().nodes(name) if n.node_id == victim]
    os.killpg(node.extra["pid"], signal.SIGKILL)
    wait_for(lambda: not process_alive(node.extra["pid"]), timeout=10, what="the kill")
    row, _ = runs.run_detail(name)
    assert row.message.endswith("restarted 1 agent(s)")  # not waiting for the busy agent
    row, views = runs.wait_run(name, poll=0.2, timeout=90)
    assert row.status == "succeeded", [v.message for v in views]
    assert [v.attempt for v in views] == [2, 1]
    assert views[0].node not in (victim, views[1].node)


def test_concurrent_status_calls_start_one_replacement(home, workdir):
    import threading

    spec = make_spec(script_args=["--steps", "1000", "--sleep", "0.05"])
    name = runs.prepare_run(spec, NoAgents())
    barrier = threading.Barrier(4)

    def look():
        barrier.wait()
        runs.run_detail(name)

    at_once(look, 4)
    assert len(LocalBackend().nodes(name)) == 1  # max_nodes, however many looked at once
    runs.stop_run(name)
