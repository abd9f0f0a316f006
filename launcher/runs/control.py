"""Changing a run on the user's request: stop it (or one experiment), delete it, wait for it.

Stop and delete never reconcile: a run being stopped gets no replacement nodes.
"""

from __future__ import annotations

import time

from launcher.errors import LaunchError, SpecError
from launcher.runs.index import FINISHED, RunIndex, RunRow
from launcher.runs.state import INCOMPLETE, ExperimentView, RunContext
from launcher.storage import records


def stop_run(name: str, *, index: RunIndex | None = None, wait: float | None = None) -> RunRow:
    """Ask agents to stop a run (``RUN``) or one experiment (``RUN/EXP``), wait for them, then
    stop what did not answer. Queued experiments become ``stopped`` at once."""
    ctx = RunContext(name, index)
    ids = ctx.experiment_ids()
    if ctx.exp:
        ctx.storage.write_text(records.exp_key(ctx.name, ctx.exp, "stop"), "")
    else:
        ctx.storage.write_text(f"runs/{ctx.name}/stop", "")
    now = time.time()
    for e in ids:
        if records.read_status(ctx.storage, ctx.name, e)["state"] == "queued":
            records.write_status(ctx.storage, ctx.name, e, state="stopped", ended=now,
                            message="stopped before it started")  # fmt: skip
    if ctx.exp:
        status = records.read_status(ctx.storage, ctx.name, ctx.exp)
        if status["state"] == "running" and status.get("node"):
            # where the backend can, its agents (every rank's) look at once instead of at their
            # next heartbeat
            for node in status.get("nodes") or [status["node"]]:
                ctx.backend.notify_stop(ctx.name, node)
    graceful = not ctx.exp and ctx.backend.capabilities.graceful_stop
    if graceful:
        ctx.backend.stop(ctx.name)  # returns once the agents have wound down
        wait = 0.0 if wait is None else wait
    if wait is None:
        from launcher.config import env_float, heartbeat_interval

        wait = heartbeat_interval() + env_float("LAUNCH_STOP_GRACE_S", 10.0) + 5
    deadline = time.time() + wait
    while time.time() < deadline:
        if all(
            records.read_status(ctx.storage, ctx.name, e)["state"] in records.TERMINAL for e in ids
        ):
            break
        time.sleep(0.2)
    if not ctx.exp:
        if not graceful:  # a graceful stop() above already stopped every node
            ctx.backend.stop(ctx.name)
        for e in ids:
            if records.read_status(ctx.storage, ctx.name, e)["state"] not in records.TERMINAL:
                records.write_status(ctx.storage, ctx.name, e, state="stopped", ended=time.time(),
                                message="its agent did not answer; stopped")  # fmt: skip
    return ctx.refresh()[0]


def delete_run(name: str, *, index: RunIndex | None = None) -> None:
    """Stop a run if it is still going, then remove it from storage, the backend and the index."""
    ctx = RunContext(name, index)
    if ctx.exp:
        raise SpecError(f"delete takes a run, not an experiment: {name!r}")
    row, _ = ctx.refresh()
    if row.status not in (*FINISHED, "missing", INCOMPLETE):  # a corrupt run's agents are stopped
        stop_run(ctx.name, index=ctx.index)
    ctx.backend.stop(ctx.name)
    ctx.backend.delete(ctx.name)
    ctx.storage.delete(f"runs/{ctx.name}", recursive=True)
    ctx.index.delete(ctx.name)


def wait_run(
    name: str,
    *,
    index: RunIndex | None = None,
    poll: float = 1.0,
    on_log=None,
    timeout: float | None = None,
) -> tuple[RunRow, list[ExperimentView]]:
    """Block until a run finishes, reconciling dead agents; ``on_log(exp, text)`` streams logs."""
    ctx = RunContext(name, index)
    deadline = None if timeout is None else time.time() + timeout
    if on_log is not None:
        from launcher.runs.logs import follow_logs

        last = [0.0]

        def tick() -> None:
            if time.time() - last[0] > 5 * poll:  # reconcile now and then, not every poll
                last[0] = time.time()
                ctx.refresh(reconcile=True)
            if deadline and time.time() > deadline:
                raise LaunchError(f"run {ctx.name!r} did not finish within {timeout:g}s")

        for exp, text in follow_logs(ctx.storage, ctx.name, ctx.experiment_ids(), poll=poll,
                                     tick=tick):  # fmt: skip
            on_log(exp, text)
    while True:
        row, views = ctx.refresh(reconcile=True)
        if row.status in FINISHED:
            return row, views
        if deadline and time.time() > deadline:
            raise LaunchError(f"run {ctx.name!r} did not finish within {timeout:g}s")
        time.sleep(poll)
