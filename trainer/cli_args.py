"""train.py's flags: the parser and the checks that turn bad flags into one-line errors.

Everything here runs before torch is imported, so ``train.py --help`` and flag errors are fast.
The launcher's variables are defaults: ``LAUNCH_DATASTORE_DIR`` for ``--data_dir``,
``LAUNCH_ARTIFACTS_DIR`` for ``--output_dir``, and (resolved in ``hardware.py``)
``LAUNCH_NUM_NODES`` for ``--num_nodes`` and ``LAUNCH_GPUS_PER_NODE`` for the devices.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

# The choices of --optimizer, --lr_scheduler and --finetune_strategy, defined here (torch-free)
# for the parser and imported by the model and the finetuning callback that check them again.
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("cosine", "step", "none")
STRATEGIES = ("no_freeze", "freeze", "freeze_unfreeze")
SPLIT_WORDS = {"train": "train", "val": "val", "validate": "val", "test": "test"}
# torchvision's video reference spells some flags its own way: those spellings work here too
# (every flag also takes its hyphenated spelling, --batch-size for --batch_size).
TORCHVISION_SPELLINGS = {
    "--data_dir": ("--data-path",),
    "--max_epochs": ("--epochs",),
    "--num_workers": ("--workers", "-j"),
    "--batch_size": ("-b",),
    "--sync_batchnorm": ("--sync-bn",),
    "--num_frames": ("--clip-len",),
    "--warmup_epochs": ("--lr-warmup-epochs",),
    "--backbone": ("--model",),
    "--test_only": ("--eval_only", "--eval-only"),
}
# Spellings that mean something else in torchvision's reference: an error saying so, rather
# than quietly taking them with this script's meaning.
MISLEADING = {
    "--clips-per-video": "in torchvision's reference --clips-per-video is training clips per "
    "video; here --train_clips_per_video N takes N random clips per video per epoch and "
    "--clips_per_video N averages N clips per video at evaluation: use one of those",
}
# Lightning's precision values (lightning_fabric.connector._PRECISION_INPUT), listed here so a
# typo is caught before torch is imported; a test keeps the two lists equal.
PRECISIONS = (
    "32-true",
    "16-mixed",
    "bf16-mixed",
    "16-true",
    "bf16-true",
    "64-true",
    "transformer-engine",
    "transformer-engine-float16",
    "32",
    "16",
    "bf16",
    "64",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train.py",
        usage="%(prog)s [--data_dir DIR | --train_folder DIR | --train_csv CSV | "
        "--kinetics_annotations CSV...] [options]",
        description="Train a video classifier on Kinetics-format data with PyTorch Lightning.",
        formatter_class=_HelpFormatter,
    )
    d = p.add_argument_group("data (one source: folders, CSVs or Kinetics annotations)")
    d.add_argument(
        "--data_dir",
        default=None,
        help="data root; its train/, val/ and test/ folders are the default splits "
        "(default: $LAUNCH_DATASTORE_DIR)",
    )
    d.add_argument("--train_folder", help="folder of CLASS/VIDEO files")
    d.add_argument(
        "--val_folder", help="validated every epoch; best.ckpt is the epoch with the best val_acc1"
    )
    d.add_argument("--test_folder", help="tested with best.ckpt after training")
    d.add_argument("--predict_folder", help="videos to classify with the best model after training")
    d.add_argument("--train_csv", help="CSV of video path,label rows")
    d.add_argument("--val_csv", help="like --val_folder, as a CSV")
    d.add_argument("--test_csv", help="like --test_folder, as a CSV")
    d.add_argument(
        "--kinetics_annotations",
        nargs="+",
        metavar="CSV",
        help="Kinetics annotation CSVs; the split comes from the file name (train.csv, "
        "validate.csv, test.csv), else each row's split column (annotations.csv)",
    )
    d.add_argument("--video_root", help="where the videos of --*_csv / --kinetics_annotations are")
    d.add_argument(
        "--download",
        metavar="URL",
        help="fetch and extract this archive into --data_dir (once) and use it",
    )
    d.add_argument(
        "--clips_per_video",
        type=int,
        default=4,
        help="clips averaged per video at validation, test and prediction",
    )
    d.add_argument(
        "--train_clips_per_video",
        type=int,
        default=1,
        help="random clips per video per training epoch",
    )
    d.add_argument("--batch_size", type=int, default=8, help="videos per batch, per device")
    d.add_argument(
        "--num_workers", type=int, default=2, help="data loader processes per device (0: none)"
    )
    d.add_argument(
        "--hflip",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="random horizontal flips in training (turn off when left/right matters)",
    )
    d.add_argument("--no_hflip", dest="hflip", action="store_false", help=argparse.SUPPRESS)

    m = p.add_argument_group("model")
    from trainer.backbones import REGISTRY  # the table only: no torch

    m.add_argument(
        "--backbone",
        default="x3d_xs",
        choices=sorted(REGISTRY),
        metavar="NAME",
        help=f"one of: {', '.join(sorted(REGISTRY))}",
    )
    m.add_argument(
        "--pretrained", action="store_true", help="start from published Kinetics weights"
    )
    m.add_argument(
        "--weights",
        metavar="PATH",
        help="start from a local weights file: a state dict, PyTorchVideo's or torchvision's "
        "checkpoint, or a best.ckpt of an earlier run",
    )
    m.add_argument("--num_frames", type=int, help="override the backbone's clip length")
    m.add_argument("--sampling_rate", type=int, help="override: take every Nth frame")
    m.add_argument(
        "--frame_rate",
        type=float,
        help="override the frame rate --sampling_rate counts in (a clip spans "
        "num_frames x sampling_rate / frame_rate seconds of any video)",
    )
    m.add_argument("--crop_size", type=int, help="override the crop (short side scales with it)")
    m.add_argument("--short_side", type=int, help="override the resize before cropping")

    o = p.add_argument_group("optimisation")
    o.add_argument("--lr", type=float, default=0.1, help="peak learning rate")
    o.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd", help="optimizer")
    o.add_argument("--weight_decay", type=float, default=5e-5, help="L2 penalty")
    o.add_argument("--momentum", type=float, default=0.9, help="with sgd")
    o.add_argument(
        "--lr_scheduler",
        choices=SCHEDULERS,
        default="cosine",
        help="per step: cosine decays to 0 by the end; step multiplies by 0.1 at 50%% and 75%%",
    )
    o.add_argument(
        "--warmup_epochs", type=float, default=0.0, help="linear warmup first (fractions allowed)"
    )
    o.add_argument(
        "--finetune_strategy",
        choices=STRATEGIES,
        default="no_freeze",
        help="with --pretrained/--weights: freeze trains the new head only; freeze_unfreeze "
        "adds the backbone at --unfreeze_epoch",
    )
    o.add_argument(
        "--unfreeze_epoch",
        type=int,
        default=1,
        help="with freeze_unfreeze: the epoch the backbone joins training",
    )

    t = p.add_argument_group("hardware and loop")
    t.add_argument(
        "--gpus", type=int, help="N GPUs (0 = CPU); fewer available -> warn and use those"
    )
    t.add_argument("--accelerator", default="auto", help="cpu, gpu, auto, ...")
    # None: not given, so torchrun's or the launcher's values may fill them in (hardware.py).
    t.add_argument(
        "--devices",
        help="a count, a list like 0,1, or auto (default: $LAUNCH_GPUS_PER_NODE GPUs, 0 "
        "meaning the CPU; else auto)",
    )
    t.add_argument(
        "--num_nodes",
        type=int,
        help="machines taking part (DDP) (default: $LAUNCH_NUM_NODES, else 1)",
    )
    t.add_argument(
        "--strategy",
        default=None,
        help="a Lightning strategy: ddp, ddp_spawn, fsdp, deepspeed, ... "
        "(default: ddp with more than one device, else auto)",
    )
    t.add_argument(
        "--precision",
        default=None,
        choices=PRECISIONS,
        metavar="P",
        help="32-true (default), 16-mixed or bf16-mixed (mixed precision), bf16-true, ...: "
        f"one of {', '.join(PRECISIONS)}",
    )
    t.add_argument(
        "--amp",
        action="store_true",
        help="mixed precision: --precision 16-mixed on a GPU, bf16-mixed on the CPU",
    )
    t.add_argument(
        "--sync_batchnorm",
        action="store_true",
        help="with several devices, compute BatchNorm statistics over all of them",
    )
    t.add_argument("--max_epochs", type=int, default=10, help="-1: no limit")
    t.add_argument(
        "--max_steps", type=int, default=-1, help="stop after this many steps (-1: no limit)"
    )
    t.add_argument(
        "--fast_dev_run",
        type=int,
        nargs="?",
        const=1,
        default=0,
        help="run N batches of train/val/test as a smoke test (no checkpoints)",
    )
    t.add_argument(
        "--limit_train_batches",
        type=float,
        default=None,
        help="batches per epoch: a fraction (0.25) or a count (10)",
    )
    t.add_argument("--limit_val_batches", type=float, default=None, help="the same for validation")
    t.add_argument("--log_every_n_steps", type=int, default=10, help="Lightning's logging interval")
    t.add_argument(
        "--seed", type=int, default=0, help="seeds data order, augmentation and initial weights"
    )
    t.add_argument(
        "--output_dir",
        default=os.environ.get("LAUNCH_ARTIFACTS_DIR") or "outputs",
        help="checkpoints, metrics.csv, labels.txt (default: $LAUNCH_ARTIFACTS_DIR "
        "or ./outputs); a rerun with the same one resumes from checkpoints/last.ckpt",
    )
    t.add_argument(
        "--no_resume",
        action="store_true",
        help="start afresh even if output_dir holds a last.ckpt",
    )
    t.add_argument(
        "--resume",
        metavar="PATH",
        help="resume from this checkpoint (a last.ckpt) instead of output_dir's own",
    )
    t.add_argument(
        "--test_only",
        action="store_true",
        help="no training: evaluate video-level top-1/top-5 on the val and test data with "
        "--weights, --resume or --pretrained (default: output_dir's best.ckpt)",
    )
    _add_spellings(p)
    return p


def _add_spellings(parser: argparse.ArgumentParser) -> None:
    """Give every flag its hyphenated spelling and torchvision's names (one help entry each),
    and make the spellings that mean something else here an error that says so."""
    for action in list(parser._actions):
        names = list(action.option_strings)
        for name in action.option_strings:
            if name.startswith("--"):
                names.append(name.replace("_", "-"))
            names.extend(TORCHVISION_SPELLINGS.get(name, ()))
        for alias in dict.fromkeys(names):
            if alias not in parser._option_string_actions and alias not in MISLEADING:
                action.option_strings.append(alias)
                parser._option_string_actions[alias] = action
    for flag, why in MISLEADING.items():
        parser.add_argument(flag, nargs="?", action=_Refused, help=argparse.SUPPRESS, why=why)


class _Refused(argparse.Action):
    def __init__(self, *args, why: str, **kw) -> None:
        super().__init__(*args, **kw)
        self.why = why

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser.error(f"{option_string}: {self.why}")


class _HelpFormatter(argparse.HelpFormatter):
    """Shows a flag's default where it says something: not for switches, unset (None)
    defaults, or help that already names its default; and each flag's spellings once, with
    the value's name once (``--batch_size, --batch-size, -b BATCH_SIZE``)."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        metavar = self._format_args(action, self._get_default_metavar_for_optional(action))
        return f"{', '.join(action.option_strings)} {metavar}"

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            action.default in (None, argparse.SUPPRESS)
            or action.nargs == 0  # a switch
            or "default" in text
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)".lstrip()


