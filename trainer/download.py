"""``--download URL``: fetch a zip or tar(.gz) archive of the data once, extract it safely.

The archive is read through fsspec (``file://``, ``http(s)://``, ``s3://``...), extracted into a
temporary folder next to ``dest`` and renamed into place, so ``dest`` is either absent or
complete, never half-extracted. A marker file (``dest/.download_complete``, holding the URL)
makes a rerun do nothing. Members that would land outside ``dest`` (absolute paths, ``..``),
links, and device files are refused: the whole archive is rejected, nothing is written.

An archive holding a single top-level folder is unwrapped (``data.zip`` containing
``data/train/...`` gives ``dest/train/...``), since that is how most archives are made.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from trainer.datasets import DataError

MARKER = ".download_complete"


class DownloadError(DataError):
    """The archive could not be fetched, is not a zip/tar archive, or is unsafe."""


def _check_member(name: str, archive: str) -> None:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and p.parts[0].endswith(":")):
        raise DownloadError(
            f"unsafe archive {archive}: member {name!r} would extract outside "
            "the destination (absolute or '..' paths are not allowed)"
        )


def _extract_zip(path: Path, out: Path, url: str) -> None:
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            _check_member(info.filename, url)
            mode = (info.external_attr >> 16) & 0o170000
            if mode == 0o120000:  # a symlink stored by Info-ZIP
                raise DownloadError(
                    f"unsafe archive {url}: member {info.filename!r} is a "
                    "symbolic link (links are not allowed)"
                )
        zf.extractall(out)


def _extract_tar(path: Path, out: Path, url: str) -> None:
    with tarfile.open(path) as tf:
        members = tf.getmembers()
        for m in members:
            _check_member(m.name, url)
            if not (m.isfile() or m.isdir()):
                raise DownloadError(
                    f"unsafe archive {url}: member {m.name!r} is a link or "
                    "special file (only files and folders are allowed)"
                )
        # The "data" filter re-checks all of the above inside tarfile itself.
        tf.extractall(out, members=members, filter="data")


def _fetch(url: str, to: Path) -> None:
    import fsspec

    try:
        with fsspec.open(url, "rb") as src, open(to, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
    except FileNotFoundError as e:
        raise DownloadError(f"cannot download {url}: not found") from e
    except Exception as e:  # fsspec backends raise their own types (aiohttp, botocore...)
        raise DownloadError(f"cannot download {url}: {type(e).__name__}: {e}") from e


def ensure_data(url: str, dest: str | Path) -> Path:
    """Make ``dest`` hold the extracted contents of the archive at ``url``; returns ``dest``.

    Does nothing if ``dest`` was already extracted (marker present) or already holds data
    (a non-empty folder, e.g. a datastore mounted there).
    """
    dest = Path(dest)
    if (dest / MARKER).exists():
        return dest
    if dest.is_dir() and any(dest.iterdir()):
        return dest
    if "://" not in url and not Path(url).exists():
        raise DownloadError(
            f"cannot download {url}: no such file (give a path or a "
            "file://, http(s):// or s3:// URL of a .zip or .tar(.gz) archive)"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.download-", dir=dest.parent))
    try:
        archive = work / "archive"
        _fetch(url, archive)
        out = work / "extracted"
        out.mkdir()
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, out, url)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, out, url)
        else:
            raise DownloadError(f"{url} is not a zip or tar(.gz/.bz2/.xz) archive")
        entries = [e for e in out.iterdir() if e.name not in ("__MACOSX",)]
        content = entries[0] if len(entries) == 1 and entries[0].is_dir() else out
        (content / MARKER).write_text(url + "\n")
        try:
            if dest.is_dir():  # an empty folder is there (e.g. made by the caller)
                dest.rmdir()
            os.replace(content, dest)
        except OSError as e:
            # Another process (e.g. another DDP rank) finished the same download first.
            if (dest / MARKER).exists():
                return dest
            raise DownloadError(f"cannot move the extracted {url} to {dest}: {e}") from e
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest
