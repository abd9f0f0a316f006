"""Multi-node gangs on the local backend, beyond the contract suite: a gang that cannot fill
hands its attempt back (free) and forms once a node comes, agents that all claim at once
converge without waiting out the formation timeout, stopping one experiment stops every rank,
rank 0's agent killed, and the errors of --nodes and --rank."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner
from localjob import NoAgents, make_spec, read_records

from launcher import runs
from launcher.backends.local import LocalBackend
from launcher.cli.app import cli
from launcher.node.gang import gang_key
from launcher.processes import process_alive
from launcher.runs.logs import read_log
from launcher.storage import records
from tests.launcher.contract.gangjob import GANG_JOB
from tests.launcher.waiting import wait_for

TIMEOUT = 90


@pytest.fixture
def gangdir(workdir):
    (workdir / "gangjob.py").write_text(GANG_JOB)
    return workdir


@pytest.fixture
def agents(tmp_path):
    """``start(run, node, *flags, **env)`` starts an agent process the way a backend does; every
    one still running at the end is killed (by its pid, with its scripts)."""
    started: list[subprocess.Popen] = []

    def start(name: str, node: str, *flags: str, **env: str) -> subprocess.Popen:
        storage = LocalBackend().storage()
        cmd = [sys.executable, "-m", "launcher.node.agent", "--root", storage.root_url, "--run",
               name, "--node", node, "--gpus", "", "--addr", "127.0.0.1",
               "--work-dir", str(tmp_path / node), *flags]  # fmt: skip
        proc = subprocess.Popen(cmd, env=dict(os.environ, **env), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def status(name: str) -> dict:
    return records.read_status(LocalBackend().storage(), name, "exp-0")


def test_a_gang_that_cannot_fill_hands_back_and_forms_when_a_node_comes(home, gangdir, agents):
    spec = make_spec(script="gangjob.py", nodes=2, script_args=["--steps", "2"])
    name = runs.prepare_run(spec, NoAgents())  # retries 0: a hand-back must not spend one
    first = agents(name, "node-0", LAUNCH_GANG_FORM_S="1")
    wait_for(lambda: status(name).get("interruptions"), timeout=TIMEOUT,
             what="the unfilled gang to be handed back")  # fmt: skip
    st = status(name)
    assert st["state"] == "queued" and "only 1 of 2 nodes joined" in st["message"]
    storage = LocalBackend().storage()
    assert storage.exists(gang_key(name, "exp-0", 1, "released"))
    second = agents(name, "node-1", LAUNCH_GANG_FORM_S="1")
    wait_for(lambda: status(name)["state"] == "succeeded", timeout=TIMEOUT,
             what="the gang to form and succeed")  # fmt: skip
    assert second.wait(timeout=30) == 0 and first.wait(timeout=30) == 0
    assert "step 2 sum 3" in read_log(storage, name, "exp-0")


def test_agents_claiming_at_once_converge_one_gang_at_a_time(home, gangdir, agents, tmp_path):
    record = tmp_path / "record.jsonl"
    args = ["--steps", "2", "--lr", "[1, 2, 3, 4]", "--record", str(record)]
    name = runs.prepare_run(make_spec(script="gangjob.py", nodes=2, max_nodes=4,
                                      script_args=args), NoAgents())  # fmt: skip
    # four agents at once, each first claiming an experiment of its own: without giving way
    # to the lowest forming gang they would all wait out the (here endless) formation timeout
    for i in range(4):
        agents(name, f"node-{i}", LAUNCH_GANG_FORM_S="3600")
    storage = LocalBackend().storage()
    exps = [f"exp-{i}" for i in range(4)]
    wait_for(lambda: all(records.read_status(storage, name, e)["state"] == "succeeded"
                         for e in exps), timeout=TIMEOUT * 2, what="four gangs")  # fmt: skip
    for e in exps:
        st = records.read_status(storage, name, e)
        assert "nodes joined" not in st.get("message", "")  # nothing waited out a timeout
    ranks = [(e["exp"], e["rank"]) for e in read_records(record) if e["event"] == "end"]
    assert sorted(ranks) == [(e, r) for e in exps for r in (0, 1)]


def test_stopping_one_experiment_stops_every_rank(home, gangdir, tmp_path):
    record = tmp_path / "record.jsonl"
    spec = make_spec(
        script="gangjob.py",
        nodes=2,
        script_args=["--steps", "1000", "--sleep", "0.1", "--record", str(record)],
    )
    name = runs.prepare_run(spec, LocalBackend())
    wait_for(lambda: len(read_records(record)) == 2, timeout=TIMEOUT, what="both ranks")
    pids = [e["pid"] for e in read_records(record) if e["event"] == "start"]
    runs.stop_run(f"{name}/exp-0")
    assert status(name)["state"] == "stopped"
    wait_for(lambda: not any(process_alive(p) for p in pids), timeout=30,
             what="both ranks' scripts to end")  # fmt: skip


def test_rank_0_killed_ends_the_other_rank_and_the_retry_resumes(home, gangdir, tmp_path):
    record = tmp_path / "record.jsonl"
    spec = make_spec(
        script="gangjob.py",
        nodes=2,
        retries=1,
        script_args=["--steps", "40", "--sleep", "0.2", "--record", str(record)],
    )
    name = runs.prepare_run(spec, LocalBackend())
    storage = LocalBackend().storage()
    ckpt = records.exp_key(name, "exp-0", "artifacts", "checkpoints", "last.ckpt")
    wait_for(lambda: storage.exists(ckpt) and storage.read_json(ckpt)["step"] >= 3,
             timeout=TIMEOUT, what="a shipped checkpoint")  # fmt: skip
    rank0 = status(name)["nodes"][0]
    (node,) = [n for n in LocalBackend().nodes(name) if n.node_id == rank0]
    pids = [e["pid"] for e in read_records(record) if e["event"] == "start"]
    os.killpg(node.extra["pid"], signal.SIGKILL)
    wait_for(lambda: not any(process_alive(p) for p in pids), timeout=30,
             what="both ranks of attempt 1 to end")  # fmt: skip

    def done():
        row, _ = runs.run_detail(name)  # `launch status`: re-queues, restarts the dead node
        return row.finished and row

    row = wait_for(done, timeout=TIMEOUT, interval=0.5, what="the retry")
    assert row.status == "succeeded" and status(name)["attempt"] == 2
    resumed = [
        e["step"] for e in read_records(record) if e["attempt"] == 2 and e["event"] == "start"
    ]
    assert len(resumed) == 2 and min(resumed) >= 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["--nodes", "3", "--max-nodes", "2"], "--nodes 3 is more than --max-nodes 2"),
        (["--nodes", "0"], "nodes must be"),
        (["--placement", "cluster"], "no placement groups"),
    ],
)
def test_bad_node_counts_are_one_line_errors(home, workdir, args, message):
    result = CliRunner().invoke(cli, ["run", "--gpus", "0", *args, "job.py"])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and message in lines[0], result.output
    assert not (home / "store" / "runs").exists()  # nothing launched, nothing written


def test_logs_rank_k_is_that_ranks_log(home, gangdir):
    spec = make_spec(script="gangjob.py", nodes=2, script_args=["--steps", "1"])
    name = runs.prepare_run(spec, LocalBackend())
    wait_for(lambda: status(name)["state"] == "succeeded", timeout=TIMEOUT, what="the run")
    for args, rank in (([f"{name}/exp-0/1"], 1), ([f"{name}/exp-0"], 0),
                       ([f"{name}/exp-0", "--rank", "1"], 1)):  # fmt: skip
        result = CliRunner().invoke(cli, ["logs", *args])
        assert result.exit_code == 0 and f"rank {rank} of 2 joined" in result.stdout
    result = CliRunner().invoke(cli, ["logs", f"{name}/exp-0/2"])
    assert result.exit_code == 1 and "ranks 0 to 1" in result.stderr
    # launch status RUN and the dashboard list the experiment's nodes, rank 0 first
    nodes = status(name)["nodes"]
    out = CliRunner().invoke(cli, ["status", name]).stdout
    assert "NODES" in out and ",".join(nodes) in out
    from launcher.ui.views import run_page

    (exp,) = run_page(name)["experiments"]
    assert exp["nodes"] == nodes and len(set(nodes)) == 2


def test_one_ranks_node_interrupted_hands_the_gang_back_free(home, gangdir, agents, tmp_path):
    """A spot notice on rank 1's node: every rank stops, the experiment is queued again as a
    whole without spending a retry (retries 0), and re-forms with the next node, resuming."""
    record = tmp_path / "record.jsonl"
    notice = tmp_path / "spot-notice"
    args = ["--steps", "30", "--sleep", "0.2", "--record", str(record)]
    name = runs.prepare_run(make_spec(script="gangjob.py", nodes=2, script_args=args), NoAgents())
    agents(name, "node-0")
    storage = LocalBackend().storage()
    ckpt = records.exp_key(name, "exp-0", "artifacts", "checkpoints", "last.ckpt")
    claim = records.claim_key(name, "exp-0", 1)  # node-0 is rank 0, node-1 sits
    wait_for(lambda: storage.exists(claim), timeout=TIMEOUT, what="rank 0's claim")
    spotted = agents(name, "node-1", "--interruption", f"file:{notice}")
    wait_for(lambda: storage.exists(ckpt) and storage.read_json(ckpt)["step"] >= 3,
             timeout=TIMEOUT, what="a shipped checkpoint")  # fmt: skip
    notice.touch()
    wait_for(lambda: status(name).get("interruptions") == 1, timeout=TIMEOUT,
             what="the gang handed back")  # fmt: skip
    assert spotted.wait(timeout=30) == 0  # the interrupted node's agent leaves
    assert "rank 1: node node-1 was interrupted" in status(name)["message"], status(name)
    agents(name, "node-2")
    wait_for(lambda: status(name)["state"] == "succeeded", timeout=TIMEOUT,
             what="the gang re-formed and done")  # fmt: skip
    assert status(name)["attempt"] == 2
    resumed = [e["step"] for e in read_records(record)
               if e["event"] == "start" and e["attempt"] == 2]  # fmt: skip
    assert len(resumed) == 2 and min(resumed) >= 3


def test_dry_run_counts_nodes_times_experiments_at_once(home, workdir):
    result = CliRunner().invoke(cli, ["run", "--gpus", "0", "--instance", "t3.medium", "--nodes",
                                      "2", "--max-nodes", "4", "--dry-run", "job.py", "--lr",
                                      "[1, 2, 3]"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "resources: 4 x t3.medium (2 experiment(s) at once x 2 nodes)" in result.stdout
    assert "for 4 x t3.medium" in result.stdout


def test_a_backend_without_gangs_refuses_nodes():
    from launcher.backends.base import Capabilities
    from launcher.errors import SpecError
    from launcher.spec.jobspec import JobSpec

    spec = JobSpec(script="job.py", nodes=2, max_nodes=2, gpus=0)
    with pytest.raises(SpecError, match="cannot run an experiment across nodes; --nodes 2"):
        spec.check_capabilities(Capabilities(gangs=False), "plain")
    spec.check_capabilities(Capabilities(gangs=True), "gangs")  # and one with them accepts


def test_a_seat_left_empty_by_a_crash_costs_one_hand_back_not_the_run(home, gangdir, agents):
    """An agent that died between creating its seat and writing it leaves an empty seat-1:
    rank 0 cannot count it as a node, hands the attempt back at the formation timeout (free),
    and the next attempt's gang forms with a live node."""
    spec = make_spec(script="gangjob.py", nodes=2, script_args=["--steps", "1"])
    name = runs.prepare_run(spec, NoAgents())
    storage = LocalBackend().storage()
    seat = storage.path(gang_key(name, "exp-0", 1, "seat-1"))
    os.makedirs(os.path.dirname(seat))
    open(seat, "wb").close()  # O_EXCL'd, never written: its writer died
    for i in (0, 1):
        agents(name, f"node-{i}", LAUNCH_GANG_FORM_S="1")
    wait_for(lambda: status(name)["state"] == "succeeded", timeout=TIMEOUT,
             what="the second attempt's gang")  # fmt: skip
    st = status(name)
    assert st["attempt"] >= 2 and st["interruptions"] >= 1  # handed back, not failed
    assert "step 1 sum 3" in read_log(storage, name, "exp-0")


