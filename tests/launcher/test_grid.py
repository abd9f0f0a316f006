"""Grid's command lines and config files work as written: through `launch run` (click's
CliRunner), with --dry-run, so nothing starts. Real runs are in local/test_grid_runs.py."""

from __future__ import annotations

import json
import textwrap

import pytest
from click.testing import CliRunner

from launcher.cli.app import cli
from launcher.spec import catalog

# The seed tutorial's Grid run, verbatim (train.py is the stand-in below).
TUTORIAL = ["--grid_name", "transformers-run", "--grid_strategy", "grid_search",
            "--grid_disk_size", "200", "--grid_max_nodes", "10",
            "--grid_datastore_mount_dir", "/opt/datastore", "--grid_instance_type", "p3.2xlarge",
            "--grid_credential", "cc-b87v8", "--grid_framework", "lightning", "--grid_gpus", "1",
            "train.py", "--gpus", "1", "--max_epochs", "10"]  # fmt: skip

# A config in the shape of Grid's documentation ("Using YAML": compute.provider, compute.train,
# hyper_params.settings with strategy_options, hyper_params.params).
GRID_CONFIG = """\
compute:
  provider:
    vendor: aws
    credentials: cc-b87v8
    region: us-east-1
  train:
    instance: g4dn.12xlarge
    gpus: 2
    cpus: 16
    memory: 64G
    disk_size: 200
    use_spot: false
    datastore_name: null
    datastore_version: null
    datastore_mount_dir: /opt/datastore
    framework: lightning
    dependency_file_info:
      package_manager: pip
      path: requirements.txt
    auto_resume: false
    localdir: false
    dockerfile: null
    actions:
      on_build: null
      on_experiment_start: null
    environment:
      MY_ENVIRONMENT_VARIABLE: "example"
hyper_params:
  settings:
    strategy: random_search
    strategy_options:
      num_trials: 3
      seed: 7
  params:
    --lr: "[0.01, 0.001, 0.0001]"
    --max_epochs: 5
"""
# The same run as flags.
GRID_FLAGS = ["--instance_type", "g4dn.12xlarge", "--gpus", "2", "--cpus", "16", "--memory", "64G",
              "--disk_size", "200", "--datastore_mount_dir", "/opt/datastore",
              "--strategy", "random_search", "--num_trials", "3", "--seed", "7",
              "--dependency_file", "requirements.txt", "--env", "MY_ENVIRONMENT_VARIABLE=example",
              "--framework", "lightning", "--credential", "cc-b87v8"]  # fmt: skip


@pytest.fixture(autouse=True)
def project(tmp_path, monkeypatch):
    """A private LAUNCH_HOME and a project folder (a stand-in train.py, a requirements.txt) as
    the current directory."""
    monkeypatch.setenv("LAUNCH_HOME", str(tmp_path / "home"))
    w = tmp_path / "project"
    w.mkdir()
    (w / "train.py").write_text("import sys\nprint(sys.argv[1:])\n")
    (w / "requirements.txt").write_text("numpy\n")
    monkeypatch.chdir(w)
    return w


def launch(*args: str):
    return CliRunner().invoke(cli, ["run", *args], catch_exceptions=False)


def notes(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("note: ")]


def test_the_tutorials_grid_command_line_runs_as_written():
    r = launch("--dry-run", *TUTORIAL)
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "1 experiment(s) of train.py on local:" in out
    assert "--gpus 1 --max_epochs 10" in out
    # one experiment: one node is counted and priced, not --grid_max_nodes 10
    assert "resources: 1 x p3.2xlarge, 1 GPU(s) per node, 200 GiB disk" in out
    assert f"${catalog.get_instance('p3.2xlarge').price_hour:.3f}/hour on-demand for 1 x" in out
    assert notes(r) == [
        "note: --framework lightning: the script runs with python, as every run does",
        "note: --credential cc-b87v8: ignored; credentials come from the standard AWS chain "
        "(env, ~/.aws, instance role)",
    ]


