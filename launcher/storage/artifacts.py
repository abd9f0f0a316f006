"""An experiment's outputs (checkpoints, metrics.csv, labels.txt) between a node and storage.

Stored under ``runs/RUN/experiments/EXP/artifacts/`` with the manifest ``artifacts.json``
(``{relpath: {"size", "sha256"}}``) next to it. The manifest is the truth: it is written after
the files it lists, so a reader never trusts a file that is still being written, and every
download is checked against it. Shipping is incremental (a file unchanged since it was last
hashed is not even read again) and mirrors the local folder: files the script deleted (old
checkpoints) are dropped from storage after the new manifest is written. A file that changes
while it is read (a checkpoint being written), or vanishes after it was listed (``last.tmp``
renamed over ``last.ckpt``), is not stored half-written: the upload is abandoned, the stored
copy stays as it was, and the next ship sends it.

A pull is strict (every byte checked against the manifest); a restore before a retried attempt
is forgiving, because a node can die after uploading a file but before rewriting the manifest:
uploads are whole, so the stored copy is taken, with a warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.errors import NotFoundError
from launcher.storage import records
from launcher.storage import transfer as mf
from launcher.storage.root import Storage

DEFAULT_DEST = "launch_artifacts"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Artifact:
    """One stored artifact file of an experiment."""

    experiment: str
    path: str
    size: int
    sha256: str


def _check(run: str, exp: str | None = None) -> None:
    records.check_name(run)
    if exp is not None:
        records.check_experiment_id(exp)


def read_manifest(storage: Storage, run: str, exp: str) -> dict[str, dict[str, Any]]:
    """An experiment's artifacts.json (empty if nothing was shipped yet)."""
    _check(run, exp)
    key = records.exp_key(run, exp, "artifacts.json")
    return mf.check_manifest(storage.read_json(key, default={}), storage.url(key))


def ship_artifacts(storage: Storage, run: str, exp: str, local_dir: str | Path) -> dict[str, int]:
    """Upload new and changed files of ``local_dir``, then artifacts.json, then drop files no
    longer there. Returns counts: uploaded, unchanged, deleted, and bytes uploaded."""
    _check(run, exp)
    files = mf.local_files(local_dir)
    remote = read_manifest(storage, run, exp)

    def one(rel: str) -> tuple[str, dict | None, bool]:
        key = records.exp_key(run, exp, "artifacts", rel)
        try:
            return (rel, *mf.upload_changed(storage, files[rel], key, remote.get(rel)))
        except mf.FileChanged:
            # being rewritten, or renamed away since it was listed (last.tmp -> last.ckpt):
            # keep what is stored, if anything, and ship the file as it is next time
            return rel, remote.get(rel), False

    results = mf.parallel(one, sorted(files), mf.workers_for(storage))
    manifest = {rel: entry for rel, entry, _ in results if entry is not None}
    gone = sorted(set(remote) - set(files))
    if manifest != remote:
        storage.write_json(records.exp_key(run, exp, "artifacts.json"), manifest)
    for rel in gone:
        storage.delete(records.exp_key(run, exp, "artifacts", rel))
    uploaded = [entry for _, entry, sent in results if sent]
    return {
        "uploaded": len(uploaded),
        "unchanged": len(results) - len(uploaded),  # deferred files (mid-write) included
        "deleted": len(gone),
        "bytes": sum(e["size"] for e in uploaded),
    }


def restore_artifacts(
    storage: Storage, run: str, exp: str, local_dir: str | Path, *, warn: mf.Warn | None = None
) -> list[Path]:
    """Download an experiment's stored artifacts into ``local_dir`` (before a retried attempt,
    so the script resumes from its last checkpoint); files already right are kept.

    Forgiving where a pull is strict: a node killed after uploading a file but before rewriting
    artifacts.json leaves a manifest older than the files. Each upload is whole, so a file whose
    stored bytes differ from the manifest is taken as stored, and a listed file that is gone is
    skipped; each is reported to ``warn`` (default: the ``launcher`` logger's warnings).
    """
    files = read_manifest(storage, run, exp)
    Path(local_dir).mkdir(parents=True, exist_ok=True)
    jobs = mf.plan_down(records.exp_key(run, exp, "artifacts"), files, Path(local_dir))
    return mf.sync_down(storage, jobs, warn=warn or log.warning)


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
) -> list[Path]:
    """Download a run's artifacts to ``dest/RUN/EXP/...``; returns the local paths.

    Parallel, verified by sha256, safe to rerun (files already right are skipped, an
    interrupted pull leaves no half-file), and never writes outside ``dest``: a manifest path
    that is absolute or climbs out with ``..`` is refused.
    """
    exps = experiment_ids(storage, run, experiment)
    jobs = []
    for e in exps:
        files = read_manifest(storage, run, e)
        jobs += mf.plan_down(records.exp_key(run, e, "artifacts"), files, Path(dest) / run / e)
    return mf.sync_down(storage, jobs, progress)
