"""The contract every backend keeps, and the registry that maps names to backends.

A backend turns a *prepared run* (already written to storage under ``ROOT/runs/RUN/`` by the
generic code: run.json, code.tar.gz, experiments/EXP/params.json) into nodes that run
``launcher.node.agent`` until no experiment is left. Everything else (claims, heartbeats, logs,
artifacts, status) goes through storage, so the generic code never asks which backend it talks to;
it asks what the backend can do (:class:`Capabilities`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
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
    # `launch status`/`--wait` may start replacement nodes for an unfinished run with no live node
    # (cheap and safe locally; a cloud backend relies on its own recovery instead)
    reconcile: bool = False
    # stop() itself lets agents end gracefully (SIGTERM: the script is stopped, its last logs and
    # artifacts shipped), so `launch stop` need not wait for them to notice at a heartbeat
    graceful_stop: bool = False


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


class Backend(ABC):
    """Submit, inspect and stop the nodes of runs. One instance per CLI invocation."""

    name: str = ""
    capabilities: Capabilities = Capabilities()

    @abstractmethod
    def storage(self) -> Storage:
        """The storage root this backend's runs live under (file:// or s3://)."""

    @abstractmethod
    def submit(self, run: str, spec: JobSpec) -> list[NodeInfo]:
        """Start up to ``spec.max_nodes`` nodes for a run already written to storage."""

    @abstractmethod
    def nodes(self, run: str) -> list[NodeInfo]:
        """The nodes started for a run, with their live state (reconciled, never cached)."""

    @abstractmethod
    def stop(self, run: str) -> list[NodeInfo]:
        """Stop (terminate) every node of a run; returns the nodes it stopped."""

    def notify_stop(self, run: str, node: str) -> bool:
        """Prompt the agent on ``node`` to look for stop keys now rather than at its next
        heartbeat; False where this backend cannot (its agents notice at a heartbeat)."""
        return False

    def delete(self, run: str) -> None:  # noqa: B027 - optional hook
        """Release anything besides storage a run still holds (called after stop)."""
