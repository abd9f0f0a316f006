"""Commands on stored data: ``launch datastore`` and ``launch artifacts``."""

from __future__ import annotations

import click

from launcher.backends import BACKENDS
from launcher.cli.output import size, table


def _storage(backend: str | None):
    """The storage root of a backend (default: config defaults.backend, else local)."""
    from launcher.backends import get_backend
    from launcher.config import get_setting

    return get_backend(backend or get_setting("defaults.backend", "local")).storage()


_backend_option = click.option(
    "--backend",
    type=click.Choice(list(BACKENDS)),
    help="Whose storage (default: config defaults.backend, else local).",
)


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

    from launcher.storage.datastores import create_datastore

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
    from launcher.storage.datastores import list_datastores

    rows = []
    for d in list_datastores(_storage(backend)):
        if d.problem:
            click.secho(f"warning: {d.problem}", fg="yellow", err=True)
            rows.append([d.name, str(d.version), "corrupt", "-", "-"])
        elif d.complete:
            rows.append([d.name, str(d.version), str(d.files), size(d.size), d.created or "-"])
        else:  # no MANIFEST.json yet: an interrupted (or running) create
            rows.append([d.name, str(d.version), "incomplete", "-", "-"])
    if not rows:
        click.secho("no datastores yet (`launch datastore create` makes one)", err=True, dim=True)
        return
    table(["name", "version", "files", "size", "created"], rows,
          colors={2: lambda c: "yellow" if c in ("incomplete", "corrupt") else None})  # fmt: skip


@datastore.command("delete")
@click.argument("ref", metavar="NAME[:VERSION]")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@_backend_option
def datastore_delete(ref: str, yes: bool, backend: str | None) -> None:
    """Delete a datastore version (or all its versions)."""
    from launcher.storage.datastores import delete_datastore, list_datastores

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


class _PullByDefault(click.Group):
    """``launch artifacts RUN`` pulls, as Grid's ``grid artifacts RUN`` did."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            return "pull", self.commands["pull"], args
        return super().resolve_command(ctx, args)


@click.group(cls=_PullByDefault, short_help="List and pull what experiments saved.")
def artifacts() -> None:
    """What experiments wrote to LAUNCH_ARTIFACTS_DIR: checkpoints, metrics, labels.

    `launch artifacts RUN` is `launch artifacts pull RUN`, as Grid had it.
    """


@artifacts.command("list")
@click.argument("target", metavar="RUN[/EXP]")
def artifacts_list(target: str) -> None:
    """Artifacts of a run's experiments, with sizes."""
    from launcher.runs import RunContext
    from launcher.storage.artifacts import list_artifacts

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
@click.option(
    "--dest",
    "--download_dir",
    "--download-dir",
    "dest",
    default="launch_artifacts",
    show_default=True,
    help="Local folder (Grid: --download_dir).",
)
@click.option(
    "--keep-extra",
    is_flag=True,
    help="Keep files under DEST/RUN/EXP that the run no longer has (by default a pull mirrors "
    "the run: what it deleted is removed there, and only there).",
)
def artifacts_pull(target: str, experiment: str | None, dest: str, keep_extra: bool) -> None:
    """Download artifacts (sha256-verified) to DEST/RUN/EXP/..., a mirror of the run's."""
    from launcher.runs import RunContext
    from launcher.storage.artifacts import pull_artifacts

    ctx = RunContext(target)
    if experiment and ctx.exp and experiment != ctx.exp:
        raise click.UsageError(f"{target} and --experiment {experiment} name different experiments")
    ctx.exp = ctx.exp or experiment
    ctx.experiment_ids()  # NotFoundError for an unknown experiment
    removed: list = []
    paths = pull_artifacts(ctx.storage, ctx.name, experiment=ctx.exp, dest=dest,
                           keep_extra=keep_extra, removed=removed.append)  # fmt: skip
    for p in paths:
        click.echo(str(p))
    click.secho(f"{len(paths)} file(s) under {dest}", err=True, dim=True)
    if removed:
        click.secho(f"removed {len(removed)} file(s) the run no longer has (--keep-extra keeps "
                    "them)", err=True, dim=True)  # fmt: skip
