"""launcher.storage.snapshot: what a run's code.tar.gz holds."""

from __future__ import annotations

import io
import tarfile

import pytest

from launcher.storage.snapshot import SnapshotError, collect_files, make_snapshot, unpack_snapshot


@pytest.fixture
def project(tmp_path):
    p = tmp_path / "proj"
    for rel in [
        "train.py", "pkg/__init__.py", "pkg/model.py", "data/big.bin", "notes.log",
        "keep.log", ".git/HEAD", ".venv/bin/python", "pkg/__pycache__/model.cpython-311.pyc",
        "launch_artifacts/run/exp-0/last.ckpt", "scratch/tmp.txt", "stray.pyc",
    ]:  # fmt: skip
        f = p / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(rel)
    (p / ".gitignore").write_text("data/\n*.log\n!keep.log\n")
    (p / ".launchignore").write_text("scratch/\n")
    return p


def test_ignore_rules_and_always_excluded(project):
    assert collect_files(project) == [
        ".gitignore", ".launchignore", "keep.log", "pkg/__init__.py", "pkg/model.py", "train.py",
    ]  # fmt: skip


def test_nested_gitignore_applies_below_its_folder(project):
    (project / "pkg" / "gen").mkdir()
    (project / "pkg" / "gen" / "out.py").write_text("")
    (project / "pkg" / "cache.db").write_text("")
    (project / "cache.db").write_text("")
    (project / "pkg" / ".gitignore").write_text("gen/\n*.db\n")
    files = collect_files(project)
    assert "pkg/cache.db" not in files and "pkg/gen/out.py" not in files
    assert "cache.db" in files and "pkg/.gitignore" in files


def test_round_trip(project, tmp_path):
    snap = make_snapshot(project)
    assert snap.files == collect_files(project)
    out = unpack_snapshot(snap.data, tmp_path / "out")
    assert (out / "pkg" / "model.py").read_text() == "pkg/model.py"
    assert not (out / "data").exists() and not (out / ".git").exists()
    # from a file too
    archive = tmp_path / "code.tar.gz"
    archive.write_bytes(snap.data)
    assert (unpack_snapshot(archive, tmp_path / "out2") / "train.py").is_file()


def test_symlinks_are_left_out(project, tmp_path):
    (project / "link.py").symlink_to("/etc/passwd")
    (project / "linkdir").symlink_to(tmp_path)
    files = collect_files(project)
    assert "link.py" not in files and not any(f.startswith("linkdir") for f in files)


def test_size_limit_names_the_biggest_files(project):
    (project / "weights.pt").write_bytes(b"\0" * 300_000)
    with pytest.raises(SnapshotError, match=r"weights\.pt.*\.launchignore"):
        make_snapshot(project, limit_mb=0.1)
    assert make_snapshot(project, limit_mb=1).total_size > 300_000


def test_size_limit_from_env(project, monkeypatch):
    monkeypatch.setenv("LAUNCH_SNAPSHOT_LIMIT_MB", "0.00001")
    with pytest.raises(SnapshotError, match="limit"):
        make_snapshot(project)


def test_unpack_refuses_members_escaping_the_destination(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../evil.py")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"boom"))
    with pytest.raises(tarfile.TarError):
        unpack_snapshot(buf.getvalue(), tmp_path / "dest")
    assert not (tmp_path / "evil.py").exists()
