"""Launching a run: a spec and a working directory -> a run in storage, indexed, with nodes.

Everything is checked (script, sweep, datastore, snapshot size, name) before the first write;
the run's name is reserved atomically, and run.json is written last, so a run is either whole or
absent (a failure in between removes what was written). A submit that fails (no capacity, no
image, bad credentials) removes the run again, or, if some nodes did start, stops them and marks
the run failed with the error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from launcher.errors import NotFoundError, SpecError, StorageError
from launcher.runs.index import RunIndex, RunRow
from launcher.storage import records
from launcher.storage.records import check_name

if TYPE_CHECKING:
    from launcher.backends.base import Backend
    from launcher.spec.jobspec import JobSpec
    from launcher.storage.root import Storage

log = logging.getLogger(__name__)


def new_run_name(script: str) -> str:
    """``train-1122-2004-3f9a``: the script's stem, the time, a random suffix."""
    stem = re.sub(r"[^a-z0-9-]+", "-", Path(script).stem.lower()).strip("-")[:30] or "run"
    return f"{stem}-{time.strftime('%m%d-%H%M%S')}-{secrets.token_hex(2)}"


@dataclass
class Plan:
    """What ``launch run --dry-run`` shows: nothing is written."""

    spec: JobSpec
    experiments: list
    cost: dict
    files: int
    size: int


def _check_script(spec: JobSpec, workdir: Path) -> None:
    script = Path(spec.script)
    if script.is_absolute() or ".." in script.parts:
        raise SpecError(f"script {spec.script!r} must be a path inside the working directory")
    if not (workdir / script).is_file():
        raise NotFoundError(f"script {spec.script!r} not found in {workdir}")


def plan_run(spec: JobSpec, workdir: Path | str = ".", storage: Storage | None = None) -> Plan:
    """Everything a run would be, without writing anything (``--dry-run``). With a storage, the
    datastore is resolved too (read only), so a missing one shows before launching."""
    from launcher.spec.catalog import estimate_cost
    from launcher.storage.snapshot import select_files

    workdir = Path(workdir).resolve()
    _check_script(spec, workdir)
    if storage is not None:
        spec = _pin_datastore(spec, storage)
    selected = select_files(workdir)  # the snapshot's own check: what the real run would refuse
    from launcher.backends import capabilities
    from launcher.backends.base import wanted_nodes

    experiments = spec.experiments()
    cost = (estimate_cost(spec) if capabilities(spec.backend).instances  # no prices on a cluster
            else {"nodes": wanted_nodes(spec.max_nodes, len(experiments), spec.nodes)})  # fmt: skip
    return Plan(spec, experiments, cost, len(selected.files), selected.total_size)


def prepare_run(
    spec: JobSpec,
    backend: Backend,
    *,
    workdir: Path | str = ".",
    index: RunIndex | None = None,
) -> str:
    """Snapshot the code, write the run to storage, index it, start its nodes; its name."""
    from launcher.storage.snapshot import make_snapshot

    workdir = Path(workdir).resolve()
    _check_script(spec, workdir)
    experiments = spec.experiments()
    name = check_name(spec.name or new_run_name(spec.script))
    storage = backend.storage()
    spec = _pin_datastore(spec, storage)
    snapshot = make_snapshot(workdir)
    if spec.script not in snapshot.files:
        raise SpecError(
            f"script {spec.script!r} is excluded from the code snapshot by .gitignore or "
            ".launchignore"
        )
    # reserve the name atomically: two `launch run --name X` at once cannot both write run X;
    # a name whose creator was killed before run.json is taken over
    if not storage.create_exclusive(records.run_key(name, "reserved"), _reservation()) and not (
        _reclaim(storage, name)
    ):
        raise SpecError(f"a run named {name!r} already exists; pick another --name")
    try:
        created = _write_run(storage, name, spec, experiments, snapshot.data)
    except BaseException:
        storage.delete(f"runs/{name}", recursive=True)  # no half-written run left behind
        raise
    index = index or RunIndex()
    index.upsert(
        run_row(name, backend, storage, spec.to_dict(), created, "queued", 0, len(experiments))
    )
    try:
        backend.submit(name, spec)
    except BaseException as e:
        try:
            _submit_failed(name, backend, storage, index, e)
        except Exception as cleanup:  # storage down too: the submit's error is the one to show
            log.warning("run %s could not be cleaned up after its failed submit: %s", name, cleanup)
        raise
    return name


#: A reservation made on another machine (whose process this one cannot ask about), or one that
#: does not say who made it, is abandoned once it is this old without its run.json.
ABANDONED_AFTER_S = 3600.0


def _reservation() -> bytes:
    """runs/NAME/reserved: who is creating the run, so a later look can tell whether it is still
    being created or its `launch run` was killed before writing run.json."""
    import socket

    from launcher.processes import process_start

    pid = os.getpid()
    holder = {"host": socket.gethostname(), "pid": pid, "pid_start": process_start(pid),
              "created": time.time()}  # fmt: skip
    return json.dumps(holder).encode()


def abandoned(storage: Storage, name: str) -> dict | None:
    """The reservation of run ``name`` when it has no run.json and its creator is gone (killed
    between reserving the name and writing run.json); None if the run is whole, absent, or still
    being created. A creator on this machine is asked of the OS (pid and start time); another
    machine's, or one from before reservations named their creator, counts as gone after
    :data:`ABANDONED_AFTER_S`."""
    import socket

    from launcher.processes import process_alive

    key = records.run_key(name, "reserved")
    try:
        body = storage.read_bytes(key)
    except FileNotFoundError:
        return None
    if storage.exists(records.run_key(name, "run.json")):
        return None
    try:
        holder = json.loads(body)
    except ValueError:
        holder = None
    if not isinstance(holder, dict):
        holder = {"created": storage.modified(key)}
    if holder.get("host") == socket.gethostname() and holder.get("pid"):
        if process_alive(holder["pid"], holder.get("pid_start")):
            return None
    elif time.time() - float(holder.get("created") or 0) < ABANDONED_AFTER_S:
        return None
    return dict(holder, body=body)