def test_dry_run_prices_one_node_per_experiment_at_most():
    r = launch("--dry-run", "--max_nodes", "10", "--instance", "g4dn.xlarge", "train.py",
               "--lr", "[1, 2, 3]")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "resources: 3 x g4dn.xlarge" in r.stdout
    assert f"${3 * catalog.get_instance('g4dn.xlarge').price_hour:.3f}/hour" in r.stdout


def test_a_grid_config_launches_the_same_run_as_its_flags(project):
    (project / "grid.yml").write_text(GRID_CONFIG)
    args = ["train.py", "--lr", "[0.01, 0.001, 0.0001]", "--max_epochs", "5"]
    by_flags = launch("--dry-run", *GRID_FLAGS, *args)
    by_config = launch("--dry-run", "--config", "grid.yml", "train.py")
    assert by_flags.exit_code == 0, by_flags.output
    assert by_config.exit_code == 0, by_config.output
    assert by_config.stdout == by_flags.stdout
    assert "3 experiment(s) of train.py" in by_config.stdout
    assert "resources: 1 x g4dn.12xlarge, 2 GPU(s) per node, 200 GiB disk" in by_config.stdout
    said = " ".join(notes(by_config))
    assert "compute.provider: ignored" in said and "framework lightning" in said
    assert "dependency_file requirements.txt: checked; each node pip-installs it" in said
    # --spec reads the same file; Grid's params follow the command line's own args
    r = launch("--dry-run", "--spec", "grid.yml", "train.py", "--batch_size", "4")
    assert r.exit_code == 0, r.output
    assert "--batch_size 4 --lr 0.01 --max_epochs 5" in r.stdout


def test_a_grid_config_sets_what_run_json_would_hold(project):
    from launcher.spec.jobspec import JobSpec

    (project / "grid.yml").write_text(GRID_CONFIG)
    spec = JobSpec.load("grid.yml", script="train.py")
    d = spec.to_dict()
    assert {k: d[k] for k in ("instance_type", "gpus", "cpus", "memory", "disk_size", "spot",
                              "datastore_mount_dir", "strategy", "trials", "seed",
                              "dependency_file", "env", "script_args")} == {
        "instance_type": "g4dn.12xlarge", "gpus": 2, "cpus": 16, "memory": 64, "disk_size": 200,
        "spot": False, "datastore_mount_dir": "/opt/datastore", "strategy": "random_search",
        "trials": 3, "seed": 7, "dependency_file": "requirements.txt",
        "env": {"MY_ENVIRONMENT_VARIABLE": "example"},
        "script_args": ["--lr", "[0.01, 0.001, 0.0001]", "--max_epochs", "5"],
    }  # fmt: skip
    assert json.loads(json.dumps(d)) == d


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("    instance: g4dn.12xlarge", "    instanc: g4dn.12xlarge"),
         "grid.yml: unknown key 'instanc' in compute.train; did you mean 'instance'? allowed: "
         "instance, instance_type, gpus, cpus"),
        (("  settings:", "  setings:"),
         "unknown key 'setings' in hyper_params; did you mean 'settings'? allowed: settings, "
         "params"),
        (("hyper_params:", "hyperparams:"), "unknown key 'hyperparams'; did you mean "
         "'hyper_params'? allowed: compute, hyper_params"),
        (("      seed: 7", "      sed: 7"), "allowed: num_trials, seed"),
        (("    strategy: random_search", "    strategy: bayes"),
         "hyper_params.settings.strategy must be one of: grid_search, random_search, none"),
        (("    framework: lightning", "    framework: julia"),
         "compute.train.framework: julia scripts are not supported here; use one of: lightning, "
         "torch"),
        (("    dockerfile: null", "    dockerfile: Dockerfile"), "images are not supported yet"),
        (("      on_build: null", "      on_build: [pip install x]"),
         "compute.train.actions (lifecycle commands) are not supported here"),
        (("    gpus: 2", "    gpus: 8"), "g4dn.12xlarge has 4 GPUs; --gpus 8 needs one of"),
        (("    cpus: 16", "    cpus: 64"), "g4dn.12xlarge has 48 vCPUs; --cpus 64 needs one of"),
        (("      path: requirements.txt", "      path: reqs.txt"),
         "dependency_file not found: reqs.txt"),
    ],
)  # fmt: skip
def test_a_grid_config_is_strict(project, change, message):
    old, new = change
    assert old in GRID_CONFIG
    (project / "grid.yml").write_text(GRID_CONFIG.replace(old, new))
    r = launch("--dry-run", "--config", "grid.yml", "train.py")
    assert r.exit_code == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], r.stderr


