"""Synthetic videos for tests, demos and benchmarks: nothing is ever downloaded.

- :func:`make_motion_dataset`: a class-per-folder dataset whose class can only be told from
  motion (a bright square moving left/right/up/down on a torus, so every single frame is
  equally likely under every class). A model that learns it has really learnt temporal cues.
- :func:`make_kinetics_like`: 10 s, 340x256, 30 fps H.264 clips of textured content in the
  Kinetics crawler layout with a matching annotation CSV, for benchmarking the decode path.

CLI: ``python -m trainer.sample_data --out DIR [--kind motion|kinetics] ...``.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# Unit displacement per frame (dy, dx) of each motion class.
DIRECTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}


def make_video(path: str | Path, frames: np.ndarray, fps: int = 15, **codec_options: str) -> Path:
    """Encode ``frames`` (uint8, T x H x W x 3, H and W even) as H.264 ``path`` with PyAV."""
    import av

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 T x H x W x 3, got {frames.dtype} {frames.shape}")
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"H.264 yuv420p needs even frame sizes, got {w}x{h}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "veryfast", **codec_options}
        for img in frames:
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def motion_frames(
    direction: str,
    rng: np.random.Generator,
    num_frames: int = 32,
    size: tuple[int, int] = (64, 64),
) -> np.ndarray:
    """One motion clip: a bright square on a dark noisy background moving in ``direction``.

    The square wraps around the frame edges, so its position in any one frame is uniform
    whatever the class: only the motion between frames tells the classes apart.
    """
    h, w = size
    dy, dx = DIRECTIONS[direction]
    side = max(2, min(h, w) // 5 + int(rng.integers(-1, 2)))
    speed = float(rng.uniform(0.06, 0.12)) * min(h, w) / 4  # px per frame
    y0, x0 = rng.uniform(0, h), rng.uniform(0, w)
    bg = rng.integers(0, 90, size=3)
    fg = rng.integers(170, 256, size=3)
    noise = rng.integers(-12, 13, size=(num_frames, h, w, 1))
    frames = np.clip(bg + noise, 0, 255).astype(np.uint8)
    ys, xs = np.arange(h)[:, None], np.arange(w)[None, :]
    for t in range(num_frames):
        cy, cx = y0 + dy * speed * t, x0 + dx * speed * t
        inside = (((ys - cy) % h) < side) & (((xs - cx) % w) < side)
        frames[t][inside] = fg
    return frames


def make_motion_dataset(
    root: str | Path,
    *,
    classes: Sequence[str] = ("left", "right", "up", "down"),
    videos_per_class: int = 16,
    num_frames: int = 32,
    size: tuple[int, int] = (64, 64),
    fps: int = 15,
    seed: int = 0,
    splits: Sequence[str] = ("train", "val"),
) -> Path:
    """Write ``root/<split>/<class>/<n>.mp4`` motion videos; returns ``root``.

    ``size`` is (height, width). Every split gets ``videos_per_class`` videos per class, drawn
    from independent random streams, so splits never share a video.
    """
    unknown = [c for c in classes if c not in DIRECTIONS]
    if unknown:
        raise ValueError(f"unknown motion classes {unknown}; allowed: {sorted(DIRECTIONS)}")
    root = Path(root)
    for s, split in enumerate(splits):
        for c, label in enumerate(classes):
            rng = np.random.default_rng([seed, s, c])
            for n in range(videos_per_class):
                frames = motion_frames(label, rng, num_frames=num_frames, size=size)
                make_video(root / split / label / f"{n}.mp4", frames, fps=fps)
    return root


def texture_frames(rng: np.random.Generator, num_frames: int, size: tuple[int, int]) -> np.ndarray:
    """Natural-ish content: a smooth multi-scale colour texture panned by a drifting camera,
    with a moving blob, so the encoder sees real inter-frame prediction like a camera video."""
    w, h = size
    pan_h, pan_w = h + 64, w + 128
    canvas = np.zeros((pan_h, pan_w, 3), np.float32)
    for cell, amp in ((64, 90.0), (16, 45.0), (4, 20.0)):
        coarse = rng.normal(0, 1, size=(pan_h // cell + 2, pan_w // cell + 2, 3))
        up = np.repeat(np.repeat(coarse, cell, axis=0), cell, axis=1)[:pan_h, :pan_w]
        canvas += amp * up.astype(np.float32)
    k = np.ones(5, np.float32) / 5  # blur the blocky upsampling a little
    canvas = np.apply_along_axis(lambda r: np.convolve(r, k, "same"), 0, canvas)
    canvas = np.apply_along_axis(lambda r: np.convolve(r, k, "same"), 1, canvas)
    canvas = np.clip(canvas + 128, 0, 255)
    vy, vx = rng.uniform(-0.15, 0.15), rng.uniform(-0.3, 0.3)
    by, bx, bvy, bvx = rng.uniform(0, h), rng.uniform(0, w), *rng.uniform(-2, 2, size=2)
    colour = rng.integers(0, 256, size=3)
    ys, xs = np.arange(h)[:, None], np.arange(w)[None, :]
    out = np.empty((num_frames, h, w, 3), np.uint8)
    for t in range(num_frames):
        oy = int(32 + 30 * np.sin(vy * t / 3))
        ox = int(64 + 60 * np.sin(vx * t / 3))
        frame = canvas[oy : oy + h, ox : ox + w].copy()
        cy, cx = (by + bvy * t) % h, (bx + bvx * t) % w
        frame[((ys - cy) ** 2 + (xs - cx) ** 2) < 400] = colour
        out[t] = frame.astype(np.uint8)
    return out


def make_kinetics_like(
    root: str | Path,
    n_videos: int,
    classes: Sequence[str],
    seconds: float = 10,
    size: tuple[int, int] = (340, 256),
    fps: int = 30,
    seed: int = 0,
    split: str = "train",
) -> Path:
    """Write ``n_videos`` clips as ``root/<label>/<ytid>_<start:06d>_<end:06d>.mp4`` plus
    ``root/annotations.csv`` (``label,youtube_id,time_start,time_end,split``); returns the CSV.

    ``size`` is (width, height) as Kinetics' 340x256 is usually written. H.264 with x264's
    default GOP (keyframe every 250 frames), like most crawled Kinetics clips.
    """
    if not classes:
        raise ValueError("make_kinetics_like needs at least one class")
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_videos):
        label = classes[i % len(classes)]
        ytid = "".join(rng.choice(list("abcdefghijkLMNOPQ0123456789-_"), size=11))
        start = int(rng.integers(0, 500))
        end = start + int(round(seconds))
        frames = texture_frames(rng, int(round(seconds * fps)), size)
        make_video(
            root / label / f"{ytid}_{start:06d}_{end:06d}.mp4", frames, fps=fps, preset="medium"
        )
        rows.append((label, ytid, start, end, split))
    csv_path = root / "annotations.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        writer.writerows(rows)
    return csv_path


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m trainer.sample_data", description=__doc__.split("\n")[0]
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--kind", choices=("motion", "kinetics"), default="motion")
    p.add_argument("--classes", default=None, help="comma-separated class names")
    p.add_argument("--videos-per-class", type=int, default=16, help="motion: videos per class")
    p.add_argument("--num-frames", type=int, default=32, help="motion: frames per video")
    p.add_argument("--size", type=int, default=64, help="motion: frame height and width")
    p.add_argument("--n-videos", type=int, default=8, help="kinetics: number of videos")
    p.add_argument("--seconds", type=float, default=10, help="kinetics: seconds per video")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.kind == "motion":
        classes = a.classes.split(",") if a.classes else tuple(DIRECTIONS)
        try:
            make_motion_dataset(
                a.out,
                classes=classes,
                videos_per_class=a.videos_per_class,
                num_frames=a.num_frames,
                size=(a.size, a.size),
                seed=a.seed,
            )
        except ValueError as e:
            p.error(str(e))
        print(f"wrote motion dataset to {a.out} (splits train, val; classes {', '.join(classes)})")
    else:
        classes = a.classes.split(",") if a.classes else ("archery", "juggling balls")
        csv_path = make_kinetics_like(a.out, a.n_videos, classes, seconds=a.seconds, seed=a.seed)
        print(f"wrote {a.n_videos} Kinetics-like videos to {a.out}, annotations {csv_path}")


if __name__ == "__main__":
    main()
