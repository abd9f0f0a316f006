"""Where an agent learns that its node is about to go away (a spot reclaim, a scheduler's
preemption): a source with ``pending()``, chosen by ``--interruption``."""

from __future__ import annotations

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
