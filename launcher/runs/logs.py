"""Reading an experiment's log: numbered pieces in storage, concatenated in order; following
them while the experiment runs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from launcher.storage.records import TERMINAL, log_key, log_pieces, read_status
from launcher.storage.root import Storage


def read_log(storage: Storage, run: str, exp: str, rank: int = 0) -> str:
    """Everything an experiment (rank 0, or ``rank`` of a multi-node one) printed so far, all
    attempts."""
    return "".join(
        storage.read_bytes(log_key(run, exp, n, rank)).decode(errors="replace")
        for n in log_pieces(storage, run, exp, rank)
    )


def follow_logs(
    storage: Storage,
    run: str,
    exps: list[str],
    *,
    poll: float = 1.0,
    tick: Callable[[], None] | None = None,
    rank: int = 0,
) -> Iterator[tuple[str, str]]:
    """Yield ``(exp, text)`` as pieces land, until every experiment is finished and drained.

    ``tick`` runs once per poll (the CLI uses it to reconcile dead agents while following).
    """
    seen: dict[str, int] = {e: 0 for e in exps}
    while True:
        # status before pieces: a finished status means its last piece is already there
        done = {e: read_status(storage, run, e)["state"] in TERMINAL for e in exps}
        for e in exps:
            pieces = log_pieces(storage, run, e, rank)
            for name in pieces[seen[e] :]:
                text = storage.read_bytes(log_key(run, e, name, rank)).decode(errors="replace")
                yield e, text
            seen[e] = len(pieces)
        if all(done.values()):
            return
        if tick is not None:
            tick()
        time.sleep(poll)
