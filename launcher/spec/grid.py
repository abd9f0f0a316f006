"""Grid's spellings -> ours: its YAML config (``grid run --config FILE``) as a JobSpec dict, and
what its settings that mean nothing here do instead (pure; no I/O).

A Grid config, in the shape Grid documented (every key optional, unknown keys are errors)::

    compute:
      provider: {vendor: aws, credentials: cc-xxxx, region: us-east-1, cluster: prod-2}
      train:
        instance: p3.2xlarge          # instance_type      gpus, cpus, memory: the same names
        disk_size: 200                # or storage_gb      max_nodes: the same name
        use_spot: false               # spot
        datastore_name: kinetics      # datastore          datastore_version: the same name
        datastore_mount_dir: /opt/datastore
        framework: lightning          # lightning or torch: the script runs with python
        dependency_file_info: {package_manager: pip, path: requirements.txt}
        auto_resume: true             # retries: AUTO_RESUME_RETRIES
        environment: {KEY: value}     # env
        localdir, dockerfile, nodes, scratch, actions: accepted, each with a note (or an error)
    hyper_params:
      settings:
        strategy: grid_search         # or random_search (none: grid_search)
        strategy_options: {num_trials: 8, seed: 0}    # trials, seed
      params: {--lr: "[0.01, 0.001]", --max_epochs: 5}

``params`` become script args after the command line's (``--lr "[0.01, 0.001]"``; a list value
is written as a sweep, a null one as a bare switch). Settings that cannot change anything here
(the provider, credentials, a cluster) produce a *note*, one line saying what happens instead;
ones that cannot work (a Dockerfile, a TensorFlow or Julia framework) are a SpecError.
"""

from __future__ import annotations

from typing import Any

from launcher.errors import SpecError

#: Frameworks whose scripts run here: every run is ``python SCRIPT ARGS``.
FRAMEWORKS = ("lightning", "torch")
#: Grid's other frameworks: an error, not a run that does the wrong thing.
OTHER_FRAMEWORKS = ("tensorflow", "julia", "torchelastic")
#: Retries ``auto_resume`` gives a failed experiment (each resumes from its last.ckpt).
AUTO_RESUME_RETRIES = 3
PACKAGE_MANAGERS = ("pip", "conda")

TOP_KEYS = ("compute", "hyper_params")
COMPUTE_KEYS = ("provider", "train")
PROVIDER_KEYS = ("vendor", "credentials", "region", "cluster")
# Grid's name -> our field, for the train keys that carry over as they are
TRAIN_FIELDS = {
    "instance": "instance_type",
    "instance_type": "instance_type",
    "gpus": "gpus",
    "cpus": "cpus",
    "memory": "memory",
    "disk_size": "disk_size",
    "storage_gb": "disk_size",
    "max_nodes": "max_nodes",
    "use_spot": "spot",
    "datastore_name": "datastore",
    "datastore_version": "datastore_version",
    "datastore_mount_dir": "datastore_mount_dir",
    "environment": "env",
}
TRAIN_OTHER = ("framework", "dependency_file_info", "auto_resume", "localdir", "dockerfile",
               "nodes", "scratch", "actions")  # fmt: skip
TRAIN_KEYS = (*TRAIN_FIELDS, *TRAIN_OTHER)
HYPER_KEYS = ("settings", "params")
SETTINGS_KEYS = ("strategy", "strategy_options", "trials")
STRATEGY_OPTION_KEYS = ("num_trials", "seed")
STRATEGIES = ("grid_search", "random_search", "none")

# What a Grid setting that changes nothing here does instead (flag and config key alike).
CREDENTIAL_NOTE = "credentials come from the standard AWS chain (env, ~/.aws, instance role)"
CLUSTER_NOTE = "where a run goes is --backend and `launch config` (aws.region, aws.bucket)"
LOCALDIR_NOTE = "every run already uploads the working directory (honouring .gitignore)"
DEPENDENCY_NOTE = (
    "checked; each node pip-installs it into a venv over its own environment before the "
    "script starts"
)
AUTO_RESUME_NOTE = (
    "interrupted experiments always resume from last.ckpt here; a failed one is also retried "
    f"up to {AUTO_RESUME_RETRIES} times (--retries N to change)"
)


