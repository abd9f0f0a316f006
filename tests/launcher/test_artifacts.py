"""Artifacts: incremental ship, restore, list and a safe, verified pull (file and s3)."""

from __future__ import annotations

import os

import pytest

from launcher.errors import NotFoundError, SpecError, StorageError
from launcher.storage import artifacts as art
from launcher.storage import transfer as manifest
from launcher.storage.transfer import sha256_file

RUN = "run-1"
TOTAL = 5000 + 4000 + 29 + 18  # bytes of the files `outputs` makes


def make_run(storage):
    storage.write_json(f"runs/{RUN}/run.json", {"name": RUN})
    for e in ("exp-0", "exp-1", "exp-10"):
        storage.write_json(f"runs/{RUN}/experiments/{e}/params.json", {"id": e})
    return storage


@pytest.fixture
def run(storage):
    return make_run(storage)


@pytest.fixture
def file_run(file_storage):
    """Path-safety checks happen before any transfer, so one storage kind is enough."""
    return make_run(file_storage)


@pytest.fixture
def outputs(tmp_path):
    d = tmp_path / "art"
    (d / "checkpoints").mkdir(parents=True)
    (d / "checkpoints" / "last.ckpt").write_bytes(os.urandom(5000))
    (d / "checkpoints" / "best.ckpt").write_bytes(os.urandom(4000))
    (d / "metrics.csv").write_text("epoch,step,val_acc1\n0,10,0.5\n")
    (d / "labels.txt").write_text("archery\nhigh_jump\n")
    return d


def uploads(monkeypatch):
    calls = []
    real = manifest.upload
    monkeypatch.setattr(
        manifest, "upload", lambda s, local, key, *a: calls.append(key) or real(s, local, key, *a)
    )
    return calls


def test_ship_is_incremental_and_mirrors(run, outputs, monkeypatch):
    calls = uploads(monkeypatch)
    stats = art.ship_artifacts(run, RUN, "exp-0", outputs)
    assert stats == {"uploaded": 4, "unchanged": 0, "deleted": 0, "bytes": TOTAL}
    m = run.read_json(f"runs/{RUN}/experiments/exp-0/artifacts.json")
    assert m["checkpoints/last.ckpt"] == {
        "size": 5000,
        "sha256": sha256_file(outputs / "checkpoints/last.ckpt"),
    }
    assert sorted(m) == [
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "labels.txt",
        "metrics.csv",
    ]

    calls.clear()
    assert art.ship_artifacts(run, RUN, "exp-0", outputs)["uploaded"] == 0
    assert calls == []

    with open(outputs / "metrics.csv", "a") as f:
        f.write("1,20,0.7\n")
    (outputs / "checkpoints" / "best.ckpt").unlink()
    stats = art.ship_artifacts(run, RUN, "exp-0", outputs)
    assert (stats["uploaded"], stats["unchanged"], stats["deleted"]) == (1, 2, 1)
    assert calls == [f"runs/{RUN}/experiments/exp-0/artifacts/metrics.csv"]
    assert not run.exists(f"runs/{RUN}/experiments/exp-0/artifacts/checkpoints/best.ckpt")
    assert run.read_text(f"runs/{RUN}/experiments/exp-0/artifacts/metrics.csv").endswith("0.7\n")


def test_unchanged_files_are_not_rehashed(run, outputs, monkeypatch):
    art.ship_artifacts(run, RUN, "exp-0", outputs)
    hashed = []
    real = manifest.sha256_file
    monkeypatch.setattr(manifest, "sha256_file", lambda p: hashed.append(p) or real(p))
    art.ship_artifacts(run, RUN, "exp-0", outputs)
    assert hashed == []  # same size and mtime: the cached digest is used


def test_same_content_touched_is_hashed_not_uploaded(run, outputs, monkeypatch):
    art.ship_artifacts(run, RUN, "exp-0", outputs)
    calls = uploads(monkeypatch)
    ckpt = outputs / "checkpoints" / "last.ckpt"
    os.utime(ckpt, ns=(1, 1))
    assert art.ship_artifacts(run, RUN, "exp-0", outputs)["uploaded"] == 0
    assert calls == []


