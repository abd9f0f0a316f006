"""EC2 instance types a job can ask for: GPUs, GPU model and memory, vCPUs, RAM, hourly price.

Prices are us-east-1 Linux on-demand list prices in USD per hour. Spot prices are *indicative*
only: a typical recent us-east-1 figure, recorded by hand. Real spot prices move by zone and by
hour; check ``aws ec2 describe-spot-price-history`` before relying on them. Cost estimates built
from this table are for planning, not billing.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from launcher.errors import SpecError


@dataclass(frozen=True)
class InstanceType:
    """One instance type. ``gpu_model`` is empty and ``gpu_memory_gib`` 0 for CPU types;
    ``gpu_memory_gib`` is per GPU."""

    name: str
    gpus: int
    gpu_model: str
    gpu_memory_gib: int
    vcpus: int
    memory_gib: float
    price_hour: float
    spot_price_hour: float


# name, gpus, gpu model, GiB per GPU, vCPUs, RAM GiB, on-demand $/h, indicative spot $/h
_TABLE: list[tuple[str, int, str, int, int, float, float, float]] = [
    # CPU types for cheap runs and smoke tests.
    ("t3.medium", 0, "", 0, 2, 4, 0.0416, 0.0125),
    ("t3.large", 0, "", 0, 2, 8, 0.0832, 0.025),
    ("t3.xlarge", 0, "", 0, 4, 16, 0.1664, 0.05),
    ("m5.large", 0, "", 0, 2, 8, 0.096, 0.035),
    ("m5.xlarge", 0, "", 0, 4, 16, 0.192, 0.07),
    ("m5.2xlarge", 0, "", 0, 8, 32, 0.384, 0.14),
    ("m5.4xlarge", 0, "", 0, 16, 64, 0.768, 0.28),
    ("c5.xlarge", 0, "", 0, 4, 8, 0.17, 0.065),
    ("c5.2xlarge", 0, "", 0, 8, 16, 0.34, 0.13),
    ("c5.4xlarge", 0, "", 0, 16, 32, 0.68, 0.26),
    # g4dn: NVIDIA T4, 16 GiB.
    ("g4dn.xlarge", 1, "T4", 16, 4, 16, 0.526, 0.22),
    ("g4dn.2xlarge", 1, "T4", 16, 8, 32, 0.752, 0.30),
    ("g4dn.4xlarge", 1, "T4", 16, 16, 64, 1.204, 0.48),
    ("g4dn.8xlarge", 1, "T4", 16, 32, 128, 2.176, 0.85),
    ("g4dn.12xlarge", 4, "T4", 16, 48, 192, 3.912, 1.60),
    ("g4dn.16xlarge", 1, "T4", 16, 64, 256, 4.352, 1.70),
    ("g4dn.metal", 8, "T4", 16, 96, 384, 7.824, 3.10),
    # g5: NVIDIA A10G, 24 GiB.
    ("g5.xlarge", 1, "A10G", 24, 4, 16, 1.006, 0.40),
    ("g5.2xlarge", 1, "A10G", 24, 8, 32, 1.212, 0.48),
    ("g5.4xlarge", 1, "A10G", 24, 16, 64, 1.624, 0.65),
    ("g5.8xlarge", 1, "A10G", 24, 32, 128, 2.448, 0.98),
    ("g5.12xlarge", 4, "A10G", 24, 48, 192, 5.672, 2.25),
    ("g5.16xlarge", 1, "A10G", 24, 64, 256, 4.096, 1.65),
    ("g5.24xlarge", 4, "A10G", 24, 96, 384, 8.144, 3.25),
    ("g5.48xlarge", 8, "A10G", 24, 192, 768, 16.288, 6.50),
    # p3: NVIDIA V100.
    ("p3.2xlarge", 1, "V100", 16, 8, 61, 3.06, 0.95),
    ("p3.8xlarge", 4, "V100", 16, 32, 244, 12.24, 3.80),
    ("p3.16xlarge", 8, "V100", 16, 64, 488, 24.48, 7.60),
    ("p3dn.24xlarge", 8, "V100", 32, 96, 768, 31.212, 9.70),
    # p4d: NVIDIA A100 40 GiB.
    ("p4d.24xlarge", 8, "A100", 40, 96, 1152, 32.7726, 12.00),
]

INSTANCES: dict[str, InstanceType] = {row[0]: InstanceType(*row) for row in _TABLE}


def get_instance(name: str) -> InstanceType:
    """The catalog entry for ``name``; an unknown name is a SpecError listing close matches."""
    try:
        return INSTANCES[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), INSTANCES, n=4, cutoff=0.5)
        hint = f"did you mean: {', '.join(close)}? " if close else ""
        raise SpecError(
            f"unknown instance type {name!r}; {hint}`launch instances` lists all "
            f"{len(INSTANCES)} known types"
        ) from None


def list_instances(gpus: int | None = None) -> list[InstanceType]:
    """Instance types with at least ``gpus`` GPUs (all when None), cheapest first."""
    rows = [i for i in INSTANCES.values() if gpus is None or i.gpus >= gpus]
    return sorted(rows, key=lambda i: (i.price_hour, i.name))


def instances_with_gpus(gpus: int, family: str | None = None) -> list[str]:
    """Names of types with at least ``gpus`` GPUs, same family first, cheapest first."""
    rows = list_instances(gpus)
    return [i.name for i in sorted(rows, key=lambda i: (i.name.split(".")[0] != family,))]


def fitting(gpus: int = 0, cpus: int | None = None, memory: float | None = None) -> list[str]:
    """Names of types with at least ``gpus`` GPUs, ``cpus`` vCPUs and ``memory`` GiB of RAM,
    cheapest first."""
    return [i.name for i in list_instances(gpus)
            if i.vcpus >= (cpus or 0) and i.memory_gib >= (memory or 0)]  # fmt: skip


def pick_instance(gpus: int | None, cpus: int | None, memory: float | None) -> str:
    """The cheapest type with ``cpus`` vCPUs and ``memory`` GiB (``gpus`` None: 1 GPU, as the
    default type has); a SpecError naming the largest there is when none has that much."""
    want = 1 if gpus is None else gpus
    names = fitting(want, cpus, memory)
    if names:
        return names[0]
    need = [f"{want} GPU(s)"] if want else []
    if cpus:
        need.append(f"{cpus} vCPUs")
    if memory:
        need.append(f"{memory:g} GiB")
    rows = list_instances(want) or list_instances()
    most_cpus = max(rows, key=lambda i: i.vcpus)
    most_mem = max(rows, key=lambda i: i.memory_gib)
    raise SpecError(
        f"no instance type has {' and '.join(need)}; the most there is: {most_cpus.vcpus} vCPUs "
        f"({most_cpus.name}), {most_mem.memory_gib:g} GiB ({most_mem.name})"
    )


def estimate_cost(spec: Any) -> dict[str, Any]:
    """Hourly cost of a job spec's nodes, all of them running at once (upper bound): ``nodes``
    per experiment, for as many experiments as ``max_nodes // nodes`` at once.

    Returns ``instance_type``, ``nodes``, ``on_demand_hour``, ``spot_hour`` (indicative),
    ``hour`` (the one the spec will pay: spot if ``spec.spot``), and, when the spec sets
    ``max_runtime`` (per experiment), ``max_total``: one node-hour price x experiments x
    max_runtime, the most the experiments themselves can cost (boot time not included).
    """
    inst = get_instance(spec.instance_type)
    n_exp = len(spec.experiments())
    from launcher.backends.base import wanted_nodes

    per_exp = int(getattr(spec, "nodes", 1) or 1)
    nodes = wanted_nodes(spec.max_nodes, n_exp, per_exp)
    out: dict[str, Any] = {
        "instance_type": inst.name,
        "nodes": nodes,
        "on_demand_hour": round(inst.price_hour * nodes, 4),
        "spot_hour": round(inst.spot_price_hour * nodes, 4),
    }
    out["hour"] = out["spot_hour"] if spec.spot else out["on_demand_hour"]
    if getattr(spec, "max_runtime", None):
        per_node = inst.spot_price_hour if spec.spot else inst.price_hour
        out["max_total"] = round(per_node * n_exp * per_exp * spec.max_runtime / 3600, 4)
    return out
