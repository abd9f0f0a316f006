"""Where train.py's processes run: accelerator, devices and nodes from the flags, torchrun or
the launcher's variables, and the cluster environment Lightning is given.

Which wins, for devices and nodes:

1. flags given (``--gpus``, ``--devices``, ``--num_nodes``, ``--accelerator``);
2. under ``torchrun``, its processes per node and nodes (they train one model together);
3. under the launcher, ``LAUNCH_GPUS_PER_NODE`` (0: the CPU, one process per node) and
   ``LAUNCH_NUM_NODES``: on every node of a multi-node experiment the agent sets these beside
   ``MASTER_ADDR``, ``MASTER_PORT`` and ``NODE_RANK``, which Lightning's LightningEnvironment
   reads to join the nodes into one DDP group (gloo on the CPU);
4. Lightning's defaults (``auto``), on one node.

Torch-free at import: ``train.py --help`` must not load torch.
"""

from __future__ import annotations

import os
import warnings

# Set by torchrun for each process it starts (with TORCHELASTIC_RUN_ID, which Lightning's
# TorchElasticEnvironment.detect() checks): the script runs under torchrun.
TORCHRUN_VARS = ("RANK", "GROUP_RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


def resolve(parser, args) -> tuple[str, int | str | list[int]]:
    """``(accelerator, devices)`` for Lightning, setting ``args.num_nodes``; ``--gpus N``
    (or the launcher's GPU count) asking for more GPUs than exist warns and uses what is
    there (as the launcher's local backend does), none meaning the CPU."""
    devices = _parse_devices(parser, args.devices)
    gpus, asked = args.gpus, f"--gpus {args.gpus}"
    elastic = torchrun()
    if elastic is not None and devices in (None, "auto") and args.num_nodes in (None, 1):
        # torchrun started one process per device: they train one model together, so the
        # devices and nodes are torchrun's, not this script's defaults (1 device, 1 node).
        devices, args.num_nodes = elastic
    elif elastic is None:
        if args.num_nodes is None:
            args.num_nodes = _launch_int(parser, "LAUNCH_NUM_NODES", least=1)
        if gpus is None and devices is None and args.accelerator == "auto":
            gpus = _launch_int(parser, "LAUNCH_GPUS_PER_NODE", least=0)
            asked = f"LAUNCH_GPUS_PER_NODE={gpus}"
    args.num_nodes = args.num_nodes or 1
    devices = "auto" if devices is None else devices
    if gpus is None:
        return args.accelerator, devices
    if gpus == 0:
        return "cpu", devices if elastic else 1
    import torch

    have = torch.cuda.device_count()
    if have == 0:
        warnings.warn(f"{asked}: no GPU here; training on the CPU", stacklevel=1)
        return "cpu", devices if elastic else 1
    if elastic:
        return "gpu", devices
    if gpus > have:
        warnings.warn(f"{asked}: only {have} GPU(s) here; using {have}", stacklevel=1)
    return "gpu", min(gpus, have)


def _parse_devices(parser, devices: str | None) -> int | str | list[int] | None:
    if devices is None or devices == "auto":
        return devices
    try:
        return [int(d) for d in devices.split(",") if d] if "," in devices else int(devices)
    except ValueError:
        parser.error(f"--devices {devices}: a count, a list like 0,1, or auto")


def _launch_int(parser, name: str, least: int) -> int | None:
    """The launcher's variable ``name`` as an int, None when it is not set."""
    value = os.environ.get(name)
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        number = least - 1
    if number < least:
        parser.error(f"{name}={value}: must be an integer >= {least}")
    return number


def torchrun() -> tuple[int, int] | None:
    """(processes per node, nodes) when started by torchrun, else None."""
    if not all(v in os.environ for v in TORCHRUN_VARS):
        return None
    local = int(os.environ["LOCAL_WORLD_SIZE"])
    world = int(os.environ.get("WORLD_SIZE", local))
    return local, max(1, world // max(1, local))


def on_cpu(accelerator: str) -> bool:
    if accelerator == "auto":
        import torch

        return not torch.cuda.is_available()
    return accelerator == "cpu"


def cluster_plugins() -> list:
    """Lightning's ``plugins=`` for the cluster environment: under the launcher (LAUNCH_RUN
    set) on a machine whose environment has SLURM's variables, LightningEnvironment. Lightning
    would otherwise pick SLURMEnvironment, take ranks from SLURM_* instead of the launcher's
    NODE_RANK, and trap SIGUSR1 to requeue the job itself: the launcher's agent owns retries.
    Lightning already prefers torchrun's environment over SLURM's, so that stays its choice."""
    if not os.environ.get("LAUNCH_RUN"):
        return []
    from lightning_fabric.plugins.environments import (
        LightningEnvironment,
        SLURMEnvironment,
        TorchElasticEnvironment,
    )

    if SLURMEnvironment.detect() and not TorchElasticEnvironment.detect():
        return [LightningEnvironment()]
    return []


def world_line(trainer) -> str:
    """``world size 4 (2 node(s) x 2 process(es))``: how many processes train the model."""
    per_node = trainer.world_size // max(1, trainer.num_nodes)
    return f"world size {trainer.world_size} ({trainer.num_nodes} node(s) x {per_node} process(es))"
