"""Helpers shared by the local backend's tests (imported as ``localjob``; conftest holds the
fixtures)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

from launcher.backends.local import LocalBackend

# A stand-in for trainer/train.py with the same contract, fast: it resumes from
# LAUNCH_ARTIFACTS_DIR/checkpoints/last.ckpt, writes a checkpoint and a metrics.csv row per step,
# and appends what it did (start step, times, argv) to --record so tests can check it.
JOB = textwrap.dedent(
    """
    import argparse, json, os, sys, time
    from pathlib import Path

    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--sleep", type=float, default=0.05)
    p.add_argument("--lr", default="0.1")
    p.add_argument("--bs", default="1")
    p.add_argument("--fail-first", action="store_true", help="exit 3 on attempt 1")
    p.add_argument("--exit", type=int, default=0)
    p.add_argument("--record", default=None)
    args, rest = p.parse_known_args()

    art = Path(os.environ["LAUNCH_ARTIFACTS_DIR"])
    ckpt = art / "checkpoints" / "last.ckpt"
    start = json.loads(ckpt.read_text())["step"] if ckpt.exists() else 0
    attempt = int(os.environ.get("LAUNCH_ATTEMPT", "0"))
    began = time.time()
    print(f"start_step={start} attempt={attempt} lr={args.lr}", flush=True)

    def record(**kw):
        if args.record:
            with open(args.record, "a") as f:
                f.write(json.dumps(dict(kw, exp=os.environ["LAUNCH_EXPERIMENT"], pid=os.getpid(),
                                        attempt=attempt)) + "\\n")

    record(event="start", step=start, time=began, argv=sys.argv[1:],
           env={k: v for k, v in os.environ.items() if k.startswith(("LAUNCH_", "CUDA", "MY_"))})
    if args.fail_first and attempt == 1:
        print("failing on purpose", flush=True)
        sys.exit(3)
    (art / "checkpoints").mkdir(parents=True, exist_ok=True)
    metrics = art / "metrics.csv"
    if not metrics.exists():
        metrics.write_text("epoch,step,train_loss,val_acc1\\n")
    for step in range(start, args.steps):
        time.sleep(args.sleep)
        with open(metrics, "a") as f:
            f.write(f"{step},{step},{1.0 / (step + 1)},\\n{step},{step},,{step / args.steps}\\n")
        tmp = ckpt.with_suffix(".tmp")
        tmp.write_text(json.dumps({"step": step + 1}))
        os.replace(tmp, ckpt)
        print(f"step {step + 1}", flush=True)
    (art / "checkpoints" / "best.ckpt").write_text(json.dumps({"step": args.steps}))
    (art / "labels.txt").write_text("a\\nb\\n")
    record(event="end", step=args.steps, time=time.time())
    sys.exit(args.exit)
    """
)


def at_once(fn, times: int) -> None:
    """Call ``fn`` from ``times`` threads started together; returns when all have finished."""
    import threading

    threads = [threading.Thread(target=fn) for _ in range(times)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def read_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def make_spec(**kw):
    """A local CPU JobSpec for job.py in the current directory."""
    from launcher.spec.jobspec import JobSpec

    kw.setdefault("script", "job.py")
    kw.setdefault("instance_type", "t3.medium")
    kw.setdefault("gpus", 0)
    return JobSpec.load(**kw)


PYTHON = sys.executable


class NoAgents(LocalBackend):
    """The local backend minus the agents: for checks of what prepare_run writes (tests start
    agents themselves, or none)."""

    def submit(self, run, spec):
        return []
