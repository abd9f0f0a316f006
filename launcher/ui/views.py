"""What the dashboard's pages show, as plain dicts ready for JSON: read-only, no web framework.

Every function here only reads storage (and asks backends what exists): the runs table comes from
:func:`launcher.runs.list_runs` with ``reconcile=False``, a run from :meth:`RunContext.refresh`
(read-only), metrics through the one CSV reader (:mod:`launcher.storage.metrics_csv`) and the
leaderboard of :mod:`launcher.runs.metrics`, logs by numbered pieces, artifacts through their
manifest. Nothing starts a node, re-queues or writes a record (the index, a cache, excepted).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from launcher.errors import NotFoundError
from launcher.runs import RunContext, list_runs
from launcher.runs import metrics as rm
from launcher.runs.index import FINISHED
from launcher.storage import records
from launcher.storage.metrics_csv import parse_metrics_csv

#: Curves of at most this many experiments go into a run page (the best first); a sweep of
#: 1,000 still gets its table, its parameter charts and the curves that matter.
MAX_CURVES = 100
#: A first look at a log reads back from its end until this many bytes.
LOG_TAIL_BYTES = 256 * 1024
#: A follow-up read of a log takes at most this many new pieces (the next poll takes the rest).
LOG_MAX_PIECES = 64
#: Metrics the run page overlays when logged (each experiment's curve by epoch).
OVERLAY = ("val_acc1", "train_loss")


def runs_page() -> dict[str, Any]:
    """Every run storage holds, newest first, as ``launch status`` lists them (never
    reconciled: looking starts nothing)."""
    rows = list_runs(reconcile=False)
    return {"runs": [asdict(r) for r in rows]}


def _price_hour(ctx: RunContext) -> float | None:
    if not ctx.backend.capabilities.cost or not ctx.row.instance_type:
        return None
    from launcher.spec.catalog import get_instance

    it = get_instance(ctx.row.instance_type)
    return it.spot_price_hour if ctx.row.spot else it.price_hour


def _metrics_rows(ctx: RunContext, exps: list[str]) -> dict[str, list]:
    """Each experiment's metrics.csv rows, read in one batch (concurrent on S3)."""
    keys = {e: records.exp_key(ctx.name, e, "artifacts", "metrics.csv") for e in exps}
    data = ctx.storage.read_many(list(keys.values()))
    return {
        e: parse_metrics_csv(data[k].decode(errors="replace")) if data[k] is not None else []
        for e, k in keys.items()
    }


def run_page(name: str) -> dict[str, Any]:
    """A run (sweep): its summary, one row per experiment (params, status, attempts, node,
    duration, cost estimate, best metric), and the curves of its best experiments."""
    ctx = RunContext(name)
    row, views = ctx.refresh()
    record = ctx.record()
    rows = _metrics_rows(ctx, [v.id for v in views])
    data = [rm.ExperimentData(v.id, v.params, v.state, rows[v.id]) for v in views]
    board = {b.experiment: b for b in rm.leaderboard(ctx.storage, ctx.name, data=data)}
    metric = next((b.metric for b in board.values() if b.metric), None)
    price = _price_hour(ctx)
    nodes_per_exp = int((record.get("spec") or {}).get("nodes") or 1)
    params: dict[str, None] = {}
    experiments = []
    for v in views:
        params.update(dict.fromkeys(v.params))
        b = board[v.id]
        experiments.append({
            "id": v.id, "params": v.params, "state": v.state, "attempt": v.attempt,
            "node": v.node, "nodes": v.nodes, "exit_code": v.exit_code, "started": v.started,
            "ended": v.ended, "message": v.message, "best": b.best, "best_epoch": b.epoch,
            "rank": b.rank,
        })  # fmt: skip
    ranked = sorted(board.values(), key=lambda b: (b.rank is None, b.rank or 0))
    shown = [b.experiment for b in ranked[:MAX_CURVES]]
    available = []
    for d in data:
        available += [c for c in rm.columns(d.rows) if c not in available]
    overlay = [m for m in OVERLAY if m in available] or ([metric] if metric else [])
    curves = {
        m: {e: rm.curve(rows[e], m) for e in shown if rows[e]} for m in overlay
    }  # fmt: skip
    # no clock in the answer: an unchanged run answers the same bytes (ETag, 304); the page
    # works out durations, and costs from the hourly rate, itself
    return {
        "run": asdict(row),
        "cost_per_hour": price * nodes_per_exp if price is not None else None,
        "description": (record.get("spec") or {}).get("description") or "",
        "script": (record.get("spec") or {}).get("script") or "",
        "params": list(params),
        "metric": metric,
        "minimize": rm.minimize(metric) if metric else False,
        "experiments": experiments,
        "curves": curves,
        "curves_of": len(shown),
        "finished": row.status in FINISHED,
    }


