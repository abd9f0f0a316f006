"""The README's main job, step by step through the `launch` CLI, on the local backend.

1. make sample videos whose class is the direction something moves (``trainer.sample_data``)
2. upload them as a versioned datastore (``launch datastore create``)
3. train on them with ``launch run --instance g4dn.xlarge --gpus 1 ... --wait``
4. pull the run's artifacts (``launch artifacts pull``)
5. classify held-out videos with the best checkpoint (``launch predict``) and score them

Every command is printed before it runs, so the output doubles as a tutorial. State goes to
``$LAUNCH_HOME`` (default ``~/.launch``); sample data to ``--data`` (default ``.sample_data``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def sh(*cmd: str, capture: bool = False) -> str:
    """Run one command (never through a shell), echoing it; stop the demo if it fails."""
    print(f"\n$ {shlex.join(cmd)}", flush=True)
    done = subprocess.run(cmd, cwd=REPO, text=True, stdout=subprocess.PIPE if capture else None)
    if done.returncode != 0:
        sys.exit(f"demo step failed (exit {done.returncode}): {shlex.join(cmd)}")
    return done.stdout or ""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=REPO / ".sample_data" / "motion")
    p.add_argument("--max-epochs", type=int, default=12)
    p.add_argument("--videos-per-class", type=int, default=16)
    p.add_argument("--dest", default="launch_artifacts", help="where artifacts are pulled")
    a = p.parse_args(argv)
    launch = str(BIN / "launch")
    python = sys.executable

    if not (a.data / "train").is_dir():
        sh(python, "-m", "trainer.sample_data", "--out", str(a.data), "--kind", "motion",
           "--videos-per-class", str(a.videos_per_class))  # fmt: skip
    sh(launch, "datastore", "create", "--name", "motion-demo", "--source", str(a.data))

    run = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    sh(launch, "run", "--name", run, "--instance", "g4dn.xlarge", "--gpus", "1",
       "--datastore", "motion-demo", "--wait",
       "trainer/train.py", "--backbone", "demo_cnn", "--no-hflip",
       "--max_epochs", str(a.max_epochs), "--batch_size", "8")  # fmt: skip
    sh(launch, "status", run)
    sh(launch, "artifacts", "pull", run, "--dest", a.dest)

    out = sh(launch, "predict", run, str(a.data / "val"), "--dest", a.dest, "--json", capture=True)
    predictions = json.loads(out)["predictions"]  # {path: label}
    for path, label in list(predictions.items())[:: max(1, len(predictions) // 4)]:
        print(f"{Path(path).parent.name}/{Path(path).name} -> {label}")
    right = sum(Path(path).parent.name == label for path, label in predictions.items())
    print(f"\ndemo: {run} classified {right}/{len(predictions)} held-out videos correctly")


if __name__ == "__main__":
    main()
