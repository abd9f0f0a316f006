"""What a manifest may hold, decided once: the path rule, entry checks, and temporary names.

A manifest maps relative paths to ``{"size", "sha256"}``. :func:`path_problem` is the one rule
for those paths. Shipping asks it before a file is stored (a file whose name breaks it is
skipped and reported, everything else ships), and every reader asks it again, so what one ship
writes, every later ship, list, pull and restore can read.

Temporary files (``.NAME.part-PID-TID``, beside the target until it is renamed into place) are
named by :func:`part_name`, which keeps them within the file system's 255-byte name limit
however long NAME is, and recognized by :func:`stale_part`, so a later pull can remove those a
killed one left behind.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from typing import Any

from launcher.errors import StorageError

Entry = dict[str, Any]  # {"size": int, "sha256": str}

MAX_NAME_BYTES = 255  # one path component: the limit of ext4, xfs, APFS, NTFS
# S3 keys stop at 1024 bytes; the run/experiment prefix takes up to about 100 of them
MAX_PATH_BYTES = 900


def path_problem(rel: object) -> str | None:
    """Why ``rel`` cannot be a manifest path, or None if it can.

    A manifest path is a storage key below its folder and a file name wherever it is pulled to:
    relative, '/'-separated, without empty, '.' or '..' parts, without backslashes (storage keys
    refuse them; Windows reads them as separators) or NUL, valid UTF-8, each part at most 255
    bytes and the whole at most 900. ``:`` is allowed (``t:0.log``): on POSIX it is an ordinary
    character, and a pull still refuses any target that would land outside its folder.
    """
    if not isinstance(rel, str) or not rel:
        return "it is empty"
    if rel.startswith("/"):
        return "it is absolute or escapes its folder"
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "it is absolute or escapes its folder"
    if "\\" in rel:
        return "it holds a backslash (storage keys are '/'-separated)"
    if "\x00" in rel:
        return "it holds a NUL byte"
    try:
        encoded = [p.encode("utf-8") for p in parts]
    except UnicodeEncodeError:
        return "its name is not valid UTF-8"
    if any(len(p) > MAX_NAME_BYTES for p in encoded):
        return f"a name in it is longer than {MAX_NAME_BYTES} bytes"
    if len(rel.encode("utf-8")) > MAX_PATH_BYTES:
        return f"it is longer than {MAX_PATH_BYTES} bytes"
    return None


def safe_relpath(rel: str) -> str:
    """``rel`` if :func:`path_problem` accepts it, else StorageError saying why."""
    problem = path_problem(rel)
    if problem:
        raise StorageError(f"refusing manifest path {rel!r}: {problem}")
    return rel


class CorruptManifest(StorageError):
    """A manifest that parses but is not one (not a mapping, or a malformed entry)."""


def _check_entry(rel: str, entry: Any, where: str) -> None:
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("size"), int)
        or isinstance(entry.get("size"), bool)
        or not isinstance(entry.get("sha256"), str)
    ):
        raise CorruptManifest(f"{where}: corrupt manifest entry for {rel!r}")


def check_manifest(files: Any, where: str) -> dict[str, Entry]:
    """A manifest's ``files`` mapping, every path safe and every entry well formed (strict:
    the first bad path or entry raises StorageError)."""
    if not isinstance(files, dict):
        raise CorruptManifest(f"{where}: corrupt manifest (files is not a mapping)")
    for rel, entry in files.items():
        safe_relpath(rel)
        _check_entry(rel, entry, where)
    return files


def split_manifest(files: Any, where: str) -> tuple[dict[str, Entry], list[tuple[str, str]]]:
    """A manifest's entries whose paths pass :func:`path_problem`, and (path, why) for those that
    do not, so one bad name (written by an older version) never hides the rest. A mapping that
    is not one, or a malformed entry, is corruption: StorageError."""
    if not isinstance(files, dict):
        raise CorruptManifest(f"{where}: corrupt manifest (files is not a mapping)")
    good: dict[str, Entry] = {}
    refused: list[tuple[str, str]] = []
    for rel, entry in files.items():
        problem = path_problem(rel)
        if problem:
            refused.append((rel, problem))
            continue
        _check_entry(rel, entry, where)
        good[rel] = entry
    return good, refused


_PART = re.compile(r"\.(?P<name>.+)\.part-(?P<pid>[0-9]+)-(?P<tid>[0-9]+)", re.DOTALL)


def part_name(name: str) -> str:
    """The hidden temporary name for ``name`` written by this thread: ``.NAME.part-PID-TID``,
    or, where that would pass the 255-byte name limit, NAME replaced by a digest of it."""
    suffix = f".part-{os.getpid()}-{threading.get_ident()}"
    tmp = f".{name}{suffix}"
    if len(tmp.encode("utf-8", "surrogateescape")) <= MAX_NAME_BYTES:
        return tmp
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return f".{digest}{suffix}"


def is_part(name: str) -> bool:
    """Whether ``name`` has the shape of a transfer's temporary file."""
    return _PART.fullmatch(name) is not None


def stale_part(name: str) -> bool:
    """Whether ``name`` is a temporary file of a transfer whose process is gone (killed).
    Only the pid is in the name: a reused pid keeps a stale file until that process ends, which
    errs on the side of never removing a running transfer's file."""
    from launcher.processes import process_alive

    m = _PART.fullmatch(name)
    return bool(m) and int(m["pid"]) != os.getpid() and not process_alive(int(m["pid"]))
