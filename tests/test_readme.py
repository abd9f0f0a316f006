"""The README's two opening commands, kept honest: they are what they say, and the main job runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    """The commands of the README's first code block, comments stripped."""
    block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert block, "README has no bash code block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_demo_and_test_commands():
    assert readme_commands() == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    demo = (REPO / "scripts/demo.sh").read_text()
    tests = (REPO / "scripts/test.sh").read_text()
    # Both set up a fresh machine first; CI runs exactly the README's test command.
    assert "scripts/setup.sh" in demo and "scripts/run_demo.py" in demo
    assert "scripts/setup.sh" in tests and "pytest" in tests
    assert "scripts/test.sh" in (REPO / ".ci/run").read_text()
    assert "constraints.txt" in (REPO / "scripts/setup.sh").read_text()


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
