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


# -- issue 8, point 13: LAUNCH_HOME and credentials stay out ---------------------------------------
def test_launch_home_inside_the_working_dir_is_never_snapshotted(project, monkeypatch):
    home = project / "state" / ".launch"
    for rel in ("store/runs/old/code.tar.gz", "runs.sqlite3", "nodes/old/node-0.log"):
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_text("x")
    (project / "state" / "notes.py").write_text("")
    monkeypatch.setenv("LAUNCH_HOME", str(home))
    files = collect_files(project)
    assert not any(f.startswith("state/.launch") for f in files), files
    assert "state/notes.py" in files
    monkeypatch.chdir(project / "state")
    monkeypatch.setenv("LAUNCH_HOME", ".launch")  # relative: the same folder
    assert not any(f.startswith("state/.launch") for f in collect_files(project))


CREDENTIAL_FILES = [".aws/credentials", ".env", ".env.local", "certs/server.pem", "id_rsa",
                    "keys/id_ed25519.pub", ".ssh/config", ".netrc", "pkg/tls.key"]  # fmt: skip


def test_credential_looking_files_are_left_out_with_one_note(project, caplog):
    for rel in [*CREDENTIAL_FILES, ".env.example"]:
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text("secret")
    with caplog.at_level("WARNING", logger="launcher"):
        snap = make_snapshot(project)
    assert not set(CREDENTIAL_FILES) & set(snap.files)
    assert ".env.example" in snap.files and "train.py" in snap.files
    with tarfile.open(fileobj=io.BytesIO(snap.data)) as tar:
        assert not set(CREDENTIAL_FILES) & set(tar.getnames())
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 1, notes
    assert all(rel in notes[0] for rel in CREDENTIAL_FILES), notes[0]
    assert ".launchignore" in notes[0]


def test_a_launchignore_negation_takes_one_credential_in(project, caplog):
    (project / ".env").write_text("A=1")
    (project / "server.pem").write_text("x")
    (project / ".launchignore").write_text("scratch/\n!.env\n")
    with caplog.at_level("WARNING", logger="launcher"):
        files = make_snapshot(project).files
    assert ".env" in files and "server.pem" not in files
    assert "server.pem" in caplog.text and ".env," not in caplog.text


def test_a_credential_the_project_ignores_itself_gets_no_note(project, caplog):
    (project / ".env").write_text("A=1")
    (project / ".gitignore").write_text("data/\n*.log\n!keep.log\n.env\n")
    with caplog.at_level("WARNING", logger="launcher"):
        assert ".env" not in make_snapshot(project).files
    assert not caplog.records


# -- issue 8, point 12: --dry-run and the real run make one size check -----------------------------
def test_dry_run_refuses_what_the_real_run_refuses(project, monkeypatch):
    from launcher.runs.launching import plan_run
    from launcher.spec.jobspec import JobSpec

    (project / "weights.pt").write_bytes(b"\0" * 300_000)
    monkeypatch.setenv("LAUNCH_SNAPSHOT_LIMIT_MB", "0.1")
    monkeypatch.chdir(project)
    spec = JobSpec.load(script="train.py", instance_type="t3.medium", gpus=0)
    with pytest.raises(SnapshotError, match=r"weights\.pt") as real:
        make_snapshot(project)
    with pytest.raises(SnapshotError, match=r"weights\.pt") as dry:
        plan_run(spec, project)
    assert str(dry.value) == str(real.value)
    monkeypatch.setenv("LAUNCH_SNAPSHOT_LIMIT_MB", "1")
    assert plan_run(spec, project).size == make_snapshot(project).total_size
