"""Lightning Flash's video API on Lightning 2: Flash scripts run with only their imports changed,
and the Flash names (Trainer.finetune/predict, VideoClassificationData, VideoClassifier) behave
as Flash's did."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

# Flash's imports, and what a Flash script changes them to here (nothing else changes).
FLASH_IMPORTS = {
    "import flash\n": "import trainer as flash\n",
    "from flash.core.data.utils import download_data\n": "from trainer import download_data\n",
    "from flash.video import VideoClassificationData, VideoClassifier\n": (
        "from trainer import VideoClassificationData, VideoClassifier\n"
    ),
}

# The calls of Flash's video classification quick start (Flash 0.8, Lightning 1.x), in order.
QUICK_START = """\
import torch

import flash
from flash.core.data.utils import download_data
from flash.video import VideoClassificationData, VideoClassifier

download_data("https://pl-flash-data.s3.amazonaws.com/kinetics.zip", "./data")
datamodule = VideoClassificationData.from_folders(
    train_folder="data/kinetics/train",
    val_folder="data/kinetics/val",
    clip_sampler="uniform",
    clip_duration=1,
    decode_audio=False,
    batch_size=1,
)
model = VideoClassifier(backbone="x3d_xs", labels=datamodule.labels, pretrained=False)
trainer = flash.Trainer(max_epochs=1, gpus=torch.cuda.device_count())
trainer.finetune(model, datamodule=datamodule, strategy="freeze")
datamodule = VideoClassificationData.from_folders(
    predict_folder="data/kinetics/predict", batch_size=1
)
predictions = trainer.predict(model, datamodule=datamodule, output="labels")
print(predictions)
trainer.save_checkpoint("video_classification.pt")
"""

# Flash 0.5's finetuning example: num_classes=, model.predict(folder), three epochs.
FINETUNING = """\
import os

import torch

import flash
from flash.core.data.utils import download_data
from flash.video import VideoClassificationData, VideoClassifier

download_data("https://pl-flash-data.s3.amazonaws.com/kinetics.zip", "./data")
datamodule = VideoClassificationData.from_folders(
    train_folder=os.path.join(os.getcwd(), "data/kinetics/train"),
    val_folder=os.path.join(os.getcwd(), "data/kinetics/val"),
    clip_sampler="uniform",
    clip_duration=1,
    decode_audio=False,
)
model = VideoClassifier(backbone="x3d_xs", num_classes=datamodule.num_classes, pretrained=False)
trainer = flash.Trainer(max_epochs=3, gpus=torch.cuda.device_count())
trainer.finetune(model, datamodule=datamodule, strategy="freeze")
predictions = model.predict(os.path.join(os.getcwd(), "data/kinetics/predict"))
print(predictions)
trainer.save_checkpoint("video_classification.pt")
"""


@pytest.fixture(scope="module")
def kinetics_zip(_motion_master, tmp_path_factory) -> Path:
    """Flash's kinetics.zip layout: kinetics/{train,val}/<label>/*.mp4 and kinetics/predict/."""
    root = tmp_path_factory.mktemp("flash-data")
    top = root / "kinetics"
    for split in ("train", "val"):
        for label in ("left", "right"):
            shutil.copytree(_motion_master / split / label, top / split / label)
    (top / "predict").mkdir()
    for i, video in enumerate(sorted((_motion_master / "val" / "up").glob("*.mp4"))[:2]):
        shutil.copy(video, top / "predict" / f"clip{i}.mp4")
    archive = root / "kinetics.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(top.rglob("*")):
            if f.is_file() and not f.name.startswith("."):
                z.write(f, f.relative_to(root))
    return archive


