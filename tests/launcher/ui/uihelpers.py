"""Helpers of the dashboard's tests: runs written into storage as agents write them."""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import sys
from pathlib import Path

from launcher.storage import records

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SWEEP_LRS = (0.1, 0.01, 0.001)
SWEEP_BEST = {"exp-0": 0.55, "exp-1": 0.8, "exp-2": 0.3}  # exp-1 (lr=0.01) wins


def metrics_csv(best: float, epochs: int) -> str:
    """CSVLogger's shape: a train row and a val row per epoch; val_acc1 climbs to ``best``."""
    lines = ["epoch,step,train_loss,val_acc1"]
    for e in range(epochs):
        lines.append(f"{e},{e * 10 + 9},{(2.0 - best) / (e + 1):.4f},")
        lines.append(f"{e},{e * 10 + 9},,{best * (e + 1) / epochs:.4f}")
    return "\n".join(lines) + "\n"


def ship_metrics(storage, run: str, exp: str, text: str, folder: Path) -> None:
    from launcher.storage.artifacts import ship_artifacts

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.csv").write_text(text)
    ship_artifacts(storage, run, exp, folder)


def add_log_piece(storage, run: str, exp: str, text: str) -> None:
    n = len(records.log_pieces(storage, run, exp))
    storage.write_text(records.exp_key(run, exp, "logs", f"{n:06d}.log"), text)


def start_attempt(storage, run: str, exp: str, started: float) -> None:
    claim = json.dumps({"node": "node-0", "time": started}).encode()
    storage.create_exclusive(records.claim_key(run, exp, 1), claim)
    records.write_status(storage, run, exp, state="running", attempt=1, node="node-0",
                         started=started)  # fmt: skip


class UiServer:
    """`launch ui` running as a process; ``url`` is what it printed (token included)."""

    def __init__(self, *args: str, env: dict | None = None):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "launcher", "ui", "--port", "0", "--poll", "0.3", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env or dict(os.environ),
        )  # fmt: skip
        line = self._first_line(timeout=30)
        assert "serving http://" in line, line
        self.url = line.split("serving ", 1)[1].split()[0]
        self.base = self.url.split("?")[0].rstrip("/")
        self.port = int(self.base.rsplit(":", 1)[1])

    def _first_line(self, timeout: float) -> str:
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            self.stop()
            raise AssertionError(f"launch ui printed nothing in {timeout}s")
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read()
            raise AssertionError(f"launch ui ended: {err}")
        return line

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # by its handle, never by name
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()
