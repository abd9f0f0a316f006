"""train.py on a multi-node experiment as the launcher's agent starts it: one process per node
with MASTER_ADDR/MASTER_PORT/NODE_RANK and the LAUNCH_* variables, no extra flags. Here two
"nodes" are two processes on this machine, joined by gloo over loopback."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.trainer.test_train import REPO, SCRIPT, TINY, metrics
from trainer import train
from trainer.hardware import TORCHRUN_VARS
from trainer.train import parse_args

# What the agent sets, and what a torchrun or SLURM around this test run would add: cleared so
# each test says exactly which of them it runs under.
CLUSTER_VARS = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID")
CLUSTER_VARS += TORCHRUN_VARS
RANK_TIMEOUT_S = 120


@pytest.fixture
def bare_env(monkeypatch):
    for var in list(os.environ):
        if var.startswith(("LAUNCH_", "SLURM_")) or var in CLUSTER_VARS:
            monkeypatch.delenv(var)
    return monkeypatch


# --- defaults from the launcher's variables ------------------------------------------------------


def test_launcher_nodes_and_cpu_are_the_defaults(motion_dataset, bare_env):
    base = ["--train_folder", str(motion_dataset / "train")]
    args = parse_args(base)  # no launcher: Lightning's defaults, one node
    assert (args.accelerator, args.devices, args.num_nodes) == ("auto", "auto", 1)

    bare_env.setenv("LAUNCH_NUM_NODES", "2")
    bare_env.setenv("LAUNCH_GPUS_PER_NODE", "0")
    args = parse_args(base)
    assert (args.accelerator, args.devices, args.num_nodes) == ("cpu", 1, 2)
    # Several nodes train one model: DDP, which is gloo on the CPU.
    kwargs = train._trainer_kwargs(args, train_outputs(args), has_val=False)
    assert (kwargs["strategy"], kwargs["num_nodes"], kwargs["devices"]) == ("ddp", 2, 1)

    bare_env.setenv("LAUNCH_NUM_NODES", "1")
    kwargs = train._trainer_kwargs(parse_args(base), train_outputs(args), has_val=False)
    assert (kwargs["strategy"], kwargs["num_nodes"]) == ("auto", 1)


def test_launcher_gpus_per_node_are_the_devices(motion_dataset, bare_env):
    import torch

    base = ["--train_folder", str(motion_dataset / "train")]
    bare_env.setenv("LAUNCH_NUM_NODES", "2")
    bare_env.setenv("LAUNCH_GPUS_PER_NODE", "2")
    bare_env.setattr(torch.cuda, "device_count", lambda: 4)
    args = parse_args(base)
    assert (args.accelerator, args.devices, args.num_nodes) == ("gpu", 2, 2)
    bare_env.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.warns(UserWarning, match="LAUNCH_GPUS_PER_NODE=2: no GPU here; training on"):
        args = parse_args(base)
    assert (args.accelerator, args.devices, args.num_nodes) == ("cpu", 1, 2)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--num_nodes", "1"], ("cpu", 1, 1)),
        (["--gpus", "0"], ("cpu", 1, 3)),
        (["--accelerator", "cpu", "--devices", "2"], ("cpu", 2, 3)),
        (["--accelerator", "cpu"], ("cpu", "auto", 3)),  # not the launcher's GPU count
        (["--devices", "auto"], ("auto", "auto", 3)),
    ],
)
def test_flags_win_over_the_launcher_variables(flags, expected, motion_dataset, bare_env):
    bare_env.setenv("LAUNCH_NUM_NODES", "3")
    bare_env.setenv("LAUNCH_GPUS_PER_NODE", "0")
    args = parse_args(["--train_folder", str(motion_dataset / "train"), *flags])
    assert (args.accelerator, args.devices, args.num_nodes) == expected


def test_torchrun_wins_over_the_launcher_variables(motion_dataset, bare_env):
    """A script the launcher runs may start torchrun itself: its processes per node and nodes
    are the group, whatever the launcher's variables say."""
    for var, value in {"RANK": "0", "GROUP_RANK": "0", "LOCAL_RANK": "0"}.items():
        bare_env.setenv(var, value)
    bare_env.setenv("LOCAL_WORLD_SIZE", "2")
    bare_env.setenv("WORLD_SIZE", "4")
    bare_env.setenv("LAUNCH_NUM_NODES", "3")
    bare_env.setenv("LAUNCH_GPUS_PER_NODE", "0")
    args = parse_args(["--train_folder", str(motion_dataset / "train")])
    assert (args.accelerator, args.devices, args.num_nodes) == ("auto", 2, 2)


