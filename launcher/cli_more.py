"""``launch`` commands around runs: datastores, artifacts, metrics, predict, instances, config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click

from launcher.errors import LaunchError, NotFoundError


def _storage(backend: str | None):
    """The storage root of a backend (default: config defaults.backend, else local)."""
    from launcher.backends.base import get_backend
    from launcher.config import get_setting

    return get_backend(backend or get_setting("defaults.backend", "local")).storage()


_backend_option = click.option(
    "--backend",
    type=click.Choice(["local", "aws"]),
    help="Whose storage (default: config defaults.backend, else local).",
)


# -- datastore -------------------------------------------------------------------------------
@click.group(short_help="Versioned, immutable data sets that runs mount.")
def datastore() -> None:
    """Versioned, immutable data sets that runs mount."""


@datastore.command("create")
@click.option("--name", required=True, help="Datastore name ([a-z0-9][a-z0-9._-]*).")
@click.option("--source", required=True, type=click.Path(exists=True), help="File or folder.")
@_backend_option
def datastore_create(name: str, source: str, backend: str | None) -> None:
    """Upload SOURCE as the next version of datastore NAME (resumable)."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from launcher.datastore import create_datastore

    storage = _storage(backend)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        transient=True,
        console=Console(stderr=True),  # stdout holds only the result: NAME:VERSION
    ) as bar:
        task = bar.add_task(f"uploading {name}", total=None)

        def progress(done: int, total: int, *_: object) -> None:
            bar.update(task, completed=done, total=total)

        version = create_datastore(storage, name, source, progress=progress)
    click.echo(f"{name}:{version}")


@datastore.command("list")
@_backend_option
def datastore_list(backend: str | None) -> None:
    """Datastores and their versions."""
    from launcher.cli import size, table
    from launcher.datastore import list_datastores

    rows = []
    for d in list_datastores(_storage(backend)):
        if d.complete:
            rows.append([d.name, str(d.version), str(d.files), size(d.size), d.created or "-"])
        else:  # no MANIFEST.json yet: an interrupted (or running) create
            rows.append([d.name, str(d.version), "incomplete", "-", "-"])
    if not rows:
        click.secho("no datastores yet (`launch datastore create` makes one)", err=True, dim=True)
        return
    table(["name", "version", "files", "size", "created"], rows,
          colors={2: lambda c: "yellow" if c == "incomplete" else None})  # fmt: skip


@datastore.command("delete")
@click.argument("ref", metavar="NAME[:VERSION]")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@_backend_option
def datastore_delete(ref: str, yes: bool, backend: str | None) -> None:
    """Delete a datastore version (or all its versions)."""
    from launcher.datastore import delete_datastore, list_datastores

    name, _, version = ref.partition(":")
    if version and not version.isdigit():
        raise click.BadParameter(f"{ref!r}: VERSION must be a number", param_hint="NAME[:VERSION]")
    storage = _storage(backend)
    if not yes:
        there = [d.version for d in list_datastores(storage, name)]
        if there and not version:  # say what "all" means before anything is gone
            what = f"{name} (versions {', '.join(map(str, there))})" if len(there) > 1 else ref
            click.confirm(f"delete datastore {what}?", abort=True)
        elif there and int(version) in there:
            click.confirm(f"delete datastore {ref}?", abort=True)
    deleted = delete_datastore(storage, name, int(version) if version else None)  # NotFoundError
    click.echo(f"deleted {', '.join(f'{name}:{v}' for v in deleted)}")


# -- artifacts -------------------------------------------------------------------------------
@click.group(short_help="List and pull what experiments saved.")
def artifacts() -> None:
    """What experiments wrote to LAUNCH_ARTIFACTS_DIR: checkpoints, metrics, labels."""


@artifacts.command("list")
@click.argument("target", metavar="RUN[/EXP]")
def artifacts_list(target: str) -> None:
    """Artifacts of a run's experiments, with sizes."""
    from launcher.artifacts import list_artifacts
    from launcher.cli import size, table
    from launcher.runs import RunContext

    ctx = RunContext(target)
    ctx.experiment_ids()  # NotFoundError for an unknown experiment
    rows = [[a.experiment, a.path, size(a.size)]
            for a in list_artifacts(ctx.storage, ctx.name, ctx.exp)]  # fmt: skip
    if not rows:
        click.secho(f"{target} has no artifacts yet", err=True, dim=True)
        return
    table(["experiment", "path", "size"], rows)


@artifacts.command("pull")
@click.argument("target", metavar="RUN[/EXP]")
@click.option("--experiment", "-e", help="Only this experiment (same as RUN/EXP).")
@click.option("--dest", default="launch_artifacts", show_default=True, help="Local folder.")
def artifacts_pull(target: str, experiment: str | None, dest: str) -> None:
    """Download artifacts (sha256-verified) to DEST/RUN/EXP/..."""
    from launcher.artifacts import pull_artifacts
    from launcher.runs import RunContext

    ctx = RunContext(target)
    if experiment and ctx.exp and experiment != ctx.exp:
        raise click.UsageError(f"{target} and --experiment {experiment} name different experiments")
    ctx.exp = ctx.exp or experiment
    ctx.experiment_ids()  # NotFoundError for an unknown experiment
    paths = pull_artifacts(ctx.storage, ctx.name, experiment=ctx.exp, dest=dest)
    for p in paths:
        click.echo(str(p))
    click.secho(f"{len(paths)} file(s) under {dest}", err=True, dim=True)


