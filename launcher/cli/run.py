"""``launch run``: a spec from flags and/or a YAML file -> a run (or, with --dry-run, its plan)."""

from __future__ import annotations

import sys

import click

from launcher.backends import BACKENDS
from launcher.cli.output import print_experiments, size, state_color, table

#: Options only ``launch`` has (a script is unlikely to take them): after SCRIPT they get a note.
_LAUNCH_ONLY = ("--dry-run", "--wait", "--follow", "--backend")


class _Option(click.Option):
    """An option whose other spellings (Grid's) parse but stay out of ``--help``, which names
    them once, in the command's help."""

    def __init__(self, param_decls, aliases=(), **kwargs):
        aliases = [a for a in aliases if a not in param_decls]
        super().__init__([*param_decls, *aliases], **kwargs)
        self._aliases = set(aliases)

    def get_help_record(self, ctx):
        opts = self.opts
        self.opts = [o for o in opts if o not in self._aliases]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = opts


def _grid(*names: str) -> list[str]:
    """Grid's spellings: --NAME, --NA-ME, and the 2021 CLI's --grid_NAME and --g_NAME."""
    out: list[str] = []
    for n in names:
        for opt in (f"--{n}", f"--{n.replace('_', '-')}", f"--grid_{n}", f"--g_{n}"):
            if opt not in out:
                out.append(opt)
    return out


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
    "instance_type",
    cls=_Option,
    aliases=_grid("instance_type"),
    help="Instance type per node (`launch instances` lists them).",
)
@click.option(
    "--gpus",
    cls=_Option,
    aliases=_grid("gpus"),
    type=int,
    help="GPUs per experiment (default: all the instance has).",
)
@click.option(
    "--cpus",
    cls=_Option,
    aliases=_grid("cpus"),
    type=int,
    help="vCPUs a node needs: picks the cheapest type that fits, or checks --instance.",
)
@click.option(
    "--memory",
    cls=_Option,
    aliases=_grid("memory"),
    metavar="GIB",
    help="RAM a node needs (16, 16G, 512M): picks or checks like --cpus.",
)
@click.option(
    "--disk-size", cls=_Option, aliases=_grid("disk_size"), type=int, help="Disk per node in GiB."
)
@click.option(
    "--datastore",
    "datastore",
    cls=_Option,
    aliases=_grid("datastore_name"),
    metavar="NAME[:VERSION]",
    help="Datastore to mount (LAUNCH_DATASTORE_DIR).",
)
@click.option(
    "--datastore-version",
    "datastore_version",
    cls=_Option,
    aliases=_grid("datastore_version"),
    type=int,
    help="Datastore version (default: the latest).",
)
@click.option(
    "--datastore-mount-dir",
    "datastore_mount_dir",
    cls=_Option,
    aliases=_grid("datastore_mount_dir"),
    help="Absolute path the datastore appears at on a node.",
)
@click.option(
    "--strategy",
    cls=_Option,
    aliases=_grid("strategy"),
    type=click.Choice(["grid_search", "random_search"]),
)
@click.option(
    "--trials",
    cls=_Option,
    aliases=_grid("trials", "num_trials"),
    type=int,
    help="Experiments to draw with random_search.",
)
@click.option(
    "--max-experiments",
    "--max_experiments",
    "max_experiments",
    type=int,
    help="Most experiments a sweep may give (default 1000, a guard against typos).",
)
@click.option(
    "--max-nodes",
    "max_nodes",
    cls=_Option,
    aliases=_grid("max_nodes"),
    type=int,
    help="Nodes running at once; max_nodes // nodes experiments at a time.",
)
@click.option(
    "--nodes",
    "nodes",
    type=int,
    help="Nodes per experiment (one DDP training across them); default 1.",
)
@click.option(
    "--placement",
    type=click.Choice(["cluster"]),
    help="aws: an experiment's nodes in a cluster placement group (low latency).",
)
@click.option(
    "--spot",
    "spot",
    cls=_Option,
    aliases=_grid("use_spot"),
    is_flag=True,
    default=None,
    help="Spot instances (aws).",
)
@click.option(
    "--name", cls=_Option, aliases=_grid("name"), help="Run name; generated when omitted."
)
@click.option(
    "--description",
    cls=_Option,
    aliases=_grid("description"),
    help="What the run is for (kept in run.json).",
)
@click.option(
    "--backend",
    type=click.Choice(list(BACKENDS)),
    help="Where to run (default: config defaults.backend, else local).",
)
@click.option(
    "--spec",
    "spec_file",
    cls=_Option,
    aliases=_grid("config"),
    metavar="FILE",
    help="YAML job spec, ours or Grid's config; flags override it.",
)
@click.option("--env", "env", multiple=True, metavar="KEY=VALUE", help="Environment (repeatable).")
@click.option(
    "--retries", type=int, help="More attempts an experiment may spend on failing or a dead node."
)
@click.option(
    "--max-runtime",
    "--max_runtime",
    "max_runtime",
    help="Limit per experiment: seconds, or 90m, 2h, 1d.",
)
@click.option(
    "--seed",
    cls=_Option,
    aliases=_grid("seed"),
    type=int,
    help="Seed for random_search and distributions.",
)
@click.option(
    "--dry-run", is_flag=True, help="Show experiments, resources and cost; launch nothing."
)
@click.option("--wait", is_flag=True, help="Block until the run ends; exit 1 if one failed.")
@click.option("--follow", "-f", is_flag=True, help="Stream logs while waiting (implies --wait).")
@click.option(
    "--credential", "grid_credential", cls=_Option, aliases=_grid("credential"), hidden=True
)
@click.option("--cluster", "grid_cluster", cls=_Option, aliases=_grid("cluster"), hidden=True)
@click.option("--framework", "grid_framework", cls=_Option, aliases=_grid("framework"), hidden=True)
@click.option(
    "--dependency_file",
    "grid_dependency_file",
    cls=_Option,
    aliases=_grid("dependency_file"),
    hidden=True,
)
@click.option(
    "--dockerfile", "grid_dockerfile", cls=_Option, aliases=_grid("dockerfile"), hidden=True
)
@click.option(
    "--localdir", "grid_localdir", cls=_Option, aliases=_grid("localdir"), is_flag=True, hidden=True
)
@click.option(
    "--auto_resume",
    "grid_auto_resume",
    cls=_Option,
    aliases=_grid("auto_resume"),
    is_flag=True,
    hidden=True,
)
@click.option(
    "--ignore_warnings",
    "grid_ignore_warnings",
    cls=_Option,
    aliases=_grid("ignore_warnings"),
    is_flag=True,
    hidden=True,
)
@click.argument("script", required=False)
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
def run(spec_file, env, dry_run, wait, follow, script, script_args, **flags) -> None:
    """Run SCRIPT with SCRIPT_ARGS as one experiment per sweep point.

    Everything after SCRIPT goes to the script untouched. A flag value like "[0.01, 0.001]",
    "range(1, 5)" or "uniform(1e-4, 1e-2, 3)" sweeps. Prints the run's name.

    Grid's command lines work as written: its spellings of these options (--instance_type,
    --disk_size, --max_nodes, --use_spot, --datastore_name, --num_trials, --config, ...), the
    2021 CLI's --grid_NAME and --g_NAME forms of each (--grid_gpus 1), and --spec/--config read
    Grid's YAML config (compute.train, hyper_params) too. Its other flags are accepted with a
    note saying what happens instead: --credential, --cluster, --framework lightning|torch,
    --localdir, --dependency_file FILE (pip-installed on each node), --auto_resume (3 retries);
    --ignore_warnings hides those notes; --dockerfile is an error until images are supported.
    """  # noqa: D301
    from launcher.backends import get_backend
    from launcher.spec import grid
    from launcher.spec.jobspec import JobSpec

    grid_flags = {k.removeprefix("grid_"): flags.pop(k) for k in list(flags) if k[:5] == "grid_"}
    if script is not None and script.startswith("-"):
        raise click.UsageError(_no_such_option(script, click.get_current_context()))
    if script is None and spec_file is None:
        raise click.UsageError("missing SCRIPT (or --spec FILE)")
    if script is not None:
        flags.update(script=script, script_args=list(script_args))
    if flags["backend"] is None and not _sets_backend(spec_file):
        from launcher.config import get_setting

        flags["backend"] = get_setting("defaults.backend")  # None: the spec's default (local)
    notes: list[str] = []
    flags.update(grid.from_flags(grid_flags, notes))
    spec = JobSpec.load(spec_file, env=_parse_env(env), notes=notes, **flags)
    if grid_flags["auto_resume"] and flags["retries"] is None and not spec.retries:
        spec.retries = grid.AUTO_RESUME_RETRIES
    notes += _misplaced(script, script_args, click.get_current_context())
    if not grid_flags["ignore_warnings"]:
        for note in notes:
            click.echo(f"note: {note}", err=True)
    backend = get_backend(spec.backend)
    spec.check_capabilities(backend.capabilities, backend.name)
    if spec.datastore and spec.datastore_mount_dir and backend.storage().protocol == "file":
        from launcher.spec.jobspec import check_mount_dir_here

        check_mount_dir_here(spec.datastore_mount_dir)  # the nodes share this file system
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