def is_grid_config(data: Any) -> bool:
    """Whether a YAML mapping is in Grid's shape (``compute:`` / ``hyper_params:``)."""
    return isinstance(data, dict) and any(key in data for key in TOP_KEYS)


def framework_note(value: Any, where: str = "--framework") -> str:
    """The note for a framework that runs here; SpecError naming the allowed ones otherwise."""
    if value in FRAMEWORKS:
        return f"{where} {value}: the script runs with python, as every run does"
    if value in OTHER_FRAMEWORKS:
        why = f"{value} scripts are not supported here"
    else:
        why = f"unknown framework {value!r}"
    raise SpecError(f"{where}: {why}; use one of: {', '.join(FRAMEWORKS)} (python SCRIPT)")


def dockerfile_error(value: Any, where: str = "--dockerfile") -> SpecError:
    return SpecError(
        f"{where} {value}: images are not supported yet; nodes run python SCRIPT in the "
        "launcher's environment (AWS nodes install the snapshot's pyproject.toml)"
    )


def to_spec_dict(config: dict[str, Any], source: str, notes: list[str]) -> dict[str, Any]:
    """A Grid config -> the JobSpec mapping it means (validated by JobSpec after this).

    Notes for settings that mean something else here are appended to ``notes``; an unknown
    key or a setting that cannot work is a SpecError naming ``source``, the key and the
    allowed ones.
    """
    at = _Where(source)
    at.keys(config, TOP_KEYS, "")
    out: dict[str, Any] = {}
    compute = at.section(config, "compute", COMPUTE_KEYS)
    provider = at.section(compute, "compute.provider", PROVIDER_KEYS)
    if provider:
        vendor = provider.get("vendor", "aws")
        if vendor != "aws":
            raise at.error("compute.provider.vendor", f"must be aws, not {vendor!r}")
        notes.append(f"compute.provider: ignored; {CLUSTER_NOTE}; {CREDENTIAL_NOTE}")
    _train(at.section(compute, "compute.train", TRAIN_KEYS), at, out, notes)
    _hyper_params(at.section(config, "hyper_params", HYPER_KEYS), at, out, notes)
    return out


class _Where:
    """Error messages that name the file and the dotted key."""

    def __init__(self, source: str):
        self.source = source

    def error(self, path: str, problem: str) -> SpecError:
        return SpecError(f"{self.source}: {path} {problem}")

    def keys(self, data: dict[str, Any], allowed: tuple[str, ...], path: str) -> None:
        import difflib

        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                inside = f" in {path}" if path else ""
                raise SpecError(
                    f"{self.source}: unknown key {key!r}{inside}; {hint}allowed: "
                    f"{', '.join(allowed)}"
                )

    def section(self, data: dict[str, Any], path: str, allowed: tuple[str, ...]) -> dict:
        value = data.get(path.rsplit(".", 1)[-1])
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(path, f"must be a mapping, not {type(value).__name__}")
        self.keys(value, allowed, path)
        return value


def _train(train: dict[str, Any], at: _Where, out: dict[str, Any], notes: list[str]) -> None:
    for key, value in train.items():
        if key in TRAIN_FIELDS and value is not None:
            field = TRAIN_FIELDS[key]
            if field in out:
                raise at.error(f"compute.train.{key}", f"gives {field} a second time")
            out[field] = value
    if train.get("framework") is not None:
        notes.append(framework_note(train["framework"], "compute.train.framework"))
    info = at.section(train, "compute.train.dependency_file_info", ("package_manager", "path"))
    manager = info.get("package_manager") or "pip"
    if manager not in PACKAGE_MANAGERS:
        raise at.error(
            "compute.train.dependency_file_info.package_manager",
            f"must be one of: {', '.join(PACKAGE_MANAGERS)}; got {manager!r}",
        )
    if info.get("path") is not None:
        out["dependency_file"] = info["path"]
        notes.append(f"dependency_file {info['path']}: {DEPENDENCY_NOTE}")
    auto_resume = train.get("auto_resume")
    if auto_resume is not None and not isinstance(auto_resume, bool):
        raise at.error("compute.train.auto_resume", f"must be true or false, not {auto_resume!r}")
    if auto_resume:
        out["retries"] = AUTO_RESUME_RETRIES
        notes.append(f"auto_resume: {AUTO_RESUME_NOTE}")
    if train.get("localdir"):
        notes.append(f"localdir: {LOCALDIR_NOTE}")
    if train.get("dockerfile"):
        raise dockerfile_error(train["dockerfile"], "compute.train.dockerfile")
    if train.get("nodes"):
        notes.append("nodes: ignored; nodes start with the run, up to max_nodes")
    if train.get("scratch"):
        notes.append("scratch: ignored; scratch space is the node's disk (disk_size)")
    actions = train.get("actions")
    if actions is not None and not isinstance(actions, dict):
        raise at.error("compute.train.actions", "must be a mapping of hook: commands")
    if actions and any(actions.values()):
        raise at.error(
            "compute.train.actions",
            "(lifecycle commands) are not supported here; run setup steps in the script",
        )


