"""Multi-node experiments on the real 2-node cluster: `--backend slurm --nodes 2` is one 2-node
allocation whose agents (one per node, through srun) form the gang. Shown from Slurm's side: the
task's NodeList (squeue) is both nodes, and each rank's agent says which slurmd ran it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from launcher import runs
from launcher.cli.app import cli
from launcher.runs.logs import read_log
from launcher.storage import records
from tests.launcher.waiting import wait_for

pytestmark = pytest.mark.slurm
REPO = Path(__file__).resolve().parents[3]
TIMEOUT = 300
# what each rank's command prints before it drops SLURM_* (sbatch.py's GANG)
AGENT_LINE = re.compile(r"\[launch\] agent (\S+) on Slurm node (\S+) \(addr (\S+)\) of (\S+)")

# every rank runs until SIGTERM, rank 0 having checkpointed; a resumed attempt (rank 0's
# artifacts restored on every rank) finds the checkpoint and ends at once
UNTIL_SIGNALLED = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path
    rank = os.environ["NODE_RANK"]
    ckpt = Path(os.environ["LAUNCH_ARTIFACTS_DIR"]) / "checkpoints" / "last.ckpt"
    if ckpt.exists():
        print(f"rank {rank} resumed from {ckpt.read_text()}", flush=True)
        sys.exit(0)
    if rank == "0":
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        ckpt.write_text("step 1")
    def on_term(*_):
        print(f"rank {rank}: SIGTERM", flush=True)
        sys.exit(143)
    signal.signal(signal.SIGTERM, on_term)
    print(f"rank {rank} running until signalled", flush=True)
    while True:
        time.sleep(0.2)
""")


def launch(*args: str) -> str:
    r = CliRunner().invoke(cli, list(args))
    assert r.exit_code == 0, f"launch {' '.join(args)}:\n{r.output}"
    return r.stdout


def backend():
    from launcher.backends.slurm import SlurmBackend

    return SlurmBackend()


def slurm_nodes_of(name: str) -> dict[str, tuple[str, str, str]]:
    """agent -> (Slurm node, address, the allocation's nodelist), from the tasks' output."""
    out = {}
    for f in backend().log_dir(name).glob("*.out"):
        for agent, where, addr, nodelist in AGENT_LINE.findall(f.read_text()):
            out[agent] = (where, addr, nodelist)
    return out


def test_allreduce_across_n1_and_n2(slurm_home, tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO / "examples" / "allreduce.py", project / "allreduce.py")
    monkeypatch.chdir(project)
    name = launch("run", "--backend", "slurm", "--nodes", "2", "--gpus", "0", "--name", "ar",
                  "allreduce.py").strip().splitlines()[-1]  # fmt: skip
    # Slurm's view while it runs: one task of the run's job, allocated both nodes
    seen = wait_for(lambda: [n.extra["nodelist"] for n in backend().nodes(name)
                             if n.extra.get("slurm_state") == "RUNNING"],
                    timeout=TIMEOUT, what="the task running")  # fmt: skip
    assert set(seen) == {"n[1-2]"}, seen
    row, (view,) = runs.wait_run(name, timeout=TIMEOUT)
    assert row.status == "succeeded" and view.attempt == 1, view.message
    storage = backend().storage()
    for rank in (0, 1):
        assert "sum 3 over 2 processes" in read_log(storage, name, "exp-0", rank)
    # the two ranks' agents ran on the two slurmd nodes of one allocation
    assert len(set(view.nodes)) == 2 and {n[-3:] for n in view.nodes} == {"-n0", "-n1"}
    where = slurm_nodes_of(name)
    assert {where[n][0] for n in view.nodes} == {"n1", "n2"}, where
    assert {where[n][2] for n in view.nodes} == {"n[1-2]"}
    assert {where[n][1] for n in view.nodes} == {"127.0.0.1"}  # the NodeAddr of slurm.conf
    # one task of 2 nodes, named after the run; the agents and their scripts saw no SLURM_*
    (job,) = {n.extra["job"] for n in backend().nodes(name)}
    assert sorted(n.node_id for n in backend().nodes(name)) == sorted(view.nodes)
    status = records.read_status(storage, name, "exp-0")
    assert status["node"] == view.nodes[0] and status["node"].startswith(f"j{job}-0-r0-n")