def run_flash_script(script: str, archive: Path, cwd: Path) -> subprocess.CompletedProcess:
    """``script`` with Flash's imports changed (and the data URL a local file), run in ``cwd``."""
    for flash_line, here in FLASH_IMPORTS.items():
        assert flash_line in script
        script = script.replace(flash_line, here)
    script = script.replace("https://pl-flash-data.s3.amazonaws.com/kinetics.zip", archive.as_uri())
    (cwd / "example.py").write_text(script)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "example.py"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def test_flash_quick_start_runs_with_only_its_imports_changed(kinetics_zip, tmp_path):
    done = run_flash_script(QUICK_START, kinetics_zip, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    # One list of labels per batch (batch_size=1): the two predict videos.
    printed = done.stdout.strip().splitlines()[-1]
    predictions = ast.literal_eval(printed)
    assert len(predictions) == 2 and all(len(b) == 1 for b in predictions)
    assert {label for b in predictions for label in b} <= {"left", "right"}

    from trainer import VideoClassifier

    model = VideoClassifier.load_from_checkpoint(tmp_path / "video_classification.pt")
    assert model.labels == ["left", "right"]
    assert model.hparams.finetune_strategy == "freeze"
    # clip_duration=1 at the data's 15 fps over x3d_xs's 4 frames: every 4th frame (then the
    # nominal rate says 16 fps so a clip spans exactly 1 s), and the checkpoint carries it.
    assert model.video_input.clip_duration == pytest.approx(1.0)
    assert (model.video_input.num_frames, model.video_input.sampling_rate) == (4, 4)
    got = model.predict(tmp_path / "data" / "kinetics" / "predict")
    assert sorted(Path(p).name for p in got) == ["clip0.mp4", "clip1.mp4"]
    assert [got[str(tmp_path / "data/kinetics/predict" / f"clip{i}.mp4")] for i in (0, 1)] == [
        b[0] for b in predictions
    ]


@pytest.mark.slow  # 3 epochs of x3d_xs: 35 s on an idle 2-core machine, 95 s on a busy one
def test_flash_finetuning_example_runs_with_only_its_imports_changed(kinetics_zip, tmp_path):
    done = run_flash_script(FINETUNING, kinetics_zip, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    predictions = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    # model.predict(folder): one result per video, keyed by its path.
    assert isinstance(predictions, dict) and len(predictions) == 2
    assert set(predictions.values()) <= {"0", "1"}  # num_classes= alone: labels "0", "1"
    assert (tmp_path / "video_classification.pt").is_file()


# --- the pieces ---------------------------------------------------------------------------------


def test_flash_names_are_importable_lazily():
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import trainer as flash; flash.__all__"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines()}
    assert "torch" not in imported
    import trainer as flash
    from trainer.flash import Trainer, VideoClassificationData
    from trainer.model import VideoClassifier

    assert flash.Trainer is Trainer and flash.VideoClassificationData is VideoClassificationData
    assert flash.VideoClassifier is VideoClassifier
    with pytest.raises(AttributeError, match="no attribute 'ImageClassifier'"):
        _ = flash.ImageClassifier


def test_available_backbones_and_models():
    from trainer import VideoClassifier
    from trainer.backbones import REGISTRY

    assert VideoClassifier.available_backbones() == sorted(REGISTRY)
    assert VideoClassifier.available_models() == sorted(REGISTRY)
    assert "x3d_xs" in VideoClassifier.available_backbones()


def test_serve_is_out_of_scope_not_an_attribute_error():
    from trainer import VideoClassifier

    model = VideoClassifier("demo_cnn", num_classes=2)
    with pytest.raises(NotImplementedError, match="serving is out of scope"):
        model.serve()


def test_classifier_takes_flash_arguments():
    from trainer import VideoClassifier

    model = VideoClassifier(
        backbone="demo_cnn", num_classes=3, learning_rate=0.01, optimizer="Adam", lr_scheduler=None
    )
    assert model.labels == ["0", "1", "2"] and model.multi_label is False
    hp = model.hparams
    assert (hp.lr, hp.optimizer, hp.lr_scheduler) == (0.01, "adam", "none")
    model = VideoClassifier(backbone="demo_cnn", labels=["a", "b"], optimizer=torch.optim.AdamW)
    assert model.hparams.optimizer == "adamw"
    for kwargs, message in [
        ({"optimizer": "lion"}, "unknown optimizer 'lion'; choose one of: sgd, adam, adamw"),
        ({"lr_scheduler": "onecycle"}, "unknown lr_scheduler 'onecycle'; choose one of"),
        ({"multi_label": True}, "multi_label=True: not supported"),
        ({"num_classes": 3}, "num_classes 3 and 2 labels disagree"),
    ]:
        with pytest.raises(ValueError, match=message):
            VideoClassifier(backbone="demo_cnn", labels=["a", "b"], **kwargs)


def test_custom_head_trains_saves_and_loads(tmp_path, motion_dm, quiet_trainer, tiny_input):
    from torch import nn

    from trainer import VideoClassifier

    def head(in_features: int, num_classes: int) -> nn.Module:
        return nn.Sequential(nn.Linear(in_features, 8), nn.ReLU(), nn.Linear(8, num_classes))

    dm = motion_dm(batch_size=3)
    model = VideoClassifier(
        "demo_cnn", labels=dm.labels, video_input=tiny_input.to_dict(), head=head
    )
    assert isinstance(model.backbone.fc, nn.Sequential)
    trainer = quiet_trainer(max_steps=1)
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    with pytest.raises(ValueError, match="pass the same head= to load_from_checkpoint"):
        VideoClassifier.load_from_checkpoint(tmp_path / "m.ckpt")
    again = VideoClassifier.load_from_checkpoint(tmp_path / "m.ckpt", head=head)
    assert torch.equal(again.backbone.fc[0].weight, model.backbone.fc[0].weight)


def test_trainer_gpus_maps_to_lightning_2(monkeypatch):
    from trainer import Trainer

    t = Trainer(gpus=0, logger=False, enable_checkpointing=False)
    assert t.accelerator.__class__.__name__ == "CPUAccelerator"
    if not torch.cuda.is_available():
        with pytest.warns(UserWarning, match="gpus=2: no GPU here; training on the CPU"):
            t = Trainer(gpus=2, logger=False, enable_checkpointing=False)
        assert t.accelerator.__class__.__name__ == "CPUAccelerator"


def test_finetune_strategies_and_bad_ones(motion_dm, tiny_input):
    from trainer import Trainer, VideoClassifier

    dm = motion_dm(batch_size=3)
    model = VideoClassifier("demo_cnn", labels=dm.labels, video_input=tiny_input.to_dict())
    trainer = Trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        accelerator="cpu",
    )
    trainer.finetune(model, datamodule=dm, strategy=("freeze_unfreeze", 3))
    assert (model.hparams.finetune_strategy, model.hparams.unfreeze_epoch) == (
        "freeze_unfreeze",
        3,
    )
    for bad, message in [
        ("unfreeze_milestones", "unknown finetune strategy 'unfreeze_milestones'; choose one of"),
        (("freeze", 2), r"only freeze_unfreeze takes an epoch"),
        (("freeze_unfreeze", "2"), r"a tuple is \('freeze_unfreeze', EPOCH\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            trainer.finetune(model, datamodule=dm, strategy=bad)


def test_predict_outputs(motion_dm, tiny_input, _motion_master):
    from trainer import Trainer, VideoClassificationData, VideoClassifier

    model = VideoClassifier(
        "demo_cnn", labels=["left", "right", "up"], video_input=tiny_input.to_dict()
    )
    dm = VideoClassificationData.from_folders(predict_folder=_motion_master / "val", batch_size=4)
    assert dm.labels == [] and dm.num_classes == 0  # a predict-only module takes the model's
    trainer = Trainer(logger=False, accelerator="cpu", enable_progress_bar=False)
    labels = trainer.predict(model, datamodule=dm, output="labels")
    assert [len(b) for b in labels] == [4, 4, 1] and dm.labels == model.labels
    probs = trainer.predict(model, datamodule=dm, output="probabilities")
    assert len(probs[0][0]) == 3 and sum(probs[0][0]) == pytest.approx(1.0, abs=1e-5)
    assert [model.labels[max(range(3), key=p.__getitem__)] for p in probs[0]] == labels[0]
    preds = trainer.predict(model, datamodule=dm, output="preds")
    assert isinstance(preds[0], torch.Tensor) and preds[0].shape == (4, 3)
    with pytest.raises(ValueError, match="output 'classes': choose one of labels, probabilities"):
        trainer.predict(model, datamodule=dm, output="classes")


def test_model_and_data_with_other_class_counts_is_one_clear_error(motion_dm, tmp_path):
    from trainer import Trainer, VideoClassifier
    from trainer.data import DataError

    dm = motion_dm()
    model = VideoClassifier("demo_cnn", num_classes=2, video_input=TINY)
    trainer = Trainer(logger=False, enable_checkpointing=False, accelerator="cpu", max_steps=1)
    with pytest.raises(DataError, match=r"the model has 2 classes, the data 3 \(left, right, up\)"):
        trainer.fit(model, datamodule=dm)


TINY = {"num_frames": 8, "sampling_rate": 2, "crop_size": 32, "short_side": 32, "fps": 15}


def test_decode_audio_and_other_data_errors(_motion_master):
    from trainer import VideoClassificationData
    from trainer.data import DataError

    train = _motion_master / "train"
    for kwargs, message in [
        ({"decode_audio": True}, r"decode_audio=True: not supported"),
        ({"clip_sampler": "jitter"}, r"clip_sampler 'jitter': choose one of random, uniform"),
        (
            {"clip_sampler": "uniform", "clip_sampler_kwargs": {"clips_per_video": 2}},
            r"\['clips_per_video'\] are not taken by 'uniform' \(it takes: stride\)",
        ),
        ({"clip_duration": 0}, r"clip_duration=0: must be > 0 seconds"),
    ]:
        with pytest.raises(DataError, match=message):
            VideoClassificationData.from_folders(train_folder=train, **kwargs)
    dm = VideoClassificationData.from_folders(train_folder=train)
    with pytest.raises(DataError, match="video_input: not given, and no model to take it from"):
        dm.train_dataloader()


def test_from_files_and_paths(_motion_master, tiny_input):
    from trainer import VideoClassificationData

    files = sorted((_motion_master / "train").glob("*/*.mp4"))
    targets = [
        0 if f.parent.name == "left" else 1 if f.parent.name == "right" else 2 for f in files
    ]
    dm = VideoClassificationData.from_files(
        train_files=files, train_targets=targets, video_input=tiny_input, batch_size=9
    )
    assert dm.labels == ["0", "1", "2"]  # integer targets are class indices
    batch = next(iter(dm.train_dataloader()))
    assert sorted(batch["label"].tolist()) == sorted(targets)
    dm = VideoClassificationData.from_paths(
        train_data_path=_motion_master / "train", video_input=tiny_input
    )
    assert dm.labels == ["left", "right", "up"]
    assert (dm.num_classes, dm.multi_label) == (3, False)


def test_from_csv_with_flash_column_names(_motion_master, tiny_input, tmp_path):
    from trainer import VideoClassificationData

    files = sorted((_motion_master / "train").glob("*/*.mp4"))
    table = tmp_path / "train.csv"
    table.write_text("clip,action,notes\n" + "".join(f"{f},{f.parent.name},x\n" for f in files))
    dm = VideoClassificationData.from_csv(
        "clip", "action", train_file=table, video_input=tiny_input, batch_size=9
    )
    assert dm.labels == ["left", "right", "up"] and len(dm.items["train"]) == 9
    from trainer.data import DataError

    with pytest.raises(DataError, match=r"no column\(s\) \['label'\]; it has \['clip'"):
        VideoClassificationData.from_csv("clip", "label", train_file=table)


def test_download_data_extracts_as_flash_did(kinetics_zip, tmp_path):
    from trainer import download_data

    download_data(kinetics_zip.as_uri(), tmp_path / "data")
    assert sorted(p.name for p in (tmp_path / "data" / "kinetics").iterdir()) == [
        "predict",
        "train",
        "val",
    ]
    download_data(kinetics_zip.as_uri(), tmp_path / "data")  # once: a rerun does nothing
