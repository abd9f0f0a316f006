"""Datastores: versioned, immutable data sets under ``ROOT/datastores/NAME/VERSION/``.

``create_datastore`` uploads a local folder (or one file) as the next version: files go to
``data/`` in parallel, hashed as they stream; ``MANIFEST.json`` (paths, sizes, sha256) is written
last, so a version without it is incomplete. While a create runs, ``UPLOADING.json`` records the
files already stored; rerunning an interrupted create resumes that version and skips every file
whose size and sha256 match the record.

Versions are allocated atomically: a create takes ``VERSION/RESERVED/1`` with
:meth:`Storage.create_exclusive`, recording who holds it (a random creator id, user, host, pid
and the source's absolute path), so two creates of one name at once get distinct versions. The
resume rule: a create resumes the latest incomplete version whose newest ``RESERVED/N`` names the
same user, host and source path, and whose creator is no longer running (its pid is gone, or it
is this process and that create call has returned); it takes the version over by creating
``RESERVED/N+1``, so of two reruns racing for it only one resumes. Any other incomplete version
(someone else's, another machine's, or one still uploading) is left alone and a fresh version is
made. Incomplete versions from before reservations existed (no ``RESERVED``) are resumed as
before. On a ``file://`` root the stored files and folders are
made read-only, so a training script cannot modify its data; mounting there returns the data
folder itself. On ``s3://`` a mount is a verified, parallel download.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import socket
import stat
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from launcher.errors import NotFoundError, SpecError, StorageError
from launcher.processes import process_alive, process_start
from launcher.storage import transfer as mf
from launcher.storage.root import Storage
from launcher.storage.transfer import Progress

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")  # fullmatch: "ds\n" is not a name
MANIFEST = "MANIFEST.json"
UPLOADING = "UPLOADING.json"
RESERVED = "RESERVED"
# How often an in-progress create records what is stored (resume granularity).
RECORD_EVERY_S = 2.0


@dataclass(frozen=True)
class DatastoreVersion:
    """One version of a datastore as listed: complete versions have files, size and created."""

    name: str
    version: int
    complete: bool
    files: int = 0
    size: int = 0
    created: str = ""
    problem: str = ""  # why a version that has a MANIFEST.json cannot be read, and what to do


def check_name(name: str) -> str:
    """``name`` if valid (``[a-z0-9][a-z0-9._-]{0,62}``), else SpecError."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or ".." in name:
        raise SpecError(f"invalid datastore name {name!r}: use [a-z0-9][a-z0-9._-]{{0,62}}")
    return name


def _key(name: str, version: int, rest: str = "") -> str:
    return f"datastores/{name}/{version}" + (f"/{rest}" if rest else "")


def _versions(storage: Storage, name: str) -> list[int]:
    return sorted(int(v) for v in storage.list(f"datastores/{name}") if v.isdigit())


def _manifest(storage: Storage, name: str, version: int) -> dict | None:
    data = storage.read_json(_key(name, version, MANIFEST), default=None)
    if data is not None:
        where = storage.url(_key(name, version, MANIFEST))
        if not isinstance(data, dict):
            raise StorageError(f"{where} is not a datastore manifest")
        mf.check_manifest(data.get("files"), where)
    return data


# -- create -------------------------------------------------------------------------------------
def create_datastore(
    storage: Storage,
    name: str,
    source: str | Path,
    *,
    progress: Progress | None = None,
) -> int:
    """Upload ``source`` (a folder, or a single file) as the next version of ``name``.

    Resumes the latest version instead when an earlier create of it was interrupted. Calls
    ``progress(done_bytes, total_bytes)`` as bytes are stored. Returns the version number.
    """
    check_name(name)
    src = Path(source)
    if not src.exists():
        raise NotFoundError(f"datastore source not found: {src}")
    files = {src.name: src} if src.is_file() else source_files(src)
    if not files:
        raise SpecError(f"datastore source {src} has no files; nothing to upload")
    creator = _creator(src)
    _ACTIVE.add(creator["id"])
    try:
        return _create(storage, name, files, creator, progress)
    finally:
        _ACTIVE.discard(creator["id"])


