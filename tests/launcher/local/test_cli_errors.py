"""Every bad input through `launch`: one red line on stderr, a non-zero exit, nothing written."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from launcher.cli.app import cli
from launcher.errors import LaunchError

CPU = ["--instance", "t3.medium", "--gpus", "0"]


def launch(*args: str):
    return CliRunner().invoke(cli, list(args))


def one_line_error(result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["job.py", "--lr", "[0.1, "], r"--lr"),  # malformed sweep
        (["job.py", "--lr", "uniform(1)"], r"uniform"),  # wrong arity
        (["job.py", "--lr", "uniform(1, 2)"], r"grid_search needs a count"),
        (["job.py", "--lr", "uniform(1e-4, 1e-1, 5"], r"--lr 'uniform\(1e-4, 1e-1, 5'.*unclosed"),
        (["job.py", "--x", "uniform(-1e308, 1e308, 3)"], r"--x .*values must be finite"),
        (["job.py", "--lr", "range(1001)"], r"pass --max-experiments 1001 "),
        (["--max-experiments", "0", *CPU, "job.py"], r"max_experiments must be 1 to 100000"),
        (["job.py", "--lr", "normal(0, 1, 3)"], r"normal"),  # unsupported distribution
        (["--instance", "p9.huge", "job.py"], r"p9\.huge"),
        (["--instance", "g4dn.xlarge", "--gpus", "4", "job.py"], r"g4dn\.xlarge has 1 GPU"),
        (["nope.py"], r"nope\.py"),
        (["--datastore", "nosuch", *CPU, "job.py"], r"nosuch"),
        (["--dry-run", "--datastore", "nosuch", *CPU, "job.py"], r"nosuch"),
        (["--spot", *CPU, "job.py"], r"spot"),
        (["--max-nodes", "0", *CPU, "job.py"], r"max_nodes"),
        (["--strategy", "random_search", *CPU, "job.py"], r"trials"),
        (["--name", "Bad_Name", *CPU, "job.py"], r"Bad_Name"),
        (["--spec", "missing.yaml"], r"missing\.yaml"),
        (["--max-runtime", "soon", *CPU, "job.py"], r"max_runtime"),
    ],
)
def test_bad_run_inputs(home, workdir, args, expected):
    line = one_line_error(launch("run", *args))
    assert line.startswith("error: ")
    import re

    assert re.search(expected, line), line
    assert not (home / "store" / "runs").exists()  # nothing launched, nothing written


def test_max_experiments_lets_through_what_the_cap_refused(home, workdir):
    r = launch(
        "run", "--dry-run", "--max-experiments", "1500", *CPU, "job.py", "--lr", "range(1500)"
    )
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("1500 experiment(s) of job.py on local:")
    r = launch(
        "run", "--dry-run", "--max_experiments", "1499", *CPU, "job.py", "--lr", "range(1500)"
    )
    assert "pass --max-experiments 1500 " in one_line_error(r)


def test_metrics_plot_on_a_launcher_only_install(home, workdir):
    """A real process where matplotlib cannot be imported: one line naming the extra, exit 1,
    before anything is read or printed."""
    from localjob import NoAgents, make_spec

    from launcher.backends.local import LocalBackend
    from launcher.runs import prepare_run

    name = prepare_run(make_spec(), NoAgents())
    metrics_csv = "epoch,step,val_acc1\n0,9,0.5\n1,19,0.7\n"  # something to plot
    LocalBackend().storage().write_text(
        f"runs/{name}/experiments/exp-0/artifacts/metrics.csv", metrics_csv
    )
    code = (
        "import sys; sys.modules['matplotlib'] = None; from launcher.cli.app import main; "
        f"sys.argv = ['launch', 'metrics', {name!r}, '--plot', 'curves.png']; main()"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "error: plotting metrics needs matplotlib (not installed here); install the plot extra: "
        "pip install 'launch-video[plot]'"
    )
    assert out.stdout == "" and not (workdir / "curves.png").exists()


def test_script_excluded_from_the_snapshot(home, workdir):
    (workdir / ".launchignore").write_text("job.py\n")
    line = one_line_error(launch("run", *CPU, "job.py"))
    assert "excluded from the code snapshot" in line


@pytest.mark.parametrize(
    "args, expected",
    [
        (["status", "nosuch"], "run 'nosuch' not found"),
        (["logs", "nosuch"], "run 'nosuch' not found"),
        (["stop", "nosuch"], "run 'nosuch' not found"),
        (["delete", "nosuch", "--yes"], "run 'nosuch' not found"),
        (["artifacts", "list", "nosuch"], "run 'nosuch' not found"),
        (["artifacts", "pull", "nosuch"], "run 'nosuch' not found"),
        (["metrics", "nosuch"], "run 'nosuch' not found"),
        (["datastore", "delete", "nosuch", "--yes"], "nosuch"),
        (["status", "../../etc"], "invalid run name '..'"),
        (["logs", "Bad_Run/exp-0"], "invalid run name 'Bad_Run'"),
        (["config", "get", "aws.bucket"], "aws.bucket is not set"),
        (["config", "set", "bucket", "x"], "SECTION.NAME"),
        (["config", "set", "aws.buckt", "x"], "unknown setting 'aws.buckt'; settings: aws.ami"),
        (["config", "set", "defaults.backend", "gcp"], "must be one of: aws, local"),
        (["config", "unset", "aws.region"], "aws.region is not set"),
        (["instances", "--gpus", "9"], "no instance type has 9 or more GPUs; the most is 8"),
    ],
)
def test_unknown_names(home, args, expected):
    assert expected in one_line_error(launch(*args))


def test_unknown_experiment_lists_the_real_ones(home, workdir):
    r = launch("run", *CPU, "--name", "r1", "--wait", "job.py", "--steps", "1")
    assert r.exit_code == 0, r.output
    line = one_line_error(launch("logs", "r1/exp-9"))
    assert "exp-9" in line and "exp-0" in line


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--bogus", "job.py"],  # an unknown option before SCRIPT
        ["run", "--env", "NOEQUALS", *CPU, "job.py"],
        ["run", "--gpus", "many", "job.py"],
        ["run", "--strategy", "bayes", "job.py"],
        ["run"],  # no script
        ["instances", "--gpus", "-1"],
        ["datastore", "delete", "toy:x", "--yes"],
        ["nosuchcommand"],
    ],
)
def test_usage_errors_exit_2(home, workdir, args):
    r = launch(*args)
    assert r.exit_code == 2, r.output
    assert "Error" in r.stderr


def test_debug_shows_the_traceback(home, workdir):
    r = CliRunner().invoke(cli, ["--debug", "run", "--instance", "p9.huge", "job.py"])
    assert isinstance(r.exception, LaunchError)  # raised through, so the traceback prints


def test_error_line_and_exit_code_from_a_real_process(home, workdir):
    out = subprocess.run([sys.executable, "-m", "launcher", "status", "ghost"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.strip() == "error: run 'ghost' not found; no runs yet (see `launch status`)"
    assert out.stdout == ""


def test_a_failed_submit_frees_the_name_and_leaves_no_run(home, workdir, monkeypatch):
    from localjob import NoAgents, make_spec

    from launcher.backends.local import LocalBackend
    from launcher.errors import CapacityError
    from launcher.runs import prepare_run
    from launcher.runs.index import RunIndex

    def no_capacity(self, run, spec):
        raise CapacityError("no capacity for t3.medium in us-east-1a, us-east-1b")

    with monkeypatch.context() as m:
        m.setattr(LocalBackend, "submit", no_capacity)
        r = launch("run", *CPU, "--name", "demo", "job.py")
    assert one_line_error(r) == "error: no capacity for t3.medium in us-east-1a, us-east-1b"
    assert r.stdout == ""
    assert not LocalBackend().storage().exists("runs/demo")
    assert RunIndex().get("demo") is None
    r = launch("status")
    assert (r.stdout, r.stderr) == ("", "no runs yet (`launch run SCRIPT` starts one)\n")
    assert prepare_run(make_spec(name="demo"), NoAgents()) == "demo"  # the name is free again


def test_an_unexpected_error_is_one_line_too(home, monkeypatch):
    import launcher.spec.catalog

    def broken(gpus=None):
        raise RuntimeError("catalog exploded")

    monkeypatch.setattr(launcher.spec.catalog, "list_instances", broken)
    line = one_line_error(launch("instances"))
    assert line.startswith("error: RuntimeError: catalog exploded (unexpected; `launch --debug")
    r = CliRunner().invoke(cli, ["--debug", "instances"])
    assert isinstance(r.exception, RuntimeError)
