"""``train.py --test_only`` (torchvision's ``--test-only``): no training, video-level top-1/top-5
on the val and test data of a checkpoint (``--resume``, ``--weights``, or the output dir's
``best.ckpt``) or of weights (``--weights`` state dict, ``--pretrained``)."""

from __future__ import annotations

import sys


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def evaluate(args, dm, out) -> int:
    """--test_only: video-level top-1/top-5 of a checkpoint or weights on val and test."""
    import pytorch_lightning as pl

    from trainer import hardware
    from trainer.backbones import BackboneError
    from trainer.model import VideoClassifier
    from trainer.predict import CheckpointError, check_checkpoint

    source = args.resume or args.weights
    if source is None and not args.pretrained:
        source = out.best_ckpt if out.best_ckpt.is_file() else None
        if source is None:
            print(
                "error: --test_only: give --weights PATH, --resume PATH or --pretrained "
                f"(or an --output_dir holding checkpoints/best.ckpt; {out.best_ckpt} is missing)",
                file=sys.stderr,
            )
            return 2
    if not ("val" in dm.items or "test" in dm.items):
        print("error: --test_only: no val or test data to evaluate on", file=sys.stderr)
        return 2
    try:
        try:
            check_checkpoint(source) if source else None
            is_ckpt = source is not None
        except CheckpointError:
            is_ckpt = False
        if is_ckpt:
            model = VideoClassifier.load_from_checkpoint(source)
            if model.labels != dm.labels:
                raise CheckpointError(
                    f"{source} was trained on labels {model.labels[:5]}"
                    f"{'...' if len(model.labels) > 5 else ''} ({len(model.labels)}), not the "
                    f"data's {dm.labels[:5]}{'...' if len(dm.labels) > 5 else ''} "
                    f"({len(dm.labels)})"
                )
            dm.video_input = model.video_input  # the checkpoint's preprocessing
        else:
            model = VideoClassifier(
                labels=dm.labels,
                video_input=args.video_input.to_dict(),
                weights=str(source) if source else None,
                backbone=args.backbone,
                pretrained=args.pretrained,
                clips_per_video=args.clips_per_video,
            )
            _check_head_loaded(model, source or "pretrained weights")
    except (BackboneError, CheckpointError) as e:
        print(f"error: --test_only: {_first_line(e)}", file=sys.stderr)
        return 2
    model.hparams.clips_per_video = args.clips_per_video
    trainer = pl.Trainer(
        accelerator=args.accelerator,
        devices=args.devices if args.devices != "auto" else 1,
        precision=args.precision or "32-true",
        logger=False,
        enable_progress_bar=sys.stderr.isatty(),
        enable_model_summary=False,
        plugins=hardware.cluster_plugins(),  # no SLURM requeue trap under the launcher
    )
    results = {}
    if "val" in dm.items:
        results.update(trainer.validate(model, datamodule=dm, verbose=False)[0])
    if "test" in dm.items:
        results.update(trainer.test(model, datamodule=dm, verbose=False)[0])
    if trainer.is_global_zero:
        shown = {k: v for k, v in results.items() if k.endswith(("acc1", "acc5", "loss"))}
        print(" ".join(f"{k}={float(v):.4f}" for k, v in sorted(shown.items())), flush=True)
    return 0


def _check_head_loaded(model, source) -> None:
    """--test_only with a plain weights file: its classifier must be the data's, else the
    head would be random and the scores meaningless."""
    from trainer.backbones import BackboneError, get_backbone
    from trainer.weights import read_weights_file

    head = get_backbone(model.hparams.backbone).head + ".weight"
    if source == "pretrained weights":
        n = 400  # the published heads are Kinetics-400's
    else:
        state = read_weights_file(source, backbone=model.hparams.backbone)
        n = state[head].shape[0] if head in state else None
    if n != len(model.labels):
        raise BackboneError(
            f"{source}: its classifier has {n} classes, the data {len(model.labels)}; "
            "evaluate a checkpoint trained on these labels"
        )
