"""VideoClassifier on synthetic tensors: steps, video-level metrics, optimisers, schedules and
what a checkpoint carries."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from trainer.backbones import resolve_input
from trainer.model import VideoClassifier, _schedule
from trainer.predict import CheckpointError

LABELS = ["a", "b", "c"]
VI = resolve_input("demo_cnn", num_frames=4, crop_size=16)


def make_model(**kw) -> VideoClassifier:
    return VideoClassifier("demo_cnn", labels=LABELS, video_input=VI.to_dict(), **kw)


class Clips(Dataset):
    """Train items ([C, T, H, W]) or eval items ([N, C, T, H, W]) of noise, labels i % 3."""

    def __init__(self, clips: int | None = None, n: int = 6) -> None:
        self.clips, self.n = clips, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        shape = (3, VI.num_frames, VI.crop_size, VI.crop_size)
        if self.clips is None:
            return {"video": torch.randn(shape), "label": i % 3}
        return {"video": torch.randn(self.clips, *shape), "label": i % 3, "index": i}


@pytest.fixture
def fit(quiet_trainer, tmp_path):
    """Fits a model for one epoch (unless told otherwise) on noise, with noise validation."""

    def run(model, **kw) -> pl.Trainer:
        trainer = quiet_trainer(default_root_dir=tmp_path, **{"max_epochs": 1, **kw})
        trainer.fit(model, DataLoader(Clips(), batch_size=3), DataLoader(Clips(2), batch_size=3))
        return trainer

    return run


def test_logs_the_named_metrics(fit):
    trainer = fit(make_model())
    for name in ("train_loss", "train_acc1", "val_loss", "val_acc1", "val_acc5"):
        assert name in trainer.callback_metrics, name
    assert trainer.callback_metrics["val_acc5"] == 1.0  # 3 classes: always in the top 3


def test_video_probs_average_clip_softmax():
    model = make_model().eval()
    video = torch.randn(2, 3, 3, VI.num_frames, VI.crop_size, VI.crop_size)  # B=2, N=3 clips
    probs = model.video_probs(video)
    with torch.no_grad():
        per_clip = model(video.flatten(0, 1)).softmax(-1).view(2, 3, -1).mean(1)
    assert torch.allclose(probs, per_clip, atol=1e-6)
    assert torch.allclose(probs.sum(-1), torch.ones(2))
    assert model.predict_step({"video": video}, 0).shape == (2, 3)


def test_video_level_accuracy_counts_videos_not_clips():
    model = make_model()
    probs_of = {0: [0.9, 0.05, 0.05], 1: [0.1, 0.8, 0.1]}

    def fake_probs(video):
        return torch.tensor([probs_of[int(i)] for i in video[:, 0, 0, 0, 0, 0]])

    model.video_probs = fake_probs
    video = torch.zeros(2, 4, 3, 4, 16, 16)
    video[1] = 1
    model.log = lambda *a, **k: None
    model._eval_step({"video": video, "label": torch.tensor([0, 2])}, "val")
    assert model.val_acc1.compute() == 0.5


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_optimizers(fit, optimizer):
    trainer = fit(make_model(optimizer=optimizer, lr=0.01), max_steps=1)
    opt = trainer.optimizers[0]
    assert type(opt).__name__.lower() == optimizer
    assert opt.param_groups[0]["weight_decay"] == 5e-5


def test_schedules():
    cosine = _schedule("cosine", warmup=2, total=12)
    assert [cosine(0), cosine(1)] == [0.5, 1.0]  # linear warmup
    assert cosine(2) == pytest.approx(1.0) and cosine(7) == pytest.approx(0.5)
    assert cosine(12) == pytest.approx(0.0)
    step = _schedule("step", warmup=0, total=100)
    assert [step(10), step(60), step(90)] == [1.0, pytest.approx(0.1), pytest.approx(0.01)]
    assert _schedule("none", warmup=0, total=10)(5) == 1.0


def test_cosine_schedule_runs_per_step(fit):
    trainer = fit(make_model(lr=0.1), max_epochs=2)  # 2 batches per epoch
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'"),
        ({"lr_scheduler": "linear"}, "unknown lr_scheduler 'linear'"),
        ({"finetune_strategy": "half"}, "unknown finetune strategy 'half'"),
        ({"labels": []}, "need at least one class"),
        ({"labels": ["a", "a"]}, "labels must be unique"),
        ({"backbone": "nope"}, "unknown backbone 'nope'"),
    ],
)
def test_bad_arguments(kw, message):
    args = {"backbone": "demo_cnn", "labels": LABELS, **kw}
    with pytest.raises(ValueError, match=message):
        VideoClassifier(**args)


def test_checkpoint_carries_labels_and_preprocessing(fit, tmp_path):
    weights = tmp_path / "w.pth"
    torch.save(make_model().backbone.state_dict(), weights)
    model = make_model(weights=str(weights))
    trainer = fit(model, max_steps=1)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    weights.unlink()  # loading must not need the original weights file
    loaded = VideoClassifier.load_from_checkpoint(path)
    assert loaded.labels == LABELS
    assert loaded.video_input == VI
    assert loaded.hparams.weights == str(weights)  # recorded, not reloaded
    assert not loaded.hparams.load_weights
    assert next(loaded.parameters()).device.type == "cpu"
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k


def test_load_from_checkpoint_rejects_other_files(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_text("hello")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        VideoClassifier.load_from_checkpoint(bad)


def test_model_summary_reports_flops_per_clip():
    from pytorch_lightning.utilities.model_summary import ModelSummary

    model = make_model()
    (clip,) = model.example_input_array  # one clip of the checkpointed input
    assert clip.shape == (1, 3, VI.num_frames, VI.crop_size, VI.crop_size)
    summary = ModelSummary(model, max_depth=1)
    assert summary.total_flops > 0  # not the "Total FLOPs: 0" Lightning prints without it
    assert summary.in_sizes[0] == [1, 3, VI.num_frames, VI.crop_size, VI.crop_size]