def test_restore_then_ship_uploads_nothing(run, outputs, tmp_path, monkeypatch):
    art.ship_artifacts(run, RUN, "exp-1", outputs)
    fresh = tmp_path / "node2"
    fresh.mkdir()
    restored = art.restore_artifacts(run, RUN, "exp-1", fresh)
    assert sorted(p.relative_to(fresh).as_posix() for p in restored) == [
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "labels.txt",
        "metrics.csv",
    ]
    assert (fresh / "checkpoints/last.ckpt").read_bytes() == (
        outputs / "checkpoints/last.ckpt"
    ).read_bytes()
    calls = uploads(monkeypatch)
    assert art.ship_artifacts(run, RUN, "exp-1", fresh)["uploaded"] == 0
    assert calls == []
    assert art.restore_artifacts(run, RUN, "exp-0", tmp_path / "none") == []


def test_list_artifacts(run, outputs):
    art.ship_artifacts(run, RUN, "exp-1", outputs)
    art.ship_artifacts(run, RUN, "exp-10", outputs)
    rows = art.list_artifacts(run, RUN)
    assert [(r.experiment, r.path) for r in rows][:2] == [
        ("exp-1", "checkpoints/best.ckpt"),
        ("exp-1", "checkpoints/last.ckpt"),
    ]
    assert {r.experiment for r in rows} == {"exp-1", "exp-10"}
    assert len(art.list_artifacts(run, RUN, "exp-10")) == 4
    assert art.list_artifacts(run, RUN, "exp-0") == []


def test_pull_layout_verify_and_rerun(run, outputs, tmp_path, monkeypatch):
    art.ship_artifacts(run, RUN, "exp-0", outputs)
    art.ship_artifacts(run, RUN, "exp-1", outputs)
    monkeypatch.chdir(tmp_path)
    seen = []
    paths = art.pull_artifacts(run, RUN, progress=lambda d, t: seen.append((d, t)))
    assert len(paths) == 8
    best = tmp_path / "launch_artifacts" / RUN / "exp-0" / "checkpoints" / "best.ckpt"
    assert best.read_bytes() == (outputs / "checkpoints/best.ckpt").read_bytes()
    assert seen[-1][0] == seen[-1][1] == 2 * (TOTAL)
    # a rerun downloads nothing; a locally damaged file is fetched again
    best.write_bytes(b"damaged!")
    again = art.pull_artifacts(run, RUN, experiment="exp-0", dest=tmp_path / "launch_artifacts")
    assert len(again) == 4
    assert best.read_bytes() == (outputs / "checkpoints/best.ckpt").read_bytes()
    leftovers = [p for p in (tmp_path / "launch_artifacts").rglob("*") if ".part-" in p.name]
    assert leftovers == []


def test_pull_refuses_corrupt_objects_and_leaves_no_half_file(run, outputs, tmp_path):
    art.ship_artifacts(run, RUN, "exp-0", outputs)
    run.write_bytes(f"runs/{RUN}/experiments/exp-0/artifacts/labels.txt", b"tampered")
    with pytest.raises(StorageError, match="labels.txt is corrupt"):
        art.pull_artifacts(run, RUN, dest=tmp_path / "out")
    assert not (tmp_path / "out" / RUN / "exp-0" / "labels.txt").exists()
    assert [p.name for p in (tmp_path / "out").rglob("*") if ".part-" in p.name] == []


