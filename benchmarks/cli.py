"""How fast the `launch` CLI starts: `launch --help` and `launch status` with 1,000 recorded runs,
next to baselines measured in the same run (`python -c pass`, `python -c "import torch"`).

    python benchmarks/cli.py [--runs 1000] [--repeat 7]

Each command runs in a fresh process (as a user types it) against a temporary LAUNCH_HOME that
holds N finished runs, in storage and in the SQLite index. Prints the median wall time of each
and its ratio to `python -c pass`; exits 1 if `launch status` takes 0.5 s or more.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STATUS_BUDGET_S = 0.5


def record_runs(home: Path, n: int) -> None:
    """N finished runs as `launch run` leaves them: run.json and a status per experiment in
    storage, a summary row in the index."""
    os.environ["LAUNCH_HOME"] = str(home)
    from launcher.backends.local import LocalBackend
    from launcher.runs.index import RunIndex, RunRow

    storage = LocalBackend(home).storage()
    now = time.time()
    rows = []
    for i in range(n):
        name = f"bench-{i:04d}"
        created = now - (n - i) * 60
        spec = {"script": "train.py", "instance_type": "g4dn.xlarge", "gpus": 1, "max_nodes": 1}
        exps = [{"id": "exp-0", "args": ["--lr", "0.01"], "params": {"lr": 0.01}}]
        record = {"name": name, "created": created, "spec": spec, "experiments": exps}
        storage.write_json(f"runs/{name}/run.json", record)
        storage.write_json(f"runs/{name}/experiments/exp-0/status.json",
                           {"state": "succeeded", "exit_code": 0, "attempt": 1})  # fmt: skip
        rows.append(RunRow(name=name, backend="local", root=storage.root_url, created=created,
                           instance_type="g4dn.xlarge", gpus=1, status="succeeded", done=1,
                           total=1, ended=created + 30))  # fmt: skip
    RunIndex(home / "runs.sqlite3").upsert_many(rows)


def time_command(cmd: list[str], env: dict, repeat: int) -> float | None:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            return None
        times.append(elapsed)
    return statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args()

    home = Path(tempfile.mkdtemp(prefix="launch-bench-"))
    try:
        record_runs(home, args.runs)
        env = dict(os.environ, LAUNCH_HOME=str(home))
        launch = shutil.which("launch")
        cli = [launch] if launch else [sys.executable, "-m", "launcher"]
        commands = [
            ("python -c pass", [sys.executable, "-c", "pass"]),
            ("launch --help", [*cli, "--help"]),
            (f"launch status ({args.runs} runs)", [*cli, "status"]),
            ('python -c "import torch"', [sys.executable, "-c", "import torch"]),
        ]
        results = {label: time_command(cmd, env, args.repeat) for label, cmd in commands}
    finally:
        shutil.rmtree(home, ignore_errors=True)

    base = results["python -c pass"]
    print(f"median of {args.repeat} runs, each in a fresh process")
    print(f"{'command':<30} {'seconds':>8} {'x python':>9}")
    for label, t in results.items():
        if t is None:
            print(f"{label:<30} {'failed':>8}")
        else:
            print(f"{label:<30} {t:8.3f} {t / base:9.1f}")
    status = results[f"launch status ({args.runs} runs)"]
    if status is None or status >= STATUS_BUDGET_S:
        print(f"launch status is over its {STATUS_BUDGET_S} s budget", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
