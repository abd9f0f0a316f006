"""What a run produced, for using it: the checkpoint ``launch predict RUN`` classifies with."""

from __future__ import annotations

from pathlib import Path

from launcher.errors import NotFoundError
from launcher.storage import records


def best_checkpoint(run: str, *, metric: str | None = None, dest: str = "launch_artifacts") -> Path:
    """The best experiment's best.ckpt (by the run's metric), pulled to DEST if not there yet."""
    from launcher.runs import RunContext
    from launcher.runs import metrics as m
    from launcher.storage.artifacts import pull_artifacts

    ctx = RunContext(run)
    rows = m.leaderboard(ctx.storage, ctx.name, metric=metric)
    order = [r.experiment for r in rows if r.best is not None]
    order += [e for e in ctx.experiment_ids() if e not in order]  # no metrics: any checkpoint
    for exp in order:
        for name in ("best.ckpt", "last.ckpt"):
            local = Path(dest) / ctx.name / exp / "checkpoints" / name
            if local.is_file():
                return local
            key = records.exp_key(ctx.name, exp, "artifacts", "checkpoints", name)
            if ctx.storage.exists(key):
                pull_artifacts(ctx.storage, ctx.name, experiment=exp, dest=dest)
                if local.is_file():
                    return local
    raise NotFoundError(f"run {ctx.name!r} has no checkpoint (checkpoints/best.ckpt) yet")
