"""``launch run``: a spec from flags and/or a YAML file -> a run (or, with --dry-run, its plan)."""

from __future__ import annotations

import sys

import click

from launcher.cli.output import print_experiments, size, state_color, table


def _parse_env(values: tuple[str, ...]) -> dict[str, str] | None:
    env = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--env")
        env[key] = value
    return env or None


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
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
    from launcher.backends import get_backend
    from launcher.spec.jobspec import JobSpec

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
    print_experiments(views)
    click.secho(f"run {name} {row.status}", fg=state_color(row.status), err=True)
    if row.status != "succeeded":
        sys.exit(1)
