"""The ``launch`` command: parse, call the library, print. Nothing here a Python user could not
reach through :mod:`launcher.runs` and friends.

Every :class:`LaunchError` is one red line on stderr and exit code 1 (``--debug`` shows the
traceback); usage errors are click's (exit code 2). Heavy modules are imported inside commands so
``launch --help`` and ``launch status`` stay fast.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import click

from launcher.errors import LaunchError

STATE_COLORS = {"succeeded": "green", "failed": "red", "stopped": "yellow", "running": "cyan",
                "stopping": "yellow", "queued": "white", "missing": "red",
                "pending": "white", "terminated": "white", "dead": "red"}  # fmt: skip


class LaunchGroup(click.Group):
    """Turns LaunchError (and, as a last resort, any other error) into one red line and exit
    code 1, unless --debug."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LaunchError as e:
            if ctx.meta.get("launch.debug"):
                raise
            click.secho(f"error: {e}", fg="red", err=True)
            ctx.exit(1)
        except (click.exceptions.ClickException, click.exceptions.Abort, click.exceptions.Exit):
            raise  # usage errors, --help, a declined confirmation: click reports them
        except Exception as e:
            # a bug or an error no layer translated (a cloud SDK's): still one line by default
            if ctx.meta.get("launch.debug"):
                raise
            click.secho(f"error: {type(e).__name__}: {e} (unexpected; `launch --debug ...` "
                        "shows the traceback)", fg="red", err=True)  # fmt: skip
            ctx.exit(1)


class _WarningHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        click.secho(f"warning: {record.getMessage()}", fg="yellow", err=True)


