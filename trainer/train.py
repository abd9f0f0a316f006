"""Train a video classifier: the script the launcher runs (``python trainer/train.py ARGS``).

Writes to ``--output_dir`` (default ``$LAUNCH_ARTIFACTS_DIR``, else ./outputs):

    checkpoints/best.ckpt   best val_acc1 (the latest epoch when there is no validation data)
    checkpoints/last.ckpt   end of the latest epoch, or where SIGTERM stopped it
    metrics.csv             one row per logged (epoch, step): train_loss, val_acc1, lr-SGD, ...
    tensorboard/            the same as TensorBoard event files (``tensorboard --logdir OUT``)
    labels.txt, args.json, hparams.yaml
    predictions.csv         with --predict_folder: the best model's label for each video

A rerun with the same output_dir resumes from checkpoints/last.ckpt, so a run stopped by a spot
interruption (the launcher sends SIGTERM, then restarts it elsewhere with the same outputs)
continues from where it stopped. SIGTERM saves last.ckpt and exits with status 143.
``--fast_dev_run`` (a smoke test) neither resumes nor leaves a checkpoint. ``--test_only``
trains nothing: it evaluates a checkpoint or weights on the val and test data.

Under ``torchrun --nproc_per_node=N`` the processes train one model together (DDP): Lightning
detects torchrun, and the device defaults follow it. Under the launcher, a multi-node
experiment runs this script once per node and the launcher's variables set the defaults: the
nodes join one DDP group (gloo on the CPU). See ``trainer/hardware.py``. Rank 0 prints
``world size N (NODES node(s) x P process(es))``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

# Run as a plain script from a checkout or an unpacked code snapshot: the copy of the project
# next to this file must win over any installed one.
_REPO = str(Path(__file__).resolve().parent.parent)
if not sys.path or sys.path[0] != _REPO:
    sys.path.insert(0, _REPO)

from trainer import hardware  # noqa: E402
from trainer.cli_args import build_parser, fill_split_folders, validate  # noqa: E402

SIGTERM_EXIT = 143  # 128 + SIGTERM, what a shell reports for a process it terminated
# Flags passed to VideoClassifier under their own names (and so saved in every checkpoint).
MODEL_FLAGS = (
    "backbone",
    "lr",
    "optimizer",
    "weight_decay",
    "momentum",
    "lr_scheduler",
    "warmup_epochs",
    "finetune_strategy",
    "unfreeze_epoch",
    "pretrained",
    "weights",
    "clips_per_video",
)


def _flags(args, *names: str) -> dict:
    """``{name: args.name}`` for keyword arguments named like the flags."""
    return {name: getattr(args, name) for name in names}


def parse_args(argv: list[str] | None = None):
    """Parse and check flags; every problem is a one-line ``parser.error`` before training."""
    from trainer.backbones import BackboneError, resolve_input

    parser = build_parser()
    args = validate(parser, parser.parse_args(argv))
    try:
        args.video_input = resolve_input(
            args.backbone,
            num_frames=args.num_frames,
            sampling_rate=args.sampling_rate,
            crop_size=args.crop_size,
            short_side=args.short_side,
            frame_rate=args.frame_rate,
        )
    except BackboneError as e:
        parser.error(str(e))
    args.accelerator, args.devices = hardware.resolve(parser, args)
    if args.amp:
        args.precision = "bf16-mixed" if hardware.on_cpu(args.accelerator) else "16-mixed"
    if args.sync_batchnorm and hardware.on_cpu(args.accelerator):
        parser.error(
            "--sync_batchnorm: PyTorch's SyncBatchNorm runs on GPUs only; drop it to train on "
            "the CPU"
        )
    return args


def make_datamodule(args):
    """The VideoDataModule for the chosen data source."""
    from trainer.data import VideoDataModule

    common = _flags(
        args, "batch_size", "num_workers", "clips_per_video", "train_clips_per_video", "hflip"
    )
    common["seed"] = args.seed
    common["video_input"] = args.video_input
    if args.kinetics_splits:
        return VideoDataModule.from_kinetics(
            annotations=args.kinetics_splits, video_root=args.video_root, **common
        )
    if args.train_csv:
        return VideoDataModule.from_csv(
            train_csv=args.train_csv,
            val_csv=args.val_csv,
            test_csv=args.test_csv,
            root=args.video_root or args.data_dir,
            **common,
        )
    return VideoDataModule.from_folders(
        train_folder=args.train_folder,
        val_folder=args.val_folder,
        test_folder=args.test_folder,
        **common,
    )


def _download(args) -> None:
    from trainer.data import DataError
    from trainer.download import ensure_data

    fill_split_folders(args, Path(ensure_data(args.download, args.download_dir)))
    if not args.train_folder:
        raise DataError(f"--download {args.download}: the archive has no train/ folder")


def main(argv: list[str] | None = None) -> int:
    _one_line_warnings()
    args = parse_args(argv)
    from trainer.data import DataError

    _quiet_lightning()

    if args.download:
        try:
            _download(args)
        except DataError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    import pytorch_lightning as pl
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    from trainer.backbones import BackboneError
    from trainer.model import VideoClassifier
    from trainer.predict import CheckpointError
    from trainer.run_outputs import RunOutputs

    pl.seed_everything(args.seed, workers=True)
    out = RunOutputs(args.output_dir)
    try:
        dm = make_datamodule(args)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path, why in dm.skipped.items():
        print(f"skipped {path}: {why}", file=sys.stderr)
    if args.test_only:
        from trainer.evaluate import evaluate

        return evaluate(args, dm, out)

    try:
        resume = _resume_from(args, out, dm)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if resume is not None:
        print(f"resuming from {resume}", flush=True)

    try:
        model = VideoClassifier(
            labels=dm.labels,
            video_input=args.video_input.to_dict(),
            load_weights=resume is None,  # the checkpoint holds the weights
            **_flags(args, *MODEL_FLAGS),
        )
    except BackboneError as e:  # weights that do not fit, a failed download
        print(f"error: {_first_line(e)}", file=sys.stderr)
        return 2
    try:
        trainer = pl.Trainer(
            **_trainer_kwargs(args, out, has_val="val" in dm.items),
            logger=out.loggers(resume=resume is not None),
            plugins=hardware.cluster_plugins(),
        )
    except (MisconfigurationException, ValueError, ImportError) as e:
        # Lightning's checks of --accelerator/--devices/--strategy/--precision together.
        print(f"error: {_hardware_flags(args)}: {_first_line(e)}", file=sys.stderr)
        return 2
    # The ranks are known from here on (Lightning sets them as it builds the Trainer), so only
    # global rank 0 writes: the other ranks' output dirs are not shipped.
    if trainer.is_global_zero:
        print(hardware.world_line(trainer), flush=True)
        out.write_run_info(args, dm.labels, model)

    from pytorch_lightning.utilities.exceptions import SIGTERMException

    try:
        ckpt_path = str(resume) if resume else None
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    except SIGTERMException:
        if trainer.is_global_zero:  # the other processes have no metrics of their own
            out.write_metrics()
        print(
            f"stopped by SIGTERM; saved {out.last_ckpt}: rerun with the same --output_dir "
            "to resume",
            file=sys.stderr,
            flush=True,
        )
        return SIGTERM_EXIT
    if args.fast_dev_run:
        if trainer.is_global_zero:
            print("fast_dev_run finished (no checkpoints are written)")
        return 0
    return _finish(args, dm, model, trainer, out)


def _resume_from(args, out, dm) -> Path | None:
    """The checkpoint to resume from: --resume PATH, else output_dir's last.ckpt (unless
    --no_resume, or a --fast_dev_run smoke test, which starts afresh and writes none)."""
    from trainer.predict import CheckpointError, check_checkpoint

    if args.resume:
        resume = Path(args.resume)
    elif args.no_resume or args.fast_dev_run or not out.last_ckpt.is_file():
        return None
    else:
        resume = out.last_ckpt
    old = check_checkpoint(resume)
    if list(old["labels"]) != list(dm.labels) or old["backbone"] != args.backbone:
        raise CheckpointError(
            f"{resume} was trained with backbone {old['backbone']} on labels "
            f"{old['labels']}, not {args.backbone} on {dm.labels}; use another "
            "--output_dir or --no_resume"
        )
    return resume


def _trainer_kwargs(args, out, has_val: bool) -> dict:
    from pytorch_lightning.callbacks import ModelCheckpoint

    from trainer.run_outputs import EpochLine, LearningRates, MetricsCsv, SigtermCheckpoint

    best = ModelCheckpoint(
        dirpath=out.ckpt_dir,
        filename="best",
        monitor="val_acc1" if has_val else None,
        mode="max",
        save_last=True,
        enable_version_counter=False,  # a resumed run overwrites best.ckpt, not best-v1.ckpt
    )
    progress_bar = sys.stderr.isatty()
    # The finetuning callback comes with the model (VideoClassifier.configure_callbacks).
    callbacks = [
        SigtermCheckpoint(out.last_ckpt),
        MetricsCsv(out),
        LearningRates(),  # each parameter group's (freeze_unfreeze adds the backbone's)
    ]
    if not args.fast_dev_run:  # a smoke test must leave nothing a later run resumes from
        callbacks.insert(0, best)
    if not progress_bar:  # a log file: one line per epoch instead of a progress bar
        callbacks.append(EpochLine())
    multi = args.num_nodes > 1 or (
        args.devices not in ("auto", 1, 0, [0])
        and not (isinstance(args.devices, list) and len(args.devices) == 1)
    )
    kw = dict(
        accelerator=args.accelerator,
        devices=args.devices,
        num_nodes=args.num_nodes,
        # ddp (not ddp_spawn) re-runs this script per device, which works from a plain script.
        strategy=args.strategy or ("ddp" if multi else "auto"),
        sync_batchnorm=args.sync_batchnorm,
        max_epochs=args.max_epochs,
        max_steps=args.max_steps,
        fast_dev_run=args.fast_dev_run,
        enable_checkpointing=not args.fast_dev_run,
        default_root_dir=str(out.root),
        callbacks=callbacks,
        log_every_n_steps=args.log_every_n_steps,
        enable_progress_bar=progress_bar,
    )
    if args.precision:
        kw["precision"] = args.precision
    if args.limit_train_batches is not None:
        kw["limit_train_batches"] = _limit(args.limit_train_batches)
    if args.limit_val_batches is not None:
        kw["limit_val_batches"] = _limit(args.limit_val_batches)
    return kw


def _one_line_warnings() -> None:
    """Show this package's own warnings (flags, skipped data) as one ``warning: ...`` line,
    not with the file and source line that raised them."""
    show = warnings.showwarning
    here = str(Path(__file__).resolve().parent)

    def one_line(message, category, filename, lineno, file=None, line=None):
        if str(Path(filename).resolve().parent) == here:
            print(f"warning: {message}", file=sys.stderr, flush=True)
        else:
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = one_line


def _quiet_lightning() -> None:
    """Drop Lightning and library messages a user of this script cannot act on."""
    import logging

    for message in (
        r".*isinstance\(treespec, LeafSpec\)",  # Lightning's own use of a torch API
        # Metrics are logged per epoch, so the logging interval does not matter.
        r"The number of training batches .* logging interval",
        # No val/test split given is a choice, not a mistake.
        r"You defined a `validation_step` but have no `val_dataloader`",
        r"Total length of `list` across ranks is zero",
        # A run resumed after SIGTERM mid-epoch finishes that epoch with a fresh data order.
        r"You're resuming from a checkpoint that ended before the epoch ended",
        r"Checkpoint directory .* exists and is not empty",  # resuming: it holds last.ckpt
        r"`torch.jit.script` is deprecated",  # inside pytorchvideo's model builders
    ):
        warnings.filterwarnings("ignore", message=message)
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
        lambda record: not record.getMessage().startswith("💡 Tip")  # advertising
    )


def _hardware_flags(args) -> str:
    """The hardware flags as given, for an error Lightning raises about their combination."""
    flags = [f"--accelerator {args.accelerator}", f"--devices {args.devices}"]
    flags += [f"--{k} {getattr(args, k)}" for k in ("strategy", "precision") if getattr(args, k)]
    return " ".join(flags)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _limit(value: float) -> int | float:
    return int(value) if value >= 1 and value == int(value) else value


def _finish(args, dm, model, trainer, out) -> int:
    """Test the best checkpoint (every process takes part), then on the main process write
    metrics.csv, predict --predict_folder and print the best score."""
    best_path, score = out.finish(trainer)
    if "test" in dm.items:
        _load_best_weights(trainer, model, best_path)
        trainer.test(model, datamodule=dm)
    if not trainer.is_global_zero:
        return 0
    out.write_metrics()
    if args.predict_folder:
        from trainer.predict import load_model

        best = load_model(best_path)
        results, skipped = best.predict_paths(
            args.predict_folder, batch_size=args.batch_size, num_workers=args.num_workers
        )
        out.write_predictions(results, skipped)
        print(f"predicted {len(results)} video(s) ({len(skipped)} skipped): {out.predictions_csv}")
    metric = "val_acc1" if score is not None else "train_loss"
    value = score if score is not None else trainer.callback_metrics.get("train_loss")
    if value is None:  # resumed at --max_epochs/--max_steps already: nothing left to train
        print(
            f"nothing trained: {best_path} is already at epoch {trainer.current_epoch}, step "
            f"{trainer.global_step}; raise --max_epochs/--max_steps to train on, or use "
            "--no_resume",
            flush=True,
        )
        return 0
    print(f"best {metric}={float(value):.4f} checkpoint={best_path}", flush=True)
    return 0


def _load_best_weights(trainer, model, best_path: Path) -> None:
    """Load the best checkpoint's weights into ``model`` on every process. The file is read
    by the main process only and its weights broadcast: on several nodes without a shared
    file system only the main node has it."""
    import torch

    state = None
    if trainer.is_global_zero:
        state = torch.load(best_path, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict(trainer.strategy.broadcast(state, src=0))


if __name__ == "__main__":
    sys.exit(main())
