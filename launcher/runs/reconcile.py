"""The one step that may change a run's world: re-queue what dead nodes held, start the nodes it
lacks (within its budget), and close a stopped run no agent is left to close.

Called by ``launch status`` and ``--wait``/``--follow`` only; listing, cost, stop and delete
never reconcile. The backend does the node work (:meth:`Backend.reconcile`, idempotent and safe
under concurrent callers); this module adds what is the same on every backend.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from launcher.storage import records

if TYPE_CHECKING:
    from launcher.runs.state import RunContext


def reconcile_run(ctx: RunContext, statuses: dict[str, dict], stop: bool) -> tuple[str, bool]:
    """Reconcile an unfinished run; a message for the user, and whether anything changed."""
    if stop:
        return _close_stopped(ctx, statuses)
    result = ctx.backend.reconcile(ctx.name, statuses)
    return result.summary(), bool(result.requeued or result.started or result.stopped)


def _close_stopped(ctx: RunContext, statuses: dict[str, dict]) -> tuple[str, bool]:
    """A stop was requested but no agent is left to act on it: mark what is unfinished."""
    if any(n.live for n in ctx.nodes()):
        return "", False  # its agents will stop it
    now = time.time()
    changed = False
    for exp, st in statuses.items():
        if st.get("state") not in records.TERMINAL:
            changed |= records.finish(ctx.storage, ctx.name, exp, state="stopped", ended=now,
                                      message="stopped (no agent left)")  # fmt: skip
    return ("stopped: no agent was left to stop it" if changed else ""), changed