@click.group(cls=LaunchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="launch-video", prog_name="launch")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Launch training jobs and sweeps on this machine or on AWS, Grid style.

    \b
      launch run --instance g4dn.xlarge --gpus 1 trainer/train.py --lr "[0.01, 0.001]"
      launch status                 launch logs RUN -f
      launch artifacts pull RUN     launch predict RUN video.mp4
    """
    ctx.meta["launch.debug"] = debug
    logger = logging.getLogger("launcher")
    if not any(isinstance(h, _WarningHandler) for h in logger.handlers):
        logger.addHandler(_WarningHandler(level=logging.WARNING))
        logger.propagate = False


# -- helpers ---------------------------------------------------------------------------------
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


def _state_color(state: str) -> str:
    return STATE_COLORS.get(state.strip(), "white")


def _parse_env(values: tuple[str, ...]) -> dict[str, str] | None:
    env = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--env")
        env[key] = value
    return env or None


# -- run -------------------------------------------------------------------------------------
@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option(
    "--instance",
    "--instance_type",
    "--instance-type",
    "instance_type",
    help="Instance type per node (`launch instances` lists them).",
)
@click.option("--gpus", type=int, help="GPUs per experiment (default: all the instance has).")
@click.option("--disk-size", "--disk_size", type=int, help="Disk per node in GiB.")
@click.option(
    "--datastore",
    "--datastore_name",
    "--datastore-name",
    "datastore",
    metavar="NAME[:VERSION]",
    help="Datastore to mount (LAUNCH_DATASTORE_DIR).",
)
@click.option(
    "--datastore-mount-dir",
    "--datastore_mount_dir",
    "datastore_mount_dir",
    help="Absolute path the datastore appears at on a node.",
)
@click.option("--strategy", type=click.Choice(["grid_search", "random_search"]))
@click.option("--trials", type=int, help="Experiments to draw with random_search.")
@click.option(
    "--max-nodes", "--max_nodes", "max_nodes", type=int, help="Nodes running experiments at once."
)
@click.option(
    "--spot",
    "--use_spot",
    "--use-spot",
    "spot",
    is_flag=True,
    default=None,
    help="Spot instances (aws).",
)
@click.option("--name", help="Run name; generated when omitted.")
@click.option(
    "--backend",
    type=click.Choice(["local", "aws"]),
    help="Where to run (default: config defaults.backend, else local).",
)
@click.option("--spec", "spec_file", metavar="FILE", help="YAML job spec; flags override it.")
@click.option("--env", "env", multiple=True, metavar="KEY=VALUE", help="Environment (repeatable).")
@click.option("--retries", type=int, help="Times a failed experiment is run again.")
@click.option(
    "--max-runtime",
    "--max_runtime",
    "max_runtime",
    help="Limit per experiment: seconds, or 90m, 2h, 1d.",
)
@click.option("--seed", type=int, help="Seed for random_search and distributions.")
@click.option(
    "--dry-run", is_flag=True, help="Show experiments, resources and cost; launch nothing."
)
@click.option("--wait", is_flag=True, help="Block until the run ends; exit 1 if one failed.")
@click.option("--follow", "-f", is_flag=True, help="Stream logs while waiting (implies --wait).")
@click.argument("script", required=False)
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
def run(spec_file, env, dry_run, wait, follow, script, script_args, **flags) -> None:
    """Run SCRIPT with SCRIPT_ARGS as one experiment per sweep point.

    Everything after SCRIPT goes to the script untouched. A flag value like "[0.01, 0.001]",
    "range(1, 5)" or "uniform(1e-4, 1e-2, 3)" sweeps. Prints the run's name.
    """  # noqa: D301
    from launcher.backends.base import get_backend
    from launcher.spec import JobSpec

    if script is not None and script.startswith("-"):
        raise click.UsageError(f"no such option: {script} (options go before SCRIPT)")
    if script is None and spec_file is None:
        raise click.UsageError("missing SCRIPT (or --spec FILE)")
    if script is not None:
        flags.update(script=script, script_args=list(script_args))
    if flags["backend"] is None and not _sets_backend(spec_file):
        from launcher.config import get_setting

        flags["backend"] = get_setting("defaults.backend")  # None: the spec's default (local)
    spec = JobSpec.load(spec_file, env=_parse_env(env), **flags)
    backend = get_backend(spec.backend)
    spec.check_capabilities(backend.capabilities, backend.name)
    if dry_run:
        storage = backend.storage()
        # a local datastore is checked now; a cloud one is not worth a round trip here
        _print_plan(spec, storage if storage.protocol == "file" else None)
        return
    from launcher.runs import prepare_run

    name = prepare_run(spec, backend)
    click.echo(name)
    if wait or follow:
        _wait_and_exit(name, follow)
    else:
        click.secho(f"launch status {name}    launch logs {name} -f", err=True, dim=True)


def _sets_backend(spec_file: str | None) -> bool:
    """Whether a spec file names its backend (it then wins over config defaults.backend)."""
    if spec_file is None:
        return False
    import yaml

    try:
        with open(spec_file) as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return False  # JobSpec.load reports it properly
    return isinstance(data, dict) and "backend" in data


def _print_plan(spec, storage) -> None:
    from launcher.runs import plan_run

    plan = plan_run(spec, storage=storage)
    spec = plan.spec
    data = f" with datastore {spec.datastore}:{spec.datastore_version}" if spec.datastore else ""
    click.echo(f"{len(plan.experiments)} experiment(s) of {spec.script} on {spec.backend}{data}:")
    import shlex

    table(["id", "args"], [[e.id, shlex.join(e.args)] for e in plan.experiments])
    c = plan.cost
    click.echo(
        f"resources: {spec.max_nodes} x {spec.instance_type}, {spec.gpus} GPU(s) per experiment, "
        f"{spec.disk_size} GiB disk{', spot' if spec.spot else ''}"
    )
    kind = "spot" if spec.spot else "on-demand"
    line = (f"cost estimate on AWS: ${c['hour']:.3f}/hour {kind} for {c['nodes']} x "
            f"{c['instance_type']} (on-demand ${c['on_demand_hour']:.3f}, "
            f"spot ${c['spot_hour']:.3f})")  # fmt: skip
    if "max_total" in c:
        line += f", at most ${c['max_total']:.2f} in all with max_runtime"
    if spec.backend == "local":
        line += "; on the local backend it costs nothing"
    click.echo(line)
    click.echo(f"code snapshot: {plan.files} file(s), {size(plan.size)}; nothing launched")


def _wait_and_exit(name: str, follow: bool) -> None:
    from launcher.runs import RunContext, wait_run

    several = len(RunContext(name).experiment_ids()) > 1

    def on_log(exp: str, text: str) -> None:
        if several:
            text = "".join(f"[{exp}] {line}" for line in text.splitlines(keepends=True))
        click.echo(text, nl=False)

    row, views = wait_run(name, on_log=on_log if follow else None)
    _print_experiments(views)
    click.secho(f"run {name} {row.status}", fg=_state_color(row.status), err=True)
    if row.status != "succeeded":
        sys.exit(1)


# -- status ----------------------------------------------------------------------------------
@cli.command()
@click.argument("run", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(run: str | None, as_json: bool) -> None:
    """All runs, or one RUN's experiments."""
    from launcher import runs

    if run is None:
        rows = runs.list_runs()
        if as_json:
            from dataclasses import asdict

            click.echo(json.dumps([asdict(r) for r in rows], indent=2))
            return
        if not rows:
            click.secho("no runs yet (`launch run SCRIPT` starts one)", err=True, dim=True)
            return
        table(
            ["name", "backend", "instance", "status", "done", "age", "cost"],
            [[r.name, r.backend, r.instance_type or "-", r.status, f"{r.done}/{r.total}",
              age(r.created), "-" if r.cost is None else f"${r.cost:.2f}"] for r in rows],
            colors={3: _state_color},
        )  # fmt: skip
        return
    ctx = runs.RunContext(run)
    row, views = ctx.refresh()
    nodes = ctx.nodes()  # those refresh asked for: live, and only in this one-run view
    if as_json:
        from dataclasses import asdict

        click.echo(json.dumps({"run": asdict(row), "experiments": [asdict(v) for v in views],
                               "nodes": [asdict(n) for n in nodes]}, indent=2))  # fmt: skip
        return
    when = f"started {age(row.created)} ago"
    if row.ended and row.status in ("succeeded", "failed", "stopped"):
        when += f", ended {age(row.ended)} ago"
    cost = "" if row.cost is None else f", ${row.cost:.2f} so far"
    click.echo(f"{row.name}: {row.status}, {row.done}/{row.total} done, {row.backend} "
               f"{row.instance_type}, {when}{cost}")  # fmt: skip
    if row.message:
        click.secho(row.message, fg="yellow", err=True)
    _print_experiments(views)
    click.echo()
    _print_nodes(nodes)