def _create(
    storage: Storage,
    name: str,
    files: dict[str, Path],
    creator: dict,
    progress: Progress | None,
) -> int:
    version = _open_version(storage, name, creator)
    record_key = _key(name, version, UPLOADING)
    done: dict[str, dict] = dict(storage.read_json(record_key, default={}).get("files") or {})
    counter = mf.ByteCounter(sum(p.stat().st_size for p in files.values()), progress)

    def one(rel: str) -> tuple[str, dict]:
        key = _key(name, version, f"data/{rel}")
        # skipped when the interrupted create stored it already
        entry, sent = mf.upload_changed(storage, files[rel], key, done.get(rel), counter)
        if sent and storage.protocol == "file":
            os.chmod(storage.path(key), 0o444)
        return rel, entry

    throttle = mf.Throttle(RECORD_EVERY_S)
    stored: dict[str, dict] = {}
    lock = threading.Lock()

    def record() -> None:
        with lock:  # one writer at a time: the record is rewritten whole
            started = time.monotonic()
            storage.write_json(record_key, {"files": {**done, **stored}})
            # with many files the record grows: keep writing it under ~10% of the time
            throttle.seconds = max(RECORD_EVERY_S, 10 * (time.monotonic() - started))

    def tracked(rel: str) -> None:
        rel, entry = one(rel)
        with lock:
            stored[rel] = entry
        if throttle():  # a later resume skips everything recorded here
            record()

    try:
        mf.parallel(tracked, sorted(files), mf.workers_for(storage))
    except BaseException:
        record()
        raise
    _remove_strays(storage, name, version, set(files))
    manifest = {
        "name": name,
        "version": version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": {rel: stored[rel] for rel in sorted(stored)},
    }
    storage.write_json(_key(name, version, MANIFEST), manifest)
    storage.delete(record_key)
    storage.delete(_key(name, version, RESERVED), recursive=True)
    if storage.protocol == "file":
        _set_writable(Path(storage.path(_key(name, version))), False)
    return version


def source_files(src: Path) -> dict[str, Path]:
    """Every file a datastore of folder ``src`` holds: relpath -> path, sorted. Links are
    followed when their target is inside ``src`` (a linked folder is walked under the link's
    name); anything that cannot be stored as it is (a link out of ``src`` or a broken one, a
    folder or file that cannot be read, a FIFO or device, a link loop) makes it a SpecError
    naming each such path, before anything is uploaded: a datastore never quietly holds less
    than its source."""
    root = Path(os.path.realpath(src))
    files: dict[str, Path] = {}
    problems: list[str] = []

    def walk(folder: Path, rel: str, ancestors: frozenset[str]) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            problems.append(f"{rel or './'} (folder cannot be read: {e.strerror or e})")
            return
        for entry in entries:
            r, p = f"{rel}{entry.name}", Path(entry.path)
            try:
                if entry.is_symlink():
                    target = Path(os.path.realpath(p))
                    if not target.exists():
                        problems.append(f"{r} (a broken link)")
                        continue
                    if not target.is_relative_to(root):
                        problems.append(f"{r} (a link to {target}, outside the source)")
                        continue
                if entry.is_dir():
                    real = os.path.realpath(p)
                    if real in ancestors:
                        problems.append(f"{r} (a link back to a folder above it)")
                        continue
                    walk(p, f"{r}/", ancestors | {real})
                elif entry.is_file():
                    if not os.access(p, os.R_OK):
                        problems.append(f"{r} (cannot be read: permission denied)")
                        continue
                    files[r] = p
                else:
                    problems.append(f"{r} (not a regular file)")
            except OSError as e:
                problems.append(f"{r} ({e.strerror or e})")

    walk(root if src.is_symlink() else src, "", frozenset({str(root)}))
    if problems:
        shown = "; ".join(problems[:20])
        more = f"; and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise SpecError(
            f"datastore source {src}: {len(problems)} path(s) cannot be stored as they are: "
            f"{shown}{more}. Copy linked data into the source (or give its real folder as "
            "--source), make these readable, or remove them; nothing was uploaded"
        )
    return dict(sorted(files.items()))


