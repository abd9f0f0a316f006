"""Bad input anywhere (names, spec files, values that cannot reach a process) is one line at
submit, and output into a closed pipe is quiet (issue 8, points 14 and 15)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from launcher.cli.app import cli
from launcher.config import get_setting
from launcher.errors import LaunchError, SpecError
from launcher.spec.jobspec import JobSpec
from launcher.storage.datastores import check_name as check_datastore_name

CPU = {"instance_type": "t3.medium", "gpus": 0}


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("LAUNCH_HOME", str(tmp_path / "home"))
    p = tmp_path / "proj"
    p.mkdir()
    (p / "t.py").write_text("print('hi')\n")
    monkeypatch.chdir(p)
    return p


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "unexpected" not in lines[0], lines[0]
    return lines[0]


# -- 14: whole strings only ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "check",
    [
        lambda v: JobSpec.load(script="t.py", name=v, **CPU),
        lambda v: JobSpec.load(script="t.py", datastore=v, **CPU),
        lambda v: JobSpec.load(script="t.py", env={"A\n": "1"}, **CPU),
        lambda v: check_datastore_name(v),
        lambda v: get_setting("aws.bucket\n", config={}),
        lambda v: JobSpec.load(script="t.py", max_runtime="90m\nx", **CPU),
        lambda v: JobSpec.load(script="t.py", memory="16G\nx", **CPU),
    ],
    ids=[
        "run-name",
        "datastore",
        "env-name",
        "datastore-create",
        "config-key",
        "duration",
        "memory",
    ],  # fmt: skip
)
def test_a_trailing_newline_is_not_part_of_a_valid_name(project, check):
    with pytest.raises(LaunchError):
        check("nl\n")


@pytest.mark.parametrize(
    "kw",
    [{"bucket": "bkt\n"}, {"prefix": "launch\n"}, {"ami": "ami-0123456789abcdef0\n"}],
    ids=["bucket", "prefix", "ami"],
)
def test_aws_settings_match_whole_strings(kw):
    from launcher.backends.aws.config import resolve_settings

    good = {"bucket": "bkt", "prefix": "launch", "region": "us-east-1", "ami": None}
    resolve_settings(**good, config={})  # the same without the newline is fine
    with pytest.raises(SpecError):
        resolve_settings(**{**good, **kw}, config={})


def test_no_name_pattern_relies_on_dollar():
    """Every pattern in the launcher is used with fullmatch: `^...$` with .match lets "x\\n"
    through. A regression guard over the source."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "launcher"
    offenders = [
        f"{p.relative_to(root.parent)}:{i}"
        for p in root.rglob("*.py")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"re\.compile\(r?[\"']\^.*\$[\"']", line)
    ]
    assert not offenders, offenders


# -- 15: spec files -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content, expected",
    [
        (b"script: t.py\ngpus: \xff\n", r"not a UTF-8 text file"),
        (
            b"script: t.py\ninstance_type: t3.medium\ngpus: 0\nseed: " + b"9" * 4301 + b"\n",
            r"line 4: .*integer too long",
        ),
        (
            b"script: t.py\ninstance_type: t3.medium\ngpus: 0\nseed: " + b"9" * 30 + b"\n",
            r"seed must be an integer below 2\*\*63",
        ),
        (
            b"script: t.py\ninstance_type: t3.medium\ngpus: 0\nseed: 1\nseed: 2\n",
            r"line 5: .*'seed' is given twice \(first on line 4\)",
        ),
        (
            b"script: t.py\ninstance_type: t3.medium\ngpus: 0\nenv:\n  A: 1\n  A: 2\n",
            r"line 6: .*'A' is given twice",
        ),
        (b'script: "t\\0.py"\n', r"script .*NUL"),
        (
            b'script: t.py\ninstance_type: t3.medium\ngpus: 0\nscript_args: ["--x", "a\\0b"]\n',
            r"script_args\[1\] .*NUL",
        ),
        (
            b'script: t.py\ninstance_type: t3.medium\ngpus: 0\nscript_args: "--x a\\0b"\n',
            r"script_args\[1\] .*NUL",
        ),
        (b'script: t.py\ninstance_type: t3.medium\ngpus: 0\nenv: {A: "a\\0b"}\n', r"env\.A .*NUL"),
        (
            b"script: t.py\ninstance_type: t3.medium\ngpus: 0\nmax_runtime: '"
            + b"9" * 400
            + b"'\n",
            r"max_runtime must be below 2\*\*63",
        ),
    ],
    ids=[
        "non-utf8",
        "4301-digits",
        "huge-int",
        "dup-key",
        "dup-nested",
        "nul-script",
        "nul-arg",
        "nul-arg-string",
        "nul-env",
        "inf-duration",
    ],  # fmt: skip
)
@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_bad_spec_files_are_one_line(project, content, expected, dry_run):
    import re

    (project / "spec.yaml").write_bytes(content)
    args = ["run", *(["--dry-run"] if dry_run else []), "--spec", "spec.yaml"]
    line = one_line_error(CliRunner().invoke(cli, args))
    assert re.search(expected, line), line
    assert not (project.parent / "home" / "store" / "runs").exists()


def test_a_huge_integer_in_a_sweep_list_is_one_line(project):
    result = CliRunner().invoke(cli, ["run", "--dry-run", "--instance", "t3.medium", "--gpus",
                                      "0", "t.py", "--lr", f"[1, {'9' * 4300}]"])  # fmt: skip
    assert "within +-2**63" in one_line_error(result)


def test_nul_through_the_python_api_is_refused_at_submit(project):
    for bad in ({"script_args": ["a\0b"]}, {"env": {"A": "x\0"}}):
        with pytest.raises(SpecError, match="NUL"):
            JobSpec.load(script="t.py", **CPU, **bad)
    with pytest.raises(SpecError, match="NUL"):
        JobSpec.from_dict({"script": "t\0.py"})


# -- 15: a closed pipe ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [["instances"], ["--help"], ["status"],
     ["run", "--dry-run", "--instance", "t3.medium", "--gpus", "0", "t.py"]],
    ids=["instances", "help", "status", "dry-run"],
)  # fmt: skip
def test_output_into_a_closed_pipe_is_quiet(project, args):
    """`launch ... | head -1` with head gone: no BrokenPipeError line, no traceback. The read end
    is closed before the command starts, so every write fails with EPIPE (no race)."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run([sys.executable, "-m", "launcher", *args], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=60)  # fmt: skip
    finally:
        os.close(write)
    assert "BrokenPipe" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "Exception ignored" not in proc.stderr, proc.stderr
