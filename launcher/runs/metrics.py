"""A run's leaderboard and metric curves, from each experiment's ``artifacts/metrics.csv``.

The CSV is Lightning CSVLogger's flat table (``epoch, step, train_loss, val_loss, val_acc1, ...``,
blank where a row did not log a column). The metric defaults to ``val_acc1`` when logged, else
the first ``val_`` column, else the first other metric. Its direction comes from its name:
``loss``/``err`` (error, mse/mae too) are minimized, everything else (accuracy, f1) maximized.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from launcher.errors import LaunchError, NotFoundError, SpecError
from launcher.storage.artifacts import experiment_ids
from launcher.storage.metrics_csv import Row, parse_metrics_csv
from launcher.storage.records import exp_key
from launcher.storage.root import Storage

INDEX_COLUMNS = ("epoch", "step")
_MIN_WORDS = ("loss", "err", "mse", "mae")


@dataclass(frozen=True)
class LeaderRow:
    """One experiment on the leaderboard; ``best``/``epoch`` are None until it logs the metric."""

    experiment: str
    params: dict[str, Any] = field(default_factory=dict)
    status: str = "unknown"
    metric: str | None = None
    best: float | None = None
    epoch: int | None = None
    rank: int | None = None  # 1 = best; None until the experiment logs the metric


class ExperimentData(NamedTuple):
    """What the leaderboard and the plot need of one experiment, as read from storage."""

    experiment: str
    params: dict[str, Any]
    status: str
    rows: list[Row]


def load_metrics(storage: Storage, run: str, exp: str) -> list[Row]:
    """An experiment's metrics rows; empty if it has not shipped a metrics.csv yet."""
    try:
        data = storage.read_bytes(exp_key(run, exp, "artifacts", "metrics.csv"))
    except FileNotFoundError:
        return []
    return parse_metrics_csv(data.decode(errors="replace"))


def columns(rows: list[Row]) -> list[str]:
    """Metric columns that hold at least one value, in file order (epoch/step excluded)."""
    seen: dict[str, None] = {}
    for r in rows:
        for k, v in r.items():
            if v is not None and k not in INDEX_COLUMNS:
                seen.setdefault(k)
    return list(seen)


def default_metric(available: list[str]) -> str | None:
    """val_acc1 if logged, else the first val_ column, else the first metric (None if none)."""
    if "val_acc1" in available:
        return "val_acc1"
    return next((c for c in available if c.startswith("val_")), available[0] if available else None)


def minimize(metric: str) -> bool:
    """True when lower is better for this metric, judged by its name."""
    return any(w in metric.lower() for w in _MIN_WORDS)


def curve(rows: list[Row], metric: str) -> list[tuple[int, float]]:
    """(epoch, value) points of a metric, one per epoch (the last logged value of each)."""
    points: dict[int, float] = {}
    for i, r in enumerate(rows):
        v = r.get(metric)
        if v is None:
            continue
        x = r.get("epoch")
        points[int(x) if x is not None else i] = v
    return sorted(points.items())


def read_run(storage: Storage, run: str) -> list[ExperimentData]:
    """Each experiment's params, state and metrics rows, read once. :func:`leaderboard` and
    :func:`plot_metrics` read them themselves; pass this as ``data=`` to share one read."""
    data = []
    for e in experiment_ids(storage, run):
        params = storage.read_json(exp_key(run, e, "params.json"), default=None) or {}
        status = storage.read_json(exp_key(run, e, "status.json"), default=None) or {}
        params, status = params.get("params") or {}, status.get("state", "queued")
        data.append(ExperimentData(e, params, status, load_metrics(storage, run, e)))
    return data


def _run_data(
    storage: Storage, run: str, metric: str | None, data: list[ExperimentData] | None
) -> tuple[str | None, list[ExperimentData]]:
    if data is None:
        data = read_run(storage, run)
    available: list[str] = []
    for *_, rows in data:
        available += [c for c in columns(rows) if c not in available]
    if metric is None:
        metric = default_metric(available)
    elif available and metric not in available:
        raise SpecError(
            f"metric {metric!r} was not logged by run {run}; logged: {', '.join(available)}"
        )
    return metric, data


