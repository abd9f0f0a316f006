"""VideoDataModule: batch shapes and keys per split, labels, bad input never crashing."""

from __future__ import annotations

import shutil

import pytest
import torch

from trainer.data import DataError, DataWarning, VideoDataModule, predict_loader
from trainer.video_input import VideoInput


def test_folders_batches_have_the_documented_shapes(motion_dataset, tiny_input):
    dm = VideoDataModule.from_folders(
        motion_dataset / "train",
        motion_dataset / "val",
        video_input=tiny_input,
        batch_size=4,
        clips_per_video=3,
        hflip=False,
    )
    assert dm.labels == ["left", "right", "up"] and dm.num_classes == 3
    assert dm.skipped == {}
    batches = list(dm.train_dataloader())
    assert sum(len(b["label"]) for b in batches) == 9
    b = batches[0]
    assert b["video"].shape == (4, 3, 8, 32, 32) and b["video"].dtype == torch.float32
    assert b["label"].dtype == torch.long
    v = next(iter(dm.val_dataloader()))
    assert v["video"].shape == (4, 3, 3, 8, 32, 32)
    assert v["index"].tolist() == [0, 1, 2, 3]
    assert v["label"].tolist() == [0, 0, 0, 1]


def test_slowfast_batches_are_slow_fast_lists(motion_dataset):
    vi = VideoInput(
        num_frames=8, sampling_rate=2, crop_size=32, short_side=32, fps=15, slowfast_alpha=4
    )
    dm = VideoDataModule.from_folders(
        motion_dataset / "train",
        motion_dataset / "val",
        video_input=vi,
        batch_size=2,
        clips_per_video=2,
    )
    slow, fast = next(iter(dm.train_dataloader()))["video"]
    assert slow.shape == (2, 3, 2, 32, 32) and fast.shape == (2, 3, 8, 32, 32)
    assert torch.equal(slow, fast[:, :, ::4])
    slow, fast = next(iter(dm.val_dataloader()))["video"]
    assert slow.shape == (2, 2, 3, 2, 32, 32) and fast.shape == (2, 2, 3, 8, 32, 32)


def test_bad_files_are_skipped_and_summarised(
    motion_dataset, tiny_input, corrupt_video, text_file, short_video
):
    train = motion_dataset / "train"
    shutil.copy(corrupt_video, train / "left" / "corrupt.mp4")
    shutil.copy(text_file, train / "up" / "notes.txt")
    shutil.copy(short_video, train / "right" / "short.mp4")
    with pytest.warns(DataWarning, match=r"skipped 2 of 12 files"):
        dm = VideoDataModule.from_folders(train, video_input=tiny_input, batch_size=4)
    assert set(dm.skipped) == {str(train / "left" / "corrupt.mp4"), str(train / "up" / "notes.txt")}
    # The short video is kept: its clip is sampled over its whole length.
    assert sum(len(b["label"]) for b in dm.train_dataloader()) == 10


def test_empty_split_is_one_clear_error(tmp_path, tiny_input, text_file):
    (tmp_path / "data" / "cls").mkdir(parents=True)
    shutil.copy(text_file, tmp_path / "data" / "cls" / "x.mp4")
    with pytest.raises(DataError, match=r"no videos in .*expected class-per-folder layout"):
        VideoDataModule.from_folders(tmp_path / "data", video_input=tiny_input)


def test_predict_loader_yields_paths(motion_dataset, tiny_input, corrupt_video):
    files = sorted((motion_dataset / "val" / "up").glob("*.mp4"))
    loader, skipped = predict_loader(
        [*files, corrupt_video], tiny_input, clips_per_video=2, batch_size=2
    )
    assert skipped.keys() == {str(corrupt_video)}
    batches = list(loader)
    assert [p for b in batches for p in b["path"]] == [str(f) for f in files]
    assert batches[0]["video"].shape == (2, 2, 3, 8, 32, 32) and "label" not in batches[0]