def test_a_minimal_grid_config_with_grid_search(project):
    (project / "g.yaml").write_text(textwrap.dedent("""\
        compute:
          train:
            instance: t3.medium
        hyper_params:
          settings:
            strategy: grid_search
            strategy_options: {num_trials: 1, seed: 0}
          params:
            --lr: [0.01, 0.001]
            --fast: null
        """))  # fmt: skip
    r = launch("--dry-run", "--config", "g.yaml", "train.py")
    assert r.exit_code == 0, r.output
    # a YAML list sweeps as the string would; null is a bare switch; num_trials needs random
    assert "exp-0  --lr 0.01 --fast" in r.stdout and "exp-1  --lr 0.001 --fast" in r.stdout
    assert "resources: 1 x t3.medium, 0 GPU(s)" in r.stdout


INERT = [
    (["--credential", "cc-1"], "--credential cc-1: ignored; credentials come from the standard"),
    (["--g_credential", "cc-1"], "--credential cc-1: ignored"),
    (["--cluster", "prod-2"], "--cluster prod-2: ignored; where a run goes is --backend and"),
    (["--framework", "torch"], "--framework torch: the script runs with python"),
    (["--localdir"], "--localdir: every run already uploads the working directory"),
    (["--dependency_file", "requirements.txt"],
     "--dependency_file requirements.txt: checked; each node pip-installs it into a venv"),
    (["--auto_resume"], "--auto_resume: interrupted experiments always resume from last.ckpt"),
]  # fmt: skip


@pytest.mark.parametrize(("flags", "note"), INERT, ids=[f[0] for f, _ in INERT])
def test_each_inert_grid_flag_prints_one_line(flags, note):
    r = launch("--dry-run", *flags, "train.py")
    assert r.exit_code == 0, r.output
    (line,) = notes(r)
    assert line.startswith(f"note: {note}")


def test_ignore_warnings_leaves_the_notes_out():
    every = [a for flags, _ in INERT for a in flags if flags[0] != "--g_credential"]
    r = launch("--dry-run", "--ignore_warnings", *every, "train.py")
    assert r.exit_code == 0, r.output
    assert notes(r) == []


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--framework", "julia"], "--framework: julia scripts are not supported here; use one "
         "of: lightning, torch (python SCRIPT)"),
        (["--grid_framework", "tensorflow"], "tensorflow scripts are not supported here"),
        (["--framework", "jax"], "unknown framework 'jax'; use one of: lightning, torch"),
        (["--dockerfile", "Dockerfile"], "--dockerfile Dockerfile: images are not supported yet"),
        (["--dependency_file", "missing.txt"], "dependency_file not found: missing.txt"),
        (["--cpus", "500"], "no instance type has 1 GPU(s) and 500 vCPUs; the most there is: "
         "192 vCPUs (g5.48xlarge)"),
        (["--instance", "g4dn.xlarge", "--cpus", "16"],
         "g4dn.xlarge has 4 vCPUs; --cpus 16 needs one of: g4dn.4xlarge"),
        (["--instance", "t3.medium", "--memory", "8G"],
         "t3.medium has 4 GiB of memory; --memory 8 needs one of:"),
        (["--memory", "lots"], "memory must be GiB, or a size like 16G, 512M, 1T; got 'lots'"),
        (["--description", "x" * 201], "description has 201 characters; at most 200"),
    ],
)  # fmt: skip
def test_what_cannot_work_here_is_a_one_line_error(flags, message):
    r = launch("--dry-run", *flags, "train.py")
    assert r.exit_code == 1
    (line,) = r.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: ") and message in line, r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.startswith("error")]) == 1