def _claims(ctx: RunContext, exp: str) -> list[dict[str, Any]]:
    import json

    numbers = records.claim_numbers(ctx.storage, ctx.name, exp)
    keys = [records.claim_key(ctx.name, exp, n) for n in numbers]
    raw = ctx.storage.read_many(keys)
    out = []
    for n, k in zip(numbers, keys, strict=True):
        try:
            claim = json.loads(raw[k]) if raw[k] else {}
        except ValueError:
            claim = {}
        claim = claim if isinstance(claim, dict) else {}
        out.append({"attempt": n, "node": claim.get("node"), "time": claim.get("time")})
    return out


def experiment_page(name: str, exp: str) -> dict[str, Any]:
    """An experiment: args, params, status and its attempts' history (one claim each). Only
    this experiment's records are read, however big its sweep."""
    from launcher.runs.state import experiment_views

    ctx = RunContext(f"{name}/{exp}")
    ctx.experiment_ids()  # NotFoundError naming the experiments there
    entry = next(e for e in ctx.record()["experiments"] if e["id"] == exp)
    status = records.read_status(ctx.storage, ctx.name, exp)
    [v] = experiment_views({"experiments": [entry]}, {exp: status})
    row = ctx.row
    return {
        "run": {"name": row.name, "backend": row.backend, "instance_type": row.instance_type},
        "experiment": asdict(v),
        "finished": v.state in records.TERMINAL,
        "history": _claims(ctx, exp),
    }


def experiment_metrics(name: str, exp: str) -> dict[str, Any]:
    """An experiment's metric columns and their curves by epoch, from its metrics.csv."""
    records.check_name(name)
    records.check_experiment_id(exp)
    ctx = RunContext(f"{name}/{exp}")
    ctx.experiment_ids()
    rows = _metrics_rows(ctx, [exp])[exp]
    cols = rm.columns(rows)
    return {
        "columns": cols,
        "metric": rm.default_metric(cols),
        "curves": {c: rm.curve(rows, c) for c in cols},
    }


def log_tail(name: str, exp: str, offset: int | None = None) -> dict[str, Any]:
    """New log text of an experiment from piece ``offset`` on (``next`` is the offset to ask
    for next time): only pieces not read before are read. Without an offset, the tail: pieces
    read back from the last until :data:`LOG_TAIL_BYTES`, ``skipped`` saying how many earlier
    ones were left out."""
    ctx = RunContext(f"{name}/{exp}")
    ctx.experiment_ids()
    # status before pieces: a finished status means its last piece is already there
    done = records.read_status(ctx.storage, ctx.name, exp)["state"] in records.TERMINAL
    pieces = records.log_pieces(ctx.storage, ctx.name, exp)

    def read(piece: str) -> str:
        key = records.log_key(ctx.name, exp, piece)
        return ctx.storage.read_bytes(key).decode(errors="replace")

    if offset is None:
        texts: list[str] = []
        size, start = 0, len(pieces)
        while start > 0 and size < LOG_TAIL_BYTES:
            start -= 1
            texts.append(read(pieces[start]))
            size += len(texts[-1])
        return {"text": "".join(reversed(texts)), "next": len(pieces), "skipped": start,
                "done": done}  # fmt: skip
    offset = max(0, min(offset, len(pieces)))
    new = pieces[offset : offset + LOG_MAX_PIECES]
    more = offset + len(new) < len(pieces)
    return {"text": "".join(read(p) for p in new), "next": offset + len(new), "skipped": 0,
            "done": done and not more}  # fmt: skip


def artifacts(name: str, exp: str) -> list[dict[str, Any]]:
    """An experiment's stored artifacts (what its manifest lists)."""
    from launcher.storage.artifacts import list_artifacts

    ctx = RunContext(f"{name}/{exp}")
    return [asdict(a) for a in list_artifacts(ctx.storage, ctx.name, exp)]


def fetch_artifact(name: str, exp: str, rel: str, folder: str) -> Path:
    """Download one artifact into ``folder``, verified against its manifest entry as ``launch
    artifacts pull`` verifies it; its local path. A path the manifest rule refuses (absolute,
    ``..``) is a StorageError before anything is read, one the manifest does not list is
    NotFoundError, bytes that differ from the manifest a StorageError."""
    from launcher.storage import manifest
    from launcher.storage import transfer as mf
    from launcher.storage.artifacts import read_manifest

    records.check_name(name)
    records.check_experiment_id(exp)
    manifest.safe_relpath(rel)  # the one rule for manifest paths: nothing outside the run
    ctx = RunContext(f"{name}/{exp}")
    ctx.experiment_ids()
    files = read_manifest(ctx.storage, ctx.name, exp)
    if rel not in files:
        raise NotFoundError(f"{name}/{exp} has no artifact {rel!r}")
    prefix = records.exp_key(ctx.name, exp, "artifacts")
    [(key, target, entry)] = mf.plan_down(prefix, {rel: files[rel]}, Path(folder))
    return mf.download(ctx.storage, key, target, entry)
