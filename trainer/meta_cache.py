"""Scan video metadata once, in parallel, and cache it (like torchvision's ``--cache-dataset``).

The cache is a JSON file keyed by each video's path relative to the data root, and valid only
while the file's size and mtime are unchanged. It lives, in order of preference:

1. in ``cache_dir`` if one is given (one file per data root, named from a hash of the root);
2. next to the data, as ``ROOT/.video_meta_cache.json``;
3. in the user cache dir (``$XDG_CACHE_HOME`` or ``~/.cache``)``/launch-video/``, when the data
   directory is read-only (datastores are mounted read-only).

Files that failed to probe are cached too (with their reason), so a corrupt file costs one probe,
not one per run.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from trainer.cli_args import user_cache_dir
from trainer.video_io import VideoError, VideoMeta, probe

CACHE_NAME = ".video_meta_cache.json"
CACHE_VERSION = 3  # bump when VideoMeta or its meaning changes (3: images refused)


def _hashed_name(root: Path) -> str:
    return f"video_meta_{hashlib.sha1(str(root).encode()).hexdigest()[:16]}.json"


class MetaCache:
    """The metadata cache of the videos under one ``root``."""

    def __init__(self, root: str | Path, cache_dir: str | Path | None = None):
        self.root = Path(root).resolve()
        # Where the cache goes when the data dir is read-only (or the first choice fails).
        self.fallback = user_cache_dir() / _hashed_name(self.root)
        if cache_dir is not None:
            self.path = Path(cache_dir) / _hashed_name(self.root)
        elif os.access(self.root, os.W_OK):
            self.path = self.root / CACHE_NAME
        else:
            self.path = self.fallback
        self.entries: dict[str, dict] = {}
        self.dirty = False
        self._load()

    def _load(self) -> None:
        candidates = [self.path]
        if self.path.name == CACHE_NAME:  # a previous run may have fallen back
            candidates.append(self.fallback)
        for path in candidates:
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and data.get("version") == CACHE_VERSION:
                self.entries.update(data.get("entries", {}))

    def _key(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self.root))
        except ValueError:
            return str(path.resolve())

    def get(self, path: Path, stat: os.stat_result) -> dict | None:
        e = self.entries.get(self._key(path))
        if e and e.get("size") == stat.st_size and e.get("mtime_ns") == stat.st_mtime_ns:
            return e
        return None

    def put(self, path: Path, stat: os.stat_result, meta: VideoMeta | None, error: str | None):
        self.entries[self._key(path)] = {
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "meta": meta.to_dict() if meta else None,
            "error": error,
        }
        self.dirty = True

    def save(self) -> Path | None:
        """Write the cache atomically; falls back to the user cache dir if the first choice is
        not writable. Returns where it was written (None if nowhere could be)."""
        if not self.dirty:
            return self.path
        data = json.dumps(
            {"version": CACHE_VERSION, "root": str(self.root), "entries": self.entries}
        )
        for path in (self.path, self.fallback):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
                with os.fdopen(fd, "w") as f:
                    f.write(data)
                os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is not secret
                os.replace(tmp, path)
                self.path, self.dirty = path, False
                return path
            except OSError:
                continue
        return None


def _probe_reason(path: Path) -> tuple[VideoMeta | None, str | None]:
    try:
        return probe(path), None
    except VideoError as e:
        return None, e.reason
    except Exception as e:  # never let one odd file abort a scan of thousands
        return None, f"{type(e).__name__}: {e}"


def scan(
    paths: list[Path],
    root: str | Path,
    cache_dir: str | Path | None = None,
    max_workers: int | None = None,
) -> tuple[dict[Path, VideoMeta], dict[Path, str]]:
    """Metadata for every path (from the cache, else probed in a thread pool).

    Returns ``(metas, errors)``: each path lands in exactly one of them; ``errors`` maps a path
    to a one-line reason (missing, not a video, undecodable...).
    """
    cache = MetaCache(root, cache_dir)
    metas: dict[Path, VideoMeta] = {}
    errors: dict[Path, str] = {}
    todo: list[tuple[Path, os.stat_result]] = []
    for p in paths:
        try:
            st = p.stat()
        except OSError as e:
            errors[p] = "file not found" if isinstance(e, FileNotFoundError) else str(e)
            continue
        hit = cache.get(p, st)
        if hit is None:
            todo.append((p, st))
        elif hit["meta"] is not None:
            metas[p] = VideoMeta.from_dict(hit["meta"])
        else:
            errors[p] = hit["error"]
    if todo:
        # PyAV releases the GIL while demuxing, so threads scale on I/O and on CPU.
        workers = max_workers or min(32, (os.cpu_count() or 1) * 4)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = pool.map(lambda ps: _probe_reason(ps[0]), todo)
            for (p, st), (meta, err) in zip(todo, results, strict=True):
                cache.put(p, st, meta, err)
                if meta is not None:
                    metas[p] = meta
                else:
                    errors[p] = err or "unreadable"
        cache.save()
    return metas, errors
