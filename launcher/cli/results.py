"""Commands on a run's results: ``launch metrics`` and ``launch predict``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click

from launcher.cli.output import table
from launcher.errors import LaunchError


@click.command()
@click.argument("run")
@click.option("--metric", "-m", help="Metric to rank by (default val_acc1; *loss is minimised).")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write a PNG of the curves.")
def metrics(run: str, metric: str | None, plot: str | None) -> None:
    """A run's leaderboard: each experiment's best value of a metric."""
    from launcher.runs import RunContext
    from launcher.runs import metrics as m

    if plot:
        m.plot_figure()  # a missing matplotlib is said before anything is read
    ctx = RunContext(run)
    data = m.read_run(ctx.storage, ctx.name)  # read once for the table and the plot
    rows = m.leaderboard(ctx.storage, ctx.name, metric=metric, data=data)
    metric_name = next((r.metric for r in rows if r.metric), metric)
    table(
        ["rank", "experiment", "params", "status", f"best {metric_name or ''}".strip(), "epoch"],
        [["-" if r.rank is None else str(r.rank), r.experiment,
          m.label(r.experiment, r.params).partition(": ")[2] or "-",
          r.status, "-" if r.best is None else f"{r.best:.4g}",
          "-" if r.epoch is None else str(r.epoch)] for r in rows],
    )  # fmt: skip
    if plot:
        m.plot_metrics(ctx.storage, ctx.name, plot, metric=metric, data=data)
        click.secho(f"plot written to {plot}", err=True, dim=True)


@click.command(short_help="Classify videos with a checkpoint or a run's best one.")
@click.argument("source", metavar="RUN|CHECKPOINT")
@click.argument("videos", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--top-k",
    "--top_k",
    "-k",
    "top_k",
    type=click.IntRange(min=1),
    help="Print the K best labels with probabilities.",
)
@click.option("--metric", "-m", help="Metric choosing the best experiment (default val_acc1).")
@click.option("--dest", default="launch_artifacts", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def predict(
    source: str, videos, top_k: int | None, metric: str | None, dest: str, as_json: bool
) -> None:
    """Classify VIDEOS (files or folders) with a checkpoint, or with RUN's best experiment's best
    checkpoint (pulled to DEST when not there yet)."""
    ckpt = Path(source)
    if not ckpt.is_file():
        from launcher.runs.results import best_checkpoint

        ckpt = best_checkpoint(source, metric=metric, dest=dest)
        click.secho(f"using {ckpt}", err=True, dim=True)
    cmd = [sys.executable, "-m", "trainer.predict", str(ckpt), *videos]
    if top_k is not None:
        cmd += ["--top_k", str(top_k)]
    if as_json:
        cmd.append("--json")
    code = subprocess.call(cmd)  # torch loads there, never in the launcher
    if code:
        raise LaunchError(f"prediction failed (trainer.predict exited with {code})")
