"""Runs: the library behind every ``launch`` command that works on runs (the CLI only parses and
prints). Storage holds the truth; the index is a cache of it.

- :mod:`~launcher.runs.launching`: a spec and a working directory -> a run in storage, with nodes
- :mod:`~launcher.runs.state`: reading a run's state (read-only: listing and status change nothing)
- :mod:`~launcher.runs.reconcile`: the one step that may start nodes or re-queue experiments
- :mod:`~launcher.runs.control`: stop, delete, wait
- :mod:`~launcher.runs.index`: the local SQLite cache, rebuilt from storage when missing
- :mod:`~launcher.runs.logs`, :mod:`~launcher.runs.metrics`: reading what experiments produced
"""

from launcher.runs.control import delete_run, stop_run, wait_run
from launcher.runs.launching import Plan, new_run_name, plan_run, prepare_run
from launcher.runs.state import (
    ExperimentView,
    RunContext,
    list_runs,
    run_detail,
    summarize,
)

__all__ = [
    "ExperimentView",
    "Plan",
    "RunContext",
    "delete_run",
    "list_runs",
    "new_run_name",
    "plan_run",
    "prepare_run",
    "run_detail",
    "stop_run",
    "summarize",
    "wait_run",
]