@pytest.mark.parametrize(
    ("var", "value"),
    [("LAUNCH_NUM_NODES", "0"), ("LAUNCH_NUM_NODES", "two"), ("LAUNCH_GPUS_PER_NODE", "-1")],
)
def test_bad_launcher_variables_are_one_line_errors(var, value, motion_dataset, bare_env, capsys):
    bare_env.setenv(var, value)
    with pytest.raises(SystemExit) as e:
        parse_args(["--train_folder", str(motion_dataset / "train")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"train.py: error: {var}={value}: must be an integer >= "), err


def train_outputs(args):
    from trainer.run_outputs import RunOutputs

    return RunOutputs(args.output_dir)


# --- Lightning's SLURM trap ----------------------------------------------------------------------


@pytest.fixture
def slurm_env(bare_env):
    """The variables of a one-task SLURM batch job (a machine the launcher's agent runs on
    may sit inside one)."""
    for var, value in {
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NAME": "job",
        "SLURM_JOB_ID": "4242",
        "SLURM_NODELIST": "localhost",
        "SLURM_NODEID": "0",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
    }.items():
        bare_env.setenv(var, value)
    return bare_env


def spy_on_fit(monkeypatch) -> dict:
    """What the Trainer runs under once training starts: its cluster environment and the
    SIGUSR1 handler (SLURM's auto-requeue installs one)."""
    from pytorch_lightning import Callback

    seen: dict = {}

    class Spy(Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            seen["environment"] = trainer._accelerator_connector.cluster_environment
            seen["sigusr1"] = signal.getsignal(signal.SIGUSR1)

    real = train._trainer_kwargs

    def with_spy(*args, **kwargs) -> dict:
        kw = real(*args, **kwargs)
        kw["callbacks"].append(Spy())
        return kw

    monkeypatch.setattr(train, "_trainer_kwargs", with_spy)
    return seen


@pytest.mark.parametrize("launched", [True, False])
def test_slurm_variables_under_the_launcher_do_not_requeue(
    launched, motion_dataset, tmp_path, slurm_env
):
    """Under the launcher (LAUNCH_RUN set) the agent owns retries: LightningEnvironment, no
    SIGUSR1 trap. Without it, SLURM users keep Lightning's own SLURMEnvironment."""
    from lightning_fabric.plugins.environments import LightningEnvironment, SLURMEnvironment

    if launched:
        slurm_env.setenv("LAUNCH_RUN", "run-1")
    seen = spy_on_fit(slurm_env)
    flags = ["--train_folder", str(motion_dataset / "train"), *TINY, "--fast_dev_run"]
    assert train.main([*flags, "--output_dir", str(tmp_path / "out")]) == 0
    if launched:
        assert type(seen["environment"]) is LightningEnvironment
        assert seen["sigusr1"] == signal.SIG_DFL
    else:
        assert type(seen["environment"]) is SLURMEnvironment
        assert callable(seen["sigusr1"])  # Lightning's requeue handler


def test_torchrun_inside_slurm_under_the_launcher_stays_torchrun(bare_env):
    from lightning_fabric.plugins.environments import LightningEnvironment

    from trainer.hardware import cluster_plugins

    bare_env.setenv("SLURM_NTASKS", "2")
    bare_env.setenv("SLURM_JOB_NAME", "job")
    bare_env.setenv("LAUNCH_RUN", "run-1")
    assert [type(p) for p in cluster_plugins()] == [LightningEnvironment]
    for var in (*TORCHRUN_VARS, "TORCHELASTIC_RUN_ID"):
        bare_env.setenv(var, "0")
    assert cluster_plugins() == []  # Lightning prefers torchrun's environment to SLURM's


# --- two nodes, one DDP group --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_nodes(data: Path, outs: list[Path], *flags: str, logs: Path) -> list[dict]:
    """Start train.py once per node as the agent does, wait for all (bounded); each rank's
    ``{"rc", "stdout", "stderr"}``."""
    port, nodes = free_port(), len(outs)
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LAUNCH_", "SLURM_")) and k not in CLUSTER_VARS
    }
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for rank, out in enumerate(outs):
        env = {
            **base,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "NODE_RANK": str(rank),
            "WORLD_SIZE": str(nodes),
            "LAUNCH_NODE_RANK": str(rank),
            "LAUNCH_NUM_NODES": str(nodes),
            "LAUNCH_NODE_IPS": ",".join(["127.0.0.1"] * nodes),
            "LAUNCH_GPUS_PER_NODE": "0",
            "LAUNCH_ARTIFACTS_DIR": str(out),
            "LAUNCH_DATASTORE_DIR": str(data),
            "LAUNCH_RUN": "run-1",
            "LAUNCH_EXPERIMENT": "exp-0",
            "LAUNCH_ATTEMPT": "1",
            "XDG_CACHE_HOME": str(logs / "cache"),
        }
        # Files, not pipes: a rank blocked on a full pipe would stall the other in a collective.
        stdout, stderr = (logs / f"rank{rank}.out").open("w"), (logs / f"rank{rank}.err").open("w")
        procs.append(
            subprocess.Popen(
                [sys.executable, str(SCRIPT), *TINY, *flags],
                cwd=REPO,
                env=env,
                stdout=stdout,
                stderr=stderr,
            )
        )
        stdout.close()
        stderr.close()
    deadline = time.monotonic() + RANK_TIMEOUT_S
    try:
        for proc in procs:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
            proc.wait()
        pytest.fail(f"ranks still running after {RANK_TIMEOUT_S}s: {read_logs(logs, nodes)}")
    return [
        {
            "rc": proc.returncode,
            "stdout": (logs / f"rank{rank}.out").read_text(),
            "stderr": (logs / f"rank{rank}.err").read_text(),
        }
        for rank, proc in enumerate(procs)
    ]


def read_logs(logs: Path, nodes: int) -> str:
    return "\n".join(
        f"--- rank {r} {kind}:\n{(logs / f'rank{r}.{kind}').read_text()[-3000:]}"
        for r in range(nodes)
        for kind in ("out", "err")
    )


def last_ckpt(out: Path) -> dict:
    import torch

    return torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """One epoch on two nodes, each writing to its own artifacts dir."""
    from trainer.sample_data import make_motion_dataset

    root = tmp_path_factory.mktemp("two-nodes")
    data = make_motion_dataset(
        root / "data",
        videos_per_class=3,
        num_frames=16,
        size=(32, 32),
        classes=("left", "right", "up"),
    )
    outs = [root / "rank0", root / "rank1"]
    started = time.monotonic()
    ranks = run_nodes(data, outs, "--max_epochs", "1", logs=root / "logs")
    print(f"two nodes, one epoch: {time.monotonic() - started:.1f}s")
    return data, outs, ranks


@pytest.mark.slow
def test_two_nodes_train_one_model_over_gloo(two_nodes):
    _, (out0, out1), ranks = two_nodes
    for rank, done in enumerate(ranks):
        assert done["rc"] == 0, f"rank {rank}: {done['stderr'][-3000:]}"
    zero, one = ranks
    assert "world size 2 (2 node(s) x 1 process(es))" in zero["stdout"]
    text = zero["stdout"] + zero["stderr"]
    assert "distributed_backend=gloo" in text and "Starting with 2 processes" in text
    assert "MEMBER: 2/2" in one["stdout"] + one["stderr"]
    for name in ("checkpoints/best.ckpt", "checkpoints/last.ckpt", "labels.txt", "metrics.csv"):
        assert (out0 / name).is_file(), name
    # 9 videos split between the two ranks (5 + 4, padded to 5), batch 3: 2 steps, not the 3
    # one process would take.
    assert last_ckpt(out0)["global_step"] == 2
    # Only global rank 0 writes or reports: rank 1's dir is never shipped.
    assert not out1.exists() or not any(out1.rglob("*"))
    assert "world size" not in one["stdout"]
    assert not [line for line in one["stdout"].splitlines() if line.startswith("best ")]


@pytest.mark.slow
def test_two_nodes_resume_from_restored_last_ckpt(two_nodes, tmp_path):
    """A resumed attempt: the launcher restores rank 0's shipped artifacts into every rank's
    dir; each rank loads its own copy and training goes on from the saved step."""
    data, (first0, _), first = two_nodes
    assert all(done["rc"] == 0 for done in first)
    outs = [tmp_path / "rank0", tmp_path / "rank1"]
    for out in outs:
        shutil.copytree(first0, out)
    restored = {p: p.read_bytes() for p in outs[1].rglob("*") if p.is_file()}

    started = time.monotonic()
    ranks = run_nodes(data, outs, "--max_epochs", "2", logs=tmp_path / "logs")
    print(f"two nodes, resumed for one more epoch: {time.monotonic() - started:.1f}s")
    for rank, (done, out) in enumerate(zip(ranks, outs, strict=True)):
        assert done["rc"] == 0, f"rank {rank}: {done['stderr'][-3000:]}"
        assert f"resuming from {out / 'checkpoints' / 'last.ckpt'}" in done["stdout"]
    assert "world size 2" in ranks[0]["stdout"]
    last = last_ckpt(outs[0])
    assert last["global_step"] == 4  # 2 steps restored, 2 more: not restarted from 0
    assert [r["epoch"] for r in metrics(outs[0]) if r["val_acc1"]] == ["0", "1"]
    # Rank 1 wrote nothing over its restored copy.
    assert {p: p.read_bytes() for p in outs[1].rglob("*") if p.is_file()} == restored
