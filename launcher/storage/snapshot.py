"""Snapshot the working directory into code.tar.gz, so editing code after launch changes nothing.

What goes in follows the project's own ignore rules (``.gitignore``, plus a ``.launchignore`` for
what should stay out of runs only), read with pathspec's gitignore semantics. Some paths never go
in whatever the rules say: VCS data, virtual environments, caches, pulled artifacts, and
``LAUNCH_HOME`` when it lies inside the working directory (other runs' code, logs, the index).
Files that look like credentials (:data:`CREDENTIALS`) stay out by default, named in one
warning; a negation in the root's ``.launchignore`` or ``.gitignore`` (``!.env``) takes one in
deliberately.

:func:`select_files` is the one place that decides what goes in and checks the size limit:
``launch run --dry-run`` and the real run both use it.
"""

from __future__ import annotations

import io
import logging
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from launcher.errors import LaunchError

log = logging.getLogger("launcher")

ALWAYS_EXCLUDED = (".git", ".hg", ".svn", ".venv", "__pycache__", "launch_artifacts")
IGNORE_FILES = (".gitignore", ".launchignore")
DEFAULT_LIMIT_MB = 200.0
#: Left out of snapshots unless a negation in the project's ignore files takes them in: they
#: would be uploaded (to S3 on AWS) with the code. Gitignore patterns.
CREDENTIALS = (
    ".aws/", ".ssh/", ".gnupg/", ".azure/", ".kube/", ".docker/config.json",
    ".config/gcloud/", ".env", ".env.*", "!.env.example", "!.env.sample", "!.env.template",
    "*.pem", "*.key", "*.p12", "*.pfx", "*.keystore", "*.jks", "id_rsa*", "id_dsa*",
    "id_ecdsa*", "id_ed25519*", ".netrc", ".pgpass", ".git-credentials", ".pypirc", ".npmrc",
    "credentials.json", "service-account*.json",
)  # fmt: skip


class SnapshotError(LaunchError):
    """The working directory cannot be snapshotted (too big, unreadable)."""


@dataclass
class Snapshot:
    """A packed working directory."""

    data: bytes
    files: list[str] = field(default_factory=list)
    total_size: int = 0


def _ignore_lines(directory: Path, names: tuple[str, ...] = IGNORE_FILES) -> list[str]:
    lines: list[str] = []
    for name in names:
        path = directory / name
        if path.is_file():
            lines += path.read_text(errors="replace").splitlines()
    return lines


def _load_spec(directory: Path, names: tuple[str, ...] = IGNORE_FILES):
    import pathspec

    lines = _ignore_lines(directory, names)
    return pathspec.GitIgnoreSpec.from_lines(lines) if lines else None


def _inside(path: Path, root: Path) -> str | None:
    """``path`` relative to ``root`` as ``a/b/``, if it is a folder strictly inside it."""
    try:
        rel = path.resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return None
    return f"{rel.as_posix()}/" if rel.parts else None


@dataclass
class FileSet:
    """What a snapshot of a folder holds (relative POSIX paths, sorted, and their sizes) and
    what it left out as credentials."""

    files: list[str]
    sizes: dict[str, int]
    credentials: list[str] = field(default_factory=list)

    @property
    def total_size(self) -> int:
        return sum(self.sizes.values())


def collect_files(root: Path | str, credentials: list[str] | None = None) -> list[str]:
    """Relative POSIX paths of the files a snapshot of ``root`` holds, sorted.

    The root's ``.gitignore`` and ``.launchignore`` apply everywhere; a ``.gitignore`` in a
    subfolder applies below it, its patterns relative to that folder, as git reads them.
    ``LAUNCH_HOME`` is left out when it is inside ``root``. Credential-looking files are left
    out unless a root ignore file's negation takes them in; their paths go to ``credentials``.
    """
    import pathspec

    from launcher.config import launch_home

    root = Path(root)
    specs: dict[str, object] = {}  # folder ("" or "a/b/") -> its spec
    root_lines = _ignore_lines(root)
    if root_lines:
        specs[""] = pathspec.GitIgnoreSpec.from_lines(root_lines)
    # the credential patterns first, so the project's own lines (a `!.env`) override them
    secrets = pathspec.GitIgnoreSpec.from_lines([*CREDENTIALS, *root_lines])
    home = _inside(launch_home(), root)

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
            and f"{rel_dir}{d}/" != home
        )
        for name in sorted(filenames):
            rel = f"{rel_dir}{name}"
            full = os.path.join(dirpath, name)
            if name.endswith(".pyc") or ignored(rel):
                continue
            if os.path.islink(full) or not os.path.isfile(full):
                continue  # links could point outside the snapshot; special files are not code
            if secrets.match_file(rel):
                if credentials is not None:
                    credentials.append(rel)
                continue
            out.append(rel)
    return sorted(out)


def _limit_mb(limit_mb: float | None) -> float:
    if limit_mb is not None:
        return limit_mb
    raw = os.environ.get("LAUNCH_SNAPSHOT_LIMIT_MB") or ""
    try:
        return float(raw) if raw else DEFAULT_LIMIT_MB
    except ValueError:
        raise SnapshotError(f"LAUNCH_SNAPSHOT_LIMIT_MB={raw!r} must be a number of MB") from None


def select_files(root: Path | str, *, limit_mb: float | None = None) -> FileSet:
    """The files a snapshot of ``root`` holds, with their sizes; SnapshotError above the size
    limit (``limit_mb``, else ``$LAUNCH_SNAPSHOT_LIMIT_MB``, else 200 MB), naming the biggest.
    Credential-looking files left out are named in one warning. The one check both
    ``launch run --dry-run`` and the real run make."""
    root = Path(root).resolve()
    limit_mb = _limit_mb(limit_mb)
    credentials: list[str] = []
    files = collect_files(root, credentials)
    sizes = {}
    for f in files:
        try:
            sizes[f] = (root / f).stat().st_size
        except OSError as e:
            raise SnapshotError(f"cannot read {root / f} for the code snapshot: {e}") from e
    total = sum(sizes.values())
    if total > limit_mb * 1024 * 1024:
        biggest = sorted(sizes, key=sizes.get, reverse=True)[:3]
        listing = ", ".join(f"{f} ({sizes[f] / 1e6:.1f} MB)" for f in biggest)
        raise SnapshotError(
            f"the working directory {root} holds {total / 1e6:.1f} MB of files to snapshot, over "
            f"the {limit_mb:g} MB limit (largest: {listing}); add them to .launchignore and put "
            "data in a datastore, or raise LAUNCH_SNAPSHOT_LIMIT_MB"
        )
    if credentials:
        more = len(credentials) - 10
        shown = ", ".join(credentials[:10]) + (f" and {more} more" if more > 0 else "")
        log.warning(
            "left out of the code snapshot as possible credentials: %s (a line `!PATH` in "
            ".launchignore takes one in)", shown,
        )  # fmt: skip
    return FileSet(files, sizes, credentials)


def make_snapshot(root: Path | str, *, limit_mb: float | None = None) -> Snapshot:
    """Pack ``root`` into a gzipped tar in memory; refuse above ``limit_mb``.

    The limit defaults to ``$LAUNCH_SNAPSHOT_LIMIT_MB`` or 200 MB: a snapshot that big nearly
    always means data or checkpoints were caught in it; they belong in a datastore.
    """
    root = Path(root).resolve()
    selected = select_files(root, limit_mb=limit_mb)
    files, total = selected.files, selected.total_size
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
