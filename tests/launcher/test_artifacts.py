"""Artifacts: incremental ship, restore, list and a safe, verified pull (file and s3)."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time

import pytest

from launcher.errors import NotFoundError, SpecError, StorageError
from launcher.storage import artifacts as art
from launcher.storage import transfer as manifest
from launcher.storage.transfer import sha256_file
from tests.launcher.waiting import wait_for

RUN = "run-1"
TOTAL = 5000 + 4000 + 29 + 18  # bytes of the files `outputs` makes


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


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
        manifest,
        "upload",
        lambda s, local, key, *a, **kw: calls.append(key) or real(s, local, key, *a, **kw),
    )
    return calls


def test_ship_is_incremental_and_mirrors(run, outputs, monkeypatch):
    calls = uploads(monkeypatch)
    stats = art.ship_artifacts(run, RUN, "exp-0", outputs)
    assert stats == art.ShipReport(uploaded=4, unchanged=0, deleted=0, bytes=TOTAL)
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
    assert art.ship_artifacts(run, RUN, "exp-0", outputs).uploaded == 0
    assert calls == []

    with open(outputs / "metrics.csv", "a") as f:
        f.write("1,20,0.7\n")
    (outputs / "checkpoints" / "best.ckpt").unlink()
    stats = art.ship_artifacts(run, RUN, "exp-0", outputs)
    assert (stats.uploaded, stats.unchanged, stats.deleted) == (1, 2, 1)
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
    assert art.ship_artifacts(run, RUN, "exp-0", outputs).uploaded == 0
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
    assert art.ship_artifacts(run, RUN, "exp-1", fresh).uploaded == 0
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
        {bad: {"size": 1, "sha256": "0" * 64}, "ok.txt": {"size": 2, "sha256": sha("ok")}},
    )
    run.write_bytes(f"runs/{RUN}/experiments/exp-0/artifacts/ok.txt", b"ok")
    warnings = []
    pulled = art.pull_artifacts(run, RUN, dest=tmp_path / "out", warn=warnings.append)
    assert pulled == [tmp_path / "out" / RUN / "exp-0" / "ok.txt"]  # the rest still comes
    assert len(warnings) == 1 and f"ignoring the entry {bad!r}" in warnings[0]
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "x").exists()


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

    def mid_write(storage, local, key, *a, **kw):
        if key.endswith("last.ckpt"):
            raise manifest.FileChanged(f"{local} changed while it was uploaded")
        return real(storage, local, key, *a, **kw)

    monkeypatch.setattr(manifest, "upload", mid_write)
    (outputs / "new.txt").write_text("x")
    stats = art.ship_artifacts(run, RUN, "exp-0", outputs)
    assert (stats.uploaded, stats.deleted) == (1, 0)
    after = run.read_json(f"runs/{RUN}/experiments/exp-0/artifacts.json")
    assert after["checkpoints/last.ckpt"] == before["checkpoints/last.ckpt"]  # old copy kept
    assert "new.txt" in after
    monkeypatch.setattr(manifest, "upload", real)
    assert art.ship_artifacts(run, RUN, "exp-0", outputs).uploaded == 1  # sent next time
    assert run.read_bytes(f"runs/{RUN}/experiments/exp-0/artifacts/checkpoints/last.ckpt") == (
        b"epoch 2, half written"
    )


def listing_then(monkeypatch, change):
    """Make ``change()`` happen right after ship lists the folder, before it hashes anything."""
    real = manifest.scan_files

    def listed_then_changed(root):
        found = real(root)
        change()
        return found

    monkeypatch.setattr(manifest, "scan_files", listed_then_changed)


def test_ship_skips_a_file_renamed_away_after_listing(run, outputs, monkeypatch):
    art.ship_artifacts(run, RUN, "exp-0", outputs)
    ckpt = outputs / "checkpoints" / "last.ckpt"
    tmp = outputs / "checkpoints" / "last.tmp"
    tmp.write_bytes(b"epoch 3")
    # the trainer saves to last.tmp and renames it over last.ckpt while ship runs
    listing_then(monkeypatch, lambda: os.replace(tmp, ckpt))
    stats = art.ship_artifacts(run, RUN, "exp-0", outputs)
    assert stats.uploaded == 1  # last.ckpt's new bytes; last.tmp is gone, not an error
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
    assert (stats.uploaded, stats.deleted) == (0, 0)
    assert art.read_manifest(run, RUN, "exp-0")["checkpoints/last.ckpt"] == before
    monkeypatch.undo()
    ckpt.write_bytes(b"epoch 4")
    assert art.ship_artifacts(run, RUN, "exp-0", outputs).uploaded == 1
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


# -- files that cannot be shipped never cost the others (issue 8, point 1) ---------------------
LONG = "x" * 236 + ".bin"  # 240 characters: with a ".part-PID-TID" suffix it passed 255 bytes


def hostile(d):
    """Odd names beside ordinary outputs: what a script may leave in LAUNCH_ARTIFACTS_DIR."""
    (d / "a\\b.txt").write_text("backslash")
    (d / "t:0.log").write_text("colon")
    (d / "checkpoints" / LONG).write_bytes(b"long name")
    os.mkfifo(d / "pipe")
    os.close(os.open(os.path.join(os.fsencode(d), b"bad-\xff.txt"), os.O_CREAT | os.O_WRONLY))
    (d / "io-error.bin").symlink_to("/proc/self/mem")  # a regular file whose reads fail (EIO)


def test_ship_skips_what_cannot_be_shipped_and_ships_the_rest(run, outputs, tmp_path):
    hostile(outputs)
    report = art.ship_artifacts(run, RUN, "exp-0", outputs)
    skipped = dict(report.skipped)
    assert sorted(skipped) == ["a\\b.txt", "bad-\udcff.txt", "io-error.bin", "pipe"]
    assert "backslash" in skipped["a\\b.txt"] and "UTF-8" in skipped["bad-\udcff.txt"]
    assert "not a regular file (a FIFO)" in skipped["pipe"]
    assert "cannot be read: Input/output error" in skipped["io-error.bin"]
    shipped = {a.path for a in art.list_artifacts(run, RUN, "exp-0")}
    assert shipped == {"checkpoints/best.ckpt", "checkpoints/last.ckpt", "labels.txt",
                       "metrics.csv", "t:0.log", f"checkpoints/{LONG}"}  # fmt: skip
    # nothing is poisoned: the next ship, a pull and a restore all work, and see the same files
    again = art.ship_artifacts(run, RUN, "exp-0", outputs)
    assert (again.uploaded, len(again.skipped)) == (0, 4)
    pulled = art.pull_artifacts(run, RUN, experiment="exp-0", dest=tmp_path / "pulled")
    assert {p.relative_to(tmp_path / "pulled" / RUN / "exp-0").as_posix() for p in pulled} == (
        shipped
    )
    assert (tmp_path / "pulled" / RUN / "exp-0" / "t:0.log").read_text() == "colon"
    restored = art.restore_artifacts(run, RUN, "exp-0", tmp_path / "node2")
    assert len(restored) == len(shipped)
    assert (tmp_path / "node2" / "checkpoints" / LONG).read_bytes() == b"long name"


@pytest.mark.skipif(not shutil.which("capsh") and os.geteuid() == 0, reason="needs capsh as root")
def test_an_unreadable_file_is_skipped_and_the_rest_ships(file_run, outputs, tmp_path):
    """Mode 000 stops anyone but root; root is made ordinary by dropping its capability to
    override file permissions (capsh), so the ship runs in a subprocess."""
    secret = outputs / "secret.bin"
    secret.write_bytes(b"no")
    secret.chmod(0)
    code = (
        "import json, sys; from launcher.storage.root import Storage;"
        "from launcher.storage.artifacts import ship_artifacts;"
        f"r = ship_artifacts(Storage({file_run.root_url!r}), {RUN!r}, 'exp-0', {str(outputs)!r});"
        "print(json.dumps(r.skipped))"
    )
    argv = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        argv = ["capsh", "--drop=cap_dac_override,cap_dac_read_search", "--", "-c",
                " ".join(shlex.quote(a) for a in argv)]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=os.getcwd())
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == [
        ["secret.bin", "cannot be read: Permission denied"]
    ]
    assert "checkpoints/best.ckpt" in art.read_manifest(file_run, RUN, "exp-0")
    # a folder that cannot be listed any more keeps its stored files (not mirrored as deleted)
    secret.chmod(0o644)
    art.ship_artifacts(file_run, RUN, "exp-0", outputs)
    (outputs / "checkpoints").chmod(0)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=os.getcwd())
    (outputs / "checkpoints").chmod(0o755)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == [
        ["checkpoints", "cannot list this folder: Permission denied"]
    ]
    assert {"checkpoints/best.ckpt", "checkpoints/last.ckpt", "secret.bin"} <= set(
        art.read_manifest(file_run, RUN, "exp-0")
    )


def test_one_rule_for_writing_and_reading_a_manifest(run, outputs, tmp_path):
    """Whatever a ship writes, every reader accepts; an entry the rule refuses (written by an
    older version) is ignored with a warning, and dropped by the next ship, never fatal."""
    from launcher.storage import manifest as rules

    names = ["t:0.log", "C:x", "é.txt", "a b", "n\nl", "x" * 255, "\\", "a\\b", "..", "/abs"]
    for name in names:
        problem = rules.path_problem(name)
        assert (problem is None) == (rules.split_manifest({name: {"size": 0, "sha256": ""}}, "m")[1]
                                     == [])  # fmt: skip
    art.ship_artifacts(run, RUN, "exp-0", outputs)
    key = f"runs/{RUN}/experiments/exp-0/artifacts.json"
    poisoned = dict(run.read_json(key), **{"a/../../x": {"size": 1, "sha256": "0" * 64}})
    run.write_json(key, poisoned)
    warnings = []
    assert len(art.read_manifest(run, RUN, "exp-0", warn=warnings.append)) == 4
    assert "ignoring the entry 'a/../../x'" in warnings[0]
    assert len(art.list_artifacts(run, RUN, "exp-0")) == 4
    assert len(art.restore_artifacts(run, RUN, "exp-0", tmp_path / "n", warn=warnings.append)) == 4
    art.ship_artifacts(run, RUN, "exp-0", outputs)
    assert "a/../../x" not in run.read_json(key)  # healed


def test_temporary_names_stay_within_the_name_limit(file_storage, tmp_path):
    from launcher.storage.manifest import MAX_NAME_BYTES, is_part, part_name

    for name in ("a", "x" * 200, "é" * 127, LONG, "y" * 255):
        tmp = part_name(name)
        assert len(tmp.encode()) <= MAX_NAME_BYTES and is_part(tmp)
    longest = tmp_path / ("z" * 255)
    longest.write_bytes(b"255 bytes of name")
    entry = manifest.upload(file_storage, longest, f"k/{longest.name}")
    back = tmp_path / "back" / longest.name
    manifest.download(file_storage, f"k/{longest.name}", back, entry)
    assert back.read_bytes() == b"255 bytes of name"


# -- half-written checkpoints are never listed (point 2) ---------------------------------------
def write_in_place_with_pauses(path, pieces=4, pause=0.3):
    """A 1 MiB checkpoint written in place, a quarter at a time, pausing between quarters."""
    data = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(pieces):
            f.write(data[i * len(data) // pieces : (i + 1) * len(data) // pieces])
            f.flush()
            if i < pieces - 1:
                time.sleep(pause)
    return data


def test_periodic_ships_never_list_a_checkpoint_written_in_place_with_pauses(run, outputs):
    ckpt = outputs / "checkpoints" / "last.ckpt"
    art.ship_artifacts(run, RUN, "exp-0", outputs)
    old = art.read_manifest(run, RUN, "exp-0")["checkpoints/last.ckpt"]
    done = {}
    writer = threading.Thread(target=lambda: done.update(data=write_in_place_with_pauses(ckpt)))
    writer.start()
    seen = []
    while writer.is_alive():  # the agent's periodic ships, faster than the writer's pauses
        report = art.ship_artifacts(run, RUN, "exp-0", outputs, settle_s=1.0)
        seen.append(art.read_manifest(run, RUN, "exp-0")["checkpoints/last.ckpt"])
        assert report.skipped == []
        time.sleep(0.05)
    writer.join()
    assert len(seen) >= 3 and all(e == old for e in seen)  # the old, whole copy all along
    whole = {"size": 1 << 20, "sha256": hashlib.sha256(done["data"]).hexdigest()}
    # settled: a periodic ship takes it; the final ship (settle 0) would have taken it at once
    wait_for(lambda: art.ship_artifacts(run, RUN, "exp-0", outputs, settle_s=1.0).uploaded,
             timeout=10, interval=0.1, what="the settled checkpoint shipped")  # fmt: skip
    assert art.read_manifest(run, RUN, "exp-0")["checkpoints/last.ckpt"] == whole
    ckpt.write_bytes(b"rewritten")
    assert art.ship_artifacts(run, RUN, "exp-0", outputs).uploaded == 1  # final: no settling


def test_a_new_file_half_written_is_not_listed_until_it_settles(run, outputs, tmp_path):
    art.ship_artifacts(run, RUN, "exp-0", outputs)
    epoch = outputs / "checkpoints" / "epoch=1.ckpt"
    epoch.write_bytes(b"first quarter")
    report = art.ship_artifacts(run, RUN, "exp-0", outputs, settle_s=60)
    assert report.deferred == ["checkpoints/epoch=1.ckpt"] and report.uploaded == 0
    assert "checkpoints/epoch=1.ckpt" not in art.read_manifest(run, RUN, "exp-0")
    # so a retry's restore never hands the script half a checkpoint
    art.restore_artifacts(run, RUN, "exp-0", tmp_path / "retry")
    assert not (tmp_path / "retry" / "checkpoints" / "epoch=1.ckpt").exists()


def test_a_checkpoint_renamed_into_place_ships_without_waiting(run, outputs):
    ckpt = outputs / "checkpoints" / "last.ckpt"
    art.ship_artifacts(run, RUN, "exp-0", outputs)  # the first listing, whole
    tmp = ckpt.with_suffix(".tmp")
    tmp.write_bytes(b"epoch 2, whole")
    os.replace(tmp, ckpt)  # a new inode under the name: the writer is done with it
    report = art.ship_artifacts(run, RUN, "exp-0", outputs, settle_s=60)
    assert report.uploaded == 1 and "checkpoints/last.ckpt" not in report.deferred
    assert art.read_manifest(run, RUN, "exp-0")["checkpoints/last.ckpt"]["size"] == 14
    with open(ckpt, "r+b") as f:  # the same inode rewritten in place: it must settle first
        f.write(b"EPOCH")
    report = art.ship_artifacts(run, RUN, "exp-0", outputs, settle_s=60)
    assert report.deferred == ["checkpoints/last.ckpt"]
    assert art.read_manifest(run, RUN, "exp-0")["checkpoints/last.ckpt"]["size"] == 14
    ckpt.unlink()  # gone at one ship, written anew (in place, half) by the next
    assert art.ship_artifacts(run, RUN, "exp-0", outputs, settle_s=60).deleted == 1
    ckpt.write_bytes(b"half")
    assert art.ship_artifacts(run, RUN, "exp-0", outputs, settle_s=60).deferred == [
        "checkpoints/last.ckpt"
    ]


def test_a_periodic_ship_sends_only_the_bytes_it_judged_stable(run, outputs, monkeypatch):
    """Judged by its stat when listed (settled long ago), rewritten in place right after: the
    upload must not send the rewrite, which may be half written."""
    art.ship_artifacts(run, RUN, "exp-0", outputs)
    before = art.read_manifest(run, RUN, "exp-0")["checkpoints/last.ckpt"]
    ckpt = outputs / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(b"epoch 2, whole")
    time.sleep(0.4)  # and it has sat still longer than the settle interval

    def rewrite_in_place():
        with open(ckpt, "r+b") as f:
            f.write(b"EPOCH 3")  # a writer starting over, paused after its first bytes

    listing_then(monkeypatch, rewrite_in_place)
    report = art.ship_artifacts(run, RUN, "exp-0", outputs, settle_s=0.3)
    assert report.deferred == ["checkpoints/last.ckpt"]
    assert art.read_manifest(run, RUN, "exp-0")["checkpoints/last.ckpt"] == before


def test_a_truncated_manifest_is_rewritten_by_the_next_ship(run, outputs, tmp_path):
    art.ship_artifacts(run, RUN, "exp-0", outputs)
    key = f"runs/{RUN}/experiments/exp-0/artifacts.json"
    run.write_bytes(key, run.read_bytes(key)[:7])
    with pytest.raises(StorageError, match="artifacts.json is not valid JSON"):
        art.list_artifacts(run, RUN)  # one line naming the file
    warnings = []
    assert art.restore_artifacts(run, RUN, "exp-0", tmp_path / "n", warn=warnings.append) == []
    assert "not valid JSON" in warnings[0] and "nothing restored" in warnings[0]
    report = art.ship_artifacts(run, RUN, "exp-0", outputs)
    assert report.uploaded == 4
    assert len(art.list_artifacts(run, RUN, "exp-0")) == 4


# -- pull: replaced files, deletions, leftovers (point 3) --------------------------------------
def test_pull_retries_a_file_the_run_replaces_mid_pull(run, outputs, tmp_path, monkeypatch):
    art.ship_artifacts(run, RUN, "exp-0", outputs)
    real = manifest.download
    replaced = []

    def ship_meanwhile(storage, key, target, entry, *a, **kw):
        if key.endswith("last.ckpt") and not replaced:  # the agent ships epoch 2 right now
            (outputs / "checkpoints" / "last.ckpt").write_bytes(b"epoch 2")
            replaced.append(art.ship_artifacts(run, RUN, "exp-0", outputs))
        return real(storage, key, target, entry, *a, **kw)

    monkeypatch.setattr(manifest, "download", ship_meanwhile)
    seen = []
    paths = art.pull_artifacts(run, RUN, experiment="exp-0", dest=tmp_path / "out",
                               progress=lambda d, t: seen.append((d, t)))  # fmt: skip
    assert len(paths) == 4 and replaced[0].uploaded == 1
    assert (tmp_path / "out" / RUN / "exp-0" / "checkpoints" / "last.ckpt").read_bytes() == (
        b"epoch 2"
    )
    assert max(d for d, _ in seen) <= seen[-1][1] + 5000  # a failed try's bytes are taken back


def test_pull_retries_a_file_replaced_while_it_is_read(run, outputs, tmp_path, monkeypatch):
    """On S3 the read itself fails (the ETag changed under it); on a file root the open file
    still reads the old, whole version. Either way: no error, and a whole file."""
    art.ship_artifacts(run, RUN, "exp-0", outputs)
    old = (outputs / "checkpoints" / "last.ckpt").read_bytes()
    real = manifest._copy
    replaced = []

    def replace_then_read(src, out, h, counter, **kw):
        if not replaced and kw.get("reading") is None and len(old) == getattr(src, "size", 0):
            (outputs / "checkpoints" / "last.ckpt").write_bytes(b"epoch 5")
            replaced.append(art.ship_artifacts(run, RUN, "exp-0", outputs))
        return real(src, out, h, counter, **kw)

    monkeypatch.setattr(manifest, "_copy", replace_then_read)
    art.pull_artifacts(run, RUN, experiment="exp-0", dest=tmp_path / "out")
    got = (tmp_path / "out" / RUN / "exp-0" / "checkpoints" / "last.ckpt").read_bytes()
    assert replaced and got == (b"epoch 5" if run.protocol == "s3" else old)


def test_pull_waits_for_a_manifest_catching_up_with_a_new_upload(run, outputs, tmp_path):
    art.ship_artifacts(run, RUN, "exp-0", outputs)
    ckpt = outputs / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(b"epoch 3")
    prefix = f"runs/{RUN}/experiments/exp-0"
    manifest.upload(run, ckpt, f"{prefix}/artifacts/checkpoints/last.ckpt")  # uploaded, and the
    later = threading.Timer(0.4, art.ship_artifacts, (run, RUN, "exp-0", outputs))  # manifest
    later.start()  # follows a moment later, as a ship writes it after its files
    try:
        art.pull_artifacts(run, RUN, dest=tmp_path / "out", experiment="exp-0")
    finally:
        later.join()
    assert (tmp_path / "out" / RUN / "exp-0" / "checkpoints" / "last.ckpt").read_bytes() == (
        b"epoch 3"
    )


def test_pull_mirrors_what_the_run_deleted_only_inside_dest_run_exp(run, outputs, tmp_path):
    dest = tmp_path / "out"
    art.ship_artifacts(run, RUN, "exp-0", outputs)
    art.ship_artifacts(run, RUN, "exp-1", outputs)
    art.pull_artifacts(run, RUN, dest=dest)
    exp0 = dest / RUN / "exp-0"
    (outputs / "checkpoints" / "best.ckpt").unlink()  # the run drops an old checkpoint
    art.ship_artifacts(run, RUN, "exp-0", outputs)
    (exp0 / "old" / "deep").mkdir(parents=True)
    (exp0 / "old" / "deep" / "epoch=0.ckpt").write_text("an earlier pull's")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "keep.txt").write_text("mine")
    (exp0 / "link").symlink_to(tmp_path / "elsewhere")
    (dest / RUN / "notes.txt").write_text("beside the experiments")
    (dest / "other.txt").write_text("not this run's")

    kept = art.pull_artifacts(run, RUN, dest=dest, experiment="exp-0", keep_extra=True)
    assert (exp0 / "checkpoints" / "best.ckpt").exists() and len(kept) == 3
    removed = []
    pulled = art.pull_artifacts(run, RUN, dest=dest, experiment="exp-0", removed=removed.append)
    left = sorted(p.relative_to(exp0).as_posix() for p in exp0.rglob("*") if not p.is_dir())
    assert left == ["checkpoints/last.ckpt", "labels.txt", "metrics.csv"]
    assert sorted(pulled) == sorted(exp0 / rel for rel in left)
    assert sorted(p.name for p in removed) == ["best.ckpt", "epoch=0.ckpt", "link"]
    assert not (exp0 / "old").exists()
    assert (tmp_path / "elsewhere" / "keep.txt").read_text() == "mine"  # a link, not followed
    assert (dest / RUN / "notes.txt").exists() and (dest / "other.txt").exists()
    assert (dest / RUN / "exp-1" / "checkpoints" / "best.ckpt").exists()  # not pulled: untouched


def test_pull_does_not_remove_through_a_linked_run_folder(run, outputs, tmp_path):
    art.ship_artifacts(run, RUN, "exp-0", outputs)
    real = tmp_path / "real-run"
    (real / "exp-0").mkdir(parents=True)
    (real / "exp-0" / "precious.txt").write_text("outside --dest")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / RUN).symlink_to(real)
    warnings = []
    art.pull_artifacts(run, RUN, dest=tmp_path / "out", experiment="exp-0", warn=warnings.append)
    assert (real / "exp-0" / "precious.txt").exists()
    assert any("leads outside" in w for w in warnings)


def test_pull_removes_temporary_files_of_killed_pulls_only(run, outputs, tmp_path):
    art.ship_artifacts(run, RUN, "exp-0", outputs)
    exp0 = tmp_path / "out" / RUN / "exp-0"
    (exp0 / "checkpoints").mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = exp0 / "checkpoints" / f".last.ckpt.part-{int(dead.stdout)}-140000"
    stale.write_bytes(b"x" * 1000)
    live = exp0 / ".labels.txt.part-1-1"  # pid 1 runs: another pull, still at work
    live.write_bytes(b"y")
    art.pull_artifacts(run, RUN, dest=tmp_path / "out", keep_extra=True)
    assert not stale.exists() and live.exists()
    art.pull_artifacts(run, RUN, dest=tmp_path / "out")
    assert live.exists()  # mirroring never removes a running transfer's file either
    node = tmp_path / "node"  # a restore into a folder a killed restore used: not shipped later
    (node / "checkpoints").mkdir(parents=True)
    (node / "checkpoints" / stale.name).write_bytes(b"x" * 1000)
    art.restore_artifacts(run, RUN, "exp-0", node)
    assert [p for p in node.rglob("*") if ".part-" in p.name] == []
