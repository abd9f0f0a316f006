"""Runs: read their state, reconcile dead agents, stop, delete, wait (launching: launching.py).

A run lives in storage (``runs/RUN/...``, the source of truth) and has a summary row in the local
SQLite index (:mod:`launcher.runs.index`). The summary of a finished run never changes, so listing
many runs reads only the index plus the storage of the unfinished ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from launcher.errors import LaunchError, NotFoundError, SpecError
from launcher.node import claims as cl
from launcher.runs.index import FINISHED, RunIndex, RunRow
from launcher.runs.launching import run_row
from launcher.storage import records
from launcher.storage.records import check_name

if TYPE_CHECKING:
    from launcher.backends.base import NodeInfo
    from launcher.storage.root import Storage


@dataclass
class ExperimentView:
    """One experiment as ``launch status RUN`` shows it."""

    id: str
    args: list[str]
    params: dict[str, Any]
    state: str = "queued"
    exit_code: int | None = None
    attempt: int = 0
    node: str | None = None
    started: float | None = None
    ended: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""


# -- reading state --------------------------------------------------------------------------
def load_record(storage: Storage, run: str) -> dict:
    record = storage.read_json(f"runs/{run}/run.json", default=None)
    if record is None:
        raise NotFoundError(f"run {run!r} not found under {storage.root_url}")
    return record


def experiment_views(storage: Storage, run: str, record: dict) -> list[ExperimentView]:
    out = []
    for e in record["experiments"]:
        st = records.read_status(storage, run, e["id"])
        out.append(ExperimentView(
            id=e["id"], args=e["args"], params=e.get("params") or {},
            state=st.get("state", "queued"), exit_code=st.get("exit_code"),
            attempt=int(st.get("attempt") or 0), node=st.get("node"), started=st.get("started"),
            ended=st.get("ended"), metrics=st.get("metrics") or {}, message=st.get("message", ""),
        ))  # fmt: skip
    return out


def summarize(views: list[ExperimentView], stop_requested: bool = False) -> tuple[str, int]:
    """The run's status and how many experiments are finished."""
    states = [v.state for v in views]
    done = sum(s in records.TERMINAL for s in states)
    if views and done == len(views):
        if all(s == "succeeded" for s in states):
            return "succeeded", done
        return ("failed" if "failed" in states else "stopped"), done
    if stop_requested:
        return "stopping", done
    return ("running" if "running" in states else "queued"), done


