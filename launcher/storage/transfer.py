"""Manifests ({relpath: {"size", "sha256"}}) and verified, parallel transfers to and from storage.

Shared by datastores and artifacts. Uploads hash the bytes as they stream, so a manifest entry
always describes exactly what was stored, even if the local file changed meanwhile. Downloads go
to a temp file next to the target, are checked against the manifest, then renamed: an
interrupted or corrupt transfer never leaves a half-file under the real name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import stat
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from launcher.errors import StorageError
from launcher.storage.manifest import (
    Entry,
    check_manifest,
    is_part,
    part_name,
    path_problem,
    safe_relpath,
    stale_part,
)

__all__ = ["check_manifest", "safe_relpath"]  # the manifest rules, re-exported for callers

if TYPE_CHECKING:
    from launcher.storage.root import Storage

CHUNK = 1 << 20
Progress = Callable[[int, int], None]
T = TypeVar("T")

# path -> (size, mtime_ns, sha256): a file unchanged since it was last hashed is not read again.
_digests: dict[str, tuple[int, int, str]] = {}
_digests_lock = threading.Lock()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def digest(path: str | Path) -> Entry:
    """{"size", "sha256"} of a local file, cached by (size, mtime) for this process."""
    key = os.path.realpath(path)
    st = os.stat(key)
    with _digests_lock:
        cached = _digests.get(key)
    if cached and cached[:2] == (st.st_size, st.st_mtime_ns):
        return {"size": st.st_size, "sha256": cached[2]}
    sha = sha256_file(key)
    remember(key, st, sha)
    return {"size": st.st_size, "sha256": sha}


_MAX_DIGESTS = 200_000  # about 40 MB; a huge datastore must not grow the cache without end


def remember(path: str | Path, st: os.stat_result, sha: str) -> None:
    """Record that ``path`` with this stat has this sha256 (after an upload or download)."""
    with _digests_lock:
        if len(_digests) >= _MAX_DIGESTS:
            _digests.clear()
        _digests[os.path.realpath(path)] = (st.st_size, st.st_mtime_ns, sha)


def local_files(root: str | Path) -> dict[str, Path]:
    """Every regular file under ``root`` (symlinked files followed): relpath -> path, sorted."""
    root = Path(root)
    out: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.is_file():
                out[p.relative_to(root).as_posix()] = p
    return out


def cached_sha256(path: str | Path, st: os.stat_result) -> str | None:
    """The sha256 this process last saw ``path`` have with this size and mtime, without reading
    it; None if it has not seen it so."""
    with _digests_lock:
        cached = _digests.get(os.path.realpath(path))
    return cached[2] if cached and cached[:2] == (st.st_size, st.st_mtime_ns) else None


def scan_files(
    root: str | Path,
) -> tuple[dict[str, tuple[Path, os.stat_result]], list[tuple[str, str]]]:
    """What of ``root`` can go into a manifest: relpath -> (path, stat) of every regular file
    (symlinked files followed) whose path passes the manifest rule, sorted; and (relpath, why)
    for everything else found: a bad name, a FIFO or other non-file, a broken link, a symlinked
    folder (not followed), a folder that cannot be listed. A folder that vanishes while it is
    walked (the script deleting its outputs) is simply not there."""
    root = Path(root)
    files: dict[str, tuple[Path, os.stat_result]] = {}
    skipped: list[tuple[str, str]] = []

    def rel_of(path: str | Path) -> str:
        return Path(path).relative_to(root).as_posix()

    def unlisted(e: OSError) -> None:
        if not isinstance(e, FileNotFoundError) and e.filename is not None:
            where = rel_of(e.filename) if Path(e.filename) != root else "."
            skipped.append((where, f"cannot list this folder: {e.strerror or e}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unlisted):
        dirnames.sort()
        for name in list(dirnames):
            if os.path.islink(os.path.join(dirpath, name)):
                skipped.append(
                    (rel_of(os.path.join(dirpath, name)), "a symlinked folder (not followed)")
                )
        for name in sorted(filenames):
            p = Path(dirpath) / name
            rel = rel_of(p)
            problem = path_problem(rel)
            if problem:
                skipped.append((rel, f"cannot be stored: {problem}"))
                continue
            try:
                st = p.stat()
            except FileNotFoundError:
                if p.is_symlink():
                    skipped.append((rel, "a broken symlink"))
                continue  # gone since it was listed
            except OSError as e:
                skipped.append((rel, f"cannot be read: {e.strerror or e}"))
                continue
            if not stat.S_ISREG(st.st_mode):
                skipped.append((rel, f"not a regular file ({_kind(st.st_mode)})"))
                continue
            files[rel] = (p, st)
    return files, skipped


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))  # fmt: skip
    for test, kind in kinds:
        if test(mode):
            return kind
    return "not a file"


def remove_extras(folder: Path, keep: set[str], *, extras: bool) -> list[Path]:
    """Clean a pulled folder: remove the temporary files killed transfers left (always) and,
    with ``extras``, everything whose relpath is not in ``keep``; then folders left empty.
    Never follows a symlink (a link is removed itself, never what it points at) and never
    touches anything outside ``folder``. Returns what was removed."""
    removed: list[Path] = []
    if not folder.is_dir() or folder.is_symlink():
        return removed
    for dirpath, dirnames, filenames in os.walk(folder, topdown=False):
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in sorted(filenames + links):
            p = Path(dirpath) / name
            rel = p.relative_to(folder).as_posix()
            if rel in keep:
                continue
            if stale_part(name) or (extras and not _live_part(name)):
                try:
                    p.unlink()
                except FileNotFoundError:
                    continue
                removed.append(p)
        if extras and Path(dirpath) != folder:
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)  # only if empty: what is kept keeps its folders
    return removed


def _live_part(name: str) -> bool:
    """A temporary file of a transfer still running (another pull into the same folder)."""
    return is_part(name) and not stale_part(name)


class ByteCounter:
    """Thread-safe running total of bytes moved, reported as ``progress(done, total)``."""

    def __init__(self, total: int, progress: Progress | None):
        self.total, self.done, self.progress = total, 0, progress
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n
            if self.progress:
                self.progress(self.done, self.total)


def workers_for(storage: Storage) -> int:
    """Parallel transfers: many at once on object storage (latency-bound), a few on a disk."""
    return 4 if storage.protocol == "file" else 32


def parallel(fn: Callable[[T], Any], items: Iterable[T], workers: int) -> list[Any]:
    """``[fn(x) for x in items]`` on a thread pool; the first error cancels the rest and raises."""
    items = list(items)
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        futures = [pool.submit(fn, x) for x in items]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for f in pending:
            f.cancel()
        for f in futures:
            if f.done() and not f.cancelled() and f.exception() is not None:
                raise f.exception()
        return [f.result() for f in futures]


class FileChanged(StorageError):
    """A local file changed (or vanished) while it was being uploaded; nothing was stored."""


class Unreadable(StorageError):
    """A local file that cannot be read (permissions, an I/O error); nothing was stored."""

    def __init__(self, local: str | Path, error: OSError):
        self.reason = f"cannot be read: {error.strerror or error}"
        super().__init__(f"cannot read {local}: {error.strerror or error}")


def upload(
    storage: Storage,
    local: str | Path,
    key: str,
    counter: ByteCounter | None = None,
    *,
    expect: os.stat_result | None = None,
) -> Entry:
    """Stream a local file to a key, hashing what is sent; returns its manifest entry.

    All or nothing: on a file root the bytes go to a temp name that is renamed at the end; on
    S3 the object appears only when the upload completes. If the file changes or vanishes while
    it is read (a checkpoint being rewritten), the upload is abandoned with FileChanged and the
    stored object, if any, is left as it was. With ``expect`` (the stat a caller judged the
    file by), a file that is no longer that one when it is opened is FileChanged too.
    """
    path = storage.path(key)
    h = hashlib.sha256()
    try:
        src = open(local, "rb")  # noqa: SIM115 - closed in the finally below
    except FileNotFoundError:
        raise FileChanged(f"{local} vanished before it could be uploaded") from None
    except OSError as e:  # unreadable (permissions): one clear error, not a crash mid-ship
        raise Unreadable(local, e) from e
    st = os.fstat(src.fileno())
    if expect is not None and _identity(st) != _identity(expect):
        src.close()
        raise FileChanged(f"{local} changed since it was looked at")
    tmp = out = None
    try:
        if storage.protocol == "file":
            os.makedirs(posixpath.dirname(path), exist_ok=True)
            tmp = posixpath.join(posixpath.dirname(path), part_name(posixpath.basename(path)))
            out = open(tmp, "wb")  # noqa: SIM115 - closed below, on every path
        else:
            out = storage.fs.open(path, "wb")  # an S3 object appears only when closed
        size = _copy(src, out, h, counter, reading=str(local))
        if not _same_file(local, st, size):
            raise FileChanged(f"{local} changed while it was uploaded")
        out.close()
        out = None
        if tmp is not None:
            os.replace(tmp, path)
            tmp = None
    except (FileChanged, Unreadable):
        raise
    except Exception as e:  # OSError locally; botocore errors surface as others on S3
        raise StorageError(f"upload {local} -> {storage.url(key)} failed: {e}") from e
    finally:
        src.close()
        if out is not None:  # failed or abandoned: store nothing
            if hasattr(out, "discard"):
                out.discard()  # s3fs: drop the buffer / abort the multipart upload
                out.closed = True  # or fsspec's __del__ would try to flush the dropped buffer
            else:
                out.close()
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    sha = h.hexdigest()
    remember(local, st, sha)
    return {"size": size, "sha256": sha}


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _same_file(local: str | Path, st: os.stat_result, size: int) -> bool:
    try:
        now = os.stat(local)
    except FileNotFoundError:
        return False
    return _identity(now) == _identity(st) and size == st.st_size


def _copy(src, out, h, counter: ByteCounter | None, *, reading: str | None = None) -> int:
    """Stream ``src`` to ``out`` in chunks, hashing into ``h`` and counting; bytes copied.
    With ``reading`` (the local file ``src`` is), a failed read raises :class:`Unreadable`."""
    size = 0
    while True:
        try:
            chunk = src.read(CHUNK)
        except OSError as e:
            if reading is None:
                raise
            raise Unreadable(reading, e) from e
        if not chunk:
            break
        out.write(chunk)
        h.update(chunk)
        size += len(chunk)
        if counter:
            counter.add(len(chunk))
    return size


class Mismatch(StorageError):
    """A stored object's bytes differ from its manifest entry (corrupt, or a newer upload)."""


