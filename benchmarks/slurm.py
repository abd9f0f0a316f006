"""The slurm backend's submit and status at scale, on a real 2-node Slurm cluster started here
(tests/launcher/slurm/cluster.py; needs root and Debian's slurm-wlm and munge).

    python benchmarks/slurm.py [--experiments 1000] [--repeat 3]

A PATH shim logs every Slurm command the launcher runs (sbatch, squeue, sacct, sinfo, scancel)
and then runs the real one. Prints, as medians of fresh processes: `python -c pass` (baseline),
the local backend's submit of the same sweep (baseline), the slurm backend's submit of a
EXPERIMENTS-experiment sweep (`launch run --backend slurm --max-nodes 2 ... --lr "range(N)"`)
with how many sbatch calls it made, and `launch status RUN` of that run with how many
squeue/sacct calls it made. Exits 1 if a submit is not one sbatch, a status not one
squeue/sacct call, or the submit takes 5 s or more.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SUBMIT_BUDGET_S = 5.0
SLEEPER = "import time\n\ntime.sleep(600)  # stopped by the benchmark\n"
COMMANDS = ("sbatch", "squeue", "sacct", "sinfo", "scancel", "scontrol")


def shim(folder: Path, log: Path) -> None:
    """One wrapper per Slurm command: log the call, then exec the real command."""
    import shutil

    folder.mkdir(parents=True)
    for name in COMMANDS:
        real = shutil.which(name)
        if real is None:
            continue
        path = folder / name
        path.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\nexec "{real}" "$@"\n')
        path.chmod(0o755)


def timed(argv: list[str], env: dict, cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"{' '.join(argv[:4])}... failed:\n{done.stdout}\n{done.stderr}")
    return took, done.stdout


def calls(log: Path, *names: str) -> int:
    if not log.exists():
        return 0
    return sum(1 for line in log.read_text().splitlines() if line.split()[0] in names)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--experiments", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    from tests.launcher.slurm.cluster import Cluster, missing

    why = missing()
    if why:
        print(f"skipped: {why}")
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="launch-bench-slurm-"))
    cluster = Cluster(tmp / "cluster").start()
    try:
        log = tmp / "calls.log"
        shim(tmp / "shim", log)
        project = tmp / "project"
        project.mkdir()
        (project / "sleeper.py").write_text(SLEEPER)
        base = dict(os.environ, SLURM_CONF=str(cluster.conf), PYTHONDONTWRITEBYTECODE="1",
                    PATH=f"{tmp / 'shim'}{os.pathsep}{os.environ['PATH']}")  # fmt: skip
        launch = [sys.executable, "-m", "launcher"]
        sweep = ["sleeper.py", "--lr", f"range({args.experiments})"]
        rows, failed = [], False
        pass_s = statistics.median(timed([sys.executable, "-c", "pass"], base, project)[0]
                                   for _ in range(args.repeat))  # fmt: skip
        rows.append(("python -c pass (baseline)", pass_s, ""))
        local, submits, statuses = [], [], []
        sbatch_calls, status_calls = [], []
        for i in range(args.repeat):
            env = dict(base, LAUNCH_HOME=str(tmp / f"home-local-{i}"))
            took, out = timed([*launch, "run", "--backend", "local", "--instance", "t3.medium",
                               "--gpus", "0", "--max-experiments", str(args.experiments),
                               *sweep], env, project)  # fmt: skip
            local.append(took)
            timed([*launch, "stop", out.strip().splitlines()[-1]], env, project)
            env = dict(base, LAUNCH_HOME=str(tmp / f"home-slurm-{i}"))
            before = calls(log, "sbatch")
            took, out = timed([*launch, "run", "--backend", "slurm", "--max-nodes", "2",
                               "--max-experiments", str(args.experiments), *sweep],
                              env, project)  # fmt: skip
            submits.append(took)
            sbatch_calls.append(calls(log, "sbatch") - before)
            name = out.strip().splitlines()[-1]
            before = calls(log, "squeue", "sacct")
            took, _ = timed([*launch, "status", name], env, project)
            statuses.append(took)
            status_calls.append(calls(log, "squeue", "sacct") - before)
            cluster.cancel_all()
        rows.append((f"local submit, {args.experiments} experiments (baseline)",
                     statistics.median(local), ""))  # fmt: skip
        rows.append((f"slurm submit, {args.experiments} experiments", statistics.median(submits),
                     f"sbatch calls per submit: {sorted(set(sbatch_calls))}"))  # fmt: skip
        rows.append(("slurm `launch status RUN` of it", statistics.median(statuses),
                     f"squeue/sacct calls per status: {sorted(set(status_calls))}"))  # fmt: skip
        for what, s, note in rows:
            print(f"{what:<48} {s:7.3f} s  {s / pass_s:6.1f}x python -c pass  {note}")
        if set(sbatch_calls) != {1} or set(status_calls) != {1}:
            print("FAIL: a submit must be one sbatch, a status one squeue/sacct call")
            failed = True
        if statistics.median(submits) >= SUBMIT_BUDGET_S:
            print(f"FAIL: the slurm submit took {SUBMIT_BUDGET_S:g} s or more")
            failed = True
        return 1 if failed else 0
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
