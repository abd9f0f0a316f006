"""What an agent needs around its lifecycle: interruption notices, tying the script's life to
the agent's, and reading the metrics a script logs."""

from __future__ import annotations

import csv
import signal
import sys
from pathlib import Path


class FileInterruption:
    """Interruption notice as a file's existence (tests; any scheduler that can touch a file)."""

    def __init__(self, path: str):
        self.path = Path(path)

    def pending(self) -> bool:
        return self.path.exists()


class NoInterruption:
    def pending(self) -> bool:
        return False


def interruption_source(spec: str | None):
    """``imds`` (EC2 spot notice), ``file:PATH``, or nothing."""
    if not spec:
        return NoInterruption()
    if spec == "imds":
        from launcher.backends.aws.interruption import ImdsInterruption

        return ImdsInterruption()
    if spec.startswith("file:"):
        return FileInterruption(spec[5:])
    raise SystemExit(f"--interruption must be 'imds' or 'file:PATH', not {spec!r}")


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask the kernel to SIGKILL the script when the agent dies, however it dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


def latest_metrics(csv_path: Path) -> dict[str, float]:
    """The last logged value of each column of a Lightning CSVLogger file (rows have blanks)."""
    latest: dict[str, float] = {}
    try:
        with open(csv_path, newline="") as f:
            for row in csv.DictReader(f):
                for k, v in row.items():
                    if k and v not in (None, ""):
                        try:
                            latest[k] = float(v)
                        except ValueError:
                            continue
    except (OSError, csv.Error):
        return {}
    return latest