class Missing(StorageError):
    """An object listed in a manifest is not in storage."""


class Replaced(StorageError):
    """A stored object was replaced while it was read (S3 saw its ETag change mid-read)."""


Warn = Callable[[str], None]


def download(
    storage: Storage,
    key: str,
    target: Path,
    entry: Entry,
    counter: ByteCounter | None = None,
    *,
    warn: Warn | None = None,
) -> Path:
    """Fetch a key to ``target`` via a temp file, verified against ``entry``; skips a target
    already there with the right size and sha256. Never leaves a half or corrupt file.

    Bytes that differ from ``entry`` raise :class:`Mismatch`, unless ``warn`` is given: then
    the stored copy is kept as it is (uploads are whole, so it is a newer version of the file
    than its manifest knows) and ``warn`` is told.
    """
    if (
        target.is_file()
        and target.stat().st_size == entry["size"]
        and digest(target)["sha256"] == entry["sha256"]
    ):
        if counter:
            counter.add(entry["size"])
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(part_name(target.name))
    h = hashlib.sha256()
    try:
        with storage.fs.open(storage.path(key), "rb") as src, open(tmp, "wb") as out:
            size = _copy(src, out, h, counter)
        if size != entry["size"] or h.hexdigest() != entry["sha256"]:
            got = (
                f"got {size} bytes sha256 {h.hexdigest()[:12]}..., manifest says "
                f"{entry['size']} bytes sha256 {entry['sha256'][:12]}..."
            )
            if warn is None:
                raise Mismatch(f"{storage.url(key)} is corrupt: {got}")
            warn(f"{storage.url(key)} differs from its manifest ({got}); taking the stored copy")
        os.replace(tmp, target)
    except StorageError:
        raise
    except FileNotFoundError as e:
        raise Missing(f"{storage.url(key)} is listed in its manifest but missing") from e
    except Exception as e:
        if type(e).__name__ == "FileExpired":  # s3fs: a newer upload replaced it meanwhile
            raise Replaced(f"{storage.url(key)} was replaced while it was downloaded") from e
        raise StorageError(f"download {storage.url(key)} -> {target} failed: {e}") from e
    finally:
        if tmp.exists():
            tmp.unlink()
    remember(target, target.stat(), h.hexdigest())
    return target


