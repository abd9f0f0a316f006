"""The README, kept honest: its opening commands are what they say, the demo runs, the
`launch` block and the Python snippet of "What it does" run as written, and the module table
of "Where things live" names files that exist.

The block and the snippet are read from README.md, never copied here, so a renamed command,
flag or argument fails this test. They run in a temporary project (the README's ``./kinetics``,
``video.mp4``, ``a.mp4``, ``b.mp4`` and ``videos/`` made from tiny generated videos, and a copy
of ``trainer/``) with a temporary ``LAUNCH_HOME``, on the local backend. Only two things are
filled in: the run name for ``RUN`` (and ``exp-0`` for ``EXP``), and ``--backbone demo_cnn``
appended to the script's arguments, so the real trainer trains in seconds on the CPU (the
README's ``--backbone x3d_m`` is still parsed and checked by it, then overridden).
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
LAUNCH = str(Path(sys.executable).parent / "launch")
# Appended to the README's script args: argparse keeps the last value, so the README's own
# flags are still parsed (and checked) by the real trainer.
CPU_ARGS = ["--backbone", "demo_cnn"]
EXP = "exp-0"  # the README's own example experiment (launch_artifacts/RUN/exp-0/...)
# What the block shows, so a test that stopped running one of them would say so.
COMMANDS = ("datastore", "run", "status", "logs", "metrics", "artifacts", "predict", "stop")
TIMEOUT = 300  # per command: `launch logs -f` waits for both experiments to train


def readme_commands() -> list[str]:
    """The commands of the README's first code block, comments stripped."""
    block = re.search(r"```bash\n(.*?)```", README.read_text(), re.S)
    assert block, "README has no bash code block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def what_it_does_block(lang: str) -> str:
    """The first ```LANG block of the README's "What it does" section."""
    section = re.search(r"^## What it does\n(.*?)(?=^## |\Z)", README.read_text(), re.S | re.M)
    assert section, 'README has no "## What it does" section'
    block = re.search(rf"```{lang}\n(.*?)```", section.group(1), re.S)
    assert block, f'README\'s "What it does" has no {lang} block'
    return block.group(1)


def launch_lines() -> list[list[list[str]]]:
    """Each line of the block as the commands it shows, placeholders kept: its own, the
    ``RUN/EXP`` form of it where it says ``RUN[/EXP]`` or ``# or RUN/EXP``, and the
    `launch ...` commands its comment names (``# every run; `launch status RUN` lists...``)."""
    lines = []
    for line in what_it_does_block("bash").replace("\\\n", " ").splitlines():
        if not line.strip():
            continue
        argv = shlex.split(line, comments=True)
        assert argv[0] == "launch", f"not a launch command: {line}"
        forms = [argv]
        if "RUN[/EXP]" in line or re.search(r"#.*\bor RUN/EXP\b", line):
            forms = [[a.replace("RUN[/EXP]", "RUN") for a in argv]]
            forms.append([re.sub(r"\bRUN(\[/EXP\])?$", "RUN/EXP", a) for a in argv])
            assert forms[0] != forms[1], f"no RUN argument to give as RUN/EXP: {line}"
        forms += [shlex.split(c) for c in re.findall(r"`(launch [^`]+)`", line)]
        lines.append(forms)
    return lines


def fill_in(argv: list[str], run: str | None) -> list[str]:
    """``argv`` with the run for ``RUN`` and the README's example experiment for ``EXP``."""
    if any("RUN" in a for a in argv):
        assert run, f"{shlex.join(argv)} names RUN before `launch run` made one"
    return [re.sub(r"\bEXP\b", EXP, re.sub(r"\bRUN\b", run or "RUN", a)) for a in argv]


@dataclass
class BlockRun:
    proj: Path
    env: dict[str, str] = field(repr=False)
    run: str | None = None
    done: list[subprocess.CompletedProcess] = field(default_factory=list, repr=False)

    def failed(self) -> subprocess.CompletedProcess | None:
        return next((d for d in self.done if d.returncode != 0), None)

    def output(self, *prefix: str) -> str:
        """stdout of the commands that began ``launch PREFIX...``."""
        n = len(prefix)
        return "".join(d.stdout for d in self.done if d.args[1 : 1 + n] == list(prefix))