@pytest.mark.parametrize(
    ("flags", "instance"),
    [
        (["--cpus", "16"], "g4dn.4xlarge"),  # the cheapest with 16 vCPUs and a GPU
        (["--gpus", "0", "--cpus", "16"], "c5.4xlarge"),
        (["--gpus", "0", "--memory", "30"], "m5.2xlarge"),
        (["--grid_gpus", "4", "--grid_memory", "200G"], "g4dn.metal"),
        (["--instance", "p3.2xlarge", "--cpus", "8", "--memory", "61G"], "p3.2xlarge"),
    ],
)
def test_cpus_and_memory_pick_or_check_the_instance(flags, instance):
    r = launch("--dry-run", *flags, "train.py")
    assert r.exit_code == 0, r.output
    assert f"resources: 1 x {instance}," in r.stdout


def test_every_grid_spelling_reaches_its_option():
    r = launch("--dry-run", "--g_name", "n1", "--grid_description", "about", "--g_strategy",
               "random_search", "--grid_trials", "2", "--g_seed", "3", "--g_instance_type",
               "t3.medium", "--use-spot", "--backend", "local", "train.py",
               "--lr", "[1, 2, 3]")  # fmt: skip
    # --use-spot reached spot: the local backend says it cannot
    assert r.exit_code == 1 and "cannot run spot instances" in r.stderr
    r = launch("--dry-run", "--g_name", "n1", "--grid_description", "about", "--g_strategy",
               "random_search", "--num-trials", "2", "--g_seed", "3", "--g_instance_type",
               "t3.medium", "--g_disk_size", "50", "train.py", "--lr", "[1, 2, 3]")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "2 experiment(s)" in r.stdout and "description: about" in r.stdout
    assert "resources: 1 x t3.medium, 0 GPU(s) per node, 50 GiB disk" in r.stdout


def test_an_unknown_option_gets_a_did_you_mean():
    r = launch("--grid_nme", "x", "train.py")
    assert r.exit_code == 2
    assert "no such option: --grid_nme; did you mean --grid_name?" in r.stderr
    assert "options go before SCRIPT" not in r.stderr
    r = launch("--instanse_type=p3.2xlarge", "train.py")
    assert "no such option: --instanse_type; did you mean --instance_type?" in r.stderr
    r = launch("--zzzz", "train.py")
    assert "no such option: --zzzz; `launch run --help` lists them" in r.stderr


def test_launch_options_after_the_script_get_the_hint():
    r = launch("--dry-run", "train.py", "--wait", "--grid_gpus", "1", "--gpus", "1")
    assert r.exit_code == 0, r.output
    assert notes(r) == [
        "note: --wait comes after SCRIPT, so train.py gets it; launch's options go before SCRIPT",
        "note: --grid_gpus comes after SCRIPT, so train.py gets it; launch's options go before "
        "SCRIPT",
    ]
    assert "--wait --grid_gpus 1 --gpus 1" in r.stdout  # the script still gets them


def test_help_lists_grid_spellings_once():
    r = CliRunner().invoke(cli, ["run", "--help"])
    assert r.exit_code == 0
    options = r.stdout.split("Options:")[1]
    assert "--grid_" not in options and "--g_" not in options and "--credential" not in options
    assert "--instance TEXT" in options and "--cpus INTEGER" in options
    text = " ".join(r.stdout.split())
    for spelling in ("--instance_type", "--grid_NAME", "--g_NAME", "--credential", "--cluster",
                     "--framework lightning|torch", "--localdir", "--dependency_file",
                     "--auto_resume", "--ignore_warnings", "--dockerfile", "--config"):  # fmt: skip
        assert spelling in text
    assert len(r.stdout.splitlines()) < 70