def test_sbatch_asks_for_two_nodes_and_srun_runs_an_agent_on_each(slurm_home, tmp_path,
                                                                  monkeypatch):  # fmt: skip
    """What Slurm recorded for the job: 2 nodes, 1 task per node; its step ran 2 tasks."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "envs.py").write_text(
        "import os, time\n"
        "print('slurm vars:', sorted(k for k in os.environ if k.startswith('SLURM')), flush=True)\n"
        "time.sleep(3)\n"
    )
    monkeypatch.chdir(project)
    name = launch("run", "--backend", "slurm", "--nodes", "2", "--gpus", "0", "--name", "env",
                  "envs.py").strip().splitlines()[-1]  # fmt: skip
    (job,) = wait_for(lambda: {n.extra["job"] for n in backend().nodes(name)
                               if n.extra.get("slurm_state") == "RUNNING"},
                      timeout=TIMEOUT, what="the task running")  # fmt: skip
    shown = subprocess.run(["scontrol", "show", "job", f"{job}_0"], capture_output=True,
                           text=True, check=True).stdout  # fmt: skip
    assert "NumNodes=2" in shown and "NodeList=n[1-2]" in shown, shown

    def srun_steps() -> list[list[str]]:  # squeue's job steps: ID NODELIST, less the batch step
        out = subprocess.run(["squeue", "-h", "-s", "-j", job, "-o", "%i %N"],
                             capture_output=True, text=True).stdout  # fmt: skip
        return [line.split() for line in out.splitlines() if ".batch" not in line]

    steps = wait_for(srun_steps, timeout=TIMEOUT, what="srun's step")
    assert [nodelist for _, nodelist in steps] == ["n[1-2]"], steps
    row, (view,) = runs.wait_run(name, timeout=TIMEOUT)
    assert row.status == "succeeded", view.message
    for rank in (0, 1):
        assert "slurm vars: []" in read_log(backend().storage(), name, "exp-0", rank)


@pytest.mark.slow
def test_real_trainer_across_two_slurm_nodes(slurm_home, tmp_path, monkeypatch):
    project = tmp_path / "project"
    shutil.copytree(REPO / "trainer", project / "trainer",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    monkeypatch.chdir(project)
    data = tmp_path / "motion"
    make = ["-m", "trainer.sample_data", "--out", str(data), "--kind", "motion"]
    subprocess.run([sys.executable, *make, "--videos-per-class", "4"], check=True, cwd=REPO)
    launch("datastore", "create", "--name", "motion", "--source", str(data), "--backend", "slurm")
    name = launch("run", "--backend", "slurm", "--nodes", "2", "--gpus", "0", "--name", "ddp",
                  "--datastore", "motion", "trainer/train.py", "--backbone", "demo_cnn",
                  "--no-hflip", "--max_epochs", "2", "--batch_size", "2", "--num_workers", "0"
                  ).strip().splitlines()[-1]  # fmt: skip
    row, (view,) = runs.wait_run(name, timeout=900)
    assert row.status == "succeeded", view.message
    storage = backend().storage()
    rank0, rank1 = (read_log(storage, name, "exp-0", rank) for rank in (0, 1))
    assert "world size 2" in rank0 and "rank 0 of 2" in rank0, rank0[-2000:]
    assert "rank 1 of 2" in rank1
    where = slurm_nodes_of(name)
    assert {where[n][0] for n in view.nodes} == {"n1", "n2"}, where
    manifest = storage.read_json(records.exp_key(name, "exp-0", "artifacts.json"))
    assert "checkpoints/last.ckpt" in manifest


@pytest.fixture
def until_signalled(slurm_home, tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "until_signalled.py").write_text(UNTIL_SIGNALLED)
    monkeypatch.chdir(project)
    return project


def both_ranks_running(name: str) -> None:
    storage = backend().storage()
    logs = lambda: [read_log(storage, name, "exp-0", rank) for rank in (0, 1)]  # noqa: E731
    wait_for(lambda: all("running until signalled" in log for log in logs()), timeout=TIMEOUT,
             what="both ranks running")  # fmt: skip


def assert_handed_back_and_resumed(name: str) -> None:
    row, (view,) = runs.wait_run(name, timeout=TIMEOUT)
    storage = backend().storage()
    assert row.status == "succeeded" and view.attempt == 2, view.message
    assert records.read_status(storage, name, "exp-0").get("interruptions") == 1  # no retry spent
    for rank in (0, 1):
        log = read_log(storage, name, "exp-0", rank)
        assert f"rank {rank}: SIGTERM" in log and f"rank {rank} resumed from step 1" in log, log
    assert {n[-6:] for n in view.nodes} == {"-r1-n0", "-r1-n1"}  # the task's second life


def test_scontrol_requeue_hands_the_gang_back_and_both_ranks_resume(until_signalled):
    name = launch("run", "--backend", "slurm", "--nodes", "2", "--gpus", "0", "--name", "rq",
                  "until_signalled.py").strip().splitlines()[-1]  # fmt: skip
    both_ranks_running(name)
    (job,) = {n.extra["job"] for n in backend().nodes(name)}
    subprocess.run(["scontrol", "requeue", f"{job}_0"], check=True)
    assert_handed_back_and_resumed(name)


def test_time_limit_reaches_both_ranks_through_srun_and_the_task_requeues(until_signalled):
    # --time=2: Slurm warns the batch shell (USR1) 90 s before, at about 30 s; the shell's
    # SIGTERM to srun reaches each node's agent
    assert CliRunner().invoke(cli, ["config", "set", "slurm.sbatch_args", "--",
                                    "--time=2"]).exit_code == 0  # fmt: skip
    name = launch("run", "--backend", "slurm", "--nodes", "2", "--gpus", "0", "--name", "tl",
                  "until_signalled.py").strip().splitlines()[-1]  # fmt: skip
    both_ranks_running(name)
    assert_handed_back_and_resumed(name)
    outputs = "".join(f.read_text() for f in backend().log_dir(name).glob("*.out"))
    assert "handed back; requeueing" in outputs
