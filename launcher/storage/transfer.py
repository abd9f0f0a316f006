"""Manifests ({relpath: {"size", "sha256"}}) and verified, parallel transfers to and from storage.

Shared by datastores and artifacts. Uploads hash the bytes as they stream, so a manifest entry
always describes exactly what was stored, even if the local file changed meanwhile. Downloads go
to a temp file next to the target, are checked against the manifest, then renamed: an
interrupted or corrupt transfer never leaves a half-file under the real name.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from launcher.errors import StorageError

if TYPE_CHECKING:
    from launcher.storage.root import Storage

CHUNK = 1 << 20
Progress = Callable[[int, int], None]
Entry = dict[str, Any]  # {"size": int, "sha256": str}
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


def safe_relpath(rel: str) -> str:
    """``rel`` if it is a plain relative '/' path staying inside its folder, else StorageError."""
    if (
        not isinstance(rel, str)
        or not rel
        or rel.startswith("/")
        or "\\" in rel
        or "\x00" in rel
        or (len(rel) > 1 and rel[1] == ":")
        or any(p in ("", ".", "..") for p in rel.split("/"))
    ):
        raise StorageError(f"refusing manifest path {rel!r}: it is absolute or escapes its folder")
    return rel


def check_manifest(files: Any, where: str) -> dict[str, Entry]:
    """A manifest's ``files`` mapping, every path safe and every entry well formed."""
    if not isinstance(files, dict):
        raise StorageError(f"{where}: corrupt manifest (files is not a mapping)")
    for rel, entry in files.items():
        safe_relpath(rel)
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("size"), int)
            or not isinstance(entry.get("sha256"), str)
        ):
            raise StorageError(f"{where}: corrupt manifest entry for {rel!r}")
    return files


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


def upload(
    storage: Storage, local: str | Path, key: str, counter: ByteCounter | None = None
) -> Entry:
    """Stream a local file to a key, hashing what is sent; returns its manifest entry.

    All or nothing: on a file root the bytes go to a temp name that is renamed at the end; on
    S3 the object appears only when the upload completes. If the file changes or vanishes while
    it is read (a checkpoint being rewritten), the upload is abandoned with FileChanged and the
    stored object, if any, is left as it was.
    """
    path = storage.path(key)
    h = hashlib.sha256()
    try:
        src = open(local, "rb")  # noqa: SIM115 - closed in the finally below
    except FileNotFoundError:
        raise FileChanged(f"{local} vanished before it could be uploaded") from None
    except OSError as e:  # unreadable (permissions): one clear error, not a crash mid-ship
        raise StorageError(f"cannot read {local} to upload it: {e}") from e
    st = os.fstat(src.fileno())
    tmp = out = None
    try:
        if storage.protocol == "file":
            os.makedirs(posixpath.dirname(path), exist_ok=True)
            tmp = f"{path}.part-{os.getpid()}-{threading.get_ident()}"
            out = open(tmp, "wb")  # noqa: SIM115 - closed below, on every path
        else:
            out = storage.fs.open(path, "wb")  # an S3 object appears only when closed
        size = _copy(src, out, h, counter)
        if not _same_file(local, st, size):
            raise FileChanged(f"{local} changed while it was uploaded")
        out.close()
        out = None
        if tmp is not None:
            os.replace(tmp, path)
            tmp = None
    except FileChanged:
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


def _same_file(local: str | Path, st: os.stat_result, size: int) -> bool:
    try:
        now = os.stat(local)
    except FileNotFoundError:
        return False
    return (now.st_ino, now.st_size, now.st_mtime_ns) == (
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
    ) and (size == st.st_size)


def _copy(src, out, h, counter: ByteCounter | None) -> int:
    """Stream ``src`` to ``out`` in chunks, hashing into ``h`` and counting; bytes copied."""
    size = 0
    while chunk := src.read(CHUNK):
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
    tmp = target.with_name(f".{target.name}.part-{os.getpid()}-{threading.get_ident()}")
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
) -> tuple[Entry, bool]:
    """Upload ``local`` to ``key`` unless ``stored`` (its entry from a manifest or an
    interrupted upload's record) already describes it: (its entry, whether it was sent).
    FileChanged when the file changes or vanishes while it is read."""
    try:
        unchanged = (
            stored is not None
            and os.stat(local).st_size == stored["size"]
            and digest(local) == stored  # cached by size + mtime: an unchanged file is not read
        )
    except FileNotFoundError:
        raise FileChanged(f"{local} vanished before it could be uploaded") from None
    if unchanged:
        if counter:
            counter.add(stored["size"])
        return stored, False
    return upload(storage, local, key, counter), True


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
