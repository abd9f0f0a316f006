"""The storage layout of runs, in one place: names, keys, and each experiment's status record.

    runs/RUN/run.json, code.tar.gz, stop, nodes/NODE.json
    runs/RUN/experiments/EXP/{params.json, status.json, claims/NNNNNN, heartbeat, stop,
                              logs/NNNNNN.log, logs/rank-K/NNNNNN.log, artifacts.json,
                              artifacts/..., gang/NNNNNN/... (node/gang.py)}
    runs/RUN/lobby/EXP-NNNNNN  (multi-node gangs forming; node/gang.py)

Names are checked with ``fullmatch`` (``re.match`` with ``$`` would let a trailing newline
through). Every layer reads and writes these records through the functions here, so the layout
and its name rules are written once.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from launcher.errors import SpecError

if TYPE_CHECKING:
    from launcher.storage.root import Storage

# A run, node or datastore name: DNS-label-like, so it fits tags, S3 keys and job names.
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
EXPERIMENT_ID = re.compile(r"exp-[0-9]{1,6}")
NAME_RULE = "1-63 characters: lower-case letters, digits and '-', starting with a letter or digit"

TERMINAL = ("succeeded", "failed", "stopped")
STATES = ("queued", "running", *TERMINAL)


def check_name(value: object, what: str = "run name") -> str:
    """``value`` if it is a valid run (or node) name; SpecError naming the rule otherwise."""
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise SpecError(f"invalid {what} {value!r}: use {NAME_RULE}")
    return value


def check_experiment_id(value: object) -> str:
    if not isinstance(value, str) or not EXPERIMENT_ID.fullmatch(value):
        raise SpecError(f"invalid experiment id {value!r}: use exp-N, e.g. exp-0")
    return value


def run_key(run: str, *parts: str) -> str:
    return "/".join(("runs", run, *parts))


def exp_key(run: str, exp: str, *parts: str) -> str:
    return "/".join(("runs", run, "experiments", exp, *parts))


def claim_key(run: str, exp: str, attempt: int) -> str:
    return exp_key(run, exp, "claims", f"{attempt:06d}")


def queued_status() -> dict:
    """The status of an experiment no attempt has touched yet (a fresh dict each call)."""
    return {"state": "queued", "attempt": 0, "exit_code": None, "metrics": {}, "message": ""}


def read_status(storage: Storage, run: str, exp: str) -> dict:
    """status.json, or :func:`queued_status` when the experiment has never been written. A
    status.json cut short (a crash mid-write, a full disk) reads as the experiment's final
    record when it has one, else as queued with a note, so one bad file stops nothing."""
    from launcher.storage.root import CorruptRecord

    try:
        status = storage.read_json(exp_key(run, exp, "status.json"), default=None)
    except CorruptRecord as e:
        final = read_final(storage, run, exp)
        return final or dict(queued_status(), message=f"status was unreadable: {e}")
    return status if isinstance(status, dict) else queued_status()


def read_statuses(storage: Storage, run: str, exps: list[str]) -> dict[str, dict]:
    """Each experiment's status at once (one batched read; see :func:`read_status`)."""
    import json

    keys = {exp: exp_key(run, exp, "status.json") for exp in exps}
    data = storage.read_many(list(keys.values()))
    out = {}
    for exp, key in keys.items():
        raw = data[key]
        try:
            status = json.loads(raw) if raw is not None else None
        except ValueError:
            status = read_status(storage, run, exp)  # the one-by-one path names the problem
        out[exp] = status if isinstance(status, dict) else queued_status()
    return out


def read_final(storage: Storage, run: str, exp: str) -> dict | None:
    """The experiment's final status (final.json), or None while it is not finished."""
    try:
        final = storage.read_json(exp_key(run, exp, "final.json"), default=None)
    except ValueError:
        return None
    return final if isinstance(final, dict) else None


def finish(storage: Storage, run: str, exp: str, **fields) -> bool:
    """Record an experiment's end once: final.json is created exclusively, so of two agents that
    both ran it (one was judged dead while it still worked) the first to finish wins and a later
    finish can never overwrite it. status.json then says the same. False if already finished."""
    import json

    status = read_status(storage, run, exp)
    status.update(fields)
    if not storage.create_exclusive(exp_key(run, exp, "final.json"), json.dumps(status).encode()):
        return False
    storage.write_json(exp_key(run, exp, "status.json"), status)
    return True


def write_status(storage: Storage, run: str, exp: str, **fields) -> dict:
    """Merge fields into status.json and write it whole (atomic on both file systems and S3)."""
    status = read_status(storage, run, exp)
    status.update(fields)
    storage.write_json(exp_key(run, exp, "status.json"), status)
    return status


def claim_numbers(storage: Storage, run: str, exp: str) -> list[int]:
    """Attempt numbers claimed so far, ascending."""
    return sorted(int(n) for n in storage.list(exp_key(run, exp, "claims")) if n.isdigit())


def log_dir(run: str, exp: str, rank: int = 0) -> str:
    """Where a rank's log pieces go: ``logs/`` for rank 0 (every single-node experiment),
    ``logs/rank-K/`` for rank K of a multi-node one."""
    return exp_key(run, exp, "logs", *([f"rank-{rank}"] if rank else []))


def log_key(run: str, exp: str, piece: int | str, rank: int = 0) -> str:
    """One log piece's key: ``piece`` is its number (the next to write) or its name."""
    name = f"{piece:06d}.log" if isinstance(piece, int) else piece
    return f"{log_dir(run, exp, rank)}/{name}"


def log_pieces(storage: Storage, run: str, exp: str, rank: int = 0) -> list[str]:
    """Piece names (``000000.log``, ...) of one rank's log, in order."""
    names = storage.list(log_dir(run, exp, rank))
    return sorted(n for n in names if n.endswith(".log") and n[:-4].isdigit())
