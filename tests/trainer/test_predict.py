"""Prediction from a checkpoint alone: load_model, VideoClassifier.predict, the CLI, and the
one-line errors for files that are not our checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer.data import VideoDataModule
from trainer.model import VideoClassifier
from trainer.predict import CheckpointError, check_checkpoint, load_model, main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def checkpoint(_motion_master, tiny_input, tmp_path_factory, quiet_trainer) -> Path:
    """A demo_cnn checkpoint after a few steps on the tiny motion videos."""
    dm = VideoDataModule.from_folders(
        train_folder=_motion_master / "train", video_input=tiny_input, batch_size=3, hflip=False
    )
    model = VideoClassifier(
        "demo_cnn", labels=dm.labels, video_input=tiny_input.to_dict(), clips_per_video=2
    )
    out = tmp_path_factory.mktemp("ckpt")
    trainer = quiet_trainer(default_root_dir=out, max_steps=2)
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(out / "best.ckpt")
    return out / "best.ckpt"


def _videos(root: Path) -> list[Path]:
    return sorted((root / "val").glob("*/*.mp4"))


def test_predict_labels_and_top_k(checkpoint, _motion_master):
    model = load_model(checkpoint)
    videos = _videos(_motion_master)
    labels = model.predict(videos)
    assert len(labels) == len(videos) and set(labels) <= set(model.labels)
    top = model.predict([str(v) for v in videos], top_k=2)
    for pairs, label in zip(top, labels, strict=True):
        assert len(pairs) == 2 and pairs[0][0] == label
        assert 1 >= pairs[0][1] >= pairs[1][1] >= 0
    # A folder gives the videos found in it, sorted, keyed by path.
    folder = _motion_master / "val" / "left"
    assert model.predict(folder) == dict(zip(map(str, videos[:3]), labels[:3], strict=True))


def test_predict_agrees_with_trainer_predict(checkpoint, _motion_master, lightning_predict):
    model = VideoClassifier.load_from_checkpoint(checkpoint)
    probs = lightning_predict(model, _motion_master / "val")
    assert probs.shape == (len(_videos(_motion_master)), len(model.labels))
    predicted = list(model.predict(_motion_master / "val").values())
    assert [model.labels[i] for i in probs.argmax(1)] == predicted


def test_skipped_file_is_reported(checkpoint, _motion_master, corrupt_video, monkeypatch):
    model = load_model(checkpoint)
    videos = [_videos(_motion_master)[0], corrupt_video]
    with pytest.warns(UserWarning, match=r"skipped 1 video\(s\): .*corrupt\.mp4"):
        result = model.predict(videos)
    assert result[0] in model.labels and result[1] is None
    # One path gives one result, like a list of one: None (and the warning) if unusable.
    with pytest.warns(UserWarning, match=r"corrupt\.mp4"):
        assert model.predict(corrupt_video) == [None]
    assert model.predict(str(videos[0])) == result[:1]
    # A path spelt another way (relative, with ./) still gets its own result.
    monkeypatch.chdir(videos[0].parent)
    with pytest.warns(UserWarning, match=r"corrupt\.mp4"):
        assert model.predict([f"./{videos[0].name}", corrupt_video]) == result


def test_decode_failure_after_the_scan_is_reported(checkpoint, _motion_master, tmp_path, capsys):
    """A file whose metadata scan passed (here: cached, the file then rewritten in place with
    its size and mtime kept) but which fails to decode gives None, a warning naming it and
    why, and a `skipped` entry, like a file the scan rejected."""
    model = load_model(checkpoint)
    good, broken = tmp_path / "good.mp4", tmp_path / "broken.mp4"
    shutil.copyfile(_videos(_motion_master)[0], good)
    shutil.copyfile(_videos(_motion_master)[1], broken)
    assert None not in model.predict([good, broken])  # scanned, metadata cached
    stat = broken.stat()
    data = broken.read_bytes()
    start, end = data.index(b"mdat") + 4, data.index(b"moov")  # the frames, not the index
    assert start < end
    broken.write_bytes(data[:start] + bytes(end - start) + data[end:])
    os.utime(broken, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    with pytest.warns(UserWarning, match=r"skipped 1 video\(s\): \S*broken\.mp4 \(\w+"):
        result = model.predict([good, broken, good])
    assert result[0] in model.labels and result[1] is None and result[2] == result[0]
    got, skipped = model.predict_paths([broken])
    assert got == [] and list(skipped) == [str(broken)]

    assert main([str(checkpoint), str(broken), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["predictions"] == {} and list(out["skipped"]) == [str(broken)]


def test_not_a_checkpoint(tmp_path, text_file):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_model(tmp_path / "missing.ckpt")
    with pytest.raises(CheckpointError, match=r"notes\.txt: not a PyTorch checkpoint"):
        load_model(text_file)
    plain = tmp_path / "weights.pth"
    torch.save({"w": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="not a Lightning checkpoint"):
        check_checkpoint(plain)
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"hidden": 3}}, other)
    with pytest.raises(CheckpointError, match="checkpoint of another model"):
        VideoClassifier.load_from_checkpoint(other)


def test_cli_lines_json_and_errors(checkpoint, _motion_master, text_file, capsys):
    folder = _motion_master / "val" / "up"
    assert main([str(checkpoint), str(folder)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    model = load_model(checkpoint)
    for line, label in zip(lines, model.predict(folder).values(), strict=True):
        path, got = line.split("\t")
        assert Path(path).parent == folder and got == label
    # The folder's files given one by one (classified together) give the same lines.
    files = [line.split("\t")[0] for line in lines]
    assert main([str(checkpoint), *files]) == 0
    assert capsys.readouterr().out.strip().splitlines() == lines

    assert main([str(checkpoint), str(folder / "0.mp4"), "--top_k", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    (pairs,) = out["predictions"].values()
    assert len(pairs) == 2 and out["skipped"] == {}

    assert main([str(checkpoint), str(folder / "0.mp4"), "nowhere.mp4", str(text_file)]) == 0
    err = capsys.readouterr().err
    assert "skipped nowhere.mp4: no such file or folder" in err
    assert f"skipped {text_file}: " in err

    bad_devices = {"banana": "not a device"}
    if not torch.cuda.is_available():
        bad_devices["cuda"] = "no CUDA GPU here; use --device cpu"
    for device, why in bad_devices.items():
        with pytest.raises(SystemExit) as e:
            main([str(checkpoint), str(folder), "--device", device])
        assert e.value.code == 2
        assert f"error: --device {device}: {why}" in capsys.readouterr().err

    with pytest.raises(SystemExit) as e:
        main([str(text_file), str(folder)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a PyTorch checkpoint" in err
    assert len(err.strip().splitlines()) == 1


def test_cli_as_module(checkpoint, _motion_master):
    video = _videos(_motion_master)[0]
    done = subprocess.run(
        [sys.executable, "-m", "trainer.predict", str(checkpoint), str(video)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    path, label = done.stdout.strip().split("\t")
    assert path == str(video) and label in load_model(checkpoint).labels


def test_cli_as_module_bad_checkpoint_is_one_line(text_file, _motion_master):
    done = subprocess.run(
        [sys.executable, "-m", "trainer.predict", str(text_file), str(_videos(_motion_master)[0])],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {text_file}: not a PyTorch checkpoint"


def test_predict_folder_is_keyed_by_path_missing_files_raise(checkpoint, _motion_master, tmp_path):
    """A folder's results are keyed by path: a skipped file cannot shift the others. A path
    that does not exist is FileNotFoundError, not a None among the results."""
    from PIL import Image

    model = load_model(checkpoint)
    folder = tmp_path / "mixed"
    folder.mkdir()
    videos = _videos(_motion_master)[:2]
    shutil.copy(videos[0], folder / "a.mp4")
    shutil.copy(videos[1], folder / "c.mp4")
    Image.new("RGB", (32, 32)).save(folder / "b.png")
    Image.new("RGB", (32, 32)).save(folder / "b2.jpg")
    with pytest.warns(UserWarning, match=r"b\.png \(an image \(png\), not a video\)"):
        got = model.predict(folder)
    assert list(got) == [str(folder / "a.mp4"), str(folder / "c.mp4")]
    assert got == {
        str(folder / n): label
        for n, label in zip(["a.mp4", "c.mp4"], model.predict(videos), strict=True)
    }
    _, skipped = model.predict_paths(folder)
    assert skipped[str(folder / "b2.jpg")] == "an image (jpeg), not a video"
    with pytest.raises(FileNotFoundError, match=r"no such video file\(s\): nowhere\.mp4"):
        model.predict("nowhere.mp4")
    with pytest.raises(FileNotFoundError, match="nowhere.mp4"):
        model.predict([videos[0], "nowhere.mp4"])


def test_truncated_file_reason_is_not_decoder_not_found(tmp_path):
    """A file cut inside its header (moov first, as with +faststart) used to be skipped as
    "undecodable (Decoder not found)"."""
    import av
    import numpy as np

    from trainer.video_io import VideoError, probe

    whole = tmp_path / "whole.mp4"
    with av.open(str(whole), "w", options={"movflags": "+faststart"}) as c:
        s = c.add_stream("libx264", rate=15)
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        for f in np.random.default_rng(0).integers(0, 255, (30, 32, 32, 3), dtype=np.uint8):
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    reasons = set()
    for end in range(data.index(b"moov"), data.index(b"mdat") + 200, 20):  # cut in the header
        cut.write_bytes(data[:end])
        with pytest.raises(VideoError) as e:
            probe(cut)
        reasons.add(e.value.reason)
    assert not [r for r in reasons if "Decoder not found" in r], reasons
    assert "truncated or corrupt (its video stream has no codec parameters)" in reasons
