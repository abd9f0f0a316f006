"""trainer/train.py as the launcher runs it: flags, defaults from the launcher's variables,
one-line errors, outputs, resume, SIGTERM, DDP on CPU, and a real training run."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainer.train import parse_args

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "trainer" / "train.py"
# demo_cnn on the conftest's 32x32, 16-frame motion videos: 8 frames every 2 at 15 fps.
TINY = ["--backbone", "demo_cnn", "--crop_size", "32", "--num_frames", "8", "--sampling_rate", "4"]
TINY += ["--batch_size", "3", "--num_workers", "0", "--no_hflip", "--clips_per_video", "2"]


def run_script(*args: str, cwd: Path = REPO, timeout: int = 300, **env: str):
    environ = {**os.environ, **env}
    for var in ("LAUNCH_DATASTORE_DIR", "LAUNCH_ARTIFACTS_DIR"):
        if var not in env:
            environ.pop(var, None)
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environ,
    )


def metrics(out: Path) -> list[dict]:
    with (out / "metrics.csv").open() as fh:
        return list(csv.DictReader(fh))


# --- flags ------------------------------------------------------------------------------------


def test_help_from_repo_root_imports_no_torch():
    done = run_script("-X", "importtime", "trainer/train.py", "--help")
    assert done.returncode == 0, done.stderr
    assert "--kinetics_annotations" in done.stdout and "--finetune_strategy" in done.stdout
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines()}
    assert "torch" not in imported
    help_text = " ".join(done.stdout.split())
    # Defaults are shown where they say something, once, and never for switches.
    assert "--lr LR peak learning rate (default: 0.1)" in help_text
    # Every spelling of a flag in one entry, the value's name once.
    assert "--batch_size, --batch-size, -b BATCH_SIZE videos per batch, per device" in help_text
    assert "--max_epochs, --max-epochs, --epochs MAX_EPOCHS" in help_text
    assert help_text.count("--batch-size") == 1
    assert "(default: None)" not in help_text and "(default: False)" not in help_text
    assert done.stdout.startswith("usage: train.py [--data_dir DIR | --train_folder DIR")


def test_help_from_unpacked_copy_uses_that_copy(tmp_path):
    # A code snapshot unpacked elsewhere, with the original repo importable (as if installed):
    # the copy next to the script must win.
    copy = tmp_path / "snapshot"
    shutil.copytree(REPO / "trainer", copy / "trainer", ignore=shutil.ignore_patterns("__py*"))
    cli = copy / "trainer" / "cli_args.py"
    cli.write_text(cli.read_text().replace("Train a video classifier", "SNAPSHOT COPY"))
    done = run_script(
        str(copy / "trainer" / "train.py"), "--help", cwd=tmp_path, PYTHONPATH=str(REPO)
    )
    assert done.returncode == 0, done.stderr
    assert "SNAPSHOT COPY" in done.stdout


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--backbone", "resnet9000"], r"invalid choice: 'resnet9000' \(choose from .*x3d_xs"),
        (["--backbone", "mvit_base_16x4", "--num_frames", "8"], "takes exactly 16 frames"),
        (["--backbone", "slowfast_r50", "--num_frames", "30"], "--num_frames 30: .*multiple of 4"),
        (["--crop_size", "200", "--short_side", "100"], "--short_side 100: must be >= crop"),
        (["--train_folder", "/nowhere/train"], "--train_folder /nowhere/train: no such folder"),
        (["--val_folder", "/nowhere/val"], "--val_folder /nowhere/val: no such folder"),
        (["--train_csv", "/nowhere.csv"], "--train_csv /nowhere.csv: no such file"),
        (["--weights", "/nowhere.pth"], "--weights /nowhere.pth: no such file"),
        (["--pretrained", "--weights", "x"], "--pretrained and --weights both given"),
        (["--finetune_strategy", "freeze"], "freezes a randomly initialised backbone"),
        (["--optimizer", "lion"], "invalid choice: 'lion'"),
        (["--lr", "0"], "--lr 0.0: must be > 0"),
        (["--batch_size", "0"], "--batch_size 0: must be >= 1"),
        (["--gpus", "-1"], "--gpus -1: must be >= 0"),
        (["--devices", "two"], "--devices two: a count"),
        (
            ["--precision", "fp8"],
            r"--precision: invalid choice: 'fp8' \(choose from '32-true', '16-mixed'",
        ),
    ],
)
def test_bad_flags_are_one_line_errors(flags, message, motion_dataset, capsys):
    base = (
        []
        if any(f.endswith(("_folder", "_csv")) for f in flags)
        else ["--train_folder", str(motion_dataset / "train")]
    )
    with pytest.raises(SystemExit) as e:
        parse_args(base + flags)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("train.py: error: ")
    import re

    assert re.search(message, err), err


def test_no_training_data(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("LAUNCH_DATASTORE_DIR", raising=False)
    with pytest.raises(SystemExit):
        parse_args([])
    assert "no training data" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--data_dir", str(tmp_path / "nope")])
    assert f"--data_dir {tmp_path / 'nope'}: no such folder" in capsys.readouterr().err


def test_kinetics_split_from_file_name(tmp_path, capsys):
    for name in ("train.csv", "validate.csv", "other.csv"):
        (tmp_path / name).write_text("label,youtube_id,time_start,time_end,split\n")
    args = parse_args(
        [
            "--kinetics_annotations",
            str(tmp_path / "train.csv"),
            str(tmp_path / "validate.csv"),
            "--video_root",
            str(tmp_path),
        ]
    )
    assert args.kinetics_splits == {
        "train": str(tmp_path / "train.csv"),
        "val": str(tmp_path / "validate.csv"),
    }
    with pytest.raises(SystemExit):
        parse_args(["--kinetics_annotations", str(tmp_path / "other.csv"), "--video_root", "."])
    assert "cannot tell its split" in capsys.readouterr().err


def test_data_dir_fills_the_splits_not_given(motion_dataset, tmp_path, monkeypatch):
    monkeypatch.delenv("LAUNCH_DATASTORE_DIR", raising=False)
    other = tmp_path / "holdout"
    shutil.copytree(motion_dataset / "val", other)
    args = parse_args(["--data_dir", str(motion_dataset), "--test_folder", str(other)])
    assert args.train_folder == str(motion_dataset / "train")
    assert args.val_folder == str(motion_dataset / "val")
    assert args.test_folder == str(other)


def test_warnings_are_one_line(motion_dataset, tmp_path, capsys):
    from trainer.train import main

    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(motion_dataset / "train" / "up" / "0.mp4", flat)
    gpus = [] if __import__("torch").cuda.is_available() else ["--gpus", "1"]
    flags = ["--train_folder", str(flat), *TINY, *gpus, "--output_dir", str(tmp_path / "o")]
    assert main(flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    if gpus:
        assert err.pop(0) == "warning: --gpus 1: no GPU here; training on the CPU"
    assert err == [
        f"warning: {flat}: skipped 1 of 1 files (1 not inside a class folder); see .skipped "
        "for the list",
        f"error: no videos in {flat} (expected class-per-folder layout: {flat}/<label>/"
        "<video>.mp4)",
    ]


def test_launcher_variables_are_defaults(motion_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("LAUNCH_DATASTORE_DIR", str(motion_dataset))
    monkeypatch.setenv("LAUNCH_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    args = parse_args([])
    assert args.train_folder == str(motion_dataset / "train")
    assert args.val_folder == str(motion_dataset / "val")
    assert args.test_folder is None
    assert args.output_dir == str(tmp_path / "artifacts")
    monkeypatch.delenv("LAUNCH_ARTIFACTS_DIR")
    assert parse_args([]).output_dir == "outputs"


def test_gpus_flag_maps_to_accelerator(motion_dataset):
    base = ["--train_folder", str(motion_dataset / "train")]
    args = parse_args(base + ["--gpus", "0"])
    assert (args.accelerator, args.devices) == ("cpu", 1)
    if not __import__("torch").cuda.is_available():
        with pytest.warns(UserWarning, match="--gpus 2: no GPU here; training on the CPU"):
            args = parse_args(base + ["--gpus", "2"])
        assert (args.accelerator, args.devices) == ("cpu", 1)
    args = parse_args(base + ["--accelerator", "cpu", "--devices", "2"])
    assert (args.accelerator, args.devices) == ("cpu", 2)


def test_missing_labels_data_is_a_clear_error(tmp_path):
    empty = tmp_path / "train"
    empty.mkdir()
    done = run_script(
        str(SCRIPT), "--train_folder", str(empty), *TINY, "--output_dir", str(tmp_path / "out")
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: ")


def test_download_archive_then_train(motion_dataset, tmp_path, capsys):
    import tarfile

    from trainer.train import main

    archive = tmp_path / "motion.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(motion_dataset, arcname="motion")
    dest = tmp_path / "data"
    url = archive.as_uri()
    flags = ["--download", url, "--data_dir", str(dest), *TINY, "--fast_dev_run"]
    assert main([*flags, "--output_dir", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (dest / "train").iterdir() if p.is_dir()) == [
        "left",
        "right",
        "up",
    ]
    assert "fast_dev_run finished" in capsys.readouterr().out

    bad = tmp_path / "bad.tar.gz"
    bad.write_text("not an archive")
    flags[1] = bad.as_uri()
    flags[3] = str(tmp_path / "data2")
    assert main([*flags, "--output_dir", str(tmp_path / "out2")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_kinetics_annotations_source(tmp_path, capsys):
    import shutil as sh

    from trainer.sample_data import make_kinetics_like
    from trainer.train import main

    videos = tmp_path / "videos"
    csv_path = make_kinetics_like(
        videos, 4, ["abseiling", "archery"], seconds=1, size=(48, 32), fps=15
    )
    sh.copy(csv_path, tmp_path / "train.csv")
    sh.copy(csv_path, tmp_path / "validate.csv")
    flags = ["--kinetics_annotations", str(tmp_path / "train.csv"), str(tmp_path / "validate.csv")]
    flags += ["--video_root", str(videos), *TINY, "--fast_dev_run"]
    assert main([*flags, "--output_dir", str(tmp_path / "out")]) == 0
    assert "fast_dev_run finished" in capsys.readouterr().out
    assert (tmp_path / "out" / "labels.txt").read_text().split() == ["abseiling", "archery"]


def test_csv_source_and_bad_csv(motion_dataset, tmp_path, capsys):
    from trainer.train import main

    rows = [
        f"{p.relative_to(motion_dataset)},{p.parent.name}"
        for p in sorted((motion_dataset / "train").glob("*/*.mp4"))
    ]
    (motion_dataset / "train.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    flags = ["--train_csv", str(motion_dataset / "train.csv"), *TINY, "--fast_dev_run"]
    assert main([*flags, "--output_dir", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "labels.txt").read_text().split() == ["left", "right", "up"]

    (tmp_path / "bad.csv").write_text("a.mp4,left,extra\n")
    assert (
        main(
            [
                "--train_csv",
                str(tmp_path / "bad.csv"),
                *TINY,
                "--output_dir",
                str(tmp_path / "out2"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "expected 'path,label'" in err


def test_pretrained_x3d_with_frozen_backbone(motion_dataset, tmp_path, monkeypatch, capsys):
    """--pretrained reads the published file from the hub cache; freeze trains the head only."""
    import torch

    from trainer.backbones import build_backbone
    from trainer.train import main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    published = build_backbone("x3d_xs", 400)
    torch.save({"model_state": published.state_dict()}, cache / "X3D_XS.pyth")
    out = tmp_path / "out"
    flags = ["--train_folder", str(motion_dataset / "train"), "--backbone", "x3d_xs"]
    flags += ["--crop_size", "64", "--batch_size", "3", "--num_workers", "0", "--no_hflip"]
    flags += ["--pretrained", "--finetune_strategy", "freeze", "--max_steps", "2"]
    assert main([*flags, "--output_dir", str(out)]) == 0
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    state = ckpt["state_dict"]
    key = "blocks.1.res_blocks.0.branch2.conv_b.weight"
    assert torch.equal(state[f"backbone.{key}"], published.state_dict()[key])  # frozen
    assert state["backbone.blocks.5.proj.weight"].shape == (3, 2048)
    assert ckpt["hyper_parameters"]["pretrained"] is True
    assert "best train_loss=" in capsys.readouterr().out


def test_precision_choices_are_lightnings():
    from typing import get_args

    from lightning_fabric.connector import _PRECISION_INPUT_STR, _PRECISION_INPUT_STR_ALIAS

    from trainer.cli_args import PRECISIONS

    assert set(PRECISIONS) == set(
        get_args(_PRECISION_INPUT_STR) + get_args(_PRECISION_INPUT_STR_ALIAS)
    )


def test_bf16_mixed_fast_dev_run_on_cpu(motion_dataset, tmp_path, capsys, caplog):
    from trainer.train import main

    flags = ["--train_folder", str(motion_dataset / "train"), *TINY, "--precision", "bf16-mixed"]
    assert main([*flags, "--fast_dev_run", "--output_dir", str(tmp_path / "out")]) == 0
    assert "fast_dev_run finished" in capsys.readouterr().out
    assert "bfloat16 Automatic Mixed Precision" in caplog.text


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--strategy", "ddp_typo"], "--strategy ddp_typo: You selected an invalid strategy"),
        (["--accelerator", "tpu"], "--accelerator tpu --devices auto: .*torch_xla"),
    ],
)
def test_hardware_flags_lightning_rejects_are_one_line_errors(
    flags, message, motion_dataset, tmp_path, capsys
):
    from trainer.train import main

    base = ["--train_folder", str(motion_dataset / "train"), *TINY, "--fast_dev_run"]
    assert main([*base, *flags, "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    import re

    assert len(err) == 1 and err[0].startswith("error: ") and re.search(message, err[0]), err
    assert not (tmp_path / "out" / "checkpoints").exists()  # stopped before training


# --- runs -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_resume_continues_from_last_epoch(motion_dataset, tmp_path):
    out = tmp_path / "out"
    data = [
        "--train_folder",
        str(motion_dataset / "train"),
        "--val_folder",
        str(motion_dataset / "val"),
        *TINY,
        "--output_dir",
        str(out),
    ]
    first = run_script(
        str(SCRIPT), *data, "--max_epochs", "1", "--test_folder", str(motion_dataset / "val")
    )
    assert first.returncode == 0, first.stderr
    assert metrics(out)[-1]["test_acc1"]  # the best checkpoint was tested
    for name in (
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "labels.txt",
        "args.json",
        "hparams.yaml",
        "metrics.csv",
    ):
        assert (out / name).is_file(), name
    assert (out / "labels.txt").read_text().split() == ["left", "right", "up"]
    assert "best val_acc1=" in first.stdout.strip().splitlines()[-1]
    # A log, not a terminal: one line per epoch, and none of Lightning's noise.
    assert "epoch 0/0: train_loss=" in first.stdout and " val_acc1=" in first.stdout
    for noise in ("LeafSpec", "litlogger", "logging interval", "Total length of"):
        assert noise not in first.stdout + first.stderr, noise
    # One copy of each: nothing for `launch artifacts pull` to bring twice.
    assert [p.name for p in out.rglob("*.csv")] == ["metrics.csv"]
    assert [p.name for p in out.rglob("*.yaml")] == ["hparams.yaml"]

    second = run_script(str(SCRIPT), *data, "--max_epochs", "2")
    assert second.returncode == 0, second.stderr
    assert f"resuming from {out / 'checkpoints' / 'last.ckpt'}" in second.stdout
    assert "exists and is not empty" not in second.stderr  # resuming is the point
    rows = [r for r in metrics(out) if r["val_acc1"]]
    assert [r["epoch"] for r in rows] == ["0", "1"]  # epoch 1 trained, epoch 0 not redone
    assert all(r["train_loss"] for r in rows)
    assert any(r["test_acc1"] for r in metrics(out))  # the first attempt's history is kept
    assert [p.name for p in out.rglob("*.csv")] == ["metrics.csv"]
    import torch

    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    # Two epochs done (Lightning counts finished epochs), 9 videos / batch 3 steps each.
    assert (last["epoch"], last["global_step"]) == (2, 6)


@pytest.mark.slow
def test_sigterm_saves_last_and_rerun_resumes(motion_dataset, tmp_path):
    out = tmp_path / "out"
    data = [
        str(SCRIPT),
        "--train_folder",
        str(motion_dataset / "train"),
        *TINY,
        "--batch_size",
        "1",
        "--output_dir",
        str(out),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAUNCH_")}
    proc = subprocess.Popen(
        [sys.executable, *data, "--max_epochs", "100"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (out / "checkpoints" / "last.ckpt").is_file() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # what the launcher does on a spot interruption
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert "stopped by SIGTERM" in stderr
    import torch

    stopped = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert stopped["epoch"] >= 1

    again = run_script(*data, "--max_epochs", str(stopped["epoch"] + 1))
    assert again.returncode == 0, again.stderr
    assert "resuming from" in again.stdout
    final = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    # The interrupted epoch is finished, not restarted from epoch 0.
    assert final["global_step"] == 9 * (stopped["epoch"] + 1)  # 9 videos, batch 1
    assert {r["epoch"] for r in metrics(out)} >= {"0", str(stopped["epoch"])}


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(motion_dataset, tmp_path):
    """The 9 test videos are split 5 + 4 between the 2 processes, none counted twice, so
    test_acc1 equals the best checkpoint's accuracy computed in one process."""
    out = tmp_path / "out"
    val = motion_dataset / "val"
    done = run_script(
        str(SCRIPT),
        "--train_folder",
        str(motion_dataset / "train"),
        "--val_folder",
        str(val),
        "--test_folder",
        str(val),
        *TINY,
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        "--max_epochs",
        "1",
        "--output_dir",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert "Starting with 2 processes" in done.stderr + done.stdout
    assert (out / "checkpoints" / "best.ckpt").is_file()
    assert metrics(out)[0]["val_acc1"]

    from trainer import VideoClassifier

    model = VideoClassifier.load_from_checkpoint(out / "checkpoints" / "best.ckpt")
    videos = sorted(val.glob("*/*.mp4"))
    predicted = model.predict(videos, batch_size=3)
    right = sum(p == v.parent.name for p, v in zip(predicted, videos, strict=True))
    assert float(metrics(out)[-1]["test_acc1"]) == pytest.approx(right / len(videos))


@pytest.mark.slow
def test_fast_dev_run(motion_dataset, tmp_path):
    done = run_script(
        str(SCRIPT),
        "--train_folder",
        str(motion_dataset / "train"),
        *TINY,
        "--fast_dev_run",
        "--output_dir",
        str(tmp_path / "out"),
    )
    assert done.returncode == 0, done.stderr
    assert "fast_dev_run finished" in done.stdout


@pytest.mark.slow
def test_trains_to_high_accuracy_and_predicts(tmp_path, lightning_predict):
    """Classes differ only by motion direction: 90% means the model learned motion."""
    from trainer.sample_data import make_motion_dataset

    data = make_motion_dataset(tmp_path / "data", videos_per_class=12)
    out = tmp_path / "out"
    started = time.time()
    done = run_script(
        str(SCRIPT),
        "--data_dir",
        str(data),
        "--backbone",
        "demo_cnn",
        "--no_hflip",
        "--optimizer",
        "adamw",
        "--lr",
        "0.003",
        "--batch_size",
        "4",
        "--max_epochs",
        "5",
        "--clips_per_video",
        "2",
        "--num_workers",
        "0",
        "--predict_folder",
        str(data / "val"),
        "--output_dir",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    print(f"trained in {time.time() - started:.0f}s: {done.stdout.strip().splitlines()[-1]}")
    best = max(float(r["val_acc1"]) for r in metrics(out) if r["val_acc1"])
    assert best >= 0.9

    from trainer import VideoClassifier

    model = VideoClassifier.load_from_checkpoint(out / "checkpoints" / "best.ckpt")
    videos = sorted((data / "val").glob("*/*.mp4"))
    predicted = model.predict(videos)
    truth = [v.parent.name for v in videos]
    agree = sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(videos)
    assert agree >= 0.9

    probs = lightning_predict(model, data / "val")
    assert [model.labels[i] for i in probs.argmax(1)] == predicted
    with (out / "predictions.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["label"] for r in rows] == predicted


# --- torchvision-reference spellings, and the flags they bring ----------------------------------


def test_hyphenated_and_torchvision_spellings(motion_dataset, tmp_path, monkeypatch):
    monkeypatch.delenv("LAUNCH_DATASTORE_DIR", raising=False)
    args = parse_args(
        ["--data-path", str(motion_dataset), "--batch-size", "3", "--epochs", "2"]
        + ["--workers", "0", "--output-dir", str(tmp_path), "--clip-len", "8", "--frame-rate", "15"]
        + ["--lr-warmup-epochs", "0.5", "--model", "demo_cnn", "--train-clips-per-video", "2"]
        + ["--crop-size", "32", "--no-resume", "--fast-dev-run"]
    )
    assert args.train_folder == str(motion_dataset / "train")
    assert (args.batch_size, args.max_epochs, args.num_workers) == (3, 2, 0)
    assert (args.output_dir, args.backbone, args.warmup_epochs) == (str(tmp_path), "demo_cnn", 0.5)
    assert (args.video_input.num_frames, args.video_input.fps) == (8, 15.0)
    assert (args.train_clips_per_video, args.no_resume, args.fast_dev_run) == (2, True, 1)
    assert parse_args(["--data-path", str(motion_dataset), "-b", "5", "-j", "1"]).batch_size == 5


def test_amp_means_mixed_precision(motion_dataset, capsys):
    base = ["--train_folder", str(motion_dataset / "train"), "--accelerator", "cpu"]
    assert parse_args([*base, "--amp"]).precision == "bf16-mixed"  # what the CPU can mix
    with pytest.raises(SystemExit):
        parse_args([*base, "--amp", "--precision", "32-true"])
    assert "--amp and --precision 32-true both given" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--clips-per-video", "5"], "--clips-per-video: in torchvision's reference"),
        (["--max_steps", "0"], "--max_steps 0: must be >= 1, or -1 for no limit"),
        (["--max-epochs", "0"], "--max_epochs 0: must be >= 1, or -1 for no limit"),
        (["--resume", "/nowhere/last.ckpt"], "--resume /nowhere/last.ckpt: no such checkpoint"),
        (["--weights", "R3D_18_Weights.KINETICS400_V1"], r"no such file \(published weights:"),
        (["--frame-rate", "0"], "--frame_rate 0.0: must be > 0"),
    ],
)
def test_torchvision_habits_are_one_line_errors(flags, message, motion_dataset, capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(["--train_folder", str(motion_dataset / "train"), *flags])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    import re

    assert err[-1].startswith("train.py: error: ") and re.search(message, err[-1]), err


def test_help_lists_each_flag_once():
    from trainer.cli_args import build_parser

    text = build_parser().format_help()
    for flag in ("--batch_size", "--data-path", "--epochs", "--workers", "--output-dir"):
        assert text.count(f"{flag}") >= 1, flag
    entries = [line.split()[0] for line in text.splitlines() if line.startswith("  --")]
    assert len(entries) == len(set(entries))
    assert "--clips-per-video" not in text  # refused with its reason, not offered


# --- one-line errors that were tracebacks --------------------------------------------------------


def test_weights_that_do_not_fit_and_failed_download_are_one_line(
    motion_dataset, tmp_path, capsys, monkeypatch
):
    import torch

    from trainer.backbones import REGISTRY
    from trainer.train import main

    base = ["--train_folder", str(motion_dataset / "train"), *TINY, "--max_steps", "1"]
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, other)
    assert main([*base, "--weights", str(other), "--output_dir", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --weights {other} does not fit"), err

    def offline():
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>\nmore")

    import dataclasses

    monkeypatch.setitem(
        REGISTRY, "x3d_xs", dataclasses.replace(REGISTRY["x3d_xs"], fetch_pretrained=offline)
    )
    flags = ["--train_folder", str(motion_dataset / "train"), "--backbone", "x3d_xs"]
    flags += ["--pretrained", "--crop_size", "32", "--max_steps", "1", "--num_workers", "0"]
    assert main([*flags, "--output_dir", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: could not fetch pretrained x3d_xs"), err
    assert "Temporary failure in name resolution" in err[0] and "--weights PATH" in err[0]


def test_best_ckpt_of_an_earlier_run_as_weights(motion_dataset, tmp_path, capsys):
    """Finetune from an earlier run: its best.ckpt is a --weights file (another backbone's is a
    one-line error naming it)."""
    import torch

    from trainer.train import main

    data = ["--train_folder", str(motion_dataset / "train"), *TINY, "--max_steps", "2"]
    first = tmp_path / "first"
    assert main([*data, "--output_dir", str(first)]) == 0
    best = first / "checkpoints" / "best.ckpt"
    second = tmp_path / "second"
    flags = [*data, "--weights", str(best), "--finetune_strategy", "freeze", "--lr", "0.01"]
    assert main([*flags, "--output_dir", str(second)]) == 0
    old = torch.load(best, weights_only=True)["state_dict"]
    new = torch.load(second / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    key = "backbone.features.0.0.weight"
    assert torch.equal(old[key], new[key])  # loaded, then frozen
    assert not torch.equal(old["backbone.fc.weight"], new["backbone.fc.weight"])  # head trained
    capsys.readouterr()
    assert (
        main(
            [
                *data,
                "--backbone",
                "r3d_18",
                "--weights",
                str(best),
                "--output_dir",
                str(tmp_path / "c"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: --weights {best}: a checkpoint of backbone demo_cnn, not r3d_18; "
        "pass --backbone demo_cnn"
    ]


def test_fast_dev_run_then_a_real_run_in_the_same_output_dir(motion_dataset, tmp_path, capsys):
    """A smoke run leaves no checkpoint the next run would resume from (Lightning 2.6 wrote a
    last.ckpt, and the rerun "resumed" 0 steps, then crashed on float(None))."""
    from trainer.train import main

    out = tmp_path / "out"
    data = ["--train_folder", str(motion_dataset / "train"), *TINY, "--output_dir", str(out)]
    assert main([*data, "--fast_dev_run"]) == 0
    assert not (out / "checkpoints").exists()
    assert main([*data, "--max_epochs", "1"]) == 0
    text = capsys.readouterr().out
    assert "resuming from" not in text and "best train_loss=" in text
    # A rerun with nothing left to train says so instead of crashing.
    assert main([*data, "--max_epochs", "1"]) == 0
    assert "nothing trained: " in capsys.readouterr().out


def test_test_only_evaluates_a_checkpoint_and_resume_path(motion_dataset, tmp_path, capsys):
    from trainer.train import main

    out = tmp_path / "out"
    data = ["--train_folder", str(motion_dataset / "train"), "--val_folder"]
    data += [str(motion_dataset / "val"), *TINY, "--max_epochs", "1"]
    assert main([*data, "--output_dir", str(out)]) == 0
    capsys.readouterr()
    for flags in (
        ["--test-only"],
        ["--eval_only", "--weights", str(out / "checkpoints/best.ckpt")],
    ):
        assert main([*data, *flags, "--output_dir", str(out)]) == 0
        line = capsys.readouterr().out.strip().splitlines()[-1]
        assert line.startswith("val_acc1=") and " val_acc5=" in line, line
    assert main([*data, "--test-only", "--output_dir", str(tmp_path / "empty")]) == 2
    assert "error: --test_only: give --weights PATH" in capsys.readouterr().err
    # --resume PATH: continue another output dir's run here.
    again = tmp_path / "again"
    flags = [*data[:-1], "2", "--resume", str(out / "checkpoints/last.ckpt")]
    assert main([*flags, "--output_dir", str(again)]) == 0
    assert f"resuming from {out / 'checkpoints' / 'last.ckpt'}" in capsys.readouterr().out
    assert [r["epoch"] for r in metrics(again) if r["val_acc1"]] == ["1"]


def test_tensorboard_events_and_lr_per_parameter_group(motion_dataset, tmp_path):
    """TensorBoard beside metrics.csv; LearningRateMonitor's rate of each parameter group (the
    backbone's joins at unfreeze_epoch 1) instead of a hand-logged average of the first."""
    import torch

    from trainer.backbones import build_backbone
    from trainer.train import main

    weights = tmp_path / "w.pth"
    torch.save(build_backbone("demo_cnn", 3).state_dict(), weights)
    out = tmp_path / "out"
    flags = ["--train_folder", str(motion_dataset / "train"), *TINY, "--max_epochs", "2"]
    flags += ["--weights", str(weights), "--finetune_strategy", "freeze_unfreeze"]
    flags += ["--lr_scheduler", "none", "--lr", "0.02", "--output_dir", str(out)]
    assert main(flags) == 0
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    assert {"train_loss", "lr-SGD/pg1", "lr-SGD/pg2"} <= set(acc.Tags()["scalars"])
    rows = metrics(out)
    assert len(rows) == 2  # one row per epoch, the rates beside the losses
    # Lightning's names: lr-SGD while there is one group, then lr-SGD/pg1 and lr-SGD/pg2.
    assert rows[0]["lr-SGD"] == "0.02" and rows[0]["lr-SGD/pg2"] == ""
    assert rows[1]["lr-SGD/pg1"] == "0.02"
    assert float(rows[1]["lr-SGD/pg2"]) == pytest.approx(0.002)  # the backbone's: head's / 10
    assert "lr" not in rows[0] and rows[1]["train_loss"]
    assert [p.name for p in out.rglob("*.yaml")] == ["hparams.yaml"]  # still one copy


def test_torchrun_two_processes_train_one_model(motion_dataset, tmp_path):
    """torchrun --nproc_per_node=2: one DDP group of 2 (not 2 separate models writing the same
    output dir), one "best" line."""
    out = tmp_path / "out"
    torchrun = Path(sys.executable).parent / "torchrun"
    done = subprocess.run(
        [str(torchrun), "--nproc_per_node=2", "--master_port=29517", str(SCRIPT)]
        + ["--train_folder", str(motion_dataset / "train"), "--val_folder"]
        + [str(motion_dataset / "val"), *TINY, "--max_epochs", "1", "--output_dir", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={k: v for k, v in os.environ.items() if not k.startswith("LAUNCH_")},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = done.stdout + done.stderr
    assert "MEMBER: 1/2" in text and "MEMBER: 2/2" in text  # one group, ranks 0 and 1
    assert len([line for line in done.stdout.splitlines() if line.startswith("best ")]) == 1
    import torch

    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 2  # 9 videos over 2 processes, batch 3: 2 steps each
