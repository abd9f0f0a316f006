"""Reading a run's state: storage is the truth, the SQLite index a cache of it.

Nothing here changes a run (reading never provisions, re-queues or stops): listing, status and
cost only read storage and ask the backend what exists. The one step that may change things is
:mod:`launcher.runs.reconcile`. A run is found by name in the index or, when the index does not
know it (another machine launched it, the index was lost), in the storage of every configured
backend; ``launch status`` lists what storage holds, so the index is rebuilt as a side effect.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from launcher.errors import LaunchError, NotFoundError
from launcher.runs.index import FINISHED, RunIndex, RunRow
from launcher.runs.launching import abandoned, run_row
from launcher.storage import records
from launcher.storage.root import CorruptRecord

if TYPE_CHECKING:
    from launcher.backends.base import Backend, NodeInfo
    from launcher.storage.root import Storage

log = logging.getLogger("launcher")


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
    nodes: list[str] = field(default_factory=list)  # by rank, for a multi-node experiment


#: What ``launch status`` says of a run in storage that cannot be read as one.
CORRUPT, INCOMPLETE = "corrupt", "incomplete"


def load_record(storage: Storage, run: str) -> dict:
    key = records.run_key(run, "run.json")
    try:
        record = storage.read_json(key, default=None)
    except CorruptRecord as e:
        raise CorruptRecord(f"{e}; {_cure(run)}") from None
    if record is None:
        raise NotFoundError(f"run {run!r} not found under {storage.root_url}")
    if not isinstance(record, dict) or not isinstance(record.get("experiments"), list):
        raise CorruptRecord(f"{storage.url(key)} is not a run record; {_cure(run)}")
    return record


def _cure(run: str) -> str:
    return f"`launch stop {run}` stops its agents, `launch delete {run}` removes the run"


def broken_run(storage: Storage, run: str) -> tuple[str, str] | None:
    """(status, one-line message) for a run that storage holds but that cannot be read as a
    run: ``corrupt`` (run.json does not parse) or ``incomplete`` (its name was reserved but
    its `launch run` was killed before writing run.json); None if it is whole, absent, or still
    being created."""
    try:
        load_record(storage, run)
        return None
    except CorruptRecord as e:
        return CORRUPT, str(e)
    except NotFoundError:
        pass
    if abandoned(storage, run) is None:
        return None
    url = storage.url(records.run_key(run, "run.json"))
    return INCOMPLETE, (
        f"run {run} was never fully created (its `launch run` ended before writing {url}); "
        f"`launch delete {run}` removes it, or `launch run --name {run} ...` reuses the name"
    )


def _adopt_broken(index: RunIndex, name: str, backend: Backend, status: str, message: str):
    storage = backend.storage()
    created = storage.modified(records.run_key(name, "reserved")) or time.time()
    row = run_row(name, backend, storage, {}, created, status, 0, 0)
    row.message = message
    index.upsert(row)
    return row


def read_statuses(storage: Storage, run: str, record: dict) -> dict[str, dict]:
    """Each experiment's status.json, read once per refresh."""
    return records.read_statuses(storage, run, [e["id"] for e in record["experiments"]])


def experiment_views(record: dict, statuses: dict[str, dict]) -> list[ExperimentView]:
    out = []
    for e in record["experiments"]:
        st = statuses[e["id"]]
        out.append(ExperimentView(
            id=e["id"], args=e["args"], params=e.get("params") or {},
            state=st.get("state", "queued"), exit_code=st.get("exit_code"),
            attempt=int(st.get("attempt") or 0), node=st.get("node"), started=st.get("started"),
            ended=st.get("ended"), metrics=st.get("metrics") or {}, message=st.get("message", ""),
            nodes=list(st.get("nodes") or []),
        ))  # fmt: skip
    return out


def summarize(views: list[ExperimentView], stop_requested: bool = False) -> tuple[str, int]:
    """The run's status and how many experiments are finished."""
    return summarize_states([v.state for v in views], stop_requested)