def _print_nodes(nodes) -> None:
    if not nodes:
        click.echo("nodes: none started")
        return
    headers = ["node", "state", "instance", "zone", "spot", "started"]
    with_cost = any(n.extra.get("cost") is not None for n in nodes)
    rows = []
    for n in nodes:
        cells = [
            n.node_id,
            n.state,
            n.instance_type or "-",
            n.zone or "-",
            "yes" if n.spot else "no",
            f"{age(n.started_at)} ago" if n.started_at else "-",
        ]
        if with_cost:
            c = n.extra.get("cost")
            cells.append("-" if c is None else f"${c:.2f}")
        rows.append(cells)
    table(headers + (["cost"] if with_cost else []), rows, colors={1: _state_color})  # fmt: skip


def _print_experiments(views) -> None:
    rows = []
    for v in views:
        params = " ".join(f"{k}={val}" for k, val in v.params.items()) or "-"
        metric = _latest_metric(v.metrics)
        code = _exit_code(v.exit_code)
        rows.append([v.id, params, v.state, code, str(v.attempt), metric, v.message or ""])
    table(["id", "params", "status", "exit", "attempt", "metric", "message"], rows,
          colors={2: _state_color})  # fmt: skip


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


# -- logs, stop, delete ----------------------------------------------------------------------
@cli.command(short_help="Print or follow experiments' output.")
@click.argument("target", metavar="RUN[/EXP]")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the experiments end.")
def logs(target: str, follow: bool) -> None:
    """Print an experiment's output (every experiment's, prefixed, for a RUN)."""
    from launcher.logs import follow_logs, read_log
    from launcher.runs import RunContext

    ctx = RunContext(target)
    ids = ctx.experiment_ids()
    if follow:
        for exp, text in follow_logs(ctx.storage, ctx.name, ids, tick=lambda: ctx.refresh()):
            if len(ids) > 1:
                text = "".join(f"[{exp}] {line}" for line in text.splitlines(keepends=True))
            click.echo(text, nl=False)
        return
    for exp in ids:
        if len(ids) > 1:
            click.secho(f"==> {exp} <==", bold=True)
        text = read_log(ctx.storage, ctx.name, exp)
        if not text:
            from launcher.claims import read_status

            state = read_status(ctx.storage, ctx.name, exp)["state"]
            click.secho(f"(no output yet; {exp} is {state})", err=True, dim=True)
        click.echo(text, nl=False)


@cli.command(short_help="Stop a run or one experiment.")
@click.argument("target", metavar="RUN[/EXP]")
def stop(target: str) -> None:
    """Stop a run or one experiment (SIGTERM, then SIGKILL after a grace period)."""
    from launcher.runs import RunContext, stop_run
    from launcher.store import FINISHED

    ctx = RunContext(target)
    ids = ctx.experiment_ids()  # NotFoundError before anything else
    row, views = ctx.refresh(reconcile=False)
    states = {v.id: v.state for v in views}
    if all(states[e] in FINISHED for e in ids):
        what = states[ctx.exp] if ctx.exp else row.status
        click.echo(f"{target} already {what}; nothing to stop")
        return
    click.secho(f"stopping {target}...", err=True, dim=True)
    row = stop_run(target)
    click.echo(f"{row.name}: {row.status}, {row.done}/{row.total} done")


@cli.command(short_help="Delete a run: nodes, logs, artifacts, index entry.")
@click.argument("run")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def delete(run: str, yes: bool) -> None:
    """Stop RUN if needed and delete it: storage, nodes and index entry."""
    from launcher.runs import RunContext, delete_run

    RunContext(run)  # NotFoundError before asking
    if not yes:
        click.confirm(f"delete run {run} with its logs and artifacts?", abort=True)
    delete_run(run)
    click.echo(f"deleted {run}")


def main() -> None:
    """Console entry point (``launch``)."""
    cli(prog_name="launch")


from launcher import cli_more  # noqa: E402 - registers the remaining commands on `cli`

cli_more.register(cli)
