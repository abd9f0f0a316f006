"""Commands on runs: ``launch status``, ``logs``, ``stop``, ``delete``."""

from __future__ import annotations

import json

import click

from launcher.cli.output import age, print_experiments, state_color, table


@click.command()
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
            colors={3: state_color},
        )  # fmt: skip
        return
    ctx = runs.RunContext(run)
    row, views = ctx.refresh(reconcile=True)
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
    description = ctx.record()["spec"].get("description")
    if description:
        click.echo(f"description: {description}")
    if row.message:
        click.secho(row.message, fg="yellow", err=True)
    print_experiments(views)
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
    table(headers + (["cost"] if with_cost else []), rows, colors={1: state_color})  # fmt: skip


@click.command(short_help="Print or follow experiments' output.")
@click.argument("target", metavar="RUN[/EXP[/RANK]]")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the experiments end.")
@click.option(
    "--rank", type=int, default=None, help="A multi-node experiment's rank K (default: rank 0)."
)
def logs(target: str, follow: bool, rank: int | None) -> None:
    """Print an experiment's output (every experiment's, prefixed, for a RUN). A multi-node
    experiment's log is rank 0's; RUN/EXP/K or --rank K is rank K's (every rank's is kept)."""
    from launcher.runs import RunContext
    from launcher.runs.logs import follow_logs, read_log

    target, rank = _split_rank(target, rank)
    ctx = RunContext(target)
    ids = ctx.experiment_ids()
    if rank:
        nodes = int(ctx.record()["spec"].get("nodes") or 1)
        if rank >= nodes:
            from launcher.errors import SpecError

            raise SpecError(f"rank {rank}: {ctx.name} runs each experiment on {nodes} node(s), "
                            f"ranks 0 to {nodes - 1}")  # fmt: skip
    if follow:
        for exp, text in follow_logs(
            ctx.storage, ctx.name, ids, tick=lambda: ctx.refresh(reconcile=True), rank=rank or 0
        ):
            if len(ids) > 1:
                text = "".join(f"[{exp}] {line}" for line in text.splitlines(keepends=True))
            click.echo(text, nl=False)
        return
    for exp in ids:
        if len(ids) > 1:
            click.secho(f"==> {exp} <==", bold=True)
        text = read_log(ctx.storage, ctx.name, exp, rank or 0)
        if not text:
            from launcher.node.claims import read_status

            state = read_status(ctx.storage, ctx.name, exp)["state"]
            click.secho(f"(no output yet; {exp} is {state})", err=True, dim=True)
        click.echo(text, nl=False)


def _split_rank(target: str, rank: int | None) -> tuple[str, int | None]:
    """RUN/EXP/K -> (RUN/EXP, K); K must be a rank number, and agree with --rank if both."""
    from launcher.errors import SpecError

    parts = target.split("/")
    if len(parts) != 3:
        if rank is not None and len(parts) != 2:
            raise SpecError("--rank needs one experiment: RUN/EXP --rank K")
        if rank is not None and rank < 0:
            raise SpecError(f"--rank {rank}: a rank is 0 or more")
        return target, rank
    if not parts[2].isdigit():
        raise SpecError(f"{target!r}: the part after RUN/EXP/ is a rank number, e.g. 1")
    if rank is not None and rank != int(parts[2]):
        raise SpecError(f"{target!r} and --rank {rank} name different ranks")
    return "/".join(parts[:2]), int(parts[2])


@click.command(short_help="Stop a run or one experiment.")
@click.argument("target", metavar="RUN[/EXP]")
def stop(target: str) -> None:
    """Stop a run or one experiment (SIGTERM, then SIGKILL after a grace period)."""
    from launcher.runs import RunContext, stop_run
    from launcher.runs.index import FINISHED

    ctx = RunContext(target)
    ids = ctx.experiment_ids()  # NotFoundError before anything else
    row, views = ctx.refresh()
    states = {v.id: v.state for v in views}
    if all(states[e] in FINISHED for e in ids):
        what = states[ctx.exp] if ctx.exp else row.status
        click.echo(f"{target} already {what}; nothing to stop")
        return
    click.secho(f"stopping {target}...", err=True, dim=True)
    row = stop_run(target)
    click.echo(f"{row.name}: {row.status}, {row.done}/{row.total} done")


@click.command(short_help="Delete a run: nodes, logs, artifacts, index entry.")
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
