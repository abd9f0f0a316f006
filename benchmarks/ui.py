"""How fast `launch ui` answers at scale: the runs page with 1,000 runs and a run page with a
1,000-experiment sweep (each with a 10-epoch metrics.csv), beside the library calls `launch
status` and `launch metrics` make for the same view, measured in the same run.

    python benchmarks/ui.py [--runs 1000] [--experiments 1000] [--epochs 10] [--repeat 7]
                            [--browser]

"server-side" is what the dashboard does for one poll of the page: its view (read-only reads of
storage, the leaderboard, the curves) and the JSON it sends, in this process. "over HTTP" is a
GET of the same answer from a `launch ui` process (uvicorn, loopback), as the page's script
asks for it. The baselines: `launch status` (``list_runs()``), `launch status RUN`
(``RunContext(RUN).refresh(reconcile=True)``) and `launch metrics RUN` (``read_run`` +
``leaderboard``). Prints medians and the ratio to the baseline; exits 1 if a page takes 1 s or
more server-side. ``--browser`` adds the time until headless Chromium has drawn each page
(its whole table, and the run page's charts). Storage is a temporary file:// root
(``TMPDIR=/dev/shm`` for no disk).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PAGE_BUDGET_S = 1.0


def make_store(home: Path, n_runs: int, n_exps: int, epochs: int) -> str:
    """N finished one-experiment runs and one finished sweep of M experiments, as agents leave
    them (run.json, params, status, artifacts with their manifest), indexed; the sweep's name."""
    import hashlib

    from launcher.backends.local import LocalBackend
    from launcher.runs.index import RunIndex, RunRow

    storage = LocalBackend(home).storage()
    now = time.time()
    rows = []

    def add_run(name: str, created: float, exps: list[dict]) -> None:
        spec = {"script": "train.py", "instance_type": "g4dn.xlarge", "gpus": 1, "max_nodes": 4}
        record = {"name": name, "created": created, "spec": spec, "experiments": exps}
        storage.write_json(f"runs/{name}/run.json", record)
        rows.append(RunRow(name=name, backend="local", root=storage.root_url, created=created,
                           instance_type="g4dn.xlarge", gpus=1, status="succeeded",
                           done=len(exps), total=len(exps), ended=created + 600))  # fmt: skip

    def add_exp(run: str, exp: dict, i: int, created: float) -> None:
        base = f"runs/{run}/experiments/{exp['id']}"
        storage.write_json(f"{base}/params.json", {"args": exp["args"], "params": exp["params"]})
        status = {"state": "succeeded", "exit_code": 0, "attempt": 1, "node": "node-0",
                  "started": created + i, "ended": created + i + 300, "metrics": {}}  # fmt: skip
        storage.write_json(f"{base}/status.json", status)
        lines = ["epoch,step,train_loss,val_acc1"]
        for e in range(epochs):
            acc = (e + 1) / epochs * (0.5 + 0.5 * ((i * 7919) % 1000) / 1000)
            lines += [f"{e},{e * 100 + 99},{2.0 / (e + 1):.4f},", f"{e},{e * 100 + 99},,{acc:.4f}"]
        data = ("\n".join(lines) + "\n").encode()
        storage.write_bytes(f"{base}/artifacts/metrics.csv", data)
        storage.write_json(f"{base}/artifacts.json", {"metrics.csv": {
            "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}})  # fmt: skip

    for i in range(n_runs):
        created = now - (n_runs - i) * 60
        exp = {"id": "exp-0", "args": ["--lr", "0.01"], "params": {"lr": 0.01}}
        add_run(f"bench-{i:04d}", created, [exp])
        add_exp(f"bench-{i:04d}", exp, 0, created)
    sweep = "sweep-big"
    exps = []
    for i in range(n_exps):
        lr, bs = 10 ** -(1 + (i % 25) / 6), 2 ** (3 + i // 25 % 4)
        exps.append({"id": f"exp-{i}", "args": ["--lr", str(lr), "--batch_size", str(bs)],
                     "params": {"lr": lr, "batch_size": bs, "seed": i // 100}})  # fmt: skip
    add_run(sweep, now, exps)
    for i, exp in enumerate(exps):
        add_exp(sweep, exp, i, now)
    RunIndex(home / "runs.sqlite3").upsert_many(rows)
    return sweep


def median_time(fn, repeat: int) -> float:
    fn()  # warm: imports, the index's connection, the page cache
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def start_ui(env: dict) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "launcher", "ui", "--port", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    line = proc.stdout.readline()
    if "serving http://" not in line:
        proc.kill()
        raise SystemExit(f"launch ui did not start: {line}{proc.stderr.read()}")
    return proc, line.split("serving ", 1)[1].split()[0].rstrip("/")


def browser_times(base: str, sweep: str, n_runs: int, n_exps: int, repeat: int) -> str:
    """Seconds from navigation until headless Chromium has drawn each page (the run page: its
    charts and its whole table), as the page itself marks it: loading, the server's answer and
    the drawing."""
    import shutil as sh

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = sh.which("chromium") or "chromium"
    profile = tempfile.mkdtemp(prefix="launch-bench-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                 f"--user-data-dir={profile}"):  # fmt: skip
        options.add_argument(flag)
    service = Service(sh.which("chromedriver") or "chromedriver")
    driver = webdriver.Chrome(options=options, service=service)
    mark = (
        "const m = performance.getEntriesByName(arguments[0]);"
        "return m.length ? m[0].startTime : null"
    )
    out = []
    try:
        for label, path, name in (("runs page", "/", "drawn:runs"),
                                  ("run page", f"/runs/{sweep}", "drawn:run")):  # fmt: skip
            times = []
            for _ in range(repeat):
                driver.get("about:blank")
                driver.get(base + path)
                ms = WebDriverWait(driver, 60, poll_frequency=0.2).until(
                    lambda d, n=name: d.execute_script(mark, n)
                )
                times.append(ms / 1000)
            out.append(f"{label} drawn in Chromium {statistics.median(times):.3f} s")
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return "; ".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--experiments", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--browser", action="store_true",
                   help="also time each page drawn in headless Chromium")  # fmt: skip
    args = p.parse_args()

    home = Path(tempfile.mkdtemp(prefix="launch-bench-ui-"))
    os.environ["LAUNCH_HOME"] = str(home)
    proc = None
    try:
        t0 = time.perf_counter()
        sweep = make_store(home, args.runs, args.experiments, args.epochs)
        made = time.perf_counter() - t0
        from launcher import runs
        from launcher.runs.metrics import leaderboard, read_run
        from launcher.ui import views

        def encoded(fn):
            return lambda: json.dumps(fn(), separators=(",", ":"), default=str).encode()

        def metrics_baseline():
            ctx = runs.RunContext(sweep)
            leaderboard(ctx.storage, sweep, data=read_run(ctx.storage, sweep))

        rows = [
            (f"runs page ({args.runs + 1} runs)", encoded(views.runs_page),
             [("launch status", lambda: runs.list_runs())]),
            (f"run page ({args.experiments} exps)", encoded(lambda: views.run_page(sweep)),
             [("launch status RUN", lambda: runs.RunContext(sweep).refresh(reconcile=True)),
              ("launch metrics RUN", metrics_baseline)]),
        ]  # fmt: skip
        proc, base = start_ui(dict(os.environ))
        http_paths = {rows[0][0]: "/api/runs", rows[1][0]: f"/api/runs/{sweep}"}

        def get(path: str):
            return lambda: urllib.request.urlopen(base + path, timeout=60).read()

        print(f"{args.runs} one-experiment runs + a {args.experiments}-experiment sweep "
              f"({args.epochs} epochs each) written in {made:.1f} s; "
              f"median of {args.repeat}")  # fmt: skip
        print(f"{'page':<28} {'server-side':>11} {'over HTTP':>10}   baseline (same run)")
        over = []
        for label, fn, baselines in rows:
            ui_s = median_time(fn, args.repeat)
            http_s = median_time(get(http_paths[label]), args.repeat)
            size = len(fn())
            shown = []
            for name, bfn in baselines:
                b = median_time(bfn, args.repeat)
                shown.append(f"{name} {b:.3f} s (ui x{ui_s / b:.2f})")
            print(f"{label:<28} {ui_s:9.3f} s {http_s:8.3f} s   {'; '.join(shown)}"
                  f"   [{size / 1e3:.0f} kB JSON]")  # fmt: skip
            if ui_s >= PAGE_BUDGET_S:
                over.append(f"{label}: {ui_s:.3f} s server-side, over its {PAGE_BUDGET_S} s")
        if args.browser:
            print(browser_times(base, sweep, args.runs + 1, args.experiments, args.repeat))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        shutil.rmtree(home, ignore_errors=True)
    for line in over:
        print(line, file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