def _hyper_params(hyper: dict[str, Any], at: _Where, out: dict[str, Any], notes: list) -> None:
    settings = at.section(hyper, "hyper_params.settings", SETTINGS_KEYS)
    strategy = settings.get("strategy")
    if strategy is not None:
        if strategy not in STRATEGIES:
            raise at.error(
                "hyper_params.settings.strategy",
                f"must be one of: {', '.join(STRATEGIES)}; got {strategy!r}",
            )
        if strategy == "none":
            notes.append("strategy none: sweeps in the args expand as with grid_search")
        out["strategy"] = "grid_search" if strategy == "none" else strategy
    options = at.section(settings, "hyper_params.settings.strategy_options", STRATEGY_OPTION_KEYS)
    if options.get("num_trials") is not None and settings.get("trials") is not None:
        raise at.error("hyper_params.settings.trials", "repeats strategy_options.num_trials")
    trials = options.get("num_trials", settings.get("trials"))
    if trials is not None and out.get("strategy") == "random_search":
        out["trials"] = trials  # Grid ignored it with grid_search (its template sets 1)
    if options.get("seed") is not None:
        out["seed"] = options["seed"]
    params = hyper.get("params")
    if params is None:
        return
    if not isinstance(params, dict):
        raise at.error("hyper_params.params", "must be a mapping of --flag: value")
    args: list[str] = []
    for flag, value in params.items():
        if not isinstance(flag, str) or not flag.startswith("-"):
            raise at.error(f"hyper_params.params.{flag}", f"is not a flag; write it as --{flag}")
        args.append(flag)
        if value is not None:
            args.append(_arg(value, at, f"hyper_params.params.{flag}"))
    out["script_args"] = args


def _arg(value: Any, at: _Where, path: str) -> str:
    if isinstance(value, bool | int | float | str):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, bool | int | float | str) for v in value):
        return repr(value)  # "[0.01, 0.001]", "['a', 'b']": the sweep it was written as
    raise at.error(path, f"must be a string, a number or a list of them, not {value!r}")


def from_flags(values: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """Grid's own ``grid run`` flags (``credential``, ``cluster``, ``framework``, ``localdir``,
    ``dependency_file``, ``dockerfile``; None or False = not given) -> JobSpec overrides, with a
    note for each one saying what it does here. ``auto_resume`` and ``ignore_warnings`` are
    the caller's: they act on the resolved spec and on the notes themselves."""
    out: dict[str, Any] = {}
    if values.get("dockerfile") is not None:
        raise dockerfile_error(values["dockerfile"])
    if values.get("framework") is not None:
        notes.append(framework_note(values["framework"]))
    if values.get("credential") is not None:
        notes.append(f"--credential {values['credential']}: ignored; {CREDENTIAL_NOTE}")
    if values.get("cluster") is not None:
        notes.append(f"--cluster {values['cluster']}: ignored; {CLUSTER_NOTE}")
    if values.get("localdir"):
        notes.append(f"--localdir: {LOCALDIR_NOTE}")
    if values.get("dependency_file") is not None:
        out["dependency_file"] = values["dependency_file"]
        notes.append(f"--dependency_file {values['dependency_file']}: {DEPENDENCY_NOTE}")
    if values.get("auto_resume"):
        notes.append(f"--auto_resume: {AUTO_RESUME_NOTE}")
    return out