# -- metrics and predict ---------------------------------------------------------------------
@click.command()
@click.argument("run")
@click.option("--metric", "-m", help="Metric to rank by (default val_acc1; *loss is minimised).")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write a PNG of the curves.")
def metrics(run: str, metric: str | None, plot: str | None) -> None:
    """A run's leaderboard: each experiment's best value of a metric."""
    from launcher import metrics as m
    from launcher.cli import table
    from launcher.runs import RunContext

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


def best_checkpoint(run: str, *, metric: str | None = None, dest: str = "launch_artifacts") -> Path:
    """The best experiment's best.ckpt (by the run's metric), pulled to DEST if not there yet."""
    from launcher import metrics as m
    from launcher.artifacts import pull_artifacts
    from launcher.runs import RunContext

    ctx = RunContext(run)
    rows = m.leaderboard(ctx.storage, ctx.name, metric=metric)
    order = [r.experiment for r in rows if r.best is not None]
    order += [e for e in ctx.experiment_ids() if e not in order]  # no metrics: any checkpoint
    for exp in order:
        for name in ("best.ckpt", "last.ckpt"):
            local = Path(dest) / ctx.name / exp / "checkpoints" / name
            if local.is_file():
                return local
            key = f"runs/{ctx.name}/experiments/{exp}/artifacts/checkpoints/{name}"
            if ctx.storage.exists(key):
                pull_artifacts(ctx.storage, ctx.name, experiment=exp, dest=dest)
                if local.is_file():
                    return local
    raise NotFoundError(f"run {ctx.name!r} has no checkpoint (checkpoints/best.ckpt) yet")


# -- instances and config --------------------------------------------------------------------
@click.command()
@click.option("--gpus", type=click.IntRange(min=0), help="Only types with at least this many GPUs.")
def instances(gpus: int | None) -> None:
    """Instance types a run can ask for, with prices."""
    from launcher.catalog import list_instances
    from launcher.cli import table

    if not list_instances(gpus=gpus):
        most = max(i.gpus for i in list_instances())
        raise NotFoundError(f"no instance type has {gpus} or more GPUs; the most is {most}")
    table(
        ["name", "gpus", "gpu", "gpu mem", "vcpus", "memory", "$/h", "spot $/h"],
        [[i.name, str(i.gpus), i.gpu_model or "-", f"{i.gpu_memory_gib} GiB" if i.gpus else "-",
          str(i.vcpus), f"{i.memory_gib:g} GiB", f"{i.price_hour:.3f}", f"{i.spot_price_hour:.3f}"]
         for i in list_instances(gpus=gpus)],
    )  # fmt: skip


@click.group(short_help="Get and set settings (aws.bucket, aws.region...).")
def config() -> None:
    """Settings in $LAUNCH_HOME/config.yaml (aws.bucket, aws.region, aws.prefix, ...)."""


def _check_setting(key: str, value: str | None = None) -> None:
    from launcher.backends.base import BACKENDS
    from launcher.config import SETTINGS, ConfigError, get_setting

    get_setting(key, config={})  # the key's form first: SECTION.NAME
    if key not in SETTINGS:
        raise ConfigError(f"unknown setting {key!r}; settings: {', '.join(sorted(SETTINGS))}")
    if key == "defaults.backend" and value is not None and value not in BACKENDS:
        raise ConfigError(f"defaults.backend must be one of: {', '.join(sorted(BACKENDS))}")


def _show(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@config.command("set")
@click.argument("key")
@click.argument("value")
def config_set(key: str, value: str) -> None:
    """Set KEY to VALUE (`launch config list` shows the settings)."""
    from launcher.config import get_setting, set_setting

    _check_setting(key, value)
    set_setting(key, value)
    click.echo(f"{key} = {_show(get_setting(key))}")


@config.command("get")
@click.argument("key")
def config_get(key: str) -> None:
    """Print KEY's value; exit 1 when it is not set."""
    from launcher.config import get_setting

    _check_setting(key)
    value = get_setting(key)
    if value is None:
        raise NotFoundError(f"{key} is not set (`launch config set {key} VALUE`)")
    click.echo(_show(value))


@config.command("unset")
@click.argument("key")
def config_unset(key: str) -> None:
    """Remove KEY, so its default applies again."""
    from launcher.config import unset_setting

    if not unset_setting(key):  # any key that is set can go, even one the launcher ignores
        _check_setting(key)
        raise NotFoundError(f"{key} is not set")
    click.echo(f"{key} unset")


@config.command("list")
def config_list() -> None:
    """Every setting: its value, or (unset) with what it is for."""
    from launcher.config import SETTINGS, flatten, load_config

    values = flatten(load_config())
    for key in sorted(set(SETTINGS) | set(values)):
        if key in values:
            unknown = (
                "" if key in SETTINGS else click.style("  (not read by the launcher)", dim=True)
            )
            click.echo(f"{key} = {_show(values[key])}{unknown}")
        else:
            click.secho(f"{key} (unset): {SETTINGS[key]}", dim=True)


def register(cli: click.Group) -> None:
    for command in (datastore, artifacts, metrics, predict, instances, config):
        cli.add_command(command)
