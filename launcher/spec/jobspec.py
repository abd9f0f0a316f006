"""JobSpec: a YAML file and/or flag values -> one validated job (strict: unknown keys are errors).

The YAML format mirrors the ``launch run`` flags, one key per flag (examples in ``job_specs/``)::

    script: trainer/train.py
    script_args: ["--max_epochs", "5", "--lr", "[0.01, 0.001]"]   # or one shell-like string
    instance_type: g4dn.xlarge
    gpus: 1
    datastore: kinetics:2

Grid's spellings are accepted as aliases (``instance``, ``use_spot``, ``datastore_name``,
``num_trials``, and dashes for underscores), and a file in Grid's own config shape
(``compute:``/``hyper_params:``) is translated by :mod:`launcher.spec.grid`. Defaults: backend
``local``, instance ``g4dn.xlarge`` (or, given ``cpus``/``memory``, the cheapest that fits),
``gpus`` = every GPU of the instance type (so ``--instance_type g4dn.12xlarge`` alone gives 4;
pass ``--gpus 0`` for a CPU run), ``disk_size`` 100 GiB, ``nodes`` 1, ``max_nodes`` = nodes,
``strategy`` grid_search, ``seed`` 0 (sweeps are reproducible by default), no retries, no
runtime limit.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launcher.backends import BACKENDS, capabilities
from launcher.errors import SpecError
from launcher.spec import catalog, grid, sweep
from launcher.spec.sweep import Experiment
from launcher.storage.records import check_name

if TYPE_CHECKING:
    from launcher.backends.base import Capabilities

__all__ = ["JobSpec", "Experiment", "ALIASES", "field_help", "check_mount_dir_here"]

MIN_DISK_GIB = 20
MAX_DISK_GIB = 16384
MAX_NODES = 100
PLACEMENTS = ("cluster",)
MAX_RETRIES = 100
MAX_DESCRIPTION = 200
DATASTORE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")  # fullmatch, like every name
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # fullmatch: "A\n" is not a name
# Set by the agent for every experiment; a spec must not shadow them.
RESERVED_ENV = ("CUDA_VISIBLE_DEVICES",)
RESERVED_ENV_PREFIX = "LAUNCH_"

#: Other spellings accepted in YAML and overrides (Grid's names), mapped to the field name.
ALIASES = {
    "instance": "instance_type",
    "use_spot": "spot",
    "datastore_name": "datastore",
    "num_trials": "trials",
    "args": "script_args",
}

_DURATION_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_MEMORY_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*((?:[gmt]i?b?)?)\s*", re.I)
_MEMORY_UNITS = {"": 1, "G": 1, "M": 1 / 1024, "T": 1024}


def _f(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class JobSpec:
    """Everything ``launch run`` needs; every field has a flag of the same name."""

    script: str = _f(None, "Script to run with python, relative to the working directory.")
    script_args: list[str] = field(
        default_factory=list,
        metadata={"help": "Arguments for the script; flag values may be sweeps."},
    )
    name: str | None = _f(None, "Run name ([a-z0-9][a-z0-9-]{0,62}); generated when omitted.")
    backend: str = _f(
        "local", "Where to run: local (processes on this machine), aws (EC2) or slurm (sbatch)."
    )
    instance_type: str = _f("g4dn.xlarge", "Instance type per node; `launch instances` lists them.")
    gpus: int | None = _f(None, "GPUs per experiment; default: all the instance type has.")
    disk_size: int = _f(100, f"Disk per node in GiB ({MIN_DISK_GIB} to {MAX_DISK_GIB}).")
    datastore: str | None = _f(None, "Datastore to mount, NAME or NAME:VERSION.")
    datastore_version: int | None = _f(None, "Datastore version; default: the latest.")
    datastore_mount_dir: str | None = _f(
        None, "Absolute path the datastore appears at on a node; default: in the agent's work dir."
    )
    strategy: str = _f("grid_search", "How sweeps combine: grid_search or random_search.")
    trials: int | None = _f(None, "Experiments to draw with random_search (required there).")
    max_experiments: int = _f(
        sweep.MAX_EXPERIMENTS,
        f"Most experiments the sweep may give (a typo guard; up to {sweep.MAX_EXPERIMENTS_LIMIT}).",
    )
    max_nodes: int | None = _f(
        None,
        f"Nodes running at once (1 to {MAX_NODES}; default: nodes): max_nodes // nodes "
        "experiments at a time.",
    )
    nodes: int = _f(
        1, "Nodes per experiment, each with --gpus GPUs: one training across them (DDP)."
    )
    placement: str | None = _f(
        None, "aws: 'cluster' puts an experiment's nodes in a cluster placement group."
    )
    spot: bool = _f(False, "Use spot instances (cheaper, can be interrupted; resumed on retry).")
    env: dict[str, str] = field(
        default_factory=dict, metadata={"help": "Extra environment variables for the script."}
    )
    retries: int = _f(
        0, "More attempts an experiment may take after failing or losing its node (each resumes)."
    )
    seed: int = _f(0, "Seed for random_search and distribution sweeps.")
    max_runtime: int | None = _f(
        None, "Seconds an experiment may run before it is stopped (accepts 90m, 2h, 1d)."
    )
    cpus: int | None = _f(
        None, "vCPUs a node needs; picks the instance type when none is given, else checked."
    )
    memory: float | None = _f(
        None, "GiB of RAM a node needs (16, '16G', '512M'); picks or checks like cpus."
    )
    description: str | None = _f(None, f"What the run is for (up to {MAX_DESCRIPTION} chars).")
    dependency_file: str | None = _f(
        None, "requirements.txt or environment.yml in the working directory (Grid's); checked."
    )

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        *,
        workdir: str | Path | None = None,
        notes: list[str] | None = None,
        **overrides: Any,
    ) -> JobSpec:
        """A validated spec from a YAML file and/or flag values (flags win).

        Overrides that are None are "not given" (click passes None for unset options); an empty
        ``script_args`` is "not given" unless ``script`` is given too; an ``env`` override adds
        to the file's env (same names: the flag wins). The script must exist under
        ``workdir`` (default: the current directory). A file in Grid's config shape is
        translated first (its params follow the flags' script args, as in Grid), and what its
        settings do instead here is appended to ``notes``.
        """
        data: dict[str, Any] = _read_yaml(path) if path is not None else {}
        from_grid = grid.is_grid_config(data)
        if from_grid:
            data = grid.to_spec_dict(data, str(path), [] if notes is None else notes)
        data = _canonical_keys(data, source=str(path) if path else "spec")
        given = {k: v for k, v in overrides.items() if v is not None}
        if "script_args" in given and not given["script_args"] and "script" not in given:
            del given["script_args"]
        flags = _canonical_keys(given, source="flags")
        if isinstance(data.get("env"), dict) and isinstance(flags.get("env"), dict):
            flags["env"] = {**data["env"], **flags["env"]}  # --env adds to the spec's env
        if from_grid and "script_args" in flags and "script_args" in data:
            given_args = _check_args("script_args", flags["script_args"])
            flags["script_args"] = [*given_args, *data["script_args"]]
        data.update(flags)
        _check_instances(data)
        spec = cls.from_dict(data)
        spec.validate(workdir=Path.cwd() if workdir is None else workdir)
        return spec

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        """A spec from a mapping (run.json, YAML), type-checked; no file system access."""
        if not isinstance(data, dict):
            raise SpecError(f"a job spec must be a mapping of field: value, not {_tname(data)}")
        data = _canonical_keys(data, source="spec")
        values = {name: _CHECKS[name](name, value) for name, value in data.items()}
        picks = capabilities(values.get("backend", "local")).instances  # EC2 types apply
        if picks and "instance_type" not in values and (values.get("cpus") or values.get("memory")):
            values["instance_type"] = catalog.pick_instance(
                values.get("gpus"), values.get("cpus"), values.get("memory")
            )
        spec = cls(**values)
        if spec.script is None:
            raise SpecError("script is required: the python file to run, e.g. trainer/train.py")
        if spec.datastore and ":" in spec.datastore:
            name, _, version = spec.datastore.partition(":")
            if not version.isdigit() or int(version) < 1:
                raise SpecError(
                    f"datastore {spec.datastore!r}: the version after ':' must be an integer >= 1"
                )
            v = int(version)
            if spec.datastore_version not in (None, v):
                raise SpecError(
                    f"datastore {spec.datastore!r} and datastore_version {spec.datastore_version} "
                    "disagree; give the version once"
                )
            spec.datastore, spec.datastore_version = name, v
        if spec.datastore is not None and not DATASTORE_NAME_RE.fullmatch(spec.datastore):
            raise SpecError(
                f"invalid datastore name {spec.datastore!r}: use [a-z0-9][a-z0-9._-]{{0,62}}"
            )
        if spec.datastore_version is not None and spec.datastore is None:
            raise SpecError("datastore_version is set but datastore is not")
        return spec

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field (the run.json form); from_dict reads it back."""
        return dataclasses.asdict(self)

    # -- validation ----------------------------------------------------------------------------
    def validate(self, workdir: str | Path | None = None) -> JobSpec:
        """Check combinations against the catalog (and the script under ``workdir`` when given).

        Resolves ``gpus`` (None -> the instance's GPU count) and normalizes ``script`` to a
        path relative to ``workdir``. Returns self, so ``JobSpec.from_dict(d).validate()``.
        """
        if capabilities(self.backend).instances:
            self._check_instance(catalog.get_instance(self.instance_type))
        else:  # the cluster's own nodes: its scheduler checks what it is asked for
            self.instance_type, self.gpus = self.backend, self.gpus or 0
        if self.max_nodes is None:
            self.max_nodes = self.nodes
        if self.nodes > self.max_nodes:
            raise SpecError(
                f"--nodes {self.nodes} is more than --max-nodes {self.max_nodes}: an experiment's "
                f"nodes run at once, so use --max-nodes {self.nodes} or more"
            )
        if self.strategy == "grid_search" and self.trials is not None:
            raise SpecError("trials only applies to strategy random_search, not grid_search")
        if self.strategy == "random_search" and self.trials is None:
            raise SpecError("strategy random_search needs trials (the number of experiments)")
        if workdir is not None:
            self.script = _check_script(self.script, Path(workdir))
            if self.dependency_file is not None:
                self.dependency_file = _check_script(
                    self.dependency_file, Path(workdir), what="dependency_file"
                )
        self.experiments()  # surfaces malformed sweeps now, before anything is launched
        return self

    def _check_instance(self, inst) -> None:
        """gpus (None -> all the type has), cpus and memory against the instance type."""
        if self.gpus is None:
            self.gpus = inst.gpus
        if self.gpus > inst.gpus:
            options = catalog.instances_with_gpus(self.gpus, family=inst.name.split(".")[0])
            need = f"needs one of: {', '.join(options[:8])}" if options else "no type has that many"
            plural = "GPU" if inst.gpus == 1 else "GPUs"
            raise SpecError(f"{inst.name} has {inst.gpus} {plural}; --gpus {self.gpus} {need}")
        for flag, have, want in (("cpus", inst.vcpus, self.cpus),
                                 ("memory", inst.memory_gib, self.memory)):  # fmt: skip
            if want is not None and want > have:
                unit = "vCPUs" if flag == "cpus" else "GiB of memory"
                options = catalog.fitting(self.gpus, self.cpus, self.memory)
                need = f"needs one of: {', '.join(options[:8])}" if options else "no type has that"
                raise SpecError(f"{inst.name} has {have:g} {unit}; --{flag} {want:g} {need}")

    def check_capabilities(self, caps: Capabilities, backend: str | None = None) -> None:
        """SpecError if the spec asks for something the backend cannot do (spot, nodes, GPUs)."""
        who = f"backend {backend or self.backend!r}"
        if self.spot and not caps.spot:
            raise SpecError(f"{who} cannot run spot instances; drop --spot or use --backend aws")
        if self.max_nodes > 1 and not caps.multi_node:
            raise SpecError(f"{who} runs one node only; --max_nodes {self.max_nodes} needs 1")
        if self.nodes > 1 and not caps.gangs:
            raise SpecError(f"{who} cannot run an experiment across nodes; --nodes {self.nodes} "
                            "needs 1 here")  # fmt: skip
        if self.placement and not caps.placement:
            raise SpecError(f"{who} has no placement groups; drop --placement {self.placement}")
        if self.gpus and not caps.gpus:
            raise SpecError(f"{who} has no GPUs; use --gpus 0")

    def experiments_at_once(self) -> int:
        """How many experiments run at the same time at most: max_nodes counts nodes."""
        return max(1, int(self.max_nodes) // int(self.nodes))

    def experiments(self) -> list[Experiment]:
        """One experiment per point of the sweep in ``script_args`` (one if nothing sweeps)."""
        return sweep.expand(
            self.script_args,
            self.strategy,
            self.trials,
            self.seed,
            max_experiments=self.max_experiments,
        )


def _check_instances(data: dict[str, Any]) -> None:
    """--instance and --spot given explicitly to a backend without instance types (slurm)."""
    backend = data.get("backend") or "local"
    if backend in BACKENDS and not capabilities(backend).instances:
        for key, flag in (("instance_type", "--instance"), ("spot", "--spot")):
            if data.get(key) not in (None, False):
                raise SpecError(
                    f"{flag} does not apply on backend {backend!r}: the cluster's "
                    "nodes are its own (ask for --gpus, --cpus, --memory)"
                )


def field_help() -> dict[str, str]:
    """Field name -> one-line description (for CLI help and docs)."""
    return {f.name: f.metadata["help"] for f in dataclasses.fields(JobSpec)}


# -- reading -----------------------------------------------------------------------------------
def _read_yaml(path: str | Path) -> dict[str, Any]:
    from launcher.spec.strict_yaml import load_spec_yaml

    p = Path(path)
    if not p.is_file():
        raise SpecError(f"spec file not found: {p}")
    data = load_spec_yaml(p)  # duplicate keys, non-UTF-8 bytes, huge integers: SpecError
    if data is None:
        raise SpecError(f"{p} is empty; it needs at least `script: PATH`")
    if not isinstance(data, dict):
        raise SpecError(f"{p} must be a mapping of field: value, not {_tname(data)}")
    return data


def _canonical_keys(data: dict[str, Any], source: str) -> dict[str, Any]:
    names = [f.name for f in dataclasses.fields(JobSpec)]
    out: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise SpecError(f"{source}: keys must be strings, not {key!r}")
        canon = key.replace("-", "_")
        canon = ALIASES.get(canon, canon)
        if canon not in names:
            close = difflib.get_close_matches(canon, names + list(ALIASES), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise SpecError(f"{source}: unknown field {key!r}; {hint}fields: {', '.join(names)}")
        if canon in out:
            raise SpecError(f"{source}: field {canon!r} is given twice (as {key!r} too)")
        out[canon] = value
    return out


# -- per-field checks: (field name, raw value) -> value, or SpecError naming the field --------
def _tname(v: Any) -> str:
    return type(v).__name__


def _check_str(name: str, v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise SpecError(f"{name} must be a non-empty string, not {v!r}")
    return _no_nul(name, v)


def _no_nul(name: str, v: str) -> str:
    """A NUL cannot pass through exec (argv, environment, paths): refused here, at submit, not
    on the node."""
    if "\x00" in v:
        raise SpecError(f"{name} {v!r} holds a NUL character (\\x00); remove it")
    return v


def _optional(check):
    return lambda name, v: None if v is None else check(name, v)


def _check_int(name: str, v: Any, low: int = 0, high: int | None = None) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise SpecError(f"{name} must be an integer, not {v!r}")
    if abs(v) >= 2**63:  # run.json is JSON; a 4,300-digit integer does not even print
        raise SpecError(f"{name} must be an integer below 2**63, got one of {v.bit_length()} bits")
    if v < low or (high is not None and v > high):
        allowed = f"{low} to {high}" if high is not None else f">= {low}"
        raise SpecError(f"{name} must be {allowed}, got {v}")
    return v


def _check_positive_int(name: str, v: Any) -> int:
    return _check_int(name, v, low=1)


def _check_bool(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise SpecError(f"{name} must be true or false, not {v!r}")
    return v


def _check_choice(choices: tuple[str, ...]):
    def check(name: str, v: Any) -> str:
        if v not in choices:
            raise SpecError(f"{name} must be one of: {', '.join(choices)}; got {v!r}")
        return v

    return check


def _check_args(name: str, v: Any) -> list[str]:
    if isinstance(v, str):
        try:
            v = shlex.split(v)  # split like a shell would, but never run one
        except ValueError as e:
            raise SpecError(f"{name}: cannot split {v!r}: {e}") from None
    if not isinstance(v, list | tuple):
        raise SpecError(f"{name} must be a list of strings or one string, not {_tname(v)}")
    for i, a in enumerate(v):
        if not isinstance(a, str):
            raise SpecError(
                f"{name}[{i}] must be a string, not {_tname(a)} {a!r}; quote it in YAML: '{a}'"
            )
        _no_nul(f"{name}[{i}]", a)
    return list(v)


def _check_name(name: str, v: Any) -> str:
    return check_name(v, name)


def _check_datastore(name: str, v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise SpecError(f"{name} must be NAME or NAME:VERSION, not {v!r}")
    return v


def check_mount_dir_here(path: str) -> None:
    """SpecError unless ``path`` can become a datastore mount on this machine (where the local
    backend's nodes run): a link or an empty folder there, or nothing there and a writable
    folder above it. Checked at launch, so a bad path is not a failure in the middle of a run."""
    import os

    p = Path(path)
    if p.is_symlink():
        return
    if p.is_dir():
        if any(p.iterdir()):
            raise SpecError(
                f"datastore_mount_dir {path} is a folder that is not empty; pick an empty or "
                "new path"
            )
        return
    if p.exists():
        raise SpecError(f"datastore_mount_dir {path} is a file; pick an empty or new path")
    above = p.parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir() or not os.access(above, os.W_OK | os.X_OK):
        raise SpecError(
            f"datastore_mount_dir {path} cannot be created here ({above} is not a writable "
            "folder); pick a path you can write, the datastore is linked there"
        )


def _check_mount_dir(name: str, v: Any) -> str:
    if not isinstance(v, str) or not v.startswith("/") or "\x00" in v or ".." in v.split("/"):
        raise SpecError(f"{name} must be an absolute path without '..', not {v!r}")
    return v


def _check_env(name: str, v: Any) -> dict[str, str]:
    if not isinstance(v, dict):
        raise SpecError(f"{name} must be a mapping of NAME: value, not {_tname(v)}")
    out = {}
    for k, val in v.items():
        if not isinstance(k, str) or not ENV_NAME_RE.fullmatch(k):
            raise SpecError(f"{name}: invalid variable name {k!r}: use [A-Za-z_][A-Za-z0-9_]*")
        if k in RESERVED_ENV or k.startswith(RESERVED_ENV_PREFIX):
            raise SpecError(f"{name}: {k} is set by the launcher; it cannot be overridden")
        if isinstance(val, bool) or not isinstance(val, str | int | float):
            raise SpecError(f"{name}.{k} must be a string or number, not {val!r}")
        out[k] = _no_nul(f"{name}.{k}", str(val))
    return out


def _check_duration(name: str, v: Any) -> int:
    if isinstance(v, str):
        m = _DURATION_RE.fullmatch(v)
        if not m:
            raise SpecError(f"{name} must be seconds or a duration like 90m, 2h, 1d; got {v!r}")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
        if seconds >= 2**63:  # float("9" * 400) is inf, and round(inf) is an OverflowError
            raise SpecError(f"{name} must be below 2**63 seconds; got {v[:40]!r}...")
        v = round(seconds)
    elif isinstance(v, float) and not isinstance(v, bool) and v.is_integer():
        v = int(v)
    return _check_int(name, v, low=1)


def _check_memory(name: str, v: Any) -> float | int:
    """GiB: a number, or a string with a unit (16G, 16GiB, 512M, 1T; G and Gi are the same)."""
    if isinstance(v, str):
        m = _MEMORY_RE.fullmatch(v)
        if not m:
            raise SpecError(f"{name} must be GiB, or a size like 16G, 512M, 1T; got {v!r}")
        v = float(m.group(1)) * _MEMORY_UNITS[m.group(2)[:1].upper()]
        if v >= 2**63:
            raise SpecError(f"{name} must be below 2**63 GiB; got {v!r}")
    if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
        raise SpecError(f"{name} must be a positive number of GiB, not {v!r}")
    return int(v) if float(v).is_integer() else v


def _check_description(name: str, v: Any) -> str:
    if not isinstance(v, str):
        raise SpecError(f"{name} must be a string, not {_tname(v)}")
    if len(v) > MAX_DESCRIPTION:
        raise SpecError(f"{name} has {len(v)} characters; at most {MAX_DESCRIPTION}")
    return v


def _check_script(script: str, workdir: Path, what: str = "script") -> str:
    root = workdir.resolve()
    target = (root / script).resolve()
    if not target.is_relative_to(root):
        raise SpecError(f"{what} {script!r} is outside the working directory {root}")
    if not target.is_file():
        raise SpecError(f"{what} not found: {script} (relative to {root})")
    return target.relative_to(root).as_posix()


_CHECKS = {
    "script": _check_str,
    "script_args": _check_args,
    "name": _optional(_check_name),
    "backend": _check_choice(tuple(BACKENDS)),
    "instance_type": _check_str,
    "gpus": _optional(lambda n, v: _check_int(n, v, low=0)),
    "disk_size": lambda n, v: _check_int(n, v, low=MIN_DISK_GIB, high=MAX_DISK_GIB),
    "datastore": _optional(_check_datastore),
    "datastore_version": _optional(_check_positive_int),
    "datastore_mount_dir": _optional(_check_mount_dir),
    "strategy": _check_choice(sweep.STRATEGIES),
    # trials above max_experiments is refused by the sweep, in words naming --max-experiments
    "trials": _optional(lambda n, v: _check_int(n, v, low=1, high=sweep.MAX_EXPERIMENTS_LIMIT)),
    "max_experiments": lambda n, v: _check_int(n, v, low=1, high=sweep.MAX_EXPERIMENTS_LIMIT),
    "max_nodes": _optional(lambda n, v: _check_int(n, v, low=1, high=MAX_NODES)),
    "nodes": lambda n, v: _check_int(n, v, low=1, high=MAX_NODES),
    "placement": _optional(_check_choice(PLACEMENTS)),
    "spot": _check_bool,
    "env": _check_env,
    "retries": lambda n, v: _check_int(n, v, low=0, high=MAX_RETRIES),
    "seed": lambda n, v: _check_int(n, v, low=0),
    "max_runtime": _optional(_check_duration),
    "cpus": _optional(_check_positive_int),
    "memory": _optional(_check_memory),
    "description": _optional(_check_description),
    "dependency_file": _optional(_check_str),
}