def test_a_seated_node_leaving_before_the_start_hands_back_free(home, gangdir, agents, tmp_path):
    """A node interrupted while it waits in a gang that is still filling: it says so and
    leaves, rank 0 releases the gang at once (no retry spent), and a new gang forms later."""
    notice = tmp_path / "spot-notice"
    spec = make_spec(script="gangjob.py", nodes=3, script_args=["--steps", "1"])
    name = runs.prepare_run(spec, NoAgents())
    storage = LocalBackend().storage()
    agents(name, "node-0")
    wait_for(lambda: storage.exists(records.claim_key(name, "exp-0", 1)), timeout=TIMEOUT,
             what="rank 0's claim")  # fmt: skip
    spotted = agents(name, "node-1", "--interruption", f"file:{notice}")
    wait_for(lambda: storage.exists(gang_key(name, "exp-0", 1, "seat-1")), timeout=TIMEOUT,
             what="node-1 seated")  # fmt: skip
    notice.touch()
    assert spotted.wait(timeout=60) == 0
    wait_for(lambda: status(name).get("interruptions") == 1, timeout=TIMEOUT,
             what="the gang released")  # fmt: skip
    assert "rank 1 left before the start" in status(name)["message"]
    for i in (2, 3):
        agents(name, f"node-{i}")
    wait_for(lambda: status(name)["state"] == "succeeded", timeout=TIMEOUT,
             what="a new gang of three")  # fmt: skip
    assert sorted(status(name)["nodes"]) == ["node-0", "node-2", "node-3"]