@pytest.mark.parametrize(
    "bad", ["../../evil.txt", "/etc/passwd", "a/../../x", "a\\..\\x", "", "./x", "a//b"]
)
def test_pull_refuses_paths_escaping_dest(file_run, tmp_path, bad):
    run = file_run
    run.write_json(
        f"runs/{RUN}/experiments/exp-0/artifacts.json",
        {bad: {"size": 1, "sha256": "0" * 64}},
    )
    with pytest.raises(StorageError, match="refusing manifest path"):
        art.pull_artifacts(run, RUN, dest=tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_pull_refuses_a_symlinked_folder_leading_out(run, outputs, tmp_path):
    art.ship_artifacts(run, RUN, "exp-0", outputs)
    dest = tmp_path / "out" / RUN / "exp-0"
    dest.mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (dest / "checkpoints").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StorageError, match="leads outside"):
        art.pull_artifacts(run, RUN, dest=tmp_path / "out")
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_bad_names_and_missing_things(run, tmp_path):
    with pytest.raises(NotFoundError, match="run 'nope' not found"):
        art.pull_artifacts(run, "nope", dest=tmp_path)
    with pytest.raises(
        NotFoundError, match="no experiment 'exp-7'; experiments: exp-0, exp-1, exp-10"
    ):
        art.list_artifacts(run, RUN, "exp-7")
    with pytest.raises(SpecError, match="invalid run name '../x'"):
        art.pull_artifacts(run, "../x", dest=tmp_path)
    with pytest.raises(SpecError, match="invalid experiment id '../exp-0'"):
        art.ship_artifacts(run, RUN, "../exp-0", tmp_path)
    run.write_json(f"runs/{RUN}/experiments/exp-0/artifacts.json", {"a": {"size": "big"}})
    with pytest.raises(StorageError, match="corrupt manifest entry for 'a'"):
        art.list_artifacts(run, RUN)


class GrowsOnce:
    """A progress counter that appends to the file being uploaded, as a writer would."""

    def __init__(self, path):
        self.path, self.done = path, False

    def add(self, n):
        if not self.done:
            self.done = True
            with open(self.path, "ab") as f:
                f.write(b"more")


@pytest.mark.parametrize("size", [100, 3 * manifest.CHUNK])  # one read, and several
def test_upload_of_a_file_changing_midway_stores_nothing(storage, tmp_path, size):
    f = tmp_path / "last.ckpt"
    f.write_bytes(b"old")
    manifest.upload(storage, f, "k/last.ckpt")
    f.write_bytes(b"x" * size)
    with pytest.raises(manifest.FileChanged, match="changed while it was uploaded"):
        manifest.upload(storage, f, "k/last.ckpt", GrowsOnce(f))
    assert storage.read_bytes("k/last.ckpt") == b"old"
    assert [k for k in storage.walk("k") if k != "last.ckpt"] == []  # no temp files left


def test_ship_defers_a_file_being_written(run, outputs, monkeypatch):
    art.ship_artifacts(run, RUN, "exp-0", outputs)
    before = run.read_json(f"runs/{RUN}/experiments/exp-0/artifacts.json")
    ckpt = outputs / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(b"epoch 2, half written")
    real = manifest.upload

    def mid_write(storage, local, key, *a):
        if key.endswith("last.ckpt"):
            raise manifest.FileChanged(f"{local} changed while it was uploaded")
        return real(storage, local, key, *a)

    monkeypatch.setattr(manifest, "upload", mid_write)
    (outputs / "new.txt").write_text("x")
    stats = art.ship_artifacts(run, RUN, "exp-0", outputs)
    assert (stats["uploaded"], stats["deleted"]) == (1, 0)
    after = run.read_json(f"runs/{RUN}/experiments/exp-0/artifacts.json")
    assert after["checkpoints/last.ckpt"] == before["checkpoints/last.ckpt"]  # old copy kept
    assert "new.txt" in after
    monkeypatch.setattr(manifest, "upload", real)
    assert art.ship_artifacts(run, RUN, "exp-0", outputs)["uploaded"] == 1  # sent next time
    assert run.read_bytes(f"runs/{RUN}/experiments/exp-0/artifacts/checkpoints/last.ckpt") == (
        b"epoch 2, half written"
    )


def listing_then(monkeypatch, change):
    """Make ``change()`` happen right after ship lists the folder, before it hashes anything."""
    real = manifest.local_files

    def listed_then_changed(root):
        files = real(root)
        change()
        return files

    monkeypatch.setattr(manifest, "local_files", listed_then_changed)


