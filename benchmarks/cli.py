"""How fast the `launch` CLI starts: `launch --help` and `launch status` with 1,000 recorded runs,
next to baselines measured in the same run (`python -c pass`, `python -c "import torch"`), and
how fast a 10,000-experiment sweep is submitted and then listed.

    python benchmarks/cli.py [--runs 1000] [--repeat 7] [--experiments 10000] [--submits 3]

Each command runs in a fresh process (as a user types it) against a temporary LAUNCH_HOME that
holds N finished runs, in storage and in the SQLite index. The sweep is the real
`launch run --max-experiments 10000 ... sleeper.py --lr "range(10000)"` on the local backend
(expansion, code snapshot, every experiment's files, the index, one agent started), each submit
in its own fresh LAUNCH_HOME; the agent's script only sleeps, so it costs nothing while the
last home's `launch status` is timed with that run recorded and running; every agent is killed
afterwards. Prints the median wall time of each and its ratio to `python -c pass`; exits 1 if a
`launch status` takes 0.5 s or more, or the submit 5 s or more. The homes are made under the
temp dir: `TMPDIR=/dev/shm` times the code without a slow disk's file creation (a 10,000-experiment
submit creates 10,000 folders and 20,000 files).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STATUS_BUDGET_S = 0.5
SUBMIT_BUDGET_S = 5.0
SLEEPER = "import time\n\ntime.sleep(600)  # the benchmark kills it; it must cost nothing\n"


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


def kill_agents(home: Path) -> None:
    """Kill every agent started under a LAUNCH_HOME, with its script (its process group)."""
    for record in home.glob("nodes/*/*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            node = json.loads(record.read_text())
            os.killpg(node.get("pgid") or node["pid"], signal.SIGKILL)


def submit_sweep(home: Path, cli: list[str], n: int) -> float | None:
    """Seconds one `launch run` of an N-experiment sweep takes, in a fresh process."""
    work = home / "project"
    work.mkdir(parents=True)
    (work / "sleeper.py").write_text(SLEEPER)
    env = dict(os.environ, LAUNCH_HOME=str(home))
    cmd = [*cli, "run", "--max-experiments", str(n), "--instance", "t3.medium", "--gpus", "0",
           "--name", "sweep", "sleeper.py", "--lr", f"range({n})"]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        print(f"launch run failed: {proc.stderr.decode().strip()}", file=sys.stderr)
        return None
    return elapsed


def wait_running(exp_dir: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if json.loads((exp_dir / "status.json").read_text())["state"] == "running":
                return
        time.sleep(0.2)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--experiments", type=int, default=10_000, help="size of the submitted sweep")
    p.add_argument("--submits", type=int, default=3, help="submits to take the median of")
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

    n = args.experiments
    sweep_homes = [
        Path(tempfile.mkdtemp(prefix="launch-bench-sweep-")) for _ in range(args.submits)
    ]
    try:
        submits = []
        for h in sweep_homes:
            submits.append(submit_sweep(h, cli, n))
            if h is not sweep_homes[-1]:
                kill_agents(h)  # the next submit gets the machine to itself
        ok = None not in submits
        if ok:  # time status once the agent is up and its script sleeps, as a user would see it
            wait_running(sweep_homes[-1] / "store" / "runs" / "sweep" / "experiments" / "exp-0")
        results[f"launch run ({n} experiments)"] = statistics.median(submits) if ok else None
        env = dict(os.environ, LAUNCH_HOME=str(sweep_homes[-1]))
        status = [*cli, "status"]
        results[f"launch status ({n}-exp run)"] = (
            time_command(status, env, args.repeat) if ok else None
        )
        results[f"launch status sweep ({n})"] = (
            time_command([*status, "sweep"], env, args.repeat) if ok else None
        )
    finally:
        for h in sweep_homes:
            kill_agents(h)
            shutil.rmtree(h, ignore_errors=True)

    base = results["python -c pass"]
    print(f"median of {args.repeat} runs, each in a fresh process")
    print(f"{'command':<34} {'seconds':>8} {'x python':>9}")
    for label, t in results.items():
        if t is None:
            print(f"{label:<34} {'failed':>8}")
        else:
            print(f"{label:<34} {t:8.3f} {t / base:9.1f}")
    over = [
        f"{label} is over its {budget} s budget"
        for label, budget in (
            (f"launch status ({args.runs} runs)", STATUS_BUDGET_S),
            (f"launch status ({n}-exp run)", STATUS_BUDGET_S),
            (f"launch run ({n} experiments)", SUBMIT_BUDGET_S),
        )
        if results[label] is None or results[label] >= budget
    ]
    for line in over:
        print(line, file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