class RunContext:
    """A run's index row, backend and storage, opened by name."""

    def __init__(self, name: str, index: RunIndex | None = None):
        from launcher.backends import get_backend

        self.index = index or RunIndex()
        run, _, exp = name.partition("/")
        self.name, self.exp = check_name(run), exp or None
        self.row = self.index.get(run)
        if self.row is None:
            self._adopt()
        self.backend = get_backend(self.row.backend)
        self.storage = self.backend.storage()
        self._nodes: list[NodeInfo] | None = None

    def _adopt(self) -> None:
        """A run in local storage but not in the index (index deleted): index it again."""
        from launcher.backends.local import LocalBackend

        backend = LocalBackend()
        storage = backend.storage()
        record = storage.read_json(f"runs/{self.name}/run.json", default=None)
        if record is None:
            known = self.index.names()[:5]
            hint = f"; recent runs: {', '.join(known)}" if known else "; no runs yet"
            raise NotFoundError(f"run {self.name!r} not found{hint} (see `launch status`)")
        self.row = run_row(self.name, backend, storage, record["spec"], record["created"],
                        "queued", 0, len(record["experiments"]))  # fmt: skip
        self.index.upsert(self.row)

    def record(self) -> dict:
        return load_record(self.storage, self.name)

    def experiment_ids(self) -> list[str]:
        ids = [e["id"] for e in self.record()["experiments"]]
        if self.exp is None:
            return ids
        if self.exp not in ids:
            raise NotFoundError(
                f"experiment {self.exp!r} not in run {self.name!r}; it has {', '.join(ids)}"
            )
        return [self.exp]

    def nodes(self) -> list[NodeInfo]:
        """The run's nodes as the backend reports them, asked once per refresh: asking is not
        free (AWS: describe_instances, re-queueing orphans, launching replacements)."""
        if self._nodes is None:
            self._nodes = self.backend.nodes(self.name)
        return self._nodes

    def refresh(self, *, reconcile: bool = True) -> tuple[RunRow, list[ExperimentView]]:
        """Read the run's state from storage, reconcile dead agents, update the index."""
        self._nodes = None  # live state: ask the backend again
        record = self.record()
        views = experiment_views(self.storage, self.name, record)
        stop = self.storage.exists(f"runs/{self.name}/stop")
        status, done = summarize(views, stop)
        message = ""
        if status not in FINISHED and reconcile and self.backend.capabilities.reconcile:
            message = self._reconcile(record, views, stop)
            if message.startswith("stopped"):
                views = experiment_views(self.storage, self.name, record)
                status, done = summarize(views, stop)
        row = self.row
        row.status, row.done, row.total, row.message = status, done, len(views), message
        if status in FINISHED:
            row.ended = max((v.ended or 0 for v in views), default=None) or time.time()
        row.cost = self._cost()
        self.index.upsert(row)
        return row, views

    def _reconcile(self, record: dict, views: list[ExperimentView], stop: bool) -> str:
        """Agents for an unfinished run whose agents died: with none alive, a replacement (or,
        stopped, the run is closed); with some alive, a top-up when a dead agent left an
        experiment behind, so it does not wait for a busy one to finish first."""
        live = {n.node_id for n in self.nodes() if n.state == "running"}
        if live:
            orphaned = [v for v in views if v.state == "running" and v.node not in live]
            if stop or not orphaned or len(live) >= int(record["spec"].get("max_nodes") or 1):
                return ""
        if stop:
            for v in views:
                if v.state not in records.TERMINAL:
                    records.write_status(self.storage, self.name, v.id, state="stopped",
                                    ended=time.time(),
                                    message="stopped (no agent left)")  # fmt: skip
            return "stopped: no agent was left to stop it"
        from launcher.spec.jobspec import JobSpec

        started = self.backend.submit(self.name, JobSpec.from_dict(record["spec"]))
        if started:
            self._nodes = None  # the new agents are nodes too
        return f"restarted {len(started)} agent(s)" if started else ""

    def _cost(self) -> float | None:
        if not self.backend.capabilities.cost or not self.row.instance_type:
            return None
        from launcher.spec.catalog import get_instance

        it = get_instance(self.row.instance_type)
        price = it.spot_price_hour if self.row.spot else it.price_hour
        now = time.time()
        hours = sum(
            ((n.ended_at or now) - n.started_at) / 3600 for n in self.nodes() if n.started_at
        )
        return round(hours * price, 4)


def list_runs(index: RunIndex | None = None, *, reconcile: bool = True) -> list[RunRow]:
    """Every indexed run, newest first; unfinished ones refreshed from storage first."""
    index = index or RunIndex()
    for row in index.list(unfinished_only=True):
        try:
            RunContext(row.name, index).refresh(reconcile=reconcile)
        except NotFoundError:
            row.status, row.message = "missing", "run.json is gone from storage"
            index.upsert(row)
        except (LaunchError, ImportError) as e:  # one unreachable backend must not hide the rest
            row.message = str(e)
            index.upsert(row)
    return index.list()


def run_detail(name: str, index: RunIndex | None = None) -> tuple[RunRow, list[ExperimentView]]:
    return RunContext(name, index).refresh()


# -- changing state -------------------------------------------------------------------------
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
            # where the backend can, its agent looks at once instead of at its next heartbeat
            ctx.backend.notify_stop(ctx.name, status["node"])
    graceful = not ctx.exp and ctx.backend.capabilities.graceful_stop
    if graceful:
        ctx.backend.stop(ctx.name)  # returns once the agents have wound down
        wait = 0.0 if wait is None else wait
    if wait is None:
        from launcher.config import env_float

        wait = cl.heartbeat_interval() + env_float("LAUNCH_STOP_GRACE_S", 10.0) + 5
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
    return ctx.refresh(reconcile=False)[0]


def delete_run(name: str, *, index: RunIndex | None = None) -> None:
    """Stop a run if it is still going, then remove it from storage, the backend and the index."""
    ctx = RunContext(name, index)
    if ctx.exp:
        raise SpecError(f"delete takes a run, not an experiment: {name!r}")
    row, _ = ctx.refresh(reconcile=False)
    if row.status not in FINISHED and row.status != "missing":
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
                ctx.refresh()
            if deadline and time.time() > deadline:
                raise LaunchError(f"run {ctx.name!r} did not finish within {timeout:g}s")

        for exp, text in follow_logs(ctx.storage, ctx.name, ctx.experiment_ids(), poll=poll,
                                     tick=tick):  # fmt: skip
            on_log(exp, text)
    while True:
        row, views = ctx.refresh()
        if row.status in FINISHED:
            return row, views
        if deadline and time.time() > deadline:
            raise LaunchError(f"run {ctx.name!r} did not finish within {timeout:g}s")
        time.sleep(poll)