def _gang_shape(spec, machines: int) -> str:
    """' (2 experiments at once x 2 nodes)' when experiments span nodes; '' otherwise."""
    if spec.nodes <= 1:
        return ""
    return f" ({machines // spec.nodes} experiment(s) at once x {spec.nodes} nodes)"


def _known_options(ctx: click.Context) -> list[str]:
    return [o for p in ctx.command.params for o in (*p.opts, *p.secondary_opts) if o[:2] == "--"]


def _no_such_option(arg: str, ctx: click.Context) -> str:
    """An unknown option before SCRIPT: the closest of ours and Grid's spellings, if any."""
    import difflib

    name = arg.split("=", 1)[0]
    close = difflib.get_close_matches(name, _known_options(ctx), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else "`launch run --help` lists them"
    return f"no such option: {name}; {hint}"


def _misplaced(script: str | None, args: tuple[str, ...], ctx: click.Context) -> list[str]:
    """Notes for launch's own options written after SCRIPT (the script gets them)."""
    grid_forms = {o for o in _known_options(ctx) if o.startswith(("--grid_", "--g_"))}
    names = dict.fromkeys(a.split("=", 1)[0] for a in args if a[:2] == "--")
    return [
        f"{name} comes after SCRIPT, so {script} gets it; launch's options go before SCRIPT"
        for name in names
        if name in _LAUNCH_ONLY or name in grid_forms
    ]


def _sets_backend(spec_file: str | None) -> bool:
    """Whether a spec file names its backend (it then wins over config defaults.backend)."""
    if spec_file is None:
        return False
    from launcher.errors import SpecError
    from launcher.spec.strict_yaml import load_spec_yaml

    try:
        data = load_spec_yaml(spec_file)
    except SpecError:
        return False  # JobSpec.load reports it properly
    return isinstance(data, dict) and "backend" in data


def _print_plan(spec, storage) -> None:
    from launcher.runs import plan_run

    plan = plan_run(spec, storage=storage)
    spec = plan.spec
    data = f" with datastore {spec.datastore}:{spec.datastore_version}" if spec.datastore else ""
    click.echo(f"{len(plan.experiments)} experiment(s) of {spec.script} on {spec.backend}{data}:")
    if spec.description:
        click.echo(f"description: {spec.description}")
    import shlex

    table(["id", "args"], [[e.id, shlex.join(e.args)] for e in plan.experiments])
    c = plan.cost
    click.echo(
        f"resources: {c['nodes']} x {spec.instance_type}"
        f"{_gang_shape(spec, c['nodes'])}, {spec.gpus} GPU(s) per node, "
        f"{spec.disk_size} GiB disk{', spot' if spec.spot else ''}"
    )
    if "hour" not in c:  # a backend without instance types (slurm): the cluster's own nodes
        click.echo(f"cost estimate: none on the {spec.backend} backend (the cluster's own nodes)")
        click.echo(f"code snapshot: {plan.files} file(s), {size(plan.size)}; nothing launched")
        return
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