# Creator ids of the create calls running in this process: a reservation holding one of them
# is live even though its pid (ours) is running.
_ACTIVE: set[str] = set()


def _creator(src: Path) -> dict:
    """Who a create is: what a later rerun is recognised by (see the module docstring)."""
    return {
        "id": uuid.uuid4().hex,
        "user": getpass.getuser(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_start": process_start(os.getpid()),
        "source": str(src.resolve()),
        "started": time.time(),
    }


def _open_version(storage: Storage, name: str, creator: dict) -> int:
    """The version a create writes: this user's interrupted one to resume, or a fresh one."""
    storage.invalidate()  # see other creators' reservations, not a cached listing
    versions = _versions(storage, name)
    body = json.dumps(creator).encode()
    for v in reversed(versions):
        if storage.exists(_key(name, v, MANIFEST)):
            continue
        claims = sorted(int(c) for c in storage.list(_key(name, v, RESERVED)) if c.isdigit())
        n = claims[-1] if claims else 0
        if n and not _resumable(_holder(storage, _key(name, v, f"{RESERVED}/{n}")), creator):
            continue  # n == 0: an interrupted create from before reservations, resumed as before
        if storage.create_exclusive(_key(name, v, f"{RESERVED}/{n + 1}"), body):
            return v
    version = (versions[-1] if versions else 0) + 1
    # create_exclusive: two creates racing for the same number get different versions
    while not storage.create_exclusive(_key(name, version, f"{RESERVED}/1"), body):
        version += 1
    return version


def _holder(storage: Storage, key: str) -> dict:
    """A reservation's creator record; {} while it is still being written or is unreadable."""
    try:
        data = json.loads(storage.read_bytes(key))
    except (StorageError, ValueError, FileNotFoundError):
        return {}
    return data if isinstance(data, dict) else {}


def _resumable(holder: dict, creator: dict) -> bool:
    """True if ``creator`` may take over the version ``holder`` reserved: the same user, host
    and source, and the holder is no longer running."""
    if not holder or any(holder.get(k) != creator[k] for k in ("user", "host", "source")):
        return False
    if holder.get("pid") == os.getpid():
        return holder.get("id") not in _ACTIVE
    return not process_alive(holder.get("pid"), holder.get("pid_start"))


def _remove_strays(storage: Storage, name: str, version: int, keep: set[str]) -> None:
    """Drop files a resumed create stored from a source that has since lost them."""
    for rel in storage.walk(_key(name, version, "data")):
        if rel not in keep:
            storage.delete(_key(name, version, f"data/{rel}"))


def _set_writable(root: Path, writable: bool) -> None:
    """chmod a tree read-only (a-w) or writable again (u+w) for its owner."""
    paths = [root, *root.rglob("*")] if root.exists() else []
    for p in paths:
        mode = p.stat().st_mode
        new = (
            mode | stat.S_IWUSR
            if writable
            else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
        )
        os.chmod(p, new)


# -- list, resolve, delete ------------------------------------------------------------------------
def list_datastores(storage: Storage, name: str | None = None) -> list[DatastoreVersion]:
    """Every version of every datastore (or of one), by name then version."""
    names = [check_name(name)] if name else storage.list("datastores")
    out = []
    for n in names:
        for v in _versions(storage, n):
            try:
                m = _manifest(storage, n, v)
            except StorageError as e:  # one corrupt manifest must not hide the other datastores
                cure = f"`launch datastore delete {n}:{v}` removes it"
                out.append(DatastoreVersion(n, v, complete=False, problem=f"{e}; {cure}"))
                continue
            if m is None:
                out.append(DatastoreVersion(n, v, complete=False))
            else:
                files = m["files"]
                size = sum(e["size"] for e in files.values())
                out.append(DatastoreVersion(n, v, True, len(files), size, m.get("created", "")))
    return out


def resolve_datastore(storage: Storage, ref: str) -> tuple[str, int]:
    """``"name"`` or ``"name:version"`` -> (name, version) of a complete version; the latest
    complete one when no version is given. NotFoundError lists what exists."""
    name, _, version = str(ref).partition(":")
    check_name(name)
    if version and (not version.isdigit() or int(version) < 1):
        raise SpecError(f"datastore {ref!r}: the version after ':' must be an integer >= 1")
    versions = _versions(storage, name)
    if not versions:
        there = storage.list("datastores")
        listing = f"datastores here: {', '.join(there)}" if there else "no datastores yet"
        raise NotFoundError(
            f"datastore {name!r} not found under {storage.root_url}; {listing} "
            "(`launch datastore create` makes one)"
        )
    complete = [v for v in versions if storage.exists(_key(name, v, MANIFEST))]
    if version:
        v = int(version)
        if v in complete:
            return name, v
        if v in versions:
            raise NotFoundError(
                f"datastore {name}:{v} is incomplete (an interrupted create); "
                f"rerun `launch datastore create --name {name}` to finish it"
            )
        there = ", ".join(map(str, complete)) or "none complete"
        raise NotFoundError(f"datastore {name} has no version {v}; versions: {there}")
    if not complete:
        raise NotFoundError(f"datastore {name!r} has no complete version yet (create interrupted)")
    return name, complete[-1]


def delete_datastore(storage: Storage, name: str, version: int | None = None) -> list[int]:
    """Delete one version of a datastore, or all of them; returns the versions deleted."""
    check_name(name)
    versions = _versions(storage, name)
    if version is not None and version not in versions:
        raise NotFoundError(
            f"datastore {name} has no version {version}; versions: "
            f"{', '.join(map(str, versions)) or 'none'}"
        )
    if not versions:
        raise NotFoundError(f"datastore {name!r} not found under {storage.root_url}")
    targets = versions if version is None else [version]
    for v in targets:
        if storage.protocol == "file":
            _set_writable(Path(storage.path(_key(name, v))), True)
        storage.delete(_key(name, v), recursive=True)
    if version is None or targets == versions:
        storage.delete(f"datastores/{name}", recursive=True)
    return targets


# -- mount ----------------------------------------------------------------------------------------
def mount_datastore(
    storage: Storage,
    name: str,
    version: int | None,
    mount_dir: str | Path | None,
    *,
    default_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> Path:
    """Make a datastore version readable at a local path and return that path.

    On a file:// root: the version's ``data`` folder itself (read-only, nothing copied), or,
    when a ``mount_dir`` is asked for (Grid's ``--datastore_mount_dir /opt/datastore``), a
    symlink there to it. On s3://: a verified parallel download into ``mount_dir`` (else
    ``default_dir``); files already there with the right sha256 are kept, so a second mount is
    quick.
    """
    ref = name if version is None else f"{name}:{version}"
    name, version = resolve_datastore(storage, ref)
    files = _manifest(storage, name, version)["files"]
    if storage.protocol == "file":
        data = Path(storage.path(_key(name, version, "data")))
        if not data.is_dir():
            raise StorageError(f"datastore {name}:{version} is missing its data folder {data}")
        return data if mount_dir is None else _link(Path(mount_dir), data)
    mount_dir = mount_dir or default_dir
    if mount_dir is None:
        raise StorageError(f"no folder to download datastore {name}:{version} into")
    Path(mount_dir).mkdir(parents=True, exist_ok=True)
    jobs = mf.plan_down(_key(name, version, "data"), files, Path(mount_dir))
    mf.sync_down(storage, jobs, progress)
    return Path(mount_dir)


def _link(link: Path, data: Path) -> Path:
    """``link`` -> ``data`` (agents of one run on one machine may race to make it)."""
    for _ in range(2):
        if link.is_symlink():
            if link.resolve() == data.resolve():
                return link
            link.unlink()  # an earlier version's link: the run pins its own
        elif link.is_dir() and not any(link.iterdir()):
            link.rmdir()
        elif link.exists():
            raise StorageError(
                f"datastore mount dir {link} already exists and is not empty; pick an empty or "
                "new --datastore-mount-dir"
            )
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            link.symlink_to(data, target_is_directory=True)
            return link
        except FileExistsError:
            continue  # another agent made it a moment ago: check it is the same
    raise StorageError(f"could not make {link} point at datastore data {data}")