Job = tuple[str, Path, Entry]  # (storage key, local target, manifest entry)


def plan_down(prefix: str, files: dict[str, Entry], dest: Path) -> list[Job]:
    """Download jobs for a manifest under ``prefix`` into ``dest``; every target must stay
    inside ``dest`` (absolute paths, ``..`` and symlinked folders leading out are refused)."""
    dest = Path(dest)
    root = dest.resolve()
    jobs = []
    for rel, entry in files.items():
        target = dest / safe_relpath(rel)
        if not (target.parent.resolve() / target.name).is_relative_to(root):
            raise StorageError(f"refusing manifest path {rel!r}: it leads outside {dest}")
        jobs.append((f"{prefix}/{rel}", target, entry))
    return jobs


def sync_down(
    storage: Storage,
    jobs: list[Job],
    progress: Progress | None = None,
    *,
    warn: Warn | None = None,
) -> list[Path]:
    """Run download jobs in parallel (verified, idempotent); returns the targets in order.

    Strict by default. With ``warn``, a file whose stored bytes differ from the manifest is
    taken as stored and a file missing from storage is skipped, each with a warning.
    """
    counter = ByteCounter(sum(entry["size"] for _, _, entry in jobs), progress)

    def one(job: Job) -> Path | None:
        key, target, entry = job
        try:
            return download(storage, key, target, entry, counter, warn=warn)
        except Missing as e:
            if warn is None:
                raise
            warn(f"{e}; skipped")
            return None

    return [p for p in parallel(one, jobs, workers_for(storage)) if p is not None]


