"""``launch instances`` and ``launch config``: what can be asked for, and the user's settings."""

from __future__ import annotations

import json

import click

from launcher.cli.output import table
from launcher.errors import NotFoundError


@click.command()
@click.option("--gpus", type=click.IntRange(min=0), help="Only types with at least this many GPUs.")
def instances(gpus: int | None) -> None:
    """Instance types a run can ask for, with prices."""
    from launcher.spec.catalog import list_instances

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
    from launcher.backends import BACKENDS
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
