"""Datastores on a file:// root and (same code) on s3:// via moto."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from launcher.errors import NotFoundError, SpecError, StorageError
from launcher.storage import datastores as ds
from launcher.storage import transfer as manifest
from launcher.storage.transfer import sha256_file


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "src"
    (src / "train" / "archery").mkdir(parents=True)
    (src / "train" / "archery" / "a.mp4").write_bytes(os.urandom(3000))
    (src / "train" / "labels.csv").write_text("a.mp4,archery\n")
    (src / "empty.txt").write_bytes(b"")
    return src


def test_create_versions_and_manifest(storage, source):
    seen = []
    assert (
        ds.create_datastore(storage, "kin", source, progress=lambda d, t: seen.append((d, t))) == 1
    )
    assert ds.create_datastore(storage, "kin", source) == 2
    manifest = storage.read_json("datastores/kin/1/MANIFEST.json")
    assert (manifest["name"], manifest["version"]) == ("kin", 1)
    assert manifest["created"].endswith("Z")
    assert manifest["files"] == {
        rel: {"size": (source / rel).stat().st_size, "sha256": sha256_file(source / rel)}
        for rel in ("empty.txt", "train/archery/a.mp4", "train/labels.csv")
    }
    assert (
        storage.read_bytes("datastores/kin/1/data/train/archery/a.mp4")
        == (source / "train/archery/a.mp4").read_bytes()
    )
    assert not storage.exists("datastores/kin/1/UPLOADING.json")
    total = 3000 + len("a.mp4,archery\n")
    assert seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_single_file_source(storage, tmp_path):
    f = tmp_path / "video.mp4"
    f.write_bytes(b"x" * 10)
    ds.create_datastore(storage, "one", f)
    assert storage.read_json("datastores/one/1/MANIFEST.json")["files"]["video.mp4"]["size"] == 10


def test_list_resolve_delete(storage, source):
    ds.create_datastore(storage, "kin", source)
    ds.create_datastore(storage, "kin", source)
    ds.create_datastore(storage, "cifar", source)
    rows = ds.list_datastores(storage)
    assert [(r.name, r.version, r.complete, r.files) for r in rows] == [
        ("cifar", 1, True, 3),
        ("kin", 1, True, 3),
        ("kin", 2, True, 3),
    ]
    assert rows[0].size == 3000 + 14
    assert ds.resolve_datastore(storage, "kin") == ("kin", 2)
    assert ds.resolve_datastore(storage, "kin:1") == ("kin", 1)
    with pytest.raises(NotFoundError, match="datastore kin has no version 7; versions: 1, 2"):
        ds.resolve_datastore(storage, "kin:7")
    with pytest.raises(NotFoundError, match="'nope' not found .*datastores here: cifar, kin"):
        ds.resolve_datastore(storage, "nope")
    assert ds.delete_datastore(storage, "kin", 1) == [1]
    assert ds.resolve_datastore(storage, "kin") == ("kin", 2)
    with pytest.raises(NotFoundError, match="no version 1; versions: 2"):
        ds.delete_datastore(storage, "kin", 1)
    assert ds.delete_datastore(storage, "kin") == [2]
    assert [r.name for r in ds.list_datastores(storage)] == ["cifar"]
    with pytest.raises(NotFoundError, match="'kin' not found"):
        ds.delete_datastore(storage, "kin")
    assert ds.create_datastore(storage, "kin", source) == 1


@pytest.mark.parametrize(
    "name", ["../x", "a;b", "$(x)", "A", "", "-x", ".x", "a/b", "x" * 64, "a..b"]
)
def test_hostile_names_refused(storage, source, name):
    with pytest.raises(SpecError, match="invalid datastore name"):
        ds.create_datastore(storage, name, source)
    with pytest.raises(SpecError, match="invalid datastore name"):
        ds.resolve_datastore(storage, name)


def test_bad_sources(storage, tmp_path):
    with pytest.raises(NotFoundError, match="datastore source not found: .*missing"):
        ds.create_datastore(storage, "d", tmp_path / "missing")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(SpecError, match="has no files; nothing to upload"):
        ds.create_datastore(storage, "d", tmp_path / "empty")
    with pytest.raises(SpecError, match="version after ':' must be an integer"):
        ds.resolve_datastore(storage, "d:x")


def test_interrupted_create_resumes_and_skips_stored_files(storage, source, monkeypatch):
    # an upload that dies after the first file: the version stays incomplete
    real = manifest.upload
    calls = []

    def flaky(storage_, local, key, counter=None):
        calls.append(key)
        if len(calls) > 1:
            raise StorageError("network down")
        return real(storage_, local, key, counter)

    monkeypatch.setattr(manifest, "upload", flaky)
    monkeypatch.setattr(manifest, "workers_for", lambda s: 1)  # deterministic order
    with pytest.raises(StorageError, match="network down"):
        ds.create_datastore(storage, "kin", source)
    assert not storage.exists("datastores/kin/1/MANIFEST.json")
    assert [(r.version, r.complete) for r in ds.list_datastores(storage)] == [(1, False)]
    with pytest.raises(NotFoundError, match="no complete version yet"):
        ds.resolve_datastore(storage, "kin")
    with pytest.raises(NotFoundError, match="kin:1 is incomplete"):
        ds.resolve_datastore(storage, "kin:1")

    calls.clear()
    monkeypatch.setattr(manifest, "upload", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    assert ds.create_datastore(storage, "kin", source) == 1  # resumed, not version 2
    assert calls == [
        "datastores/kin/1/data/train/archery/a.mp4",
        "datastores/kin/1/data/train/labels.csv",
    ]
    assert len(storage.read_json("datastores/kin/1/MANIFEST.json")["files"]) == 3


def test_resume_reuploads_a_changed_file_and_drops_strays(storage, source, monkeypatch):
    monkeypatch.setattr(manifest, "workers_for", lambda s: 1)
    real = manifest.upload

    def dies_on_labels(storage_, local, key, counter=None):
        if key.endswith("labels.csv"):
            raise StorageError("killed")
        return real(storage_, local, key, counter)

    monkeypatch.setattr(manifest, "upload", dies_on_labels)
    with pytest.raises(StorageError):
        ds.create_datastore(storage, "kin", source)
    monkeypatch.setattr(manifest, "upload", real)
    (source / "empty.txt").write_text("now different")
    (source / "train" / "archery" / "a.mp4").unlink()
    ds.create_datastore(storage, "kin", source)
    files = storage.read_json("datastores/kin/1/MANIFEST.json")["files"]
    assert sorted(files) == ["empty.txt", "train/labels.csv"]
    assert storage.read_text("datastores/kin/1/data/empty.txt") == "now different"
    assert sorted(storage.walk("datastores/kin/1/data")) == ["empty.txt", "train/labels.csv"]


def test_file_root_is_read_only_and_mount_is_the_data_dir(file_storage, source, tmp_path):
    ds.create_datastore(file_storage, "kin", source)
    data = ds.mount_datastore(file_storage, "kin", None, None, default_dir=tmp_path / "unused")
    assert data == Path(file_storage.path("datastores/kin/1/data"))
    assert not (tmp_path / "unused").exists()  # nothing copied
    # a mount dir asked for (Grid's --datastore_mount_dir): a link there, still nothing copied
    mnt = tmp_path / "opt" / "datastore"
    assert ds.mount_datastore(file_storage, "kin", None, mnt) == mnt and mnt.is_symlink()
    assert (mnt / "train" / "archery" / "a.mp4").read_bytes() == (
        source / "train/archery/a.mp4"
    ).read_bytes()
    assert ds.mount_datastore(file_storage, "kin", None, mnt) == mnt  # a second agent: same link
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep")
    with pytest.raises(StorageError, match="not empty"):
        ds.mount_datastore(file_storage, "kin", None, busy)
    assert (busy / "mine.txt").read_text() == "keep"
    video = data / "train" / "archery" / "a.mp4"
    assert video.read_bytes() == (source / "train/archery/a.mp4").read_bytes()
    assert not video.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert not data.stat().st_mode & stat.S_IWUSR
    if os.geteuid() != 0:  # root ignores permissions
        with pytest.raises(PermissionError):
            video.write_bytes(b"tampered")
        with pytest.raises(PermissionError):
            (data / "new.txt").write_text("x")
    ds.delete_datastore(file_storage, "kin")
    assert not data.exists()


def test_mount_downloads_verified_and_reuses(storage, source, tmp_path):
    ds.create_datastore(storage, "kin", source)
    mount = tmp_path / "mnt"
    got = ds.mount_datastore(storage, "kin", 1, mount)
    if storage.protocol == "file":  # a link to the data dir, nothing copied (more above)
        assert got == mount and mount.resolve() == Path(storage.path("datastores/kin/1/data"))
        return
    assert got == mount
    assert (mount / "train/archery/a.mp4").read_bytes() == (
        source / "train/archery/a.mp4"
    ).read_bytes()
    assert (mount / "empty.txt").read_bytes() == b""
    before = (mount / "train/labels.csv").stat().st_mtime_ns
    ds.mount_datastore(storage, "kin", 1, mount)  # second mount: present files are kept
    assert (mount / "train/labels.csv").stat().st_mtime_ns == before
    # a corrupt stored object is caught, and no half file is left behind
    storage.write_bytes("datastores/kin/1/data/train/labels.csv", b"evil")
    (mount / "train/labels.csv").unlink()
    with pytest.raises(StorageError, match="is corrupt"):
        ds.mount_datastore(storage, "kin", 1, mount)
    assert sorted(p.name for p in (mount / "train").iterdir()) == ["archery"]


def test_two_creates_at_once_get_distinct_versions(storage, source, monkeypatch):
    # the second create starts while the first is mid-upload and both then upload at once:
    # it must not resume the first's unfinished version
    barrier = threading.Barrier(2, timeout=30)
    first_uploading = threading.Event()
    real = manifest.upload
    waited = threading.local()

    def meet(storage_, local, key, counter=None):
        if not getattr(waited, "done", False):
            waited.done = True
            first_uploading.set()
            barrier.wait()
        return real(storage_, local, key, counter)

    monkeypatch.setattr(manifest, "upload", meet)
    monkeypatch.setattr(manifest, "workers_for", lambda s: 1)  # each create uploads in one thread
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(ds.create_datastore, storage, "kin", source)
        assert first_uploading.wait(30)
        second = pool.submit(ds.create_datastore, storage, "kin", source)
        got = sorted([first.result(), second.result()])
    assert got == [1, 2]
    rows = ds.list_datastores(storage, "kin")
    assert [(r.version, r.complete, r.files) for r in rows] == [(1, True, 3), (2, True, 3)]
    for v in (1, 2):
        assert storage.list(f"datastores/kin/{v}") == ["MANIFEST.json", "data"]


def test_interrupted_create_is_resumed_only_from_the_same_source(
    storage, source, tmp_path, monkeypatch
):
    real = manifest.upload

    def dies(*a, **k):
        raise StorageError("killed")

    monkeypatch.setattr(manifest, "upload", dies)
    with pytest.raises(StorageError):
        ds.create_datastore(storage, "kin", source)
    monkeypatch.setattr(manifest, "upload", real)
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_text("x")
    assert ds.create_datastore(storage, "kin", other) == 2  # not someone else's version 1
    assert [(r.version, r.complete) for r in ds.list_datastores(storage, "kin")] == [
        (1, False),
        (2, True),
    ]
    assert ds.create_datastore(storage, "kin", source) == 1  # the rerun resumes version 1
    assert ds.list_datastores(storage, "kin")[0].files == 3


def test_live_creator_in_another_process_is_not_resumed(storage, source):
    # a reservation by a running process (ours' parent stands in for another live create)
    from launcher.processes import process_start

    parent = os.getppid()
    holder = {**ds._creator(source), "pid": parent, "pid_start": process_start(parent)}
    assert storage.create_exclusive("datastores/kin/1/RESERVED/1", json.dumps(holder).encode())
    assert ds.create_datastore(storage, "kin", source) == 2
    # once that process is gone, the same user's rerun takes version 1 over
    holder["pid"] = _exited_pid()
    storage.write_json("datastores/kin/1/RESERVED/1", holder)
    assert ds.create_datastore(storage, "kin", source) == 1
    assert [r.complete for r in ds.list_datastores(storage, "kin")] == [True, True]


def _exited_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# -- issue 8, point 12: links and unreadable folders are never skipped quietly -------------------
def test_links_inside_the_source_are_followed(file_storage, source):
    (source / "val").symlink_to(source / "train", target_is_directory=True)  # `val -> train`
    (source / "latest.csv").symlink_to("train/labels.csv")
    ds.create_datastore(file_storage, "kin", source)
    files = ds._manifest(file_storage, "kin", 1)["files"]
    assert set(files) == {
        "empty.txt", "latest.csv", "train/archery/a.mp4", "train/labels.csv",
        "val/archery/a.mp4", "val/labels.csv",
    }  # fmt: skip


def test_links_out_of_the_source_are_refused_naming_each(file_storage, source, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "clips").mkdir(parents=True)
    for i in range(3):
        (elsewhere / "clips" / f"{i}.mp4").write_bytes(b"x")
    (source / "more").symlink_to(elsewhere / "clips", target_is_directory=True)
    (source / "notes.txt").symlink_to(elsewhere / "clips" / "0.mp4")
    (source / "gone.txt").symlink_to(tmp_path / "nothing-here")
    (source / "loop").symlink_to(source, target_is_directory=True)
    with pytest.raises(SpecError) as e:
        ds.create_datastore(file_storage, "kin", source)
    msg = str(e.value)
    assert "\n" not in msg and "4 path(s)" in msg, msg
    for what in ("more (a link to", "notes.txt (a link to", "gone.txt (a broken link)",
                 "loop (a link back"):  # fmt: skip
        assert what in msg, msg
    assert file_storage.list("datastores") == []  # nothing reserved, nothing uploaded


def test_an_unreadable_folder_is_refused(file_storage, source, monkeypatch):
    real_scandir = os.scandir

    def scandir(path):  # as for a folder of mode 000 (the tests may run as root)
        if Path(path).name == "archery":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(ds.os, "scandir", scandir)
    with pytest.raises(SpecError, match=r"train/archery/ \(folder cannot be read: Permission"):
        ds.create_datastore(file_storage, "kin", source)
    assert file_storage.list("datastores") == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files of mode 000")
def test_an_unreadable_file_is_refused(file_storage, source):
    secret = source / "train" / "labels.csv"
    secret.chmod(0)
    try:
        with pytest.raises(SpecError, match=r"train/labels\.csv \(cannot be read"):
            ds.create_datastore(file_storage, "kin", source)
    finally:
        secret.chmod(0o644)
