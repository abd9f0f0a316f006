"""Experiment state in storage: status, claims, heartbeats, and who may take an experiment.

An experiment is taken by creating ``claims/NNNNNN`` (attempt N) with
:meth:`Storage.create_exclusive`, atomic on a file system and on S3, so two agents can never
run the same attempt. The attempt to claim is always one past the highest claim there, and that
claim is only attempted when the experiment is queued, or when the attempt holding it is dead:
its heartbeat (or its claim, before the first heartbeat) is older than the stale timeout, or its
node is a process on this machine that no longer exists. A slow agent that lost its experiment
notices ``claims/N+1`` at its next heartbeat and stops writing (fencing).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from launcher.config import stale_timeout
from launcher.processes import process_alive
from launcher.storage.records import (
    TERMINAL,
    claim_key,
    claim_numbers,
    exp_key,
    finish,
    read_status,
)
from launcher.storage.root import Storage

if TYPE_CHECKING:
    from launcher.node.gang import Gang


def node_is_dead(storage: Storage, run: str, node: str) -> bool:
    """True only when the node is known dead: it ran on this machine and its process is gone.
    A node elsewhere is never judged here; its heartbeat going stale says it instead."""
    record = storage.read_json(f"runs/{run}/nodes/{node}.json", default=None)
    if not record or record.get("host") != socket.gethostname() or not record.get("pid"):
        return False
    return not process_alive(record["pid"], record.get("pid_start"))


@dataclass
class Claim:
    """An attempt this agent holds: as its claimer (rank 0), or, in a multi-node experiment, as
    rank K > 0 sitting in the gang rank 0 formed (node/gang.py)."""

    run: str
    exp: str
    attempt: int
    node: str
    resumed: bool  # a previous attempt ran: its artifacts are restored first
    rank: int = 0
    gang: Gang | None = None  # multi-node experiments only


def _attempt_is_dead(storage: Storage, run: str, exp: str, attempt: int, stale_s: float) -> bool:
    now = time.time()
    try:
        hb = storage.read_json(exp_key(run, exp, "heartbeat"), default=None)
    except ValueError:  # cut short: the claim's own age decides
        hb = None
    try:
        claim = storage.read_json(claim_key(run, exp, attempt), default=None) or {}
        seen = float(claim.get("time") or 0.0)
    except ValueError:
        # empty or garbled: created a moment ago (O_EXCL, then written), or its node died (or
        # the disk filled) between the two. Its storage time tells which.
        claim = {}
        seen = storage.modified(claim_key(run, exp, attempt)) or now
    node = claim.get("node")
    if hb and hb.get("attempt") == attempt:
        seen = max(seen, float(hb.get("time") or 0.0))
        node = hb.get("node") or node
    if now - seen > stale_s:
        return True
    return bool(node) and node_is_dead(storage, run, node)


def try_claim(
    storage: Storage,
    run: str,
    exp: str,
    node: str,
    *,
    stale_s: float | None = None,
    max_attempts: int | None = None,
) -> Claim | None:
    """Take an experiment if it is free (queued, or its attempt is dead); None otherwise.

    With ``max_attempts`` (retries + 1), an experiment whose last allowed attempt died (its
    agent crashed, was killed, lost its machine) is not tried again: it fails, with the reason.
    Attempts handed back cleanly on an interruption (status ``interruptions``) cost nothing.
    """
    stale_s = stale_timeout() if stale_s is None else stale_s
    # claims first, then status: a status read after the listing is never older than it
    taken = claim_numbers(storage, run, exp)
    status = read_status(storage, run, exp)
    if status["state"] in TERMINAL:
        return None
    highest = taken[-1] if taken else 0
    current = int(status.get("attempt") or 0)
    free = status["state"] == "queued" and highest <= current
    if not free and not _attempt_is_dead(storage, run, exp, highest, stale_s):
        return None
    attempt = highest + 1
    spent = highest - int(status.get("interruptions") or 0)  # hand-backs cost no retry
    if max_attempts is not None and spent >= max_attempts:
        finish(storage, run, exp, state="failed", attempt=highest, ended=time.time(),
               message=f"gave up: attempt {highest} ended without a word (its agent died or "
               f"lost its node) and no retry is left of {max_attempts - 1}")  # fmt: skip
        return None
    body = {"node": node, "attempt": attempt, "time": time.time(), "host": socket.gethostname()}
    import json

    if not storage.create_exclusive(claim_key(run, exp, attempt), json.dumps(body).encode()):
        return None  # another agent won this attempt
    # the experiment may have finished between our reads and the claim: then leave it alone
    if read_status(storage, run, exp)["state"] in TERMINAL:
        return None
    return Claim(run=run, exp=exp, attempt=attempt, node=node, resumed=highest > 0)


def claim_lost(storage: Storage, claim: Claim) -> bool:
    """Whether another agent has taken a later attempt (this one was judged dead), or the
    experiment was finished by someone else (a stop, an earlier attempt that was still alive).
    A rank K > 0 has also lost its attempt when the gang was released or aborted, or when rank
    0's claim is dead (its agent or node went away)."""
    if storage.exists(claim_key(claim.run, claim.exp, claim.attempt + 1)) or storage.exists(
        exp_key(claim.run, claim.exp, "final.json")
    ):
        return True
    if claim.rank == 0 or claim.gang is None:
        return False
    gang = claim.gang
    return (
        gang.aborted() is not None
        or gang.released()
        or _attempt_is_dead(storage, claim.run, claim.exp, claim.attempt, stale_timeout())
    )


def beat(storage: Storage, claim: Claim) -> None:
    if claim.rank and claim.gang is not None:  # rank 0 beats for the experiment
        claim.gang.beat(claim.rank, claim.node)
        return
    storage.write_json(
        exp_key(claim.run, claim.exp, "heartbeat"),
        {"node": claim.node, "attempt": claim.attempt, "time": time.time()},
    )
