"""How long a multi-node gang takes to meet: from the experiment's claim (rank 0 of the gang) to
every rank's script running, on the local backend, next to the same span for a single-node
experiment measured in the same run (claim to its script running), as a ratio.

    python benchmarks/gang.py [--nodes 2] [--repeat 5]

Each repeat is a real `launch run --nodes N` (and a `launch run` baseline) in a fresh
LAUNCH_HOME: the agents are the real processes, the script only prints and exits. The spans
come from storage: the claim's time (claims/000001), rank 0's ``started`` (status.json) and
rank K's ``started`` (gang/000001/beat-K). Prints the median of each and their ratio; exits 1
if the gang's median is 5 s or more (the issue's bound for the local backend).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BUDGET_S = 5.0
SCRIPT = "import os\nprint('rank', os.environ['LAUNCH_NODE_RANK'], flush=True)\n"


def launch(home: Path, project: Path, *args: str) -> str:
    env = dict(os.environ, LAUNCH_HOME=str(home), LAUNCH_HEARTBEAT_S="1")
    cmd = [sys.executable, "-c", "from launcher.cli.app import main; main()", "run", "--gpus",
           "0", "--instance", "t3.medium", "--wait", *args, "job.py"]  # fmt: skip
    done = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise SystemExit(f"launch run failed: {done.stderr.strip()}")
    return done.stdout.split()[0]


def span(home: Path, run: str, nodes: int) -> float:
    """Seconds from the claim of exp-0's attempt 1 to its last rank's script starting."""
    exp = home / "store" / "runs" / run / "experiments" / "exp-0"
    claimed = json.loads((exp / "claims" / "000001").read_text())["time"]
    started = [json.loads((exp / "status.json").read_text())["started"]]
    for rank in range(1, nodes):
        beat = json.loads((exp / "gang" / "000001" / f"beat-{rank}").read_text())
        started.append(beat["started"])
    return max(started) - claimed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    gang, single = [], []
    with tempfile.TemporaryDirectory(prefix="bench-gang-") as tmp:
        project = Path(tmp) / "project"
        project.mkdir()
        (project / "job.py").write_text(SCRIPT)
        for i in range(args.repeat):
            home = Path(tmp) / f"gang-{i}"
            run = launch(home, project, "--nodes", str(args.nodes))
            gang.append(span(home, run, args.nodes))
            home = Path(tmp) / f"single-{i}"
            single.append(span(home, launch(home, project), 1))
    g, s = statistics.median(gang), statistics.median(single)
    print(f"{'':34} {'median s':>9} {'min s':>7} {'max s':>7}")
    print(f"{'claim -> script, 1 node':34} {s:9.3f} {min(single):7.3f} {max(single):7.3f}")
    label = f"claim -> every rank, {args.nodes} nodes"
    print(f"{label:34} {g:9.3f} {min(gang):7.3f} {max(gang):7.3f}")
    print(f"gang / single: {g / s:.1f}x   (budget {BUDGET_S:g} s for the gang)")
    return 0 if g < BUDGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
