"""Gangs: one experiment trained on N nodes at once, formed through the storage root alone.

No SSH and no controller: the ranks of an attempt meet under its experiment::

    runs/RUN/lobby/EXP-NNNNNN                 a gang of attempt N is forming: seats are open
    runs/RUN/experiments/EXP/gang/NNNNNN/
        seat-K        rank K's node, its address and group (created exclusively, like claims)
        cluster.json  written by rank 0 once every seat is taken: the addresses, a free port
        released      rank 0 gave up waiting for seats (the attempt is handed back, free)
        abort         the first rank to fail, stop or lose its node says so (exclusively):
                      every other rank ends its script at its next beat
        beat-K        rank K's heartbeat (rank 0 beats the experiment's own heartbeat)
        exit-K        rank K's script's exit code

Rank 0 is whoever claims the attempt (claims.py: attempts, retries and recovery stay per
experiment). It opens the lobby and waits, beating, for ``size - 1`` other nodes to take seats
1..size-1. When the seats are full it publishes cluster.json and closes the lobby; if they are
not full in ``form_timeout`` it writes ``released`` and hands the attempt back, so the nodes
that sat down are free again instead of held forever. A rank 0 still waiting gives way to a
gang of a lower experiment that is also forming, so N agents that all claimed at once converge
on filling one gang at a time instead of each waiting for the others.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field

from launcher.storage import records
from launcher.storage.root import Storage


@dataclass
class Cluster:
    """Where the ranks of one attempt meet: what every rank's script is told."""

    addrs: list[str]  # by rank
    nodes: list[str]  # by rank
    port: int
    gpus_per_node: int
    resumed: bool = False
    formed: float = 0.0  # when rank 0 published it

    @property
    def size(self) -> int:
        return len(self.addrs)

    def env(self, rank: int) -> dict[str, str]:
        """The variables Lightning's cluster environment and torchrun read, and ours."""
        return {
            "MASTER_ADDR": self.addrs[0],
            "MASTER_PORT": str(self.port),
            "NODE_RANK": str(rank),
            "WORLD_SIZE": str(self.size * max(1, self.gpus_per_node)),
            **node_env(rank, self.size, self.addrs, self.gpus_per_node),
        }

    def to_dict(self) -> dict:
        return {"addrs": self.addrs, "nodes": self.nodes, "port": self.port,
                "gpus_per_node": self.gpus_per_node, "resumed": self.resumed,
                "formed": self.formed or time.time()}  # fmt: skip


def node_env(rank: int, size: int, addrs: list[str], gpus: int) -> dict[str, str]:
    """The LAUNCH_* view of the gang, set for single-node experiments too (rank 0 of 1)."""
    return {
        "LAUNCH_NODE_RANK": str(rank),
        "LAUNCH_NUM_NODES": str(size),
        "LAUNCH_NODE_IPS": ",".join(addrs),
        "LAUNCH_GPUS_PER_NODE": str(gpus),
    }


def gang_key(run: str, exp: str, attempt: int, *parts: str) -> str:
    return records.exp_key(run, exp, "gang", f"{attempt:06d}", *parts)


def lobby_key(run: str, exp: str | None = None, attempt: int | None = None) -> str:
    if exp is None:
        return records.run_key(run, "lobby")
    return records.run_key(run, "lobby", f"{exp}-{attempt:06d}")


def primary_address() -> str:
    """The address other machines reach this one at: the source address of the default route
    (a UDP connect sends nothing), else loopback."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


def free_port(addr: str) -> int:
    """A port free on ``addr`` now, for rank 0's process group store (as torch picks one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((addr, 0))
        except OSError:  # an address this machine does not hold (mapped): any interface
            s.bind(("", 0))
        return s.getsockname()[1]