def make_project(proj: Path) -> None:
    """The files the README names, in a project holding a copy of the trainer."""
    from trainer.sample_data import make_motion_dataset

    shutil.copytree(REPO / "trainer", proj / "trainer", ignore=shutil.ignore_patterns("__py*"))
    val = make_motion_dataset(proj / "kinetics", videos_per_class=2) / "val"
    shutil.copy(val / "left" / "0.mp4", proj / "video.mp4")
    shutil.copy(val / "right" / "0.mp4", proj / "a.mp4")
    shutil.copy(val / "up" / "0.mp4", proj / "b.mp4")
    (proj / "videos").mkdir()
    for label in ("left", "down", "up"):
        shutil.copy(val / label / "1.mp4", proj / "videos" / f"{label}.mp4")


@pytest.fixture(scope="module")
def block_run(tmp_path_factory) -> BlockRun:
    """Every command of the README's launch block, in order, until one fails."""
    tmp = tmp_path_factory.mktemp("readme")
    proj = tmp / "project"
    make_project(proj)
    result = BlockRun(proj, {**os.environ, "LAUNCH_HOME": str(tmp / "home")})
    try:
        run_block(result)
    finally:
        if result.run and result.done[-1].args[:2] != ["launch", "stop"]:
            # the block broke off before its own `launch stop`: leave no agent training
            subprocess.run([LAUNCH, "stop", result.run], env=result.env, capture_output=True)
    return result


def run_block(result: BlockRun) -> None:
    """Run the block's commands into ``result``, stopping at the first that fails."""
    for forms in launch_lines():
        for cmd in forms:
            cmd = fill_in(cmd + CPU_ARGS if cmd[1] == "run" else cmd, result.run)
            done = subprocess.run(
                [LAUNCH, *cmd[1:]], cwd=result.proj, env=result.env, capture_output=True,
                text=True, timeout=TIMEOUT,
            )  # fmt: skip
            done.args = cmd  # as the README writes it, for the messages
            result.done.append(done)
            if done.returncode != 0:
                return
            if cmd[1] == "run":
                result.run = done.stdout.split()[-1]  # `launch run` prints the run's name


def test_readme_opens_with_demo_and_test_commands():
    assert readme_commands() == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    demo = (REPO / "scripts/demo.sh").read_text()
    tests = (REPO / "scripts/test.sh").read_text()
    # Both set up a fresh machine first; CI runs exactly the README's test command.
    assert "scripts/setup.sh" in demo and "scripts/run_demo.py" in demo
    assert "scripts/setup.sh" in tests and "pytest" in tests
    assert "scripts/test.sh" in (REPO / ".ci/run").read_text()
    assert "constraints.txt" in (REPO / "scripts/setup.sh").read_text()


def test_readme_where_things_live_names_real_modules():
    section = re.search(r"^### Where things live\n(.*?)(?=^#|\Z)", README.read_text(), re.S | re.M)
    assert section, 'README has no "### Where things live" table'
    paths = re.findall(r"`((?:launcher|trainer)/[\w/.]*)`", section.group(1))
    assert len(paths) > 20, paths
    missing = [p for p in paths if not (REPO / p).exists()]
    assert not missing, f"README's module table names files that are not there: {missing}"