def test_ship_skips_a_file_renamed_away_after_listing(run, outputs, monkeypatch):
    art.ship_artifacts(run, RUN, "exp-0", outputs)
    ckpt = outputs / "checkpoints" / "last.ckpt"
    tmp = outputs / "checkpoints" / "last.tmp"
    tmp.write_bytes(b"epoch 3")
    # the trainer saves to last.tmp and renames it over last.ckpt while ship runs
    listing_then(monkeypatch, lambda: os.replace(tmp, ckpt))
    stats = art.ship_artifacts(run, RUN, "exp-0", outputs)
    assert stats["uploaded"] == 1  # last.ckpt's new bytes; last.tmp is gone, not an error
    m = art.read_manifest(run, RUN, "exp-0")
    assert "checkpoints/last.tmp" not in m
    assert run.read_bytes(f"runs/{RUN}/experiments/exp-0/artifacts/checkpoints/last.ckpt") == (
        b"epoch 3"
    )


def test_ship_keeps_the_stored_copy_of_a_vanished_file_and_sends_it_next_time(
    run, outputs, monkeypatch
):
    art.ship_artifacts(run, RUN, "exp-0", outputs)
    ckpt = outputs / "checkpoints" / "last.ckpt"
    before = art.read_manifest(run, RUN, "exp-0")["checkpoints/last.ckpt"]
    listing_then(monkeypatch, ckpt.unlink)  # deleted, about to be written again
    stats = art.ship_artifacts(run, RUN, "exp-0", outputs)
    assert (stats["uploaded"], stats["deleted"]) == (0, 0)
    assert art.read_manifest(run, RUN, "exp-0")["checkpoints/last.ckpt"] == before
    monkeypatch.undo()
    ckpt.write_bytes(b"epoch 4")
    assert art.ship_artifacts(run, RUN, "exp-0", outputs)["uploaded"] == 1
    assert art.read_manifest(run, RUN, "exp-0")["checkpoints/last.ckpt"]["size"] == 7


def test_restore_takes_files_newer_than_their_manifest_with_a_warning(run, outputs, tmp_path):
    art.ship_artifacts(run, RUN, "exp-0", outputs)
    prefix = f"runs/{RUN}/experiments/exp-0/artifacts"
    # a node uploaded a newer last.ckpt, then died before rewriting artifacts.json
    run.write_bytes(f"{prefix}/checkpoints/last.ckpt", b"epoch 9")
    run.delete(f"{prefix}/labels.txt")  # and a listed file is gone
    warnings = []
    node = tmp_path / "node2"
    restored = art.restore_artifacts(run, RUN, "exp-0", node, warn=warnings.append)
    assert sorted(p.relative_to(node).as_posix() for p in restored) == [
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "metrics.csv",
    ]
    assert (node / "checkpoints/last.ckpt").read_bytes() == b"epoch 9"
    assert (node / "checkpoints/best.ckpt").read_bytes() == (
        outputs / "checkpoints/best.ckpt"
    ).read_bytes()
    assert len(warnings) == 2
    assert any("last.ckpt differs from its manifest" in w and "stored copy" in w for w in warnings)
    assert any("labels.txt is listed in its manifest but missing; skipped" in w for w in warnings)
    assert not [p for p in node.rglob("*") if ".part-" in p.name]
    # a pull stays strict: it never hands a user bytes its manifest does not vouch for
    with pytest.raises(StorageError, match="(last.ckpt is corrupt|labels.txt is listed)"):
        art.pull_artifacts(run, RUN, experiment="exp-0", dest=tmp_path / "pulled")


def test_restore_warns_through_the_launcher_logger_by_default(run, outputs, tmp_path, caplog):
    art.ship_artifacts(run, RUN, "exp-0", outputs)
    run.write_bytes(f"runs/{RUN}/experiments/exp-0/artifacts/labels.txt", b"other")
    with caplog.at_level("WARNING", logger="launcher"):
        art.restore_artifacts(run, RUN, "exp-0", tmp_path / "node")
    assert "labels.txt differs from its manifest" in caplog.text
    assert (tmp_path / "node" / "labels.txt").read_bytes() == b"other"
