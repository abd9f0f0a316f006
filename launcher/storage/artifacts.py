"""An experiment's outputs (checkpoints, metrics.csv, labels.txt) between a node and storage.

Stored under ``runs/RUN/experiments/EXP/artifacts/`` with the manifest ``artifacts.json``
(``{relpath: {"size", "sha256"}}``) next to it. The manifest is the truth: it is written after
the files it lists, so a reader never trusts a file that is still being written, and every
download is checked against it. Shipping is incremental (a file unchanged since it was last
hashed is not even read again) and mirrors the local folder: files the script deleted (old
checkpoints) are dropped from storage after the new manifest is written. A file that changes
while it is read (a checkpoint being written), or vanishes after it was listed (``last.tmp``
renamed over ``last.ckpt``), is not stored half-written: the upload is abandoned, the stored
copy stays as it was, and the next ship sends it. While the script runs, a file is shipped only
once it is stable (see :func:`ship_artifacts`), so a checkpoint written in place with pauses is
never listed half-written; the ship after the script exits takes every file as it is. A file
that cannot be shipped (its name, its permissions, a FIFO) is skipped and reported, and
everything else ships: one name never costs the others (:mod:`launcher.storage.manifest`).

A pull is strict (every byte checked against the manifest, retried when the run replaced the
file meanwhile) and mirrors: what the run deleted goes from the pulled copy too. A restore
before a retried attempt is forgiving, because a node can die after uploading a file but before
rewriting the manifest: uploads are whole, so the stored copy is taken, with a warning.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher.errors import NotFoundError, StorageError
from launcher.storage import manifest, records
from launcher.storage import transfer as mf
from launcher.storage.root import CorruptRecord, Storage

DEFAULT_DEST = "launch_artifacts"
log = logging.getLogger(__name__)

# A pull that finds a file changed under it (its stored bytes or its manifest entry moved on:
# the run shipped a newer copy meanwhile) reads the manifest again and retries. While the
# manifest still lists the old bytes (a ship uploads files first and rewrites the manifest
# after), it waits this long between tries before calling the file corrupt.
PULL_RETRY_WAITS = (0.2, 0.5, 1.0, 2.0, 4.0)
PULL_MAX_CHANGES = 20  # retries after the entry changed, for a file rewritten without pause


@dataclass(frozen=True)
class Artifact:
    """One stored artifact file of an experiment."""

    experiment: str
    path: str
    size: int
    sha256: str


@dataclass
class ShipReport:
    """What one ship did. ``deferred``: files not stable yet (a periodic ship takes a file only
    once it has sat unchanged for the settle interval; the stored copy, if any, stays).
    ``skipped``: (path, why) of what cannot be shipped at all (a name the manifest rule refuses,
    an unreadable file, a FIFO); everything else ships regardless."""

    uploaded: int = 0
    unchanged: int = 0
    deleted: int = 0
    bytes: int = 0
    deferred: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def skipped_message(self, most: int = 3) -> str:
        """One line naming what could not be shipped (empty if nothing), for a status."""
        if not self.skipped:
            return ""
        named = ", ".join(f"{rel!r} ({why})" for rel, why in self.skipped[:most])
        more = (
            f" and {len(self.skipped) - most} more (see the log)"
            if len(self.skipped) > most
            else ""
        )
        return f"{len(self.skipped)} artifact file(s) not shipped: {named}{more}"


def _check(run: str, exp: str | None = None) -> None:
    records.check_name(run)
    if exp is not None:
        records.check_experiment_id(exp)


def _quiet(message: str) -> None:
    pass


def read_manifest(
    storage: Storage, run: str, exp: str, *, warn: mf.Warn | None = None
) -> dict[str, dict[str, Any]]:
    """An experiment's artifacts.json (empty if nothing was shipped yet). Entries whose path
    the manifest rule refuses (written by an older version) are left out, each told to ``warn``
    (default: the ``launcher`` logger's warnings): one bad name never hides the rest."""
    _check(run, exp)
    key = records.exp_key(run, exp, "artifacts.json")
    files, refused = manifest.split_manifest(storage.read_json(key, default={}), storage.url(key))
    for rel, why in refused:
        (warn or log.warning)(f"{storage.url(key)}: ignoring the entry {rel!r}: {why}")
    return files


def _stable(st: os.stat_result, settle_s: float, now: float) -> bool:
    """Whether a file has sat unchanged (content and metadata) for ``settle_s``: a checkpoint
    written in place with pauses is not, a checkpoint renamed into place soon is."""
    return now - max(st.st_mtime_ns, st.st_ctime_ns) / 1e9 >= settle_s


# artifacts folder -> {relpath: inode} as the last ship of it saw them. A file under the same
# name with another inode was renamed into place (a writer's finished temp file replacing the
# old one) since that ship, and is whole however recent its mtime. A name absent from the last
# ship has no inode to compare with: it must settle.
_last_inodes: dict[str, dict[str, int]] = {}


def ship_artifacts(
    storage: Storage, run: str, exp: str, local_dir: str | Path, *, settle_s: float = 0.0
) -> ShipReport:
    """Upload new and changed files of ``local_dir``, then artifacts.json, then drop files no
    longer there.

    ``settle_s`` (periodic ships while the script runs): a changed file is taken only once it is
    stable: unchanged for ``settle_s`` seconds, or renamed into place over the file an earlier
    ship saw there. Until then the stored copy, if any, stays listed; a file that never was
    stable is never listed, so a restore never hands out half a checkpoint. With 0 (the ship
    after the script exited) every file is taken as it is: that ship is authoritative.

    A file that cannot be shipped (a name the manifest rule refuses, unreadable, not a regular
    file) is skipped and reported in :attr:`ShipReport.skipped`; everything else ships. Its
    stored copy, if an earlier ship stored one, is kept.
    """
    _check(run, exp)
    report = ShipReport()
    if not Path(local_dir).is_dir():  # the script removed its outputs: keep what is stored
        return report
    files, report.skipped = mf.scan_files(local_dir)
    before = _last_inodes.get(os.path.realpath(local_dir), {})
    _last_inodes[os.path.realpath(local_dir)] = {rel: st.st_ino for rel, (_, st) in files.items()}
    key = records.exp_key(run, exp, "artifacts.json")
    try:
        remote, refused = manifest.split_manifest(
            storage.read_json(key, default={}), storage.url(key)
        )
    except (CorruptRecord, manifest.CorruptManifest) as e:
        # cut short (a full disk, a crash mid-write on a file root): every file is sent again
        # and the manifest written whole; objects only the lost manifest knew stay orphaned
        log.warning(f"{e}; shipping every file again and rewriting it")
        remote, refused = {}, [("artifacts.json", "corrupt")]
    now = time.time()

    def one(rel: str) -> tuple[str, dict | None, str]:
        path, st = files[rel]
        stored = remote.get(rel)
        replaced = before.get(rel, st.st_ino) != st.st_ino
        if settle_s > 0 and not replaced and not _stable(st, settle_s, now):
            if stored is not None and mf.cached_sha256(path, st) == stored["sha256"]:
                return rel, stored, "unchanged"
            return rel, stored, "deferred"
        akey = records.exp_key(run, exp, "artifacts", rel)
        try:
            # periodic: the bytes sent must be the ones judged stable, not a rewrite since
            expect = st if settle_s > 0 else None
            entry, sent = mf.upload_changed(storage, path, akey, stored, expect=expect)
        except mf.FileChanged:
            # being rewritten, or renamed away since it was listed (last.tmp -> last.ckpt):
            # keep what is stored, if anything, and ship the file as it is next time
            return rel, stored, "deferred"
        except mf.Unreadable as e:
            return rel, stored, f"skipped: {e.reason}"
        return rel, entry, "uploaded" if sent else "unchanged"

    results = mf.parallel(one, sorted(files), mf.workers_for(storage))
    new = {rel: entry for rel, entry, _ in results if entry is not None}
    skipped_paths = {rel for rel, _ in report.skipped}
    for rel, entry, what in results:
        if what == "uploaded":
            report.uploaded += 1
            report.bytes += entry["size"]
        elif what == "unchanged":
            report.unchanged += 1
        elif what == "deferred":
            report.deferred.append(rel)
        else:
            report.skipped.append((rel, what.removeprefix("skipped: ")))
            skipped_paths.add(rel)
    for rel in remote:  # still there, just not shippable now (or in a folder that cannot be
        # listed): keep its stored copy
        if any(rel == s or rel.startswith(f"{s}/") or s == "." for s in skipped_paths):
            new.setdefault(rel, remote[rel])
    gone = sorted(set(remote) - set(new))
    if new != remote or refused:
        storage.write_json(key, new)
    for rel in gone:
        storage.delete(records.exp_key(run, exp, "artifacts", rel))
    for rel, why in refused:  # a name an older version stored: its object goes with its entry
        if why != "corrupt":
            with contextlib.suppress(StorageError):  # not even a valid key: nothing stored there
                storage.delete(records.exp_key(run, exp, "artifacts", rel))
    report.deleted = len(gone)
    report.skipped.sort()
    return report


def restore_artifacts(
    storage: Storage, run: str, exp: str, local_dir: str | Path, *, warn: mf.Warn | None = None
) -> list[Path]:
    """Download an experiment's stored artifacts into ``local_dir`` (before a retried attempt,
    so the script resumes from its last checkpoint); files already right are kept.

    Only what the manifest lists is restored, and a ship lists a file only once it is whole
    (see :func:`ship_artifacts`). Forgiving where a pull is strict: a node killed after
    uploading a file but before rewriting artifacts.json leaves a manifest older than the files.
    Each upload is whole, so a file whose stored bytes differ from the manifest is taken as
    stored, and a listed file that is gone is skipped; each is reported to ``warn`` (default:
    the ``launcher`` logger's warnings), as are manifest entries whose names are refused.
    """
    warn = warn or log.warning
    try:
        files = read_manifest(storage, run, exp, warn=warn)
    except (CorruptRecord, manifest.CorruptManifest) as e:  # the script starts afresh, not never
        warn(f"{e}; nothing restored")
        files = {}
    Path(local_dir).mkdir(parents=True, exist_ok=True)
    mf.remove_extras(Path(local_dir), set(), extras=False)  # a killed restore's temporary files
    jobs = mf.plan_down(records.exp_key(run, exp, "artifacts"), files, Path(local_dir))
    return mf.sync_down(storage, jobs, warn=warn)


def experiment_ids(storage: Storage, run: str, experiment: str | None = None) -> list[str]:
    """A run's experiment ids in order (or just ``experiment``, checked); NotFoundError if the
    run or the experiment does not exist."""
    _check(run, experiment)
    if not storage.exists(f"runs/{run}/run.json"):
        raise NotFoundError(f"run {run!r} not found under {storage.root_url}")
    exps = sorted(
        (e for e in storage.list(f"runs/{run}/experiments") if records.EXPERIMENT_ID.fullmatch(e)),
        key=lambda e: int(e.split("-")[1]),
    )
    if experiment is None:
        return exps
    if experiment not in exps:
        raise NotFoundError(
            f"run {run} has no experiment {experiment!r}; experiments: {', '.join(exps) or 'none'}"
        )
    return [experiment]


def list_artifacts(storage: Storage, run: str, exp: str | None = None) -> list[Artifact]:
    """Every stored artifact of a run (or of one experiment), by experiment then path."""
    return [
        Artifact(e, rel, entry["size"], entry["sha256"])
        for e in experiment_ids(storage, run, exp)
        for rel, entry in sorted(read_manifest(storage, run, e).items())
    ]


def pull_artifacts(
    storage: Storage,
    run: str,
    *,
    experiment: str | None = None,
    dest: str | Path = DEFAULT_DEST,
    progress: mf.Progress | None = None,
    keep_extra: bool = False,
    removed: Callable[[Path], None] | None = None,
    warn: mf.Warn | None = None,
) -> list[Path]:
    """Download a run's artifacts to ``dest/RUN/EXP/...``; returns the local paths.

    Parallel, verified by sha256, safe to rerun (files already right are skipped, an
    interrupted pull leaves no half-file, and the temporary files a killed pull left are
    removed by the next), and never writes outside ``dest``: a manifest path that is absolute or
    climbs out with ``..`` is refused. A file the run replaces while it is pulled is fetched
    again from the new manifest, and one the run deletes meanwhile is dropped.

    Each ``dest/RUN/EXP`` becomes a mirror of the experiment's artifacts: once everything is
    downloaded, files there the run no longer has (older checkpoints it deleted) are removed,
    each told to ``removed``, unless ``keep_extra``. Nothing outside ``dest/RUN/EXP`` is ever
    removed, and nothing is removed by a pull that failed.
    """
    warn = warn or log.warning
    dest = Path(dest)
    folders: dict[str, Path] = {}
    jobs: list[tuple[str, str, Path, dict]] = []
    for e in experiment_ids(storage, run, experiment):
        folders[e] = folder = dest / run / e
        files = read_manifest(storage, run, e, warn=warn)
        planned = mf.plan_down(records.exp_key(run, e, "artifacts"), files, folder)
        jobs += [
            (e, rel, target, entry) for rel, (_, target, entry) in zip(files, planned, strict=True)
        ]
        if _inside(folder, dest):
            mf.remove_extras(folder, set(), extras=False)  # a killed pull's temporary files
    counter = mf.ByteCounter(sum(entry["size"] for *_, entry in jobs), progress)

    def one(job: tuple[str, str, Path, dict]) -> tuple[str, str, Path | None]:
        e, rel, target, entry = job
        return e, rel, _pull_one(storage, run, e, rel, target, entry, counter)

    results = mf.parallel(one, jobs, mf.workers_for(storage))
    for e, folder in folders.items():
        if not _inside(folder, dest):
            if not keep_extra and folder.exists():
                warn(f"not removing files from {folder}: it leads outside {dest}")
            continue
        keep = {rel for exp, rel, path in results if exp == e and path is not None}
        for p in mf.remove_extras(folder, keep, extras=not keep_extra):
            if removed:
                removed(p)
    return [path for *_, path in results if path is not None]


def _inside(folder: Path, dest: Path) -> bool:
    """Whether ``folder`` is a real folder (or not there yet) that resolves inside ``dest``."""
    return not any(p.is_symlink() for p in (folder, folder.parent)) and (
        folder.resolve().is_relative_to(dest.resolve())
    )


class _JobCounter:
    """One download's share of the pull's byte count, taken back if that try fails."""

    def __init__(self, parent: mf.ByteCounter):
        self.parent, self.n = parent, 0

    def add(self, n: int) -> None:
        self.n += n
        self.parent.add(n)

    def undo(self) -> None:
        self.parent.add(-self.n)
        self.n = 0


def _pull_one(
    storage: Storage, run: str, exp: str, rel: str, target: Path, entry: dict,
    counter: mf.ByteCounter,
) -> Path | None:  # fmt: skip
    """Download one artifact, verified; on a mismatch or a missing object, read the manifest
    again: follow a newer entry, drop a deleted file (None), or wait for the manifest to catch
    up with a newer upload; corrupt only if the manifest keeps vouching for other bytes."""
    key = records.exp_key(run, exp, "artifacts", rel)
    waits = iter(PULL_RETRY_WAITS)
    changes = 0
    while True:
        share = _JobCounter(counter)
        try:
            return mf.download(storage, key, target, entry, share)
        except (mf.Mismatch, mf.Missing, mf.Replaced):
            share.undo()
            fresh = read_manifest(storage, run, exp, warn=_quiet).get(rel)
            if fresh is None:
                return None  # the run deleted it since the pull began
            if fresh != entry and changes < PULL_MAX_CHANGES:
                entry, changes = fresh, changes + 1
                continue
            wait = next(waits, None)
            if wait is None:
                raise
            time.sleep(wait)
