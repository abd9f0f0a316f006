"""VideoDataModule: batch shapes and keys per split, labels, bad input never crashing."""

from __future__ import annotations

import shutil

import pytest
import torch

from trainer.data import DataError, DataWarning, VideoDataModule, predict_loader
from trainer.video_input import VideoInput


def test_folders_batches_have_the_documented_shapes(motion_dm):
    dm = motion_dm(batch_size=4, clips_per_video=3, hflip=False)
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


def test_slowfast_batches_are_slow_fast_lists(motion_dm):
    vi = VideoInput(
        num_frames=8, sampling_rate=2, crop_size=32, short_side=32, fps=15, slowfast_alpha=4
    )
    dm = motion_dm(vi, batch_size=2, clips_per_video=2)
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
    with (
        pytest.raises(DataError, match=r"no videos in .*expected class-per-folder layout"),
        pytest.warns(DataWarning, match="skipped 1 of 1 files"),
    ):
        VideoDataModule.from_folders(tmp_path / "data", video_input=tiny_input)


def test_predict_loader_yields_paths(
    motion_dataset, tiny_input, corrupt_video, monkeypatch, tmp_path
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    files = sorted((motion_dataset / "val" / "up").glob("*.mp4"))
    with pytest.warns(DataWarning, match="skipped 1 of 4 files"):
        loader, skipped = predict_loader(
            [*files, corrupt_video], tiny_input, clips_per_video=2, batch_size=2
        )
    assert skipped.keys() == {str(corrupt_video)}
    batches = list(loader)
    assert [p for b in batches for p in b["path"]] == [str(f) for f in files]
    assert batches[0]["video"].shape == (2, 2, 3, 8, 32, 32) and "label" not in batches[0]
    # The user's folder is left untouched; metadata goes to the user cache dir.
    assert not list(motion_dataset.rglob(".video_meta_cache*"))
    assert list((tmp_path / "xdg" / "launch-video").glob("video_meta_*.json"))


def test_predict_loader_with_only_bad_files_reports_them(tiny_input, corrupt_video, tmp_path):
    # Prediction reports what it skipped rather than failing: an empty loader.
    with pytest.warns(DataWarning):
        loader, skipped = predict_loader([corrupt_video, tmp_path / "gone.mp4"], tiny_input)
    assert list(loader) == []
    assert skipped == {
        str(corrupt_video): skipped[str(corrupt_video)],
        str(tmp_path / "gone.mp4"): "file not found",
    }
    assert "not a readable video" in skipped[str(corrupt_video)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no videos in"):
        predict_loader(tmp_path / "empty", tiny_input)


def test_metadata_is_cached_and_refreshed_when_a_file_changes(
    motion_dataset, tiny_input, monkeypatch
):
    train = motion_dataset / "train"
    VideoDataModule.from_folders(train, video_input=tiny_input)
    assert (train / ".video_meta_cache.json").exists()

    probed = []
    import trainer.meta_cache as mc

    real_probe = mc.probe
    monkeypatch.setattr(mc, "probe", lambda p: probed.append(p) or real_probe(p))
    VideoDataModule.from_folders(train, video_input=tiny_input)
    assert probed == []  # every file came from the cache
    changed = train / "up" / "0.mp4"
    shutil.copy(train / "left" / "0.mp4", changed)
    VideoDataModule.from_folders(train, video_input=tiny_input)
    assert probed == [changed]


def test_read_only_data_dir_caches_in_the_user_cache_dir(
    motion_dataset, tiny_input, monkeypatch, tmp_path
):
    import trainer.meta_cache as mc

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(mc.os, "access", lambda path, mode: False)  # as on a read-only mount
    VideoDataModule.from_folders(motion_dataset / "train", video_input=tiny_input)
    assert not (motion_dataset / "train" / ".video_meta_cache.json").exists()
    assert len(list((tmp_path / "xdg" / "launch-video").glob("video_meta_*.json"))) == 1


def test_unwritable_cache_dir_falls_back(motion_dataset, tiny_input, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    dm = VideoDataModule.from_folders(
        motion_dataset / "train", video_input=tiny_input, cache_dir=blocker / "cache"
    )
    assert dm.num_classes == 3
    assert len(list((tmp_path / "xdg" / "launch-video").glob("video_meta_*.json"))) == 1


@pytest.mark.parametrize("workers", [0, 1])
def test_decode_failure_while_loading_is_counted_not_fatal(
    motion_dataset, motion_dm, corrupt_video, workers
):
    dm = motion_dm(batch_size=3, num_workers=workers)
    # Broken after the metadata scan (a truncated upload, a flaky mount).
    broken_train = motion_dataset / "train" / "left" / "1.mp4"
    broken_val = motion_dataset / "val" / "up" / "2.mp4"
    for p in (broken_train, broken_val):
        p.write_bytes(corrupt_video.read_bytes())
    # Training keeps its batch size: the broken video is replaced by another one.
    assert sum(len(b["label"]) for b in dm.train_dataloader()) == 9
    # Evaluation is one item per video: the broken one is dropped from its batch.
    val = list(dm.val_dataloader())
    indices = [i for b in val for i in b["index"].tolist()]
    assert indices == [0, 1, 2, 3, 4, 5, 6, 7]
    assert {str(broken_train), str(broken_val)} <= set(dm.skipped)


def test_whole_batch_failing_gives_an_empty_batch_of_the_right_shape(
    motion_dataset, tiny_input, corrupt_video
):
    dm = VideoDataModule.from_folders(
        val_folder=motion_dataset / "val", video_input=tiny_input, batch_size=3, clips_per_video=2
    )
    for p in (motion_dataset / "val" / "left").glob("*.mp4"):
        p.write_bytes(corrupt_video.read_bytes())
    first = next(iter(dm.val_dataloader()))
    assert first["video"].shape == (0, 2, 3, 8, 32, 32) and first["label"].shape == (0,)


def test_empty_class_folder_warns_and_counts_only_if_seen_elsewhere(motion_dataset, tiny_input):
    (motion_dataset / "train" / "down").mkdir()
    with pytest.warns(DataWarning, match="empty class folder"):
        dm = VideoDataModule.from_folders(motion_dataset / "train", video_input=tiny_input)
    assert dm.labels == ["left", "right", "up"]
    shutil.rmtree(motion_dataset / "val" / "left")
    (motion_dataset / "val" / "left").mkdir()
    with pytest.warns(DataWarning, match="empty class folder"):
        dm = VideoDataModule.from_folders(
            motion_dataset / "train", motion_dataset / "val", video_input=tiny_input
        )
    assert dm.labels == ["left", "right", "up"]  # "left" has training videos


def test_missing_folder_and_wrong_use_are_clear_errors(tmp_path, tiny_input, motion_dataset):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VideoDataModule.from_folders(tmp_path / "nope", video_input=tiny_input)
    (tmp_path / "file.mp4").write_bytes(b"")
    with pytest.raises(DataError, match="is a file"):
        VideoDataModule.from_folders(tmp_path / "file.mp4", video_input=tiny_input)
    with pytest.raises(DataError, match="no data given"):
        VideoDataModule(video_input=tiny_input)
    dm = VideoDataModule.from_folders(val_folder=motion_dataset / "val", video_input=tiny_input)
    with pytest.raises(DataError, match="no train data"):
        dm.train_dataloader()
    with pytest.raises(DataError, match="not among the 2 given labels"):
        VideoDataModule.from_folders(
            motion_dataset / "train", video_input=tiny_input, labels=["left", "right"]
        )


def test_csv_source(motion_dataset, tiny_input, tmp_path):
    csv_path = motion_dataset / "train.csv"
    csv_path.write_text("path,label\ntrain/left/0.mp4,left\ntrain/up/1.mp4,up\n")
    dm = VideoDataModule.from_csv(csv_path, video_input=tiny_input, batch_size=2)
    assert dm.labels == ["left", "up"]
    b = next(iter(dm.train_dataloader()))
    assert b["video"].shape == (2, 3, 8, 32, 32)
    elsewhere = tmp_path / "lists" / "val.csv"
    elsewhere.parent.mkdir()
    elsewhere.write_text("val/right/0.mp4,right\n")
    dm = VideoDataModule.from_csv(val_csv=elsewhere, root=motion_dataset, video_input=tiny_input)
    assert dm.labels == ["right"]
    elsewhere.write_text("val/right/0.mp4\n")
    with pytest.raises(DataError, match=r"val.csv:1: expected 'path,label'"):
        VideoDataModule.from_csv(val_csv=elsewhere, video_input=tiny_input)


def test_predict_only_with_given_labels(motion_dataset, tiny_input):
    dm = VideoDataModule(
        video_input=tiny_input,
        predict=motion_dataset / "val",
        labels=["a", "b"],
        batch_size=4,
        clips_per_video=1,
    )
    assert dm.num_classes == 2
    batches = list(dm.predict_dataloader())
    assert sum(len(b["path"]) for b in batches) == 9
    assert batches[0]["video"].shape == (4, 1, 3, 8, 32, 32)
    # Without labels= a predict-only module takes the model's when a Trainer runs it (see
    # test_flash.py::test_predict_outputs); a module with no split at all is still an error.
    assert VideoDataModule(video_input=tiny_input, predict=motion_dataset / "val").labels == []
    with pytest.raises(DataError, match="no data given"):
        VideoDataModule(video_input=tiny_input)


def test_val_clips_are_uniformly_spaced_and_match_the_eval_transform(
    motion_dataset, frame_index, index_video, tmp_path
):
    from trainer.datasets import clip_indices, uniform_clip_starts
    from trainer.transforms import eval_transform
    from trainer.video_io import probe, read_frames

    (tmp_path / "v" / "a").mkdir(parents=True)
    shutil.copy(index_video, tmp_path / "v" / "a" / "idx.mp4")
    # 60 frames at 30 fps; clips of 4 frames every 3 frames (at 30 fps) span 12 frames.
    vi = VideoInput(num_frames=4, sampling_rate=3, crop_size=32, short_side=32, fps=30)
    meta = probe(index_video)
    starts = uniform_clip_starts(meta, vi, 3)
    assert starts == [0, 24, 48]
    assert clip_indices(meta, vi, 48) == [48, 51, 54, 57]
    dm = VideoDataModule.from_folders(val_folder=tmp_path / "v", video_input=vi, clips_per_video=3)
    video = next(iter(dm.val_dataloader()))["video"][0]  # N, C, T, H, W
    tf = eval_transform(vi)
    for n, s in enumerate(starts):
        expected = tf(torch.from_numpy(read_frames(index_video, clip_indices(meta, vi, s))))
        assert torch.allclose(video[n], expected)
    # Denormalised, each clip's frames carry the indices asked for.
    frames = (video * 0.225 + 0.45) * 255  # N, C, T, H, W
    got = [[frame_index(frames[n, :, t]) for t in range(4)] for n in range(3)]
    assert got == [[0, 3, 6, 9], [24, 27, 30, 33], [48, 51, 54, 57]]


def test_train_clips_are_random_within_the_video(index_video, frame_index, tmp_path):
    (tmp_path / "v" / "a").mkdir(parents=True)
    shutil.copy(index_video, tmp_path / "v" / "a" / "idx.mp4")
    vi = VideoInput(num_frames=4, sampling_rate=5, crop_size=32, short_side=32, fps=30)
    dm = VideoDataModule.from_folders(tmp_path / "v", video_input=vi)
    torch.manual_seed(0)
    starts = set()
    for _ in range(12):
        clip = next(iter(dm.train_dataloader()))["video"][0]
        idx = [frame_index((clip[:, t] * 0.225 + 0.45) * 255) for t in range(4)]
        assert [b - a for a, b in zip(idx[:-1], idx[1:], strict=True)] == [5, 5, 5]
        assert 0 <= idx[0] <= 40
        starts.add(idx[0])
    assert len(starts) > 3  # temporal jitter


def test_all_training_videos_broken_is_one_clear_error(motion_dataset, tiny_input, corrupt_video):
    dm = VideoDataModule.from_folders(motion_dataset / "train", video_input=tiny_input)
    for p in (motion_dataset / "train").rglob("*.mp4"):
        p.write_bytes(corrupt_video.read_bytes())
    with pytest.raises(DataError, match=r"11 videos in a row failed to load \(last: not a read"):
        next(iter(dm.train_dataloader()))
    assert dm.skipped and all("not a readable video" in r for r in dm.skipped.values())


def test_benchmark_script_runs_on_tiny_videos(tmp_path, capsys):
    """benchmarks/data_pipeline.py end to end (both pipelines) on two 2-second videos."""
    import importlib.util
    from pathlib import Path

    from trainer.sample_data import make_kinetics_like

    script = Path(__file__).parents[2] / "benchmarks" / "data_pipeline.py"
    spec = importlib.util.spec_from_file_location("data_pipeline_bench", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    make_kinetics_like(tmp_path, 2, ["a", "b"], seconds=2, size=(96, 64))
    threads = torch.get_num_threads()
    bench.main(
        [
            "--data",
            str(tmp_path),
            "--workers",
            "0",
            "--clips",
            "2",
            "--rounds",
            "1",
            "--batch-size",
            "2",
        ]
    )
    torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "pytorchvideo LabeledVideoDataset:" in out and "speed-up:" in out


def test_missing_eval_split_is_an_empty_loader_lightning_skips(motion_dataset, tiny_input):
    """Lightning asks for val whenever validation_step exists (fast_dev_run included): a split
    that was not given is an empty list, Lightning's "no such split", not an error."""
    import pytorch_lightning as pl

    from trainer.model import VideoClassifier

    dm = VideoDataModule.from_folders(motion_dataset / "train", video_input=tiny_input)
    assert dm.val_dataloader() == [] and dm.test_dataloader() == []
    model = VideoClassifier("demo_cnn", labels=dm.labels, video_input=tiny_input.to_dict())
    trainer = pl.Trainer(
        fast_dev_run=True, accelerator="cpu", logger=False, enable_progress_bar=False
    )
    trainer.fit(model, datamodule=dm)
    assert "train_loss" in trainer.callback_metrics
    assert "val_acc1" not in trainer.callback_metrics
    assert trainer.test(model, datamodule=dm) == []


def test_unpadded_sampler_gives_each_process_a_disjoint_share():
    from trainer.data import unpadded_sampler

    shares = [list(unpadded_sampler(range(9), 2, rank)) for rank in (0, 1)]
    assert shares == [[0, 2, 4, 6, 8], [1, 3, 5, 7]]  # 9 videos, none twice
    assert [len(unpadded_sampler(range(9), 2, rank)) for rank in (0, 1)] == [5, 4]
    shares = [list(unpadded_sampler(range(10), 4, rank)) for rank in range(4)]
    assert sorted(i for share in shares for i in share) == list(range(10))
    # Fewer videos than processes: every process still needs a batch, so padding, with a warning.
    with pytest.warns(DataWarning, match="1 video\\(s\\) on 2 processes; some are counted twice"):
        assert [list(unpadded_sampler(range(1), 2, rank, "val")) for rank in (0, 1)] == [[0], [0]]


def test_eval_loaders_use_the_unpadded_sampler_under_ddp(motion_dm):
    from types import SimpleNamespace

    dm = motion_dm(batch_size=2, clips_per_video=1)
    dm.trainer = SimpleNamespace(world_size=2, global_rank=1)  # what Lightning attaches
    loader = dm.val_dataloader()
    assert list(loader.sampler) == [1, 3, 5, 7]
    assert [b["index"].tolist() for b in loader] == [[1, 3], [5, 7]]


def test_failed_val_batch_leaves_metrics_finite_and_predict_failures_listed(
    motion_dataset, motion_dm, corrupt_video, quiet_trainer
):
    """A val batch whose every video fails adds nothing (no NaN loss); a video to predict that
    fails to decode after its scan is listed in .skipped like the training ones."""
    from trainer.model import VideoClassifier

    dm = motion_dm(batch_size=3, clips_per_video=1, predict_folder=motion_dataset / "val")
    loader = dm.predict_dataloader()  # scans the videos to predict
    for p in (motion_dataset / "val" / "left").glob("*.mp4"):  # the first val batch
        p.write_bytes(corrupt_video.read_bytes())
    model = VideoClassifier("demo_cnn", labels=dm.labels, video_input=dm.video_input.to_dict())
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=1)
    trainer.fit(model, datamodule=dm)
    assert torch.isfinite(trainer.callback_metrics["val_loss"])
    assert 0 <= float(trainer.callback_metrics["val_acc1"]) <= 1
    assert sum(len(b["path"]) for b in loader) == 6
    assert {str(p) for p in (motion_dataset / "val" / "left").glob("*.mp4")} <= set(dm.skipped)


# --- clip samplers, clip_duration, one clip per item, user transforms -------------------------


def test_training_clip_samplers(motion_dm, tiny_input):
    from trainer.datasets import training_clips

    dm = motion_dm(batch_size=64)
    items = dm.items["train"]  # 9 videos of 16 frames at 15 fps; a clip spans 16 frames
    assert training_clips(items, tiny_input) == [(i, None) for i in range(9)]
    assert len(training_clips(items, tiny_input, "random", random_clips=3)) == 27
    half = tiny_input.with_overrides(sampling_rate=1)  # 8 frames: 2 clips per video
    assert training_clips(items, half, "uniform")[:2] == [(0, 0), (0, 8)]
    assert len(training_clips(items, half, "uniform", stride=0.2)) == 9 * 3  # 3-frame stride
    spread = training_clips(items, half, "constant_clips_per_video", clips_per_video=3)
    assert spread[:3] == [(0, 0), (0, 4), (0, 8)]
    assert len(training_clips(items, half, "constant_clips_per_video", augs_per_clip=2)) == 18
    dm = motion_dm(
        half, batch_size=64, clip_sampler="constant_clips_per_video",
        clip_sampler_kwargs={"clips_per_video": 2},
    )  # fmt: skip
    assert len(next(iter(dm.train_dataloader()))["label"]) == 18
    dm = motion_dm(half, batch_size=64, train_clips_per_video=2)
    assert len(next(iter(dm.train_dataloader()))["label"]) == 18


def test_clip_duration_maps_onto_frames_times_stride(motion_dm, tiny_input):
    from trainer.data import with_clip_duration

    vi = with_clip_duration(tiny_input, 1.0, 15.0)  # 8 frames over 1 s of 15 fps video
    assert (vi.sampling_rate, vi.clip_duration) == (2, pytest.approx(1.0))
    assert with_clip_duration(tiny_input, 2.0, 30.0).sampling_rate == 8
    assert with_clip_duration(tiny_input, 0.1, 30.0).sampling_rate == 1  # never below 1
    dm = motion_dm(clip_duration=0.5)
    assert dm.frame_rate == pytest.approx(15.0)
    assert dm.video_input.clip_duration == pytest.approx(0.5)


def test_video_input_follows_the_model(motion_dataset, quiet_trainer, tmp_path):
    from trainer import VideoClassifier

    dm = VideoDataModule.from_folders(
        motion_dataset / "train", motion_dataset / "val", batch_size=9, clip_duration=0.8
    )
    model = VideoClassifier("demo_cnn", labels=dm.labels, video_input={**TINY, "sampling_rate": 5})
    quiet_trainer(default_root_dir=tmp_path, max_steps=1).fit(model, datamodule=dm)
    # 8 frames over 0.8 s at 15 fps: every 2nd frame; the model's checkpoint carries it.
    assert dm.video_input.num_frames == 8 and dm.video_input.sampling_rate == 2
    assert model.video_input == dm.video_input
    assert model.video_input.clip_duration == pytest.approx(0.8)


TINY = {"num_frames": 8, "sampling_rate": 2, "crop_size": 32, "short_side": 32, "fps": 15}


def test_one_clip_per_item_for_a_users_own_module(motion_dm):
    dm = motion_dm(batch_size=4, clips_per_video=3, stack_clips=False)
    batches = list(dm.val_dataloader())
    assert sum(len(b["label"]) for b in batches) == 27  # 9 videos x 3 clips, one per item
    b = batches[0]
    assert b["video"].shape == (4, 3, 8, 32, 32)  # 5-D, like training batches
    assert b["index"].tolist() == [0, 0, 0, 1] and b["clip"].tolist() == [0, 1, 2, 0]
    # And VideoClassifier takes such batches too (one clip per video).
    from trainer import VideoClassifier

    model = VideoClassifier("demo_cnn", labels=dm.labels, video_input=TINY).eval()
    assert model.video_probs(b["video"]).shape == (4, 3)


def test_user_transforms_torchvision_v2_and_on_device(motion_dm, quiet_trainer, tmp_path):
    from torchvision.transforms import v2

    seen = {}

    def record(sample):
        seen.setdefault("keys", set(sample))
        seen.setdefault("type", type(sample["video"]).__name__)
        seen.setdefault("shape", tuple(sample["video"].shape))
        return sample

    train = v2.Compose(
        [
            record,
            v2.RandomResizedCrop(24, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([0.45] * 3, [0.225] * 3),
        ]
    )
    dm = motion_dm(batch_size=3, train_transform=train, val_transform=v2.CenterCrop(24))
    batch = next(iter(dm.train_dataloader()))
    assert seen == {"keys": {"video", "label"}, "type": "Video", "shape": (8, 3, 32, 32)}
    assert batch["video"].shape == (3, 3, 8, 24, 24) and batch["video"].dtype == torch.float32
    val = next(iter(dm.val_dataloader()))  # uint8 out of the transform: normalised as usual
    assert val["video"].shape == (3, 4, 3, 8, 24, 24) and val["video"].min() < 0

    calls = []

    def on_device(batch):
        calls.append((batch["video"].device.type, tuple(batch["video"].shape)))
        return {**batch, "video": batch["video"] * 0}

    from trainer import VideoClassifier

    model = VideoClassifier("demo_cnn", labels=dm.labels, video_input=TINY)
    dm = motion_dm(batch_size=9, per_batch_transform_on_device={"train": on_device})
    quiet_trainer(default_root_dir=tmp_path, max_steps=1, limit_val_batches=1).fit(
        model, datamodule=dm
    )
    assert calls == [("cpu", (9, 3, 8, 32, 32))]  # training batches only, as asked


def test_bad_transforms_are_clear_errors(motion_dm):
    dm = motion_dm(batch_size=3, train_transform=lambda sample: sample["video"])
    with pytest.raises(DataError, match="must return the clip dict with 'video'"):
        next(iter(dm.train_dataloader()))
    with pytest.raises(DataError, match=r"per_batch_transform_on_device stages \['fit'\]"):
        motion_dm(per_batch_transform_on_device={"fit": print})


def test_video_sampler_class(motion_dm):
    from torch.utils.data import SequentialSampler

    dm = motion_dm(batch_size=9, video_sampler=SequentialSampler)
    assert next(iter(dm.train_dataloader()))["label"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
