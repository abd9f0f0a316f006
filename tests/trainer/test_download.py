"""ensure_data: fetch via fsspec (http, file), extract atomically once, refuse unsafe archives."""

from __future__ import annotations

import functools
import http.server
import io
import tarfile
import threading
import zipfile

import pytest

from trainer.download import MARKER, DownloadError, ensure_data


def _make_tree(root):
    (root / "data" / "train" / "left").mkdir(parents=True)
    (root / "data" / "train" / "left" / "0.mp4").write_bytes(b"video bytes")
    (root / "data" / "val").mkdir()
    (root / "data" / "val" / "labels.csv").write_text("path,label\n")


@pytest.fixture
def tar_archive(tmp_path):
    src = tmp_path / "src"
    _make_tree(src)
    path = tmp_path / "data.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        tf.add(src / "data", arcname="data")
    return path


@pytest.fixture
def http_root(tmp_path):
    """Serves tmp_path over http on 127.0.0.1 from a thread."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_tar_is_extracted_unwrapped_and_only_once(tar_archive, http_root, tmp_path):
    dest = tmp_path / "out" / "dataset"
    assert ensure_data(f"{http_root}/data.tar.gz", dest) == dest
    assert (dest / "train" / "left" / "0.mp4").read_bytes() == b"video bytes"
    assert (dest / MARKER).exists()
    # A rerun does nothing, even with the archive gone.
    tar_archive.unlink()
    assert ensure_data(f"{http_root}/data.tar.gz", dest) == dest
    assert sorted(p.name for p in dest.iterdir()) == [MARKER, "train", "val"]
    # Nothing left behind next to dest.
    assert [p.name for p in dest.parent.iterdir()] == ["dataset"]


def test_file_url_zip(tmp_path):
    src = tmp_path / "src"
    _make_tree(src)
    path = tmp_path / "data.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for f in (src / "data").rglob("*"):
            zf.write(f, f.relative_to(src / "data"))  # no top-level folder this time
    dest = ensure_data(path.as_uri(), tmp_path / "dest")
    assert (dest / "val" / "labels.csv").read_text() == "path,label\n"


def test_existing_data_is_left_alone(tmp_path):
    dest = tmp_path / "mounted"
    dest.mkdir()
    (dest / "x").write_text("already here")
    assert ensure_data("http://127.0.0.1:9/never-fetched.zip", dest) == dest


def _tar_with(tmp_path, name, **member):
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo(name)
        for k, v in member.items():
            setattr(info, k, v)
        data = b"" if member else b"pwned"
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(
    "name, member, match",
    [
        ("../escape.txt", {}, "outside the destination"),
        ("/etc/evil.txt", {}, "outside the destination"),
        ("link", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}, "link"),
    ],
)
def test_malicious_tar_is_refused_and_nothing_is_written(tmp_path, name, member, match):
    archive = _tar_with(tmp_path, name, **member)
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match=match):
        ensure_data(archive.as_uri(), dest)
    assert not dest.exists()
    assert not (tmp_path / "escape.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tar"]


def test_malicious_zip_is_refused(tmp_path):
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ok.txt", "fine")
        zf.writestr("../../escape.txt", "pwned")
    with pytest.raises(DownloadError, match="outside the destination"):
        ensure_data(str(path), tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_not_an_archive_and_missing_url(tmp_path, http_root):
    (tmp_path / "plain.txt").write_text("hello")
    with pytest.raises(DownloadError, match="not a zip or tar"):
        ensure_data(f"{http_root}/plain.txt", tmp_path / "d1")
    with pytest.raises(DownloadError, match="cannot download"):
        ensure_data(f"{http_root}/missing.zip", tmp_path / "d2")
    with pytest.raises(DownloadError, match="no such file"):
        ensure_data(str(tmp_path / "nope.zip"), tmp_path / "d3")
    assert issubclass(DownloadError, ValueError)


@pytest.mark.aws
def test_s3_url_through_a_local_moto_server(tar_archive, tmp_path, monkeypatch):
    boto3 = pytest.importorskip("boto3")
    s3fs = pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
        s3fs.S3FileSystem.clear_instance_cache()
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="datasets")
        s3.upload_file(str(tar_archive), "datasets", "motion/data.tar.gz")
        dest = ensure_data("s3://datasets/motion/data.tar.gz", tmp_path / "from_s3")
        assert (dest / "train" / "left" / "0.mp4").read_bytes() == b"video bytes"
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()


def test_concurrent_downloads_of_the_same_data_both_succeed(tar_archive, tmp_path):
    # DDP ranks on one node may all call ensure_data: one wins, the others accept its result.
    dest = tmp_path / "shared"
    results, errors = [], []

    def fetch():
        try:
            results.append(ensure_data(tar_archive.as_uri(), dest))
        except Exception as e:  # collected and asserted on below
            errors.append(e)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and results == [dest] * 4
    assert (dest / "train" / "left" / "0.mp4").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.tar.gz", "shared", "src"]
