"""The contract every backend keeps.

A backend turns a *prepared run* (already written to storage under ``ROOT/runs/RUN/`` by the
generic code: run.json, code.tar.gz, experiments/EXP/params.json) into nodes that run
``launcher.node.agent`` until no experiment is left. Everything else (claims, heartbeats, logs,
artifacts, status) goes through storage, so the generic code never asks which backend it talks
to; it asks what the backend can do (:class:`Capabilities`).

Queries never change anything: :meth:`Backend.nodes` (and so listing, status, cost, stop and
delete) only reads. :meth:`Backend.reconcile` is the one step that may: it re-queues what dead
nodes held and starts the missing nodes within the run's budget. It is idempotent and safe when
several callers run it at once (8 concurrent ``launch status`` start at most the missing nodes),
and only ``launch status`` and ``--wait``/``--follow`` call it.

A new backend joins by subclassing :class:`Backend`, adding itself to the registry in
:mod:`launcher.backends`, and adding one fixture to the contract suite in
``tests/launcher/contract/``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from launcher.spec.jobspec import JobSpec
    from launcher.storage.root import Storage


@dataclass(frozen=True)
class Capabilities:
    """What a backend supports; generic code checks these instead of the backend's type."""

    spot: bool = False
    multi_node: bool = True
    stop: bool = True
    gpus: bool = True
    cost: bool = False  # reports instance-hours cost
    gangs: bool = False  # one experiment across several nodes (--nodes N), as one unit
    placement: bool = False  # --placement cluster
    # stop() itself lets agents end gracefully (SIGTERM: the script is stopped, its last logs and
    # artifacts shipped), so `launch stop` need not wait for them to notice at a heartbeat
    graceful_stop: bool = False
    # EC2 instance types apply (--instance, the catalog's checks and prices); False on a
    # scheduler (slurm) whose nodes are the cluster's: --instance/--spot are refused there
    instances: bool = True


@dataclass
class NodeInfo:
    """One node (process, instance) a backend started for a run."""

    node_id: str
    state: str  # pending | running | stopped | terminated | dead
    instance_type: str = ""
    zone: str = ""
    spot: bool = False
    started_at: float | None = None
    ended_at: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


LIVE_STATES = ("pending", "running")


@dataclass
class Reconciled:
    """What one :meth:`Backend.reconcile` did."""

    requeued: list[str] = field(default_factory=list)  # experiments a dead node held
    started: list[NodeInfo] = field(default_factory=list)  # replacement nodes
    notes: list[str] = field(default_factory=list)  # what it could not do, for the user
    stopped: list[str] = field(default_factory=list)  # experiments the scheduler cancelled

    def summary(self) -> str:
        parts = []
        if self.requeued:
            parts.append(f"re-queued {', '.join(self.requeued)} (their node went away)")
        if self.started:
            parts.append(f"restarted {len(self.started)} agent(s)")
        return "; ".join(parts + self.notes)


def wanted_nodes(max_nodes: int, unfinished: int, nodes: int = 1) -> int:
    """Nodes a run wants up: ``nodes`` per unfinished experiment, for as many experiments as
    ``max_nodes // nodes`` allows at once (max_nodes counts nodes, an experiment takes all its
    nodes at once). The one rule submit, reconcile and the cost estimate apply."""
    at_once = max(1, int(max_nodes) // max(1, int(nodes)))
    return min(at_once, int(unfinished)) * max(1, int(nodes))


def missing_nodes(max_nodes: int, statuses: Mapping[str, dict], live: int, nodes: int = 1) -> int:
    """How many nodes a run lacks: :func:`wanted_nodes` for its unfinished experiments, less
    those alive. The one rule every backend's reconcile applies."""
    from launcher.storage.records import TERMINAL

    unfinished = sum(1 for st in statuses.values() if st.get("state") not in TERMINAL)
    return max(0, wanted_nodes(max_nodes, unfinished, nodes) - live)


def requeue_orphans(
    storage: Storage, run: str, statuses: Mapping[str, dict], gone: Mapping[str, str]
) -> list[str]:
    """Put back in the queue each experiment whose status says it runs on a node that is gone
    (``gone``: node -> why). The dead attempt keeps its claim number, so the next claim is a new
    attempt that restores the shipped artifacts first (the trainer resumes from last.ckpt).
    Only the attempt the dead node holds: a later claim means someone took it over already.
    Returns the experiments re-queued."""
    from launcher.storage import records

    requeued = []
    for exp, status in statuses.items():
        node = status.get("node")
        if status.get("state") != "running" or node not in gone:
            continue
        attempt = int(status.get("attempt") or 0)
        taken = records.claim_numbers(storage, run, exp)
        if taken and taken[-1] != attempt:
            continue
        records.write_status(storage, run, exp, state="queued",
                             message=f"node {node} went away while running attempt {attempt} "
                             f"({gone[node]}); re-queued")  # fmt: skip
        requeued.append(exp)
    return requeued


class Backend(ABC):
    """Submit, inspect, reconcile and stop the nodes of runs. One instance per CLI invocation."""

    name: str = ""
    capabilities: Capabilities = Capabilities()

    @classmethod
    def configured(cls) -> bool:
        """Whether this machine is set up to reach the backend's storage (its runs are then
        listed by ``launch status`` and found by name without the index)."""
        return True

    @abstractmethod
    def storage(self) -> Storage:
        """The storage root this backend's runs live under (file:// or s3://)."""

    @abstractmethod
    def submit(self, run: str, spec: JobSpec) -> list[NodeInfo]:
        """Start up to ``spec.max_nodes`` nodes for a run already written to storage."""

    @abstractmethod
    def nodes(self, run: str) -> list[NodeInfo]:
        """The nodes started for a run, with their live state. Read-only, never cached."""

    @abstractmethod
    def reconcile(self, run: str, statuses: Mapping[str, dict]) -> Reconciled:
        """Re-queue the experiments dead nodes held, then start :func:`missing_nodes` within the
        run's budget. ``statuses`` maps each experiment to its status.json as the caller just
        read it. Idempotent; concurrent callers together start at most the missing nodes. The
        caller does not call it for a run whose stop was requested."""

    @abstractmethod
    def stop(self, run: str) -> list[NodeInfo]:
        """Stop (terminate) every node of a run; returns the nodes it stopped."""

    def notify_stop(self, run: str, node: str) -> bool:
        """Prompt the agent on ``node`` to look for stop keys now rather than at its next
        heartbeat; False where this backend cannot (its agents notice at a heartbeat)."""
        return False

    def delete(self, run: str) -> None:  # noqa: B027 - optional hook
        """Release anything besides storage a run still holds (called after stop)."""