def summarize_states(states: list[str], stop_requested: bool = False) -> tuple[str, int]:
    """:func:`summarize` from the experiments' states alone."""
    done = sum(s in records.TERMINAL for s in states)
    if states and done == len(states):
        if all(s == "succeeded" for s in states):
            return "succeeded", done
        return ("failed" if "failed" in states else "stopped"), done
    if stop_requested:
        return "stopping", done
    return ("running" if "running" in states else "queued"), done


# -- finding runs in storage ----------------------------------------------------------------
def configured_backends() -> list[Backend]:
    """Every backend this machine can reach, the local one first (it needs no setup)."""
    import importlib

    from launcher.backends import BACKENDS, get_backend

    out = []
    for name, target in BACKENDS.items():
        module_name, cls_name = target.split(":")
        if getattr(importlib.import_module(module_name), cls_name).configured():
            out.append(get_backend(name))
    return out


def find_run(name: str) -> tuple[Backend, dict] | None:
    """The backend whose storage holds run ``name``, and its run.json; None if none does."""
    for backend in configured_backends():
        try:
            record = backend.storage().read_json(records.run_key(name, "run.json"), default=None)
        except CorruptRecord:
            continue  # RunContext opens it as a corrupt run
        except LaunchError as e:  # one unreachable backend must not hide the others
            log.warning("could not look for run %s on %s: %s", name, backend.name, e)
            continue
        if record is not None:
            return backend, record
    return None


def adopt(index: RunIndex, name: str, backend: Backend, record: dict) -> RunRow:
    """Index a run found in storage (as queued: the next refresh reads its real state)."""
    row = run_row(name, backend, backend.storage(), record["spec"], record["created"],
                  "queued", 0, len(record["experiments"]))  # fmt: skip
    index.upsert(row)
    return row


def discover_runs(index: RunIndex) -> None:
    """Index every run in the storage of every configured backend that the index lacks."""
    known = set(index.names())
    for backend in configured_backends():
        storage = backend.storage()
        try:
            names = [n for n in storage.list("runs") if n not in known]
        except LaunchError as e:
            log.warning("could not list the runs on %s: %s", backend.name, e)
            continue
        for name in names:
            if not records.NAME.fullmatch(name):
                continue
            try:
                record = storage.read_json(records.run_key(name, "run.json"), default=None)
                if record is not None and not isinstance(record, dict):
                    raise CorruptRecord(f"{name}/run.json is not a run record")
                broken = broken_run(storage, name) if not record else None
            except CorruptRecord:
                broken = broken_run(storage, name)
                record = None
            except LaunchError as e:
                log.warning("run %s on %s: %s", name, backend.name, e)
                continue
            if record is not None:
                adopt(index, name, backend, record)
                known.add(name)
            elif broken is not None:  # corrupt, or its creator was killed: shown as such
                _adopt_broken(index, name, backend, *broken)
                known.add(name)
            # else: without run.json a run is still being created


