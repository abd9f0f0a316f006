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
