"""The local SQLite index of runs: what makes ``launch status`` fast with thousands of runs.

Storage stays the source of truth and the index is only a cache: a missing index is rebuilt by
the next ``launch status`` (which indexes every run storage holds), an unreadable one is set aside
and rebuilt the same way. The index caches each run's summary; a run that has finished
(succeeded, failed, stopped) never changes again, so only unfinished runs are refreshed from
storage. Every writer opens its own short transaction, so concurrent ``launch`` commands are safe
(SQLite's file locking, WAL journal, a busy timeout).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from launcher.config import launch_home
from launcher.errors import LaunchError

log = logging.getLogger("launcher")
FINISHED = ("succeeded", "failed", "stopped")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    name TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    root TEXT NOT NULL,
    instance_type TEXT NOT NULL DEFAULT '',
    gpus INTEGER NOT NULL DEFAULT 0,
    max_nodes INTEGER NOT NULL DEFAULT 1,
    spot INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'queued',
    done INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    ended REAL,
    cost REAL,
    message TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created);
"""


@dataclass
class RunRow:
    """One run's cached summary."""

    name: str
    backend: str
    root: str
    created: float
    instance_type: str = ""
    gpus: int = 0
    max_nodes: int = 1
    spot: bool = False
    status: str = "queued"
    done: int = 0
    total: int = 0
    ended: float | None = None
    cost: float | None = None
    message: str = ""

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


_COLUMNS = [f.name for f in fields(RunRow)]


class RunIndex:
    """The index file (``$LAUNCH_HOME/runs.sqlite3`` unless a path is given)."""

    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path else launch_home() / "runs.sqlite3"
        self._conn: sqlite3.Connection | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._conn = self._open()
            except sqlite3.DatabaseError as e:
                # a cache: set the broken file aside and start afresh; `launch status` indexes
                # every run again from storage
                aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
                for suffix in ("", "-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        Path(f"{self.path}{suffix}").rename(f"{aside}{suffix}")
                log.warning("the run index %s was unreadable (%s); moved it to %s and rebuilt it "
                            "from storage", self.path, e, aside.name)  # fmt: skip
                try:
                    self._conn = self._open()
                except sqlite3.DatabaseError as e2:
                    raise LaunchError(f"cannot open the run index {self.path}: {e2}") from e2
        return self._conn

    def _open(self) -> sqlite3.Connection:
        # autocommit mode; upsert_many opens an explicit transaction
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            conn.execute("SELECT count(*) FROM runs").fetchone()  # reads every page's header
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def upsert(self, row: RunRow) -> None:
        """Insert or replace a run's summary."""
        values = asdict(row)
        values["spot"] = int(row.spot)
        placeholders = ", ".join(f":{c}" for c in _COLUMNS)
        self.conn.execute(
            f"INSERT OR REPLACE INTO runs ({', '.join(_COLUMNS)}) VALUES ({placeholders})", values
        )

    def upsert_many(self, rows: list[RunRow]) -> None:
        if not rows:
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for row in rows:
                self.upsert(row)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def get(self, name: str) -> RunRow | None:
        cur = self.conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM runs WHERE name = ?", (name,))
        r = cur.fetchone()
        return self._row(r) if r else None

    def list(self, *, unfinished_only: bool = False, limit: int | None = None) -> list[RunRow]:
        """Runs, newest first."""
        sql = f"SELECT {', '.join(_COLUMNS)} FROM runs"
        if unfinished_only:
            sql += f" WHERE status NOT IN ({', '.join('?' * len(FINISHED))})"
        sql += " ORDER BY created DESC"
        params: list = list(FINISHED) if unfinished_only else []
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [self._row(r) for r in self.conn.execute(sql, params)]

    def names(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM runs ORDER BY created DESC")]

    def delete(self, name: str) -> None:
        self.conn.execute("DELETE FROM runs WHERE name = ?", (name,))

    @staticmethod
    def _row(r: tuple) -> RunRow:
        row = RunRow(**dict(zip(_COLUMNS, r, strict=True)))
        row.spot = bool(row.spot)
        return row