@dataclass
class Gang:
    """The records of one attempt's gang."""

    storage: Storage
    run: str
    exp: str
    attempt: int
    size: int
    _seen_cluster: dict | None = field(default=None, repr=False)

    def key(self, *parts: str) -> str:
        return gang_key(self.run, self.exp, self.attempt, *parts)

    # -- seats ------------------------------------------------------------------------------
    def sit(self, rank: int, node: str, addr: str, group: str | None) -> bool:
        body = {"node": node, "addr": addr, "group": group, "time": time.time()}
        return self.storage.create_exclusive(self.key(f"seat-{rank}"), json.dumps(body).encode())

    def seats(self) -> dict[int, dict]:
        """Taken seats by rank (a seat still being written reads as taken, without details)."""
        names = [n for n in self.storage.list(self.key()) if n.startswith("seat-")]
        keys = {int(n[5:]): self.key(n) for n in names if n[5:].isdigit()}
        data = self.storage.read_many(list(keys.values()))
        out = {}
        for rank, key in keys.items():
            try:
                out[rank] = json.loads(data[key] or b"{}")
            except ValueError:
                out[rank] = {}
        return out

    # -- rank 0's decisions -----------------------------------------------------------------
    def publish(self, cluster: Cluster) -> None:
        data = cluster.to_dict()
        self.storage.write_json(self.key("cluster.json"), data)
        self._seen_cluster = data  # rank 0 never needs to read back what it wrote

    def cluster(self) -> Cluster | None:
        if self._seen_cluster is None:
            try:
                self._seen_cluster = self.storage.read_json(self.key("cluster.json"), default=None)
            except ValueError:
                return None
        d = self._seen_cluster
        if not d:
            return None
        return Cluster(addrs=list(d["addrs"]), nodes=list(d["nodes"]), port=int(d["port"]),
                       gpus_per_node=int(d["gpus_per_node"]), resumed=bool(d.get("resumed")),
                       formed=float(d.get("formed") or 0.0))  # fmt: skip

    def release(self, why: str) -> None:
        self.storage.write_json(self.key("released"), {"why": why, "time": time.time()})

    def released(self) -> bool:
        return self.storage.exists(self.key("released"))

    # -- the attempt's life -----------------------------------------------------------------
    def abort(self, rank: int, kind: str, why: str) -> bool:
        """Say the attempt is over for every rank (first word wins). ``kind``: failed,
        interrupted (handed back, free), stopped, lost (rank 0 was fenced), done."""
        body = {"rank": rank, "kind": kind, "why": why, "time": time.time()}
        return self.storage.create_exclusive(self.key("abort"), json.dumps(body).encode())

    def aborted(self) -> dict | None:
        try:
            return self.storage.read_json(self.key("abort"), default=None)
        except ValueError:  # being written: an abort all the same
            return {"rank": None, "kind": "failed", "why": "a rank aborted"}

    def beat(self, rank: int, node: str, **fields) -> None:
        self.storage.write_json(self.key(f"beat-{rank}"),
                                {"node": node, "time": time.time(), **fields})  # fmt: skip

    def beats(self) -> dict[int, dict]:
        """The latest beat of each rank K > 0 that has beaten."""
        return self._per_rank("beat")

    def report_exit(self, rank: int, code: int | None) -> None:
        self.storage.write_json(self.key(f"exit-{rank}"), {"code": code, "time": time.time()})

    def exits(self) -> dict[int, int | None]:
        """The exit code of each rank K > 0 whose script has ended."""
        return {rank: body.get("code") for rank, body in self._per_rank("exit").items()}

    def _per_rank(self, what: str) -> dict[int, dict]:
        """``what-K`` of every rank K > 0, read at once; absent or unreadable ones left out."""
        keys = {r: self.key(f"{what}-{r}") for r in range(1, self.size)}
        data = self.storage.read_many(list(keys.values()))
        out = {}
        for rank, key in keys.items():
            try:
                body = json.loads(data[key]) if data[key] is not None else None
            except ValueError:  # being written: as if not yet there
                continue
            if isinstance(body, dict):
                out[rank] = body
        return out


# -- the lobby ------------------------------------------------------------------------------
def open_lobby(storage: Storage, gang: Gang, group: str | None, resumed: bool) -> None:
    body = {"exp": gang.exp, "attempt": gang.attempt, "size": gang.size, "group": group,
            "resumed": resumed, "time": time.time()}  # fmt: skip
    storage.write_json(lobby_key(gang.run, gang.exp, gang.attempt), body)


def close_lobby(storage: Storage, gang: Gang) -> None:
    storage.delete(lobby_key(gang.run, gang.exp, gang.attempt))


def forming(storage: Storage, run: str, group: str | None) -> list[dict]:
    """The gangs of ``group`` now forming, lowest experiment first (the order gangs fill in)."""
    names = storage.list(lobby_key(run))
    keys = [f"{lobby_key(run)}/{n}" for n in names if not n.startswith(".")]
    data = storage.read_many(keys)
    out = []
    for key in keys:
        try:
            entry = json.loads(data[key] or b"")
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("group") == group and entry.get("exp"):
            out.append(entry)
    return sorted(out, key=lambda e: (exp_index(e["exp"]), e["attempt"]))


def exp_index(exp: str) -> int:
    return int(exp.rsplit("-", 1)[-1]) if exp.rsplit("-", 1)[-1].isdigit() else 0
