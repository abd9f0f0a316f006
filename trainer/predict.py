"""Load a trained checkpoint and classify videos.

    python -m trainer.predict CHECKPOINT VIDEO_OR_FOLDER... [--top_k K] [--json]

prints ``path<TAB>label`` lines (``path<TAB>label:prob,...`` with ``--top_k``), or one JSON
object. The checkpoint alone is enough: it holds the backbone, the labels and the exact
preprocessing. Runs on the CPU unless ``--device`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if __package__ in (None, ""):  # run as a file: make the repo next to it importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if TYPE_CHECKING:
    from trainer.model import VideoClassifier


class CheckpointError(ValueError):
    """A file that is missing, not a checkpoint, or a checkpoint of something else."""


def check_checkpoint(path: str | Path) -> dict:
    """Read ``path`` and return its hyperparameters, or raise a one-line CheckpointError."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        # Memory-mapped: only the hyperparameters are read here; the caller (Lightning's
        # loader, or the resumed fit) reads the weights, so the file is not loaded twice.
        ckpt = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # pickle, zip and torch errors all mean "not a checkpoint"
        # Their text is noise here (KeyError('105') for random bytes) or advice to unpickle
        # with weights_only=False, which must not be taken for an unknown file.
        raise CheckpointError(f"{path}: not a PyTorch checkpoint") from None
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or not isinstance(hp, dict):
        raise CheckpointError(
            f"{path}: not a Lightning checkpoint (no state_dict and hyper_parameters)"
        )
    if not {"backbone", "labels", "video_input"} <= hp.keys():
        raise CheckpointError(
            f"{path}: a checkpoint of another model, not a trainer.VideoClassifier "
            "(its hyperparameters lack backbone, labels and video_input)"
        )
    return hp


def load_model(path: str | Path, device: str = "cpu") -> VideoClassifier:
    """The VideoClassifier in checkpoint ``path``, in eval mode on ``device``."""
    from trainer.model import VideoClassifier

    model = VideoClassifier.load_from_checkpoint(path, map_location=device)
    return model.eval()


def _device_problem(device: str) -> str | None:
    """Why ``device`` cannot be used here, or None."""
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError:
        return "not a device (cpu, cuda, cuda:1, mps, ...)"
    if kind == "cuda" and not torch.cuda.is_available():
        return "no CUDA GPU here; use --device cpu"
    if kind == "mps" and not torch.backends.mps.is_available():
        return "no Apple GPU (MPS) here; use --device cpu"
    return None


def _format(result) -> str:
    if isinstance(result, list):
        return ",".join(f"{label}:{prob:.4f}" for label, prob in result)
    return str(result)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.predict", description="Classify videos with a trained checkpoint."
    )
    parser.add_argument("checkpoint", help="a best.ckpt / last.ckpt written by trainer/train.py")
    parser.add_argument("videos", nargs="+", help="video files and/or folders of videos")
    parser.add_argument("--top_k", type=int, default=None, help="print the K best labels")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--batch_size", type=int, default=4, help="videos per batch")
    parser.add_argument("--num_workers", type=int, default=0, help="data loader processes")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    args = parser.parse_args(argv)
    if args.top_k is not None and args.top_k < 1:
        parser.error(f"--top_k {args.top_k}: must be >= 1")
    problem = _device_problem(args.device)
    if problem:
        parser.error(f"--device {args.device}: {problem}")
    from trainer.data import DataError

    # Run as ``python -m trainer.predict`` this file is __main__, but the model raises the
    # CheckpointError of the module trainer.predict: catch that one.
    from trainer.predict import CheckpointError, load_model

    try:
        model = load_model(args.checkpoint, device=args.device)
    except CheckpointError as e:
        parser.exit(2, f"error: {e}\n")
    if args.top_k is not None and args.top_k > len(model.labels):
        parser.error(f"--top_k {args.top_k}: the model has only {len(model.labels)} labels")

    results: list[tuple[str, object]] = []
    skipped: dict[str, str] = {}
    # Consecutive files go to the model as one list (one metadata scan, full batches, not a
    # loader per file); each folder on its own, so one holding no video is named in `skipped`.
    groups: list[str | list[str]] = []
    for target in args.videos:
        if not Path(target).exists():
            skipped[target] = "no such file or folder"
        elif Path(target).is_dir():
            groups.append(target)
        elif groups and isinstance(groups[-1], list):
            groups[-1].append(target)
        else:
            groups.append([target])
    for group in groups:
        try:
            got, skip = model.predict_paths(
                group, top_k=args.top_k, batch_size=args.batch_size, num_workers=args.num_workers
            )
        except DataError as e:  # a folder with no file in it (a list of files never raises)
            skipped[str(group)] = str(e)
            continue
        results += got
        skipped.update(skip)

    if args.json:
        print(json.dumps({"predictions": dict(results), "skipped": skipped}, indent=2))
    else:
        for path, result in results:
            print(f"{path}\t{_format(result)}")
    for path, why in skipped.items():
        print(f"skipped {path}: {why}", file=sys.stderr)
    return 1 if skipped and not results else 0


if __name__ == "__main__":
    sys.exit(main())