def upload_changed(
    storage: Storage,
    local: Path,
    key: str,
    stored: Entry | None,
    counter: ByteCounter | None = None,
    *,
    expect: os.stat_result | None = None,
) -> tuple[Entry, bool]:
    """Upload ``local`` to ``key`` unless ``stored`` (its entry from a manifest or an
    interrupted upload's record) already describes it: (its entry, whether it was sent).
    FileChanged when the file changes or vanishes while it is read (or, with ``expect``, is no
    longer the file that stat describes)."""
    try:
        unchanged = (
            stored is not None
            and os.stat(local).st_size == stored["size"]
            and digest(local) == stored  # cached by size + mtime: an unchanged file is not read
        )
    except FileNotFoundError:
        raise FileChanged(f"{local} vanished before it could be uploaded") from None
    except OSError as e:  # hashed to compare it with the stored copy, and unreadable
        raise Unreadable(local, e) from e
    if unchanged:
        if counter:
            counter.add(stored["size"])
        return stored, False
    if expect is None:
        return upload(storage, local, key, counter), True
    return upload(storage, local, key, counter, expect=expect), True


class Throttle:
    """True at most once per ``seconds`` (for checkpointing progress records)."""

    def __init__(self, seconds: float):
        self.seconds, self.last = seconds, time.monotonic()

    def __call__(self) -> bool:
        now = time.monotonic()
        if now - self.last >= self.seconds:
            self.last = now
            return True
        return False