def user_cache_dir() -> Path:
    """This project's folder in the user cache dir (``$XDG_CACHE_HOME`` or ``~/.cache``): where
    downloads and the metadata of read-only data go."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "launch-video"


def _download_cache(url: str) -> Path:
    import hashlib

    return user_cache_dir() / "downloads" / hashlib.sha1(url.encode()).hexdigest()[:16]


def _split_of(csv: str) -> str | None:
    stem = Path(csv).stem.lower()
    for word, split in SPLIT_WORDS.items():
        if stem == word or stem.endswith(("_" + word, "-" + word)) or stem.startswith(word):
            return split
    return None


def _split_column(parser: argparse.ArgumentParser, csv_path: str) -> list[str]:
    """The splits named in a Kinetics CSV's ``split`` column (read here, torch-free)."""
    import csv

    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            values = {(row.get("split") or "").strip().lower() for row in csv.DictReader(f)}
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        parser.error(f"--kinetics_annotations {csv_path}: cannot read it ({e})")
    values.discard("")
    unknown = sorted(v for v in values if v not in SPLIT_WORDS and v != "validation")
    if unknown:
        parser.error(
            f"--kinetics_annotations {csv_path}: split column values {unknown}; "
            "allowed: train, val, validate, test"
        )
    return sorted({SPLIT_WORDS.get(v, "val") for v in values})