def _reclaim(storage: Storage, name: str) -> bool:
    """Take over the name of an abandoned run (see :func:`abandoned`); True if this call did.
    Of two reruns racing for it, only the one that creates the takeover marker (named after the
    abandoned reservation, so each generation has its own) goes on; it clears what the killed
    launch left and writes its own reservation."""
    import hashlib

    holder = abandoned(storage, name)
    if holder is None:
        return False
    marker = f"reclaimed-{hashlib.sha256(holder['body']).hexdigest()[:16]}"
    if not storage.create_exclusive(records.run_key(name, marker), _reservation()):
        return False
    for item in storage.list(records.run_key(name)):
        if item not in ("reserved", marker):
            storage.delete(records.run_key(name, item), recursive=True)
    storage.write_bytes(records.run_key(name, "reserved"), _reservation())
    log.info("run name %s reclaimed from a `launch run` that ended before writing it", name)
    return True


def _submit_failed(name: str, backend: Backend, storage: Storage, index: RunIndex, error) -> None:
    """Undo a run whose nodes could not be started (no AMI, no capacity, bad credentials), so
    its name is free again and nothing sits queued forever. If some nodes did start before the
    error, the run is kept, its nodes stopped and its experiments marked failed with the error."""
    message = f"submit failed: {error}" if str(error) else f"submit failed: {type(error).__name__}"
    # first: a node that did boot must take no work, and no backend may start replacements
    storage.write_text(f"runs/{name}/stop", "")
    try:
        started = [n for n in backend.nodes(name) if n.state not in ("terminated", "dead")]
    except Exception:  # the same bad credentials may fail this too: assume nothing started
        started = []
    if not started:
        with contextlib.suppress(Exception):  # release what submit made (an IAM role...)
            backend.delete(name)
        storage.delete(f"runs/{name}", recursive=True)
        index.delete(name)
        return
    with contextlib.suppress(Exception):
        backend.stop(name)
    now = time.time()
    for exp in storage.read_json(f"runs/{name}/run.json")["experiments"]:
        if records.read_status(storage, name, exp["id"])["state"] != "succeeded":
            records.write_status(
                storage, name, exp["id"], state="failed", ended=now, message=message
            )
    row = index.get(name)
    if row is not None:
        row.status, row.message, row.done, row.ended = "failed", message, row.total, now
        index.upsert(row)


def _write_run(storage: Storage, name: str, spec: JobSpec, experiments, code: bytes) -> float:
    storage.write_bytes(f"runs/{name}/code.tar.gz", code)
    # no status.json yet: a missing one reads as queued, and `launch status` of a big sweep
    # reads a missing file faster than a written one
    _write_files(
        storage,
        {
            records.exp_key(name, e.id, "params.json"): json.dumps(
                e.to_dict(), sort_keys=True
            ).encode()
            for e in experiments
        },
    )
    created = time.time()
    # run.json last: a run without it is incomplete and never claimed
    storage.write_json(
        f"runs/{name}/run.json",
        {"name": name, "created": created, "spec": spec.to_dict(),
         "experiments": [e.to_dict() for e in experiments]},
    )  # fmt: skip
    return created


def _write_files(storage: Storage, files: dict[str, bytes]) -> None:
    """Write many small new objects at once (a sweep's params and statuses: 20,000 for 10,000
    experiments). Not atomic one by one, unlike Storage.write_bytes: nothing reads them before
    run.json exists, which is written after them. On a file system: one mkdir per folder and one
    open per file, no temp name and rename; elsewhere (S3): fsspec's batched, concurrent put."""
    if not files:
        return
    try:
        if storage.protocol == "file":
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
            made: set[str] = set()
            for key, data in files.items():
                path = storage.path(key)
                folder = posixpath.dirname(path)
                if folder not in made:
                    os.makedirs(folder, exist_ok=True)
                    made.add(folder)
                fd = os.open(path, flags, 0o644)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
        else:
            storage.fs.pipe({storage.path(key): data for key, data in files.items()})
    except StorageError:
        raise
    except Exception as e:  # a full disk, the network: one clear error, not a botocore trace
        first = next(iter(files))
        raise StorageError(
            f"write {storage.url(first)} and {len(files) - 1} more failed: {type(e).__name__}: {e}"
        ) from e


def _pin_datastore(spec: JobSpec, storage: Storage) -> JobSpec:
    """Resolve ``--datastore NAME`` to its latest version now, so retries see the same data."""
    if not spec.datastore:
        return spec
    from launcher.spec.jobspec import JobSpec
    from launcher.storage.datastores import resolve_datastore

    ref = spec.datastore
    if spec.datastore_version is not None:
        ref = f"{ref}:{spec.datastore_version}"
    name, version = resolve_datastore(storage, ref)
    return JobSpec.from_dict(dict(spec.to_dict(), datastore=name, datastore_version=version))


def run_row(name, backend, storage, spec: dict, created, status, done, total) -> RunRow:
    return RunRow(
        name=name, backend=backend.name, root=storage.root_url, created=created,
        instance_type=spec.get("instance_type") or "", gpus=int(spec.get("gpus") or 0),
        max_nodes=int(spec.get("max_nodes") or 1), spot=bool(spec.get("spot")),
        status=status, done=done, total=total,
    )  # fmt: skip