class RunContext:
    """A run's index row, backend and storage, opened by name (``RUN`` or ``RUN/EXP``)."""

    def __init__(self, name: str, index: RunIndex | None = None):
        from launcher.backends import get_backend

        self.index = index or RunIndex()
        run, _, exp = name.partition("/")
        self.name, self.exp = records.check_name(run), exp or None
        self.row = self.index.get(run)
        if self.row is None:
            found = find_run(self.name)
            if found is None:
                self.row = self._open_broken()
            else:
                self.backend, record = found
                self.row = adopt(self.index, self.name, self.backend, record)
        else:
            self.backend = get_backend(self.row.backend)
        self.storage = self.backend.storage()
        self._nodes: list[NodeInfo] | None = None
        self.broken: tuple[str, str] | None = None

    def _open_broken(self) -> RunRow:
        """A run no storage holds whole: a corrupt or half-created one is opened as such (so
        stop and delete work on it); otherwise NotFoundError."""
        for backend in configured_backends():
            try:
                broken = broken_run(backend.storage(), self.name)
            except LaunchError:
                continue
            if broken is not None:
                self.backend = backend
                return _adopt_broken(self.index, self.name, backend, *broken)
        known = self.index.names()[:5]
        hint = f"; recent runs: {', '.join(known)}" if known else "; no runs yet"
        raise NotFoundError(f"run {self.name!r} not found{hint} (see `launch status`)")

    def record(self) -> dict:
        """run.json; for a corrupt or half-created run (``self.broken`` says which) a stand-in
        listing the experiments storage holds, so their statuses can be read and stopped."""
        try:
            record = load_record(self.storage, self.name)
            self.broken = None
            return record
        except (CorruptRecord, NotFoundError):
            self.broken = broken_run(self.storage, self.name)
            if self.broken is None:
                raise
        names = self.storage.list(records.run_key(self.name, "experiments"))
        ids = sorted((n for n in names if records.EXPERIMENT_ID.fullmatch(n)),
                     key=lambda n: int(n[4:]))  # fmt: skip
        return {"name": self.name, "spec": {}, "experiments": [{"id": e, "args": []} for e in ids]}

    def experiment_ids(self) -> list[str]:
        ids = [e["id"] for e in self.record()["experiments"]]
        if self.exp is None:
            return ids
        if self.exp not in ids:
            raise NotFoundError(
                f"experiment {self.exp!r} not in run {self.name!r}; it has {', '.join(ids)}"
            )
        return [self.exp]

    def stop_requested(self) -> bool:
        return self.storage.exists(records.run_key(self.name, "stop"))

    def nodes(self) -> list[NodeInfo]:
        """The run's nodes as the backend reports them (read-only), asked once per refresh."""
        if self._nodes is None:
            self._nodes = self.backend.nodes(self.name)
        return self._nodes

    def refresh(self, *, reconcile: bool = False) -> tuple[RunRow, list[ExperimentView]]:
        """Read the run's state from storage and update its index row. Only with
        ``reconcile=True`` (``launch status``, ``--wait``, ``--follow``) may it change anything:
        then :func:`launcher.runs.reconcile.reconcile_run` runs on an unfinished run."""
        self._nodes = None  # live state: ask the backend again
        record = self.record()
        statuses = read_statuses(self.storage, self.name, record)
        stop = self.stop_requested()
        states = [st.get("state", "queued") for st in statuses.values()]
        status, done = summarize_states(states, stop)
        message = self.broken[1] if self.broken else ""
        # a broken run is never reconciled: nothing may start on it
        if reconcile and status not in FINISHED and not self.broken:
            from launcher.runs.reconcile import reconcile_run

            message, changed = reconcile_run(self, statuses, stop)
            if changed:
                self._nodes = None
                statuses = read_statuses(self.storage, self.name, record)
        views = experiment_views(record, statuses)
        status, done = summarize(views, stop)
        if self.broken:
            status = self.broken[0]
        row = self.row
        row.status, row.done, row.total, row.message = status, done, len(views), message
        if status in FINISHED:
            row.ended = max((v.ended or 0 for v in views), default=None) or time.time()
        row.cost = self.cost()
        self.index.upsert(row)
        return row, views

    def cost(self) -> float | None:
        """Instance-hours so far times the catalog price (backends with the capability)."""
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
    """Every run in storage, newest first: runs the index lacks are indexed first, then the
    unfinished ones are refreshed (and, with ``reconcile``, reconciled)."""
    index = index or RunIndex()
    discover_runs(index)
    for row in index.list(unfinished_only=True):
        try:
            RunContext(row.name, index).refresh(reconcile=reconcile)
        except NotFoundError:
            row.status, row.message = "missing", "run.json is gone from storage"
            index.upsert(row)
        except (LaunchError, ImportError) as e:  # one unreachable backend must not hide the rest
            row.message = str(e)
            index.upsert(row)
    rows = index.list()
    for row in rows:
        if row.status in (CORRUPT, INCOMPLETE):
            log.warning("run %s is %s: %s", row.name, row.status, row.message)
    return rows


def run_detail(name: str, index: RunIndex | None = None) -> tuple[RunRow, list[ExperimentView]]:
    """What ``launch status RUN`` shows: the run refreshed and reconciled."""
    return RunContext(name, index).refresh(reconcile=True)
