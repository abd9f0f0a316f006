"""Where the launcher keeps its local state, and the user's settings (``launch config``).

Everything local lives under ``LAUNCH_HOME`` (default ``~/.launch``): ``config.yaml``, the SQLite
index of runs, the local backend's storage root ``store/`` and its node records ``nodes/``.
Settings are dotted keys (``aws.bucket``) stored as nested YAML mappings.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from launcher.errors import LaunchError

_KEY = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")  # fullmatch: no trailing newline


# The settings the launcher reads (`launch config set` refuses others: a typo would be ignored).
SETTINGS = {
    "aws.bucket": "S3 bucket holding runs and datastores (or LAUNCH_AWS_BUCKET)",
    "aws.prefix": "folder in the bucket (default: launch)",
    "aws.region": "AWS region of the nodes (default: the AWS CLI's)",
    "aws.ami": "node image: an ami-... id (default: the AWS Deep Learning base AMI)",
    "aws.node_addr": "address every node gives the other ranks (default: its private IP)",
    "defaults.backend": "local, aws or slurm: where `launch run` and `launch datastore` go",
    "slurm.partition": "Slurm partition for runs (default: the cluster's default partition)",
    "slurm.account": "Slurm account to charge (sbatch --account)",
    "slurm.qos": "Slurm QOS (sbatch --qos)",
    "slurm.sbatch_args": "extra sbatch options, shell-quoted (given last, so they win)",
    "slurm.root": "storage root the Slurm nodes share (default: $LAUNCH_HOME/slurm; or s3://)",
}


class ConfigError(LaunchError):
    """A config key or value is invalid, or config.yaml cannot be read."""


def launch_home() -> Path:
    """The launcher's local state directory: ``$LAUNCH_HOME`` or ``~/.launch``, always absolute.

    A relative ``LAUNCH_HOME`` (``.launch``) is resolved once, against the directory the first
    call ran in, and written back to the environment: agents start in another directory, and
    would otherwise look for ``.launch/.launch/store``.
    """
    home = os.environ.get("LAUNCH_HOME")
    if not home:
        return Path.home() / ".launch"
    path = Path(home).expanduser()
    if not path.is_absolute():
        path = Path(os.path.abspath(path))
        os.environ["LAUNCH_HOME"] = str(path)  # this process and its children agree from now
    return path


def config_path() -> Path:
    return launch_home() / "config.yaml"


def load_config() -> dict:
    """The settings as a nested dict; empty if there is no config.yaml yet."""
    path = config_path()
    if not path.exists():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings, not {type(data).__name__}")
    return data


def save_config(config: dict) -> None:
    """Write the settings atomically (a reader never sees half a file)."""
    import yaml

    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(yaml.safe_dump(config, sort_keys=True))
    os.replace(tmp, path)


def _check_key(key: str) -> list[str]:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ConfigError(
            f"invalid config key {key!r}: use SECTION.NAME in lower case, e.g. aws.bucket"
        )
    return key.split(".")


def get_setting(key: str, default: Any = None, config: dict | None = None) -> Any:
    """The value of a dotted key (``aws.bucket``), or ``default`` when unset."""
    node: Any = load_config() if config is None else config
    for part in _check_key(key):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def set_setting(key: str, value: str) -> None:
    """Set a dotted key; the value is parsed as YAML so ``true``/``3`` keep their types."""
    import yaml

    parts = _check_key(key)
    try:
        parsed = yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError:
        parsed = value
    if isinstance(parsed, dict | list):
        parsed = value  # settings are scalars; keep exotic text as typed
    config = load_config()
    node = config
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = parsed
    save_config(config)


def unset_setting(key: str) -> bool:
    """Remove a dotted key; True if it was set."""
    parts = _check_key(key)
    config = load_config()
    node = config
    for part in parts[:-1]:
        node = node.get(part)
        if not isinstance(node, dict):
            return False
    if parts[-1] not in node:
        return False
    del node[parts[-1]]
    save_config(config)
    return True


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """``{"aws": {"bucket": "b"}}`` -> ``{"aws.bucket": "b"}``, sorted by key."""
    out: dict[str, Any] = {}
    for k, v in sorted(config.items()):
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def env_float(name: str, default: float) -> float:
    """A number from the environment (timeouts and intervals tests shrink), else the default."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} must be a number of seconds") from None


def heartbeat_interval() -> float:
    """Seconds between heartbeats (``LAUNCH_HEARTBEAT_S``, default 10)."""
    return env_float("LAUNCH_HEARTBEAT_S", 10.0)


def stale_timeout() -> float:
    """Seconds without a heartbeat after which an attempt is dead (``LAUNCH_STALE_S``, 120)."""
    return env_float("LAUNCH_STALE_S", 120.0)
