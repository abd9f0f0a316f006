"""What every command prints with: aligned tables, ages, sizes, state colours."""

from __future__ import annotations

import time

import click

STATE_COLORS = {"succeeded": "green", "failed": "red", "stopped": "yellow", "running": "cyan",
                "stopping": "yellow", "queued": "white", "missing": "red",
                "pending": "white", "terminated": "white", "dead": "red"}  # fmt: skip


def table(headers: list[str], rows: list[list[str]], colors: dict[int, callable] | None = None):
    """Plain aligned columns (fast for thousands of rows, unlike a rich table)."""
    widths = [len(h) for h in headers]
    for r in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, r, strict=True)]
    click.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    out = []
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r, widths, strict=True)]
        for i, color in (colors or {}).items():
            cells[i] = click.style(cells[i], fg=color(r[i]))
        out.append("  ".join(cells).rstrip())
    if out:
        click.echo("\n".join(out))


def age(t: float | None) -> str:
    if not t:
        return "-"
    s = max(0, time.time() - t)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{int(s // size)}{unit}"
    return f"{int(s)}s"


def size(n: float) -> str:
    """Bytes for people: 512 B, 4.1 KB, 2.3 GB."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def state_color(state: str) -> str:
    return STATE_COLORS.get(state.strip(), "white")


def print_experiments(views) -> None:
    """The experiments table; with a ``nodes`` column (rank 0 first) when they span nodes."""
    gangs = any(v.nodes for v in views)
    rows = []
    for v in views:
        params = " ".join(f"{k}={val}" for k, val in v.params.items()) or "-"
        metric = _latest_metric(v.metrics)
        code = _exit_code(v.exit_code)
        row = [v.id, params, v.state, code, str(v.attempt), metric, v.message or ""]
        if gangs:
            row.insert(5, ",".join(v.nodes) or "-")
        rows.append(row)
    headers = ["id", "params", "status", "exit", "attempt", "metric", "message"]
    if gangs:
        headers.insert(5, "nodes")
    table(headers, rows, colors={2: state_color})


def _exit_code(code: int | None) -> str:
    """``0``, ``3``, or the signal that ended the script (``SIGTERM`` rather than ``-15``)."""
    if code is None:
        return "-"
    if code < 0:
        import signal

        try:
            return signal.Signals(-code).name
        except ValueError:
            pass
    return str(code)


def _latest_metric(metrics: dict) -> str:
    for key in ("val_acc1", "val_loss", "train_loss"):
        if key in metrics:
            return f"{key}={metrics[key]:.4g}"
    keys = [k for k in metrics if k not in ("epoch", "step")]
    return f"{keys[0]}={metrics[keys[0]]:.4g}" if keys else "-"
