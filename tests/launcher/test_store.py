"""launcher.runs.index: the SQLite index behind `launch status`."""

from __future__ import annotations

import threading
import time

from launcher.runs.index import RunIndex, RunRow


def row(name: str, created: float, status: str = "queued", **kw) -> RunRow:
    return RunRow(
        name=name, backend="local", root="file:///x", created=created, status=status, **kw
    )


def test_upsert_get_list_delete(tmp_path):
    index = RunIndex(tmp_path / "runs.sqlite3")
    assert index.get("a") is None and index.list() == []
    index.upsert(row("a", 1.0, instance_type="g4dn.xlarge", gpus=1, spot=True, total=4))
    index.upsert(row("b", 2.0, status="succeeded", done=2, total=2, cost=0.5))
    a = index.get("a")
    assert a.instance_type == "g4dn.xlarge" and a.spot is True and a.total == 4
    assert not a.finished and index.get("b").finished
    assert [r.name for r in index.list()] == ["b", "a"]  # newest first
    assert [r.name for r in index.list(unfinished_only=True)] == ["a"]
    index.upsert(row("a", 1.0, status="failed", done=4, total=4))  # replace
    assert index.get("a").status == "failed"
    assert index.list(unfinished_only=True) == []
    index.delete("a")
    assert index.names() == ["b"]


def test_survives_reopen_and_concurrent_writers(tmp_path):
    path = tmp_path / "runs.sqlite3"
    errors = []

    def writer(prefix: str) -> None:
        try:
            idx = RunIndex(path)
            for i in range(50):
                idx.upsert(row(f"{prefix}-{i}", time.time()))
            idx.close()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(p,)) for p in ("x", "y", "z")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(RunIndex(path).names()) == 150


def test_thousand_rows_list_fast(tmp_path):
    index = RunIndex(tmp_path / "runs.sqlite3")
    index.upsert_many([row(f"r-{i}", float(i), status="succeeded") for i in range(1000)])
    rows = index.list()
    unfinished = index.list(unfinished_only=True)
    assert len(rows) == 1000 and unfinished == []


def test_a_corrupt_index_is_set_aside_and_rebuilt(tmp_path, caplog):
    path = tmp_path / "runs.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    index = RunIndex(path)
    assert index.list() == []  # a fresh, empty cache: `launch status` refills it from storage
    index.upsert(RunRow(name="r", backend="local", root="file:///x", created=1.0))
    assert [r.name for r in RunIndex(path).list()] == ["r"]
    (aside,) = tmp_path.glob("runs.sqlite3.corrupt-*")
    assert aside.read_bytes().startswith(b"this is not a database")
    assert "unreadable" in caplog.text
