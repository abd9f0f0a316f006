"""Where the slurm backend's settings come from: ``launch config set slurm.KEY VALUE``.

``slurm.partition``, ``slurm.account``, ``slurm.qos`` (each optional: the cluster's defaults
apply), ``slurm.sbatch_args`` (extra sbatch options, shell-quoted, given last so they win) and
``slurm.root``: the storage root the cluster's nodes read and write, by default
``$LAUNCH_HOME/slurm`` (on the shared home file system of a typical cluster), or another shared
folder, or an ``s3://`` URL. ``LAUNCH_SLURM_ROOT`` overrides it. The Slurm commands themselves
honour ``SLURM_CONF`` and the rest of their own environment.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from launcher.errors import SpecError


@dataclass(frozen=True)
class SlurmSettings:
    root_url: str
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    sbatch_args: list[str] = field(default_factory=list)


def _root_url(value: str | None) -> str:
    from launcher.config import launch_home

    if not value:
        return f"file://{launch_home() / 'slurm'}"
    value = str(value)
    if "://" in value:
        return value.rstrip("/")
    return f"file://{Path(value).expanduser().resolve()}"


def resolve_settings(config: dict | None = None) -> SlurmSettings:
    """The settings from ``launch config`` (and LAUNCH_SLURM_ROOT); refuses malformed ones."""
    if config is None:
        from launcher.config import load_config

        config = load_config()
    section = config.get("slurm") if isinstance(config, dict) else None
    section = section if isinstance(section, dict) else {}

    def text(key: str) -> str | None:
        v = section.get(key)
        return None if v in (None, "") else str(v)

    raw_args = text("sbatch_args") or ""
    try:
        args = shlex.split(raw_args)
    except ValueError as e:
        raise SpecError(
            f"slurm.sbatch_args {raw_args!r} does not parse as shell words: {e}"
        ) from None
    bad = [a for a in args if not a.startswith("-")]
    if bad:
        raise SpecError(f"slurm.sbatch_args must be sbatch options (--name=value); not {bad[0]!r}")
    root = _root_url(os.environ.get("LAUNCH_SLURM_ROOT") or text("root"))
    return SlurmSettings(root, text("partition"), text("account"), text("qos"), args)
