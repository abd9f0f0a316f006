"""Backends: one folder per backend behind the contract in :mod:`launcher.backends.base`, and the
registry that maps a name to its class (the one list of backend names; the CLI's choices and the
spec's validation come from it). A backend module is imported only when it is asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from launcher.errors import SpecError

if TYPE_CHECKING:
    from launcher.backends.base import Backend

BACKENDS: dict[str, str] = {
    "local": "launcher.backends.local:LocalBackend",
    "aws": "launcher.backends.aws:AwsBackend",
    "slurm": "launcher.backends.slurm:SlurmBackend",
}


def capabilities(name: str):
    """A backend's :class:`~launcher.backends.base.Capabilities`, without instantiating it."""
    module_name, cls_name = BACKENDS.get(name, BACKENDS["local"]).split(":")
    return getattr(importlib.import_module(module_name), cls_name).capabilities


def get_backend(name: str, **options) -> Backend:
    """Instantiate a backend by name; an unknown name lists the valid ones."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise SpecError(
            f"unknown backend {name!r}; choose one of: {', '.join(sorted(BACKENDS))}"
        ) from None
    module_name, cls_name = target.split(":")
    return getattr(importlib.import_module(module_name), cls_name)(**options)
