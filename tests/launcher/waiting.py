"""Polling for the launcher's tests (local and AWS): wait until something is true, or fail."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.1,
    what: str | None = None,
) -> T:
    """Poll until predicate() is truthy; its value. Fails the test naming ``what`` (by default
    the predicate's name) on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what or getattr(predicate, '__name__', 'it')}"
    )
