"""Snapshot the working directory into code.tar.gz, so editing code after launch changes nothing.

What goes in follows the project's own ignore rules (``.gitignore``, plus a ``.launchignore`` for
what should stay out of runs only), read with pathspec's gitignore semantics. Some paths never go
in whatever the rules say: VCS data, virtual environments, caches and pulled artifacts.
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from launcher.errors import LaunchError

ALWAYS_EXCLUDED = (".git", ".hg", ".svn", ".venv", "__pycache__", "launch_artifacts")
IGNORE_FILES = (".gitignore", ".launchignore")
DEFAULT_LIMIT_MB = 200.0


class SnapshotError(LaunchError):
    """The working directory cannot be snapshotted (too big, unreadable)."""


@dataclass
class Snapshot:
    """A packed working directory."""

    data: bytes
    files: list[str] = field(default_factory=list)
    total_size: int = 0


def _load_spec(directory: Path, names: tuple[str, ...] = IGNORE_FILES):
    import pathspec

    lines: list[str] = []
    for name in names:
        path = directory / name
        if path.is_file():
            lines += path.read_text(errors="replace").splitlines()
    return pathspec.GitIgnoreSpec.from_lines(lines) if lines else None


def collect_files(root: Path | str) -> list[str]:
    """Relative POSIX paths of the files a snapshot of ``root`` holds, sorted.

    The root's ``.gitignore`` and ``.launchignore`` apply everywhere; a ``.gitignore`` in a
    subfolder applies below it, its patterns relative to that folder, as git reads them.
    """
    root = Path(root)
    specs: dict[str, object] = {}  # folder ("" or "a/b/") -> its spec
    root_spec = _load_spec(root)
    if root_spec is not None:
        specs[""] = root_spec

    def ignored(rel: str) -> bool:
        return any(
            rel.startswith(folder) and spec.match_file(rel[len(folder) :])
            for folder, spec in specs.items()
        )

    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        if rel_dir:
            nested = _load_spec(Path(dirpath), (".gitignore",))
            if nested is not None:
                specs[rel_dir] = nested
        # prune in place so ignored trees (node_modules, data/) are never walked
        dirnames[:] = sorted(
            d
            for d in dirnames
            if d not in ALWAYS_EXCLUDED
            and not os.path.islink(os.path.join(dirpath, d))
            and not ignored(f"{rel_dir}{d}/")
        )
        for name in sorted(filenames):
            rel = f"{rel_dir}{name}"
            full = os.path.join(dirpath, name)
            if name.endswith(".pyc") or ignored(rel):
                continue
            if os.path.islink(full) or not os.path.isfile(full):
                continue  # links could point outside the snapshot; special files are not code
            out.append(rel)
    return sorted(out)


def make_snapshot(root: Path | str, *, limit_mb: float | None = None) -> Snapshot:
    """Pack ``root`` into a gzipped tar in memory; refuse above ``limit_mb``.

    The limit defaults to ``$LAUNCH_SNAPSHOT_LIMIT_MB`` or 200 MB: a snapshot that big nearly
    always means data or checkpoints were caught in it; they belong in a datastore.
    """
    root = Path(root).resolve()
    if limit_mb is None:
        limit_mb = float(os.environ.get("LAUNCH_SNAPSHOT_LIMIT_MB") or DEFAULT_LIMIT_MB)
    files = collect_files(root)
    sizes = {f: (root / f).stat().st_size for f in files}
    total = sum(sizes.values())
    if total > limit_mb * 1024 * 1024:
        biggest = sorted(sizes, key=sizes.get, reverse=True)[:3]
        listing = ", ".join(f"{f} ({sizes[f] / 1e6:.1f} MB)" for f in biggest)
        raise SnapshotError(
            f"the working directory {root} holds {total / 1e6:.1f} MB of files to snapshot, over "
            f"the {limit_mb:g} MB limit (largest: {listing}); add them to .launchignore and put "
            "data in a datastore, or raise LAUNCH_SNAPSHOT_LIMIT_MB"
        )
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for rel in files:
            try:
                tar.add(root / rel, arcname=rel, recursive=False)
            except OSError as e:
                raise SnapshotError(f"cannot read {root / rel} for the code snapshot: {e}") from e
    return Snapshot(data=buf.getvalue(), files=files, total_size=total)


def unpack_snapshot(archive: Path | str | bytes, dest: Path | str) -> Path:
    """Unpack a snapshot into ``dest`` (created). The ``data`` filter refuses members that would
    land outside ``dest`` or are devices/links out of it, whoever made the archive."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    fileobj = io.BytesIO(archive) if isinstance(archive, bytes) else open(archive, "rb")  # noqa: SIM115
    with fileobj, tarfile.open(fileobj=fileobj, mode="r:gz") as tar:
        tar.extractall(dest, filter="data")
    return dest
