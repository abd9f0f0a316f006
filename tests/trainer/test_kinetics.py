"""Kinetics annotations: the real published CSVs, crawler paths, missing clips, real clips."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from trainer.data import DataError, DataWarning, VideoDataModule
from trainer.kinetics import classes, kinetics_source, read_annotations
from trainer.sample_data import make_video
from trainer.video_input import VideoInput

DATA = Path("/work/shared/data")
needs_data = pytest.mark.skipif(
    not (DATA / "kinetics-400_val.csv").exists(),
    reason="real Kinetics annotation files not present",
)


@needs_data
def test_kinetics_400_val_whole_file():
    rows = read_annotations(DATA / "kinetics-400_val.csv")
    labels = classes(rows)
    assert len(rows) == 19906 and len(labels) == 400
    assert labels == sorted(labels) and labels[0] == "abseiling"
    # Quoted labels keep their spaces and punctuation, as the crawler's folders do.
    assert "air drumming" in labels and "massaging person's head" in labels
    assert "skiing (not slalom or crosscountry)" in labels
    air = next(r for r in rows if r.label == "air drumming")
    assert (
        air.relpath == f"air drumming/{air.youtube_id}_{air.time_start:06d}_{air.time_end:06d}.mp4"
    )
    assert {r.split for r in rows} == {"val"}


@needs_data
def test_kinetics_600_val_and_400_test():
    rows = read_annotations(DATA / "kinetics-600_val.csv")
    assert len(rows) == 30000 and len(classes(rows)) == 600
    test = read_annotations(DATA / "kinetics-400_test.csv")
    assert test and all(r.label is None and r.split == "test" for r in test)
    assert test[0].relpath == "test/--6bJUbfpnQ_000017_000027.mp4"


def test_quoted_labels_with_commas_and_float_times(tmp_path):
    csv_path = tmp_path / "a.csv"
    csv_path.write_text(
        "label,youtube_id,time_start,time_end,split,is_cc\n"
        '"cooking, on campfire",abc,3.0,13.0,train,0\n'
        "archery,-x_y,0,10,train,1\n"
    )
    rows = read_annotations(csv_path)
    assert classes(rows) == ["archery", "cooking, on campfire"]
    assert rows[0].relpath == "cooking, on campfire/abc_000003_000013.mp4"


def test_bad_annotation_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_annotations(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("label,start\nx,1\n")
    with pytest.raises(DataError, match=r"missing column\(s\).*youtube_id"):
        read_annotations(bad)
    bad.write_text("label,youtube_id,time_start,time_end,split\nx,y,zero,10,val\n")
    with pytest.raises(DataError, match=r"bad.csv:2: bad row"):
        read_annotations(bad)


@needs_data
def test_real_rows_with_a_few_real_clips_load(tmp_path):
    """A handful of rows of the real K400 val file, made into real clips; the rest missing."""
    rows = read_annotations(DATA / "kinetics-400_val.csv")
    picked = [rows[0], rows[60], next(r for r in rows if "(" in r.label)]
    rng = np.random.default_rng(0)
    for r in picked:
        frames = rng.integers(0, 256, size=(20, 32, 48, 3), dtype=np.uint8)
        make_video(tmp_path / r.relpath, frames, fps=10)
    vi = VideoInput(num_frames=4, sampling_rate=2, crop_size=32, short_side=32, fps=10)
    with pytest.warns(
        DataWarning, match=r"skipped 19903 of 19906 files \(19903 clip not downloaded"
    ):
        dm = VideoDataModule.from_kinetics(
            {"val": DATA / "kinetics-400_val.csv"},
            tmp_path,
            video_input=vi,
            batch_size=3,
            clips_per_video=2,
        )
    assert dm.num_classes == 400  # the class list comes from the annotations
    assert len(dm.skipped) == 19903
    batch = next(iter(dm.val_dataloader()))
    assert batch["video"].shape == (3, 2, 3, 4, 32, 32)
    assert sorted(dm.labels[i] for i in batch["label"]) == sorted(r.label for r in picked)


def test_no_clip_downloaded_is_an_error(tmp_path):
    csv_path = tmp_path / "a.csv"
    csv_path.write_text("label,youtube_id,time_start,time_end,split\nx,abc,0,10,val\n")
    with pytest.raises(DataError, match="none of the 1 clips"):
        kinetics_source(csv_path, tmp_path)
    with pytest.raises(DataError, match="unknown split"), warnings.catch_warnings():
        VideoDataModule.from_kinetics(
            {"holdout": csv_path}, tmp_path, video_input=VideoInput(4, 2, 32, 32)
        )


def test_unlabelled_test_file_cannot_be_an_evaluation_split(tmp_path):
    csv_path = tmp_path / "test.csv"
    csv_path.write_text("youtube_id,time_start,time_end,split\nabc,0,10,test\n")
    make_video(tmp_path / "test" / "abc_000000_000010.mp4", np.zeros((4, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match="has no labels, so it cannot be the test split"):
        VideoDataModule.from_kinetics(
            {"test": csv_path}, tmp_path, video_input=VideoInput(4, 2, 32, 32)
        )


def _clips(root: Path, relpaths: list[str]) -> None:
    frames = np.random.default_rng(0).integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    for rel in relpaths:
        make_video(root / rel, frames, fps=10)


def test_split_column_of_one_annotations_file(tmp_path):
    """The project's own generated annotations.csv (one file, a split column) is accepted, by
    the DataModule and by train.py, which used to want the split in the file name."""
    from trainer.train import parse_args

    csv_path = tmp_path / "annotations.csv"
    csv_path.write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "archery,aaa,0,10,train\narchery,bbb,0,10,validate\nbowling,ccc,5,15,train\n"
    )
    _clips(tmp_path, ["archery/aaa_000000_000010.mp4", "archery/bbb_000000_000010.mp4"])
    _clips(tmp_path, ["bowling/ccc_000005_000015.mp4"])
    vi = VideoInput(num_frames=4, sampling_rate=2, crop_size=32, short_side=32, fps=10)
    dm = VideoDataModule.from_kinetics(csv_path, tmp_path, video_input=vi)
    assert {k: len(v) for k, v in dm.items.items()} == {"train": 2, "val": 1}
    args = parse_args(["--kinetics_annotations", str(csv_path), "--video_root", str(tmp_path)])
    assert args.kinetics_splits == {"train": str(csv_path), "val": str(csv_path)}


def test_generated_annotations_train_through_the_script(tmp_path, capsys):
    from trainer.sample_data import make_kinetics_like
    from trainer.train import main

    videos = tmp_path / "videos"
    csv_path = make_kinetics_like(videos, 4, ["abseiling", "archery"], seconds=1, size=(48, 32))
    flags = ["--kinetics_annotations", str(csv_path), "--video_root", str(videos)]
    flags += ["--backbone", "demo_cnn", "--crop_size", "32", "--num_workers", "0"]
    assert main([*flags, "--fast_dev_run", "--output_dir", str(tmp_path / "out")]) == 0
    assert "fast_dev_run finished" in capsys.readouterr().out


def test_flat_split_layout_and_any_extension(tmp_path):
    csv_path = tmp_path / "val.csv"
    csv_path.write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "archery,aaa,0,10,val\nbowling,bbb,3,13,val\nbowling,ccc,0,10,val\n"
    )
    _clips(tmp_path, ["val/aaa_000000_000010.mp4"])
    frames = np.zeros((8, 32, 32, 3), np.uint8)
    import av  # a .mkv, as some downloaders save them

    with av.open(str(tmp_path / "val" / "bbb_000003_000013.mkv"), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        for f in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())
    with pytest.warns(DataWarning, match=r"skipped 1 of 3 files \(1 clip not downloaded"):
        src = kinetics_source(csv_path, tmp_path, split="val")
        vi = VideoInput(num_frames=4, sampling_rate=2, crop_size=32, short_side=32, fps=10)
        dm = VideoDataModule(val=src, video_input=vi)
    assert sorted(p.name for p, _ in src.items) == [
        "aaa_000000_000010.mp4",
        "bbb_000003_000013.mkv",
    ]
    assert [dm.labels[it.label] for it in dm.items["val"]] == ["archery", "bowling"]


def test_pytorchvideo_space_separated_list_with_integer_labels(tmp_path, motion_dataset):
    from trainer.datasets import VideoSource
    from trainer.train import main

    videos = sorted((motion_dataset / "train").glob("*/*.mp4"))
    index = {"left": 0, "right": 1, "up": 11}  # sparse, and sorted as text 11 < 2
    listing = tmp_path / "train.txt"
    listing.write_text("".join(f"{v} {index[v.parent.name]}\n" for v in videos))
    src = VideoSource.from_csv(listing)
    assert len(src.classes) == 12 and src.classes[:3] == ("0", "1", "2")
    vi = VideoInput(num_frames=4, sampling_rate=2, crop_size=32, short_side=32, fps=15)
    dm = VideoDataModule(train=src, video_input=vi)
    assert dm.labels == [str(i) for i in range(12)]  # label k is class k
    assert sorted({it.label for it in dm.items["train"]}) == [0, 1, 11]
    out = tmp_path / "out"
    flags = ["--train_csv", str(listing), "--backbone", "demo_cnn", "--crop_size", "32"]
    assert main([*flags, "--num_workers", "0", "--fast_dev_run", "--output_dir", str(out)]) == 0
    assert (out / "labels.txt").read_text().split()[11] == "11"
