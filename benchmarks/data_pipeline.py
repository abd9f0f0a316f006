"""Training-clip throughput: this project's loader vs PyTorchVideo's ``LabeledVideoDataset``.

Both read the same generated Kinetics-like videos (10 s, 340x256, 30 fps, H.264) with the same
number of workers and batch size, and produce x3d_m-style clips: 16 frames every 5, short side
randomly scaled to [256, 320], random 224 crop, horizontal flip, normalised float C,T,H,W.

The baseline's transforms are written here with plain torch ops in PyTorchVideo's usual order
(``pytorchvideo.transforms`` no longer imports with current torchvision): uniform temporal
subsample of the decoded clip, /255, normalise, short-side scale, crop, flip.

    python benchmarks/data_pipeline.py                    # generate 16 videos in a temp dir
    python benchmarks/data_pipeline.py --data DIR --workers 2 --clips 96
    python benchmarks/data_pipeline.py --profile          # cProfile one clip loop of each
"""

from __future__ import annotations

import argparse
import atexit
import cProfile
import os
import pstats
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from trainer.data import VideoDataModule
from trainer.sample_data import make_kinetics_like
from trainer.video_input import VideoInput

VI = VideoInput(num_frames=16, sampling_rate=5, crop_size=224, short_side=256, fps=30)
MAX_SHORT = 320
CLASSES = ("abseiling", "juggling balls", "playing guitar", "tai chi")


class BaselineTransform:
    """PyTorchVideo's Kinetics training recipe, re-implemented on the decoded dict."""

    def __init__(self, vi: VideoInput, max_short: int):
        self.vi, self.max_short = vi, max_short
        self.mean = torch.tensor(vi.mean).view(-1, 1, 1, 1)
        self.std = torch.tensor(vi.std).view(-1, 1, 1, 1)

    def __call__(self, sample: dict) -> dict:
        x = sample["video"]  # C, T, H, W float in [0, 255]
        t = x.shape[1]
        idx = torch.linspace(0, t - 1, self.vi.num_frames).clamp(0, t - 1).long()
        x = x.index_select(1, idx) / 255.0  # UniformTemporalSubsample, Div255
        x = (x - self.mean) / self.std  # Normalize
        short = int(torch.randint(self.vi.short_side, self.max_short + 1, ()))
        c, t, h, w = x.shape  # RandomShortSideScale
        if w < h:
            nh, nw = int(h * short / w), short
        else:
            nh, nw = short, int(w * short / h)
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
        s = self.vi.crop_size  # RandomCrop
        top = int(torch.randint(0, nh - s + 1, ()))
        left = int(torch.randint(0, nw - s + 1, ()))
        x = x[..., top : top + s, left : left + s]
        if torch.rand(()) < 0.5:  # RandomHorizontalFlip
            x = x.flip(-1)
        return {"video": x, "label": sample["label"]}


def baseline_loader(data: Path, workers: int, batch_size: int) -> DataLoader:
    from pytorchvideo.data import RandomClipSampler, labeled_video_dataset

    videos = sorted(data.glob("*/*.mp4"))
    labels = sorted({p.parent.name for p in videos})
    # pytorchvideo's "path label" list format, kept out of the data folder.
    fd, name = tempfile.mkstemp(prefix="pytorchvideo-paths-", suffix=".txt")
    os.close(fd)
    listing = Path(name)
    atexit.register(listing.unlink, missing_ok=True)
    listing.write_text("".join(f"{p} {labels.index(p.parent.name)}\n" for p in videos))
    ds = labeled_video_dataset(
        str(listing),
        clip_sampler=RandomClipSampler(clip_duration=VI.clip_duration),
        transform=BaselineTransform(VI, MAX_SHORT),
        decode_audio=False,
        decoder="pyav",
    )
    return DataLoader(
        ds, batch_size=batch_size, num_workers=workers, persistent_workers=workers > 0
    )


def project_loader(data: Path, workers: int, batch_size: int) -> DataLoader:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm = VideoDataModule.from_kinetics(
            {"train": data / "annotations.csv"},
            data,
            video_input=VI,
            batch_size=batch_size,
            num_workers=workers,
        )
    return dm.train_dataloader()


def clips_per_second(loader: DataLoader, clips: int) -> float:
    """Iterate epochs until ``clips`` clips came out; clips per wall-clock second.

    One batch is drawn first and not timed, so worker start-up is left out for both (both
    loaders keep their workers across epochs)."""
    next(iter(loader))
    n, start = 0, time.perf_counter()
    while n < clips:
        for batch in loader:
            n += batch["video"].shape[0]
            if n >= clips:
                break
    return n / (time.perf_counter() - start)


def profile(loader: DataLoader, clips: int, title: str) -> None:
    print(f"\n--- profile: {title} ({clips} clips, one process) ---")
    prof = cProfile.Profile()
    prof.enable()
    clips_per_second(loader, clips)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(12)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--data",
        type=Path,
        help="Kinetics-like folder (made by trainer.sample_data"
        " --kind kinetics); default: generate videos in a temp dir",
    )
    p.add_argument("--videos", type=int, default=16, help="videos to generate")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--clips", type=int, default=64, help="clips to time per round")
    p.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--profile", action="store_true", help="cProfile each pipeline (0 workers)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    tmp = None
    if a.data is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-videos-")
        a.data = Path(tmp.name)
        t = time.perf_counter()
        make_kinetics_like(a.data, a.videos, CLASSES)
        print(
            f"generated {a.videos} videos (10 s, 340x256, 30 fps, H.264) in "
            f"{time.perf_counter() - t:.1f} s"
        )
    if a.profile:
        profile(baseline_loader(a.data, 0, a.batch_size), a.clips // 4, "pytorchvideo baseline")
        profile(project_loader(a.data, 0, a.batch_size), a.clips // 4, "project")
        return
    print(
        f"clip: {VI.num_frames} frames x stride {VI.sampling_rate}, crop {VI.crop_size}, "
        f"short side [{VI.short_side}, {MAX_SHORT}]; workers={a.workers}, "
        f"batch={a.batch_size}, {a.clips} clips per round, {a.rounds} rounds"
    )
    t = time.perf_counter()
    ours_loader = project_loader(a.data, a.workers, a.batch_size)
    print(f"project metadata scan (once, cached afterwards): {time.perf_counter() - t:.2f} s")
    base_loader = baseline_loader(a.data, a.workers, a.batch_size)
    # Alternate the two so both see the same machine load (CPU cores may be shared).
    base, ours = [], []
    for r in range(a.rounds):
        base.append(clips_per_second(base_loader, a.clips))
        ours.append(clips_per_second(ours_loader, a.clips))
        print(
            f"round {r + 1}: pytorchvideo {base[-1]:6.2f} clips/s, project {ours[-1]:6.2f} "
            f"clips/s, ratio {ours[-1] / base[-1]:.2f}x"
        )
    b, o = statistics.median(base), statistics.median(ours)
    print(f"pytorchvideo LabeledVideoDataset: {b:7.2f} clips/s (median)")
    print(f"project VideoDataModule (train) : {o:7.2f} clips/s (median)")
    print(f"speed-up: {o / b:.2f}x")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