def fill_split_folders(args: argparse.Namespace, root: Path) -> None:
    """Set ``--train/val/test_folder`` not given to ``root``'s split folders that exist:
    folders given explicitly win; a data dir's own split folders fill in the rest."""
    for split in ("train", "val", "test"):
        if getattr(args, f"{split}_folder") is None and (root / split).is_dir():
            setattr(args, f"{split}_folder", str(root / split))


def validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Check flag values and fill data defaults; ``parser.error`` on the first problem."""
    for flag in ("batch_size", "clips_per_video", "train_clips_per_video", "num_nodes"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag} {getattr(args, flag)}: must be >= 1")
    for flag in ("max_epochs", "max_steps"):
        if getattr(args, flag) < 1 and getattr(args, flag) != -1:
            parser.error(f"--{flag} {getattr(args, flag)}: must be >= 1, or -1 for no limit")
    if args.frame_rate is not None and not args.frame_rate > 0:
        parser.error(f"--frame_rate {args.frame_rate}: must be > 0")
    if args.amp and args.precision:
        parser.error(f"--amp and --precision {args.precision} both given: choose one")
    if args.resume and not Path(args.resume).is_file():
        parser.error(f"--resume {args.resume}: no such checkpoint file")
    if args.resume and args.no_resume:
        parser.error("--resume PATH and --no_resume both given: choose one")
    for flag in ("num_workers", "warmup_epochs", "weight_decay", "momentum", "unfreeze_epoch"):
        if getattr(args, flag) < 0:
            parser.error(f"--{flag} {getattr(args, flag)}: must be >= 0")
    if args.lr <= 0:
        parser.error(f"--lr {args.lr}: must be > 0")
    if args.gpus is not None and args.gpus < 0:
        parser.error(f"--gpus {args.gpus}: must be >= 0")
    if args.pretrained and args.weights:
        parser.error("--pretrained and --weights both given: choose one")
    if args.weights and not Path(args.weights).is_file():
        hint = " (published weights: --pretrained)" if "Weights." in args.weights else ""
        parser.error(f"--weights {args.weights}: no such file{hint}")
    if args.test_only and args.finetune_strategy != "no_freeze":
        parser.error("--test_only trains nothing: drop --finetune_strategy")
    if args.finetune_strategy != "no_freeze" and not (args.pretrained or args.weights):
        parser.error(
            f"--finetune_strategy {args.finetune_strategy} freezes a randomly initialised "
            "backbone: add --pretrained or --weights PATH, or use no_freeze"
        )

    # --download goes to --data_dir when given, else to a per-URL cache: never into the
    # launcher's datastore mount, and not into output_dir (which is shipped as artifacts).
    args.download_dir = args.data_dir or str(_download_cache(args.download or ""))
    if args.data_dir is None:
        args.data_dir = os.environ.get("LAUNCH_DATASTORE_DIR") or None
    sources = [
        name
        for name, given in (
            ("folders", args.train_folder or args.val_folder or args.test_folder),
            ("CSVs", args.train_csv or args.val_csv or args.test_csv),
            ("--kinetics_annotations", args.kinetics_annotations),
        )
        if given
    ]
    if len(sources) > 1:
        parser.error(f"data given as {' and '.join(sources)}: choose one source")
    if args.data_dir and sources in ([], ["folders"]) and not args.download:
        root = Path(args.data_dir)
        if not root.is_dir():
            parser.error(f"--data_dir {args.data_dir}: no such folder")
        fill_split_folders(args, root)
    for flag in ("train_folder", "val_folder", "test_folder", "predict_folder", "video_root"):
        value = getattr(args, flag)
        if value and not Path(value).is_dir():
            parser.error(f"--{flag} {value}: no such folder")
    for flag in ("train_csv", "val_csv", "test_csv"):
        value = getattr(args, flag)
        if value and not Path(value).is_file():
            parser.error(f"--{flag} {value}: no such file")
    args.kinetics_splits = {}
    for csv in args.kinetics_annotations or []:
        if not Path(csv).is_file():
            parser.error(f"--kinetics_annotations {csv}: no such file")
        # The file's name says its split (train.csv, validate.csv); else its split column.
        name_split = _split_of(csv)
        splits = [name_split] if name_split else _split_column(parser, csv) or [None]
        if splits == [None]:
            parser.error(
                f"--kinetics_annotations {csv}: cannot tell its split: its split column is "
                "empty and its name says none; name it train.csv, validate.csv or test.csv"
            )
        for split in splits:
            if split in args.kinetics_splits:
                parser.error(
                    f"--kinetics_annotations: the {split} split is in both "
                    f"{args.kinetics_splits[split]} and {csv}"
                )
            args.kinetics_splits[split] = csv
    if args.kinetics_annotations and not args.video_root:
        parser.error("--kinetics_annotations needs --video_root (where the videos are)")
    has_train = args.train_folder or args.train_csv or "train" in args.kinetics_splits
    if not has_train and not args.download:
        parser.error(
            "no training data: pass --train_folder, --train_csv, --kinetics_annotations "
            "train.csv, or --data_dir (or $LAUNCH_DATASTORE_DIR) holding a train/ folder"
        )
    return args
