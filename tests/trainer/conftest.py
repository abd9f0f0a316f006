"""Shared data fixtures for the trainer tests: tiny synthetic videos, made once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from trainer.sample_data import make_motion_dataset, make_video
from trainer.video_input import VideoInput

# 32x32 motion videos of 16 frames at 15 fps: a clip of 8 frames every 2 spans the whole video.
TINY_INPUT = VideoInput(num_frames=8, sampling_rate=2, crop_size=32, short_side=32, fps=15)


@pytest.fixture(autouse=True)
def _private_user_cache(tmp_path_factory, monkeypatch):
    """Keep the metadata cache of predicted/read-only videos out of the real ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


@pytest.fixture(scope="session")
def tiny_input() -> VideoInput:
    return TINY_INPUT


@pytest.fixture(scope="session")
def _motion_master(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("motion")
    return make_motion_dataset(
        root, videos_per_class=3, num_frames=16, size=(32, 32), classes=("left", "right", "up")
    )


@pytest.fixture
def motion_dataset(_motion_master, tmp_path) -> Path:
    """``ROOT/{train,val}/{left,right,up}/{0,1,2}.mp4``, a fresh copy per test (tests add bad
    files to it)."""
    root = tmp_path / "motion"
    shutil.copytree(_motion_master, root, ignore=shutil.ignore_patterns(".video_meta_cache*"))
    return root


@pytest.fixture
def corrupt_video(tmp_path) -> Path:
    """Random bytes named like a video."""
    p = tmp_path / "corrupt.mp4"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return p


@pytest.fixture
def text_file(tmp_path) -> Path:
    """A file that is not a video at all."""
    p = tmp_path / "notes.txt"
    p.write_text("not a video\n")
    return p


@pytest.fixture
def short_video(tmp_path) -> Path:
    """A valid 32x32 video of only 3 frames (shorter than any clip)."""
    frames = np.zeros((3, 32, 32, 3), np.uint8)
    for t in range(3):
        frames[t] = 60 * (t + 1)
    return make_video(tmp_path / "short.mp4", frames, fps=15)


@pytest.fixture(scope="session")
def index_video(tmp_path_factory) -> Path:
    """60 frames, 30 fps, frame i has brightness 4*i (so its index can be read back), with a
    keyframe every 16 frames so seeking is exercised."""
    frames = np.zeros((60, 32, 32, 3), np.uint8)
    for t in range(60):
        frames[t] = 4 * t
    path = tmp_path_factory.mktemp("idx") / "index.mp4"
    return make_video(
        path, frames, fps=30, g="16", keyint_min="16", sc_threshold="0", crf="0", bf="2"
    )


@pytest.fixture(scope="session")
def frame_index():
    """Reads back the index a frame of :func:`index_video` encodes."""
    return lambda frame: int(round(float(np.asarray(frame).mean()) / 4))


@pytest.fixture
def motion_dm(motion_dataset):
    """Builds a VideoDataModule over this test's ``motion_dataset`` train/ and val/ folders."""
    from trainer.data import VideoDataModule

    def make(video_input: VideoInput = TINY_INPUT, **kw):
        return VideoDataModule.from_folders(
            motion_dataset / "train", motion_dataset / "val", video_input=video_input, **kw
        )

    return make


@pytest.fixture(scope="session")
def quiet_trainer():
    """Builds a CPU ``pl.Trainer`` with no logger, checkpoints, progress bar or summary."""
    import pytorch_lightning as pl

    def make(**kw) -> pl.Trainer:
        quiet = dict(
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        return pl.Trainer(**{**quiet, **kw})

    return make


@pytest.fixture(scope="session")
def lightning_predict():
    """``(model, folder) -> probabilities [videos, classes]`` from Lightning's Trainer.predict
    over a predict-only VideoDataModule built from what the model's checkpoint carries."""
    import pytorch_lightning as pl
    import torch

    from trainer.data import VideoDataModule

    def run(model, folder: Path) -> torch.Tensor:
        dm = VideoDataModule.from_folders(
            predict_folder=str(folder),
            video_input=model.video_input,
            labels=model.labels,
            clips_per_video=model.hparams.clips_per_video,
        )
        return torch.cat(pl.Trainer(accelerator="cpu", logger=False).predict(model, datamodule=dm))

    return run