def leaderboard(
    storage: Storage,
    run: str,
    metric: str | None = None,
    mode: str | None = None,
    *,
    data: list[ExperimentData] | None = None,
) -> list[LeaderRow]:
    """One row per experiment, best first; experiments without the metric come last.

    ``mode`` is "min" or "max" (default: from the metric's name, see :func:`minimize`).
    ``data`` is :func:`read_run`'s result when the caller has it already (else read here).
    """
    if mode not in (None, "min", "max"):
        raise SpecError(f"mode must be min or max, not {mode!r}")
    metric, data = _run_data(storage, run, metric, data)
    lower = minimize(metric) if mode is None and metric else mode == "min"
    rows = []
    for e, params, status, metric_rows in data:
        points = curve(metric_rows, metric) if metric else []
        best = (min if lower else max)(points, key=lambda p: p[1]) if points else None
        rows.append(
            LeaderRow(
                e,
                params,
                status,
                metric,
                best[1] if best else None,
                best[0] if best else None,
            )
        )

    def key(r: LeaderRow) -> tuple:
        if r.best is None:
            return (1, 0.0, int(r.experiment.split("-")[1]))
        return (0, r.best if lower else -r.best, int(r.experiment.split("-")[1]))

    ranked = sorted(rows, key=key)
    return [
        dataclasses.replace(r, rank=i + 1) if r.best is not None else r
        for i, r in enumerate(ranked)
    ]


def label(exp: str, params: dict[str, Any]) -> str:
    """A legend label naming an experiment by its params: ``exp-0: lr=0.01, backbone=x3d_m``."""
    if not params:
        return exp
    shown = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )
    return f"{exp}: {shown}"


#: What to install for :func:`plot_metrics` on a launcher-only install (pyproject's ``plot`` extra).
PLOT_EXTRA = "pip install 'launch-video[plot]'"


def plot_figure():
    """matplotlib's Figure class, imported on first use (it is heavy, and an optional extra); a
    LaunchError saying what to install when it is missing."""
    try:
        from matplotlib.figure import Figure
    except ModuleNotFoundError as e:
        if (e.name or "").partition(".")[0] != "matplotlib":
            raise  # matplotlib is there but something it needs is not: not ours to rename
        raise LaunchError(
            f"plotting metrics needs matplotlib (not installed here); install the plot extra: "
            f"{PLOT_EXTRA}"
        ) from None
    return Figure


def plot_metrics(
    storage: Storage,
    run: str,
    path: str | Path,
    metric: str | None = None,
    *,
    data: list[ExperimentData] | None = None,
) -> Path:
    """Write a PNG of each experiment's metric vs epoch (best marked with a star); returns path.

    ``data`` is :func:`read_run`'s result when the caller has it already (else read here).
    """
    metric, data = _run_data(storage, run, metric, data)
    series = [(label(e, p), curve(rows, metric)) for e, p, _, rows in data] if metric else []
    series = [(name, pts) for name, pts in series if pts]
    if not series:
        raise NotFoundError(f"no experiment of run {run} has logged metrics yet")
    figure = plot_figure()

    lower = minimize(metric)
    fig = figure(figsize=(9, 5.5), dpi=110, layout="constrained")
    ax = fig.subplots()
    for name, pts in series:
        xs, ys = zip(*pts, strict=True)
        (line,) = ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.6, label=name)
        bx, by = (min if lower else max)(pts, key=lambda p: p[1])
        ax.plot([bx], [by], marker="*", markersize=12, color=line.get_color())
    better = "lower" if lower else "higher"
    ax.set_title(f"{run}: {metric} by epoch ({better} is better, \u2605 = best)")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)
    if len(series) > 8:  # many experiments: legend beside the plot, not over the curves
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    else:
        ax.legend(fontsize="small", loc="best")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out
