"""fsspec helpers over one root URL: ``file:///...`` locally, ``s3://BUCKET/PREFIX`` on AWS.

Every run, datastore and artifact lives under the root (layout in ../shared/DESIGN.md), so the
same agent code runs on a laptop and on an EC2 instance. Paths given to :class:`Storage` methods
are *keys* relative to the root, always ``/``-separated; a key that would escape the root
(``..``, absolute, empty parts) is refused, so hostile names can never reach outside the prefix.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
from typing import Any

from launcher.errors import StorageError


class CorruptRecord(StorageError, ValueError):
    """A stored JSON record that does not parse (cut short by a crash or a full disk). A
    ValueError too, so code that treats an unparsable record as 'being written' still does."""


def _check_key(key: str) -> str:
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise StorageError(f"invalid storage key {key!r}: must be a relative '/'-separated path")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"invalid storage key {key!r}: empty, '.' or '..' parts are not allowed")
    return key


class Storage:
    """A storage root. Cheap to create; the fsspec filesystem is made on first use."""

    def __init__(self, root_url: str, **storage_options: Any):
        self.root_url = root_url.rstrip("/")
        self.storage_options = storage_options
        self._fs = None
        self._root = None
        self._root_path: str | None = None

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def fs(self):
        if self._fs is None:
            import fsspec.core

            options = dict(self.storage_options)
            if self.protocol == "s3":
                # s3fs answers exists/info/reads from its cached listings: another node's claim
                # or stop flag would stay invisible. Shared state must never be cached.
                options.setdefault("use_listings_cache", False)
            try:
                self._fs, self._root = fsspec.core.url_to_fs(self.root_url, **options)
            except ImportError as e:  # s3fs missing
                raise StorageError(f"cannot open {self.root_url}: {e}") from e
        return self._fs

    @property
    def root(self) -> str:
        if self._root_path is None:  # asked once per key: resolve once
            self.fs  # noqa: B018 - resolves the root path
            self._root_path = self._root.rstrip("/")
        return self._root_path

    @property
    def protocol(self) -> str:
        return self.root_url.split("://", 1)[0] if "://" in self.root_url else "file"

    def path(self, key: str) -> str:
        """The filesystem path (no protocol) of a key."""
        return posixpath.join(self.root, _check_key(key))

    def url(self, key: str) -> str:
        """The full URL of a key, for other tools (``aws s3 cp``, fsspec.open)."""
        return f"{self.root_url}/{_check_key(key)}"

    def _wrap(self, op: str, key: str, exc: Exception) -> StorageError:
        return StorageError(f"{op} {self.url(key)} failed: {type(exc).__name__}: {exc}")

    # -- reads ------------------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        try:
            return self.fs.exists(self.path(key))
        except Exception as e:  # network, credentials: one clear error, not a botocore trace
            raise self._wrap("check", key, e) from e

    def read_bytes(self, key: str) -> bytes:
        try:
            if self.protocol == "file":  # no fsspec layer: status reads thousands of small files
                with open(self.path(key), "rb") as f:
                    return f.read()
            return self.fs.cat_file(self.path(key))
        except IsADirectoryError:
            raise FileNotFoundError(self.path(key)) from None
        except FileNotFoundError:
            raise
        except Exception as e:  # network, permissions
            raise self._wrap("read", key, e) from e

    def read_many(self, keys: list[str]) -> dict[str, bytes | None]:
        """Many small objects at once (a sweep's statuses): key -> bytes, None where missing.
        A file system reads them in one loop, S3 in fsspec's batched, concurrent ``cat``."""
        paths = {key: self.path(key) for key in keys}
        out: dict[str, bytes | None] = dict.fromkeys(keys)
        if self.protocol == "file":
            for key, path in paths.items():
                try:
                    with open(path, "rb") as f:
                        out[key] = f.read()
                except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                    pass
                except OSError as e:
                    raise self._wrap("read", key, e) from e
            return out
        try:
            found = self.fs.cat(list(paths.values()), on_error="omit") if paths else {}
        except Exception as e:
            raise self._wrap("read", keys[0], e) from e
        by_path = {self.fs._strip_protocol(p): data for p, data in found.items()}
        for key, path in paths.items():
            out[key] = by_path.get(self.fs._strip_protocol(path))
        return out

    def read_text(self, key: str) -> str:
        return self.read_bytes(key).decode()

    def read_json(self, key: str, default: Any = ...) -> Any:
        """Parsed JSON at a key; ``default`` (when given) if it does not exist."""
        try:
            data = self.read_bytes(key)
        except FileNotFoundError:
            if default is ...:
                raise
            return default
        try:
            return json.loads(data)
        except ValueError as e:  # truncated or garbled: name the file, not just the parser's error
            raise CorruptRecord(
                f"{self.url(key)} is not valid JSON ({e.__class__.__name__}: {e}); "
                "it was cut short or overwritten"
            ) from None

    def list(self, prefix: str) -> list[str]:
        """Names (not keys) directly under a prefix; empty if it does not exist."""
        try:
            try:
                entries = self.fs.ls(self.path(prefix), detail=False, refresh=True)
            except TypeError:  # filesystems without `refresh`
                entries = self.fs.ls(self.path(prefix), detail=False)
        except FileNotFoundError:
            return []
        except Exception as e:
            raise self._wrap("list", prefix, e) from e
        return sorted(posixpath.basename(e.rstrip("/")) for e in entries)

    def walk(self, prefix: str) -> dict[str, int]:
        """Every file under a prefix: key relative to the prefix -> size in bytes."""
        base = self.path(prefix)
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        except Exception as e:
            raise self._wrap("list", prefix, e) from e
        return {
            posixpath.relpath(p, base): int(info.get("size") or 0)
            for p, info in found.items()
            if info.get("type", "file") != "directory"
        }

    def modified(self, key: str) -> float | None:
        """Last-modified time (epoch seconds) of a key, or None if it does not exist."""
        try:
            info = self.fs.info(self.path(key))
        except FileNotFoundError:
            return None
        except Exception as e:
            raise self._wrap("check", key, e) from e
        m = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
        if m is None:
            return None
        return m.timestamp() if hasattr(m, "timestamp") else float(m)

    # -- writes -----------------------------------------------------------------------------
    def write_bytes(self, key: str, data: bytes) -> None:
        """Write a whole object. On a file system it goes to a temp name first, then is renamed,
        so a reader never sees half of it; S3 puts are atomic already."""
        path = self.path(key)
        try:
            if self.protocol == "file":
                import os
                import uuid

                folder = posixpath.dirname(path)
                os.makedirs(folder, exist_ok=True)
                # unique per writer (threads of one process too), and short whatever the name
                tmp = posixpath.join(folder, f".tmp-{uuid.uuid4().hex[:16]}")
                try:
                    with open(tmp, "wb") as f:
                        f.write(data)
                    os.replace(tmp, path)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)  # a full disk leaves no half-written stray
                    raise
            else:
                self.fs.pipe_file(path, data)
        except Exception as e:
            raise self._wrap("write", key, e) from e

    def write_text(self, key: str, text: str) -> None:
        self.write_bytes(key, text.encode())

    def write_json(self, key: str, obj: Any) -> None:
        self.write_bytes(key, json.dumps(obj, indent=2, sort_keys=True).encode())

    def create_exclusive(self, key: str, data: bytes) -> bool:
        """Create a key only if it does not exist yet; True if this call created it.

        Atomic across processes and machines: ``O_EXCL`` on a file system, a conditional put
        (``IfNoneMatch="*"``) on S3. This is what claims are made of.
        """
        path = self.path(key)
        if self.protocol == "file":
            import os

            os.makedirs(posixpath.dirname(path), exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True
        try:
            self.fs.pipe_file(path, data, mode="create")
            return True
        except FileExistsError:
            return False
        except Exception as e:
            # s3fs raises FileExistsError for 412 Precondition Failed; some versions wrap it.
            if "PreconditionFailed" in repr(e) or "412" in str(e):
                return False
            raise self._wrap("create", key, e) from e

    def delete(self, key: str, recursive: bool = False) -> None:
        try:
            self.fs.rm(self.path(key), recursive=recursive)
        except FileNotFoundError:
            pass
        except Exception as e:
            raise self._wrap("delete", key, e) from e

    def upload(self, local_path: str, key: str) -> None:
        """Copy one local file to a key."""
        try:
            self.fs.put_file(local_path, self.path(key))
        except Exception as e:
            raise self._wrap("upload", key, e) from e

    def download(self, key: str, local_path: str) -> None:
        """Copy one key to a local file (its parent directory must exist)."""
        try:
            self.fs.get_file(self.path(key), local_path)
        except FileNotFoundError:
            raise
        except Exception as e:
            raise self._wrap("download", key, e) from e

    def invalidate(self) -> None:
        """Forget cached listings (s3fs caches them), so the next read sees other writers."""
        if self._fs is not None and hasattr(self._fs, "invalidate_cache"):
            self._fs.invalidate_cache()