def test_readme_launch_block_runs(block_run):
    """Every command exits 0, `-f` ends when the run does, and each leaves what it says."""
    failed = block_run.failed()
    assert failed is None, (
        f"README command failed (exit {failed.returncode}): {shlex.join(failed.args)}\n"
        f"{failed.stdout[-3000:]}{failed.stderr[-3000:]}\n"
        f"the experiments' logs:\n{block_run.output('logs')[-3000:]}"
    )
    ran = {d.args[1] for d in block_run.done}
    for command in COMMANDS:
        assert command in ran, f"the README's block no longer runs `launch {command}`"
    proj, run = block_run.proj, block_run.run
    exps = sorted(p.name for p in (proj / "launch_artifacts" / run).iterdir())
    assert exps == ["exp-0", "exp-1"], exps  # --lr "[0.01, 0.001]": 2 experiments
    for exp in exps:
        out = proj / "launch_artifacts" / run / exp
        for name in ("checkpoints/best.ckpt", "metrics.csv", "labels.txt"):
            assert (out / name).is_file(), f"artifacts pull left no {exp}/{name}"
    assert run in block_run.output("status")
    assert "[exp-0]" in block_run.output("logs") and "[exp-1]" in block_run.output("logs")
    assert (proj / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    labels = (proj / "launch_artifacts" / run / "exp-0" / "labels.txt").read_text().splitlines()
    path, _, label = block_run.output("predict").strip().partition("\t")
    assert path == "video.mp4" and label in labels, block_run.output("predict")


def test_readme_python_snippet_runs(block_run, monkeypatch):
    """The snippet, with RUN filled in, runs in the project, and each `# -> RESULT` comment
    has the shape of what its line returns."""
    if block_run.failed() or not block_run.run:
        pytest.fail("the README's launch block failed (see test_readme_launch_block_runs)")
    code = fill_in([what_it_does_block("python")], block_run.run)[0]
    monkeypatch.chdir(block_run.proj)
    scope: dict = {}
    shown = 0
    for stmt in ast.parse(code).body:
        if not isinstance(stmt, ast.Expr):
            exec(compile(ast.Module([stmt], []), "README.md", "exec"), scope)
            continue
        value = eval(compile(ast.Expression(stmt.value), "README.md", "eval"), scope)
        comment = re.search(r"#\s*->\s*(.+)$", code.splitlines()[stmt.end_lineno - 1])
        if comment is None:
            continue
        # `{key: value, ...}` is not Python: read it as `{key: value, ...: ...}`
        documented = ast.literal_eval(re.sub(r",\s*\.\.\.\s*}", ", ...: ...}", comment.group(1)))
        labels = scope["model"].labels
        assert conforms(value, documented, labels), (
            f"{ast.unparse(stmt)} returned {value!r}, not like the README's {documented!r}"
        )
        top_k = next((k.value for k in stmt.value.keywords if k.arg == "top_k"), None)
        if top_k is not None:
            for pairs in value.values() if isinstance(value, dict) else value:
                assert len(pairs) == ast.literal_eval(top_k), pairs
                assert [p for _, p in pairs] == sorted((p for _, p in pairs), reverse=True)
        shown += 1
    assert shown >= 2, "the README's snippet shows no `# -> RESULT` of model.predict"


def conforms(value, documented, labels: list[str]) -> bool:
    """Whether ``value`` has the shape of the README's example result: a string stands for any
    label (as a dict key, for a path in the same folder), a float for a probability, and ``...``
    for more items like the one before it."""
    if isinstance(documented, str):
        return value in labels
    if isinstance(documented, float):
        return isinstance(value, float) and 0.0 <= value <= 1.0
    if isinstance(documented, dict) and isinstance(value, dict):
        keys = spread(list(documented), len(value))
        return keys is not None and all(
            isinstance(k, str)
            and Path(k).parent == Path(d).parent
            and conforms(v, documented[d], labels)
            for (k, v), d in zip(value.items(), keys, strict=True)
        )
    if isinstance(documented, tuple | list) and type(value) is type(documented):
        items = spread(list(documented), len(value))
        return items is not None and all(
            conforms(v, d, labels) for v, d in zip(value, items, strict=True)
        )
    return False


def spread(items: list, n: int) -> list | None:
    """The documented items for ``n`` values (a trailing ``...`` repeats the item before it),
    or None when ``n`` values cannot be like them."""
    if items[-1:] == [Ellipsis] and len(items) > 1:
        items = items[:-1]
        return items + [items[-1]] * (n - len(items)) if n >= len(items) else None
    return items if n == len(items) else None


@pytest.mark.slow
def test_demo_job_trains_pulls_and_predicts(tmp_path):
    """scripts/demo.sh minus the setup it shares with this test run: the same job, end to end."""
    env = {**os.environ, "LAUNCH_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "scripts/run_demo.py", "--data", str(tmp_path / "data"),
         "--dest", str(tmp_path / "artifacts")],  # fmt: skip
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    m = re.search(r"demo: (\S+) classified (\d+)/(\d+) held-out videos correctly", done.stdout)
    assert m, done.stdout[-2000:]
    right, total = int(m.group(2)), int(m.group(3))
    assert total == 64 and right / total >= 0.9
    assert (tmp_path / "artifacts" / m.group(1) / "exp-0" / "checkpoints" / "best.ckpt").is_file()
