"""Synthetic data: layout, decodability, and that motion (not appearance) carries the class."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.kinetics import read_annotations
from trainer.sample_data import main, make_kinetics_like, make_motion_dataset, make_video
from trainer.video_io import probe, read_frames


def test_motion_dataset_layout_and_videos(tmp_path):
    root = make_motion_dataset(
        tmp_path / "m",
        videos_per_class=2,
        num_frames=12,
        size=(32, 48),
        classes=("left", "down"),
        splits=("train",),
    )
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.mp4"))
    assert files == ["train/down/0.mp4", "train/down/1.mp4", "train/left/0.mp4", "train/left/1.mp4"]
    meta = probe(root / "train/left/0.mp4")
    assert (meta.num_frames, meta.height, meta.width, meta.fps) == (12, 32, 48, 15)


def _centroid_motion(frames: np.ndarray) -> tuple[float, float]:
    """Mean per-frame displacement (dy, dx) of the bright square, unwrapping the torus."""
    h, w = frames.shape[1:3]
    pos = []
    for f in frames.astype(float).mean(-1):
        ys, xs = np.nonzero(f > f.mean() + 2 * f.std())
        # circular means handle the wrap-around
        ay, ax = 2 * np.pi * ys / h, 2 * np.pi * xs / w
        pos.append(
            (
                np.angle(np.exp(1j * ay).mean()) * h / (2 * np.pi),
                np.angle(np.exp(1j * ax).mean()) * w / (2 * np.pi),
            )
        )
    d = np.diff(np.array(pos), axis=0)
    d[:, 0] = (d[:, 0] + h / 2) % h - h / 2
    d[:, 1] = (d[:, 1] + w / 2) % w - w / 2
    return tuple(d.mean(0))


@pytest.mark.parametrize(
    "label, sign", [("left", (0, -1)), ("right", (0, 1)), ("up", (-1, 0)), ("down", (1, 0))]
)
def test_each_class_moves_its_way(tmp_path, label, sign):
    root = make_motion_dataset(
        tmp_path,
        classes=(label,),
        videos_per_class=2,
        num_frames=16,
        size=(32, 32),
        splits=("train",),
    )
    for n in range(2):
        path = root / "train" / label / f"{n}.mp4"
        dy, dx = _centroid_motion(read_frames(path, range(16)))
        moving, still = (dx, dy) if sign[0] == 0 else (dy, dx)
        assert np.sign(moving) == sum(sign) and abs(moving) > 0.3 and abs(still) < 0.2


def test_single_frames_carry_no_class_position_bias(tmp_path):
    # Square positions over all frames are spread over the whole frame for every class.
    root = make_motion_dataset(
        tmp_path,
        classes=("left", "right"),
        videos_per_class=6,
        num_frames=16,
        size=(32, 32),
        splits=("train",),
    )
    for label in ("left", "right"):
        mean_x = []
        for p in (root / "train" / label).glob("*.mp4"):
            frames = read_frames(p, range(16)).astype(float).mean(-1)
            for f in frames:
                mean_x.append(np.nonzero(f > f.mean() + 2 * f.std())[1].mean())
        assert 10 < np.mean(mean_x) < 22  # centred on average, no left/right start bias


def test_kinetics_like_layout_and_csv(tmp_path):
    csv_path = make_kinetics_like(
        tmp_path, 3, ["juggling balls", "tai chi"], seconds=1, size=(64, 48), fps=10
    )
    rows = read_annotations(csv_path)
    assert [r.label for r in rows] == ["juggling balls", "tai chi", "juggling balls"]
    for r in rows:
        meta = probe(tmp_path / r.relpath)
        assert (meta.num_frames, meta.width, meta.height) == (10, 64, 48)
        assert r.time_end - r.time_start == 1


def test_make_video_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        make_video(tmp_path / "x.mp4", np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="even"):
        make_video(tmp_path / "x.mp4", np.zeros((2, 7, 8, 3), np.uint8))


def test_cli(tmp_path, capsys):
    main(
        [
            "--out",
            str(tmp_path / "m"),
            "--videos-per-class",
            "1",
            "--num-frames",
            "4",
            "--size",
            "16",
            "--classes",
            "up,down",
        ]
    )
    assert len(list((tmp_path / "m").rglob("*.mp4"))) == 4
    main(
        ["--out", str(tmp_path / "k"), "--kind", "kinetics", "--n-videos", "1", "--seconds", "0.5"]
    )
    assert (tmp_path / "k" / "annotations.csv").exists()
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "x"), "--classes", "sideways"])
    assert "unknown motion classes" in capsys.readouterr().err
