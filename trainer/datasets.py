"""The clip datasets over the videos of a :class:`~trainer.sources.VideoSource`.

Clip geometry follows :class:`~trainer.video_input.VideoInput`: a clip spans
``clip_duration`` seconds of the video whatever its own frame rate, and ``num_frames`` frames
are taken uniformly over that span (``sampling_rate`` apart when the video runs at ``vi.fps``).

Short videos: a video shorter than one clip is not dropped; the clip is sampled uniformly over
the whole video instead (frames repeat when it has fewer than ``num_frames``), which is what
PyTorchVideo's clip samplers do. Only videos that cannot be decoded at all are skipped.

Decode failures at load time (a file that probed fine but is truncated further on) never stop
an epoch: a training item is replaced by a random other video, an evaluation item is dropped
from its batch, and either way the failure is appended to a log the DataModule reports.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset, get_worker_info

# The sources and errors live in trainer.sources; their names stay importable from here.
from trainer.sources import DataError, DataNotFoundError, DataWarning, VideoSource  # noqa: F401
from trainer.video_input import VideoInput
from trainer.video_io import VideoError, VideoMeta, read_frames

# -- clip sampling -----------------------------------------------------------------------------


def clip_span(meta: VideoMeta, vi: VideoInput) -> int:
    """How many of this video's frames one clip covers."""
    return max(1, int(round(vi.clip_duration * meta.fps)))


def clip_indices(meta: VideoMeta, vi: VideoInput, start: int) -> list[int]:
    """The ``vi.num_frames`` frame indices of the clip starting at frame ``start``; a video
    shorter than the clip is sampled uniformly over its whole length instead."""
    span = clip_span(meta, vi)
    n = meta.num_frames
    if span > n:
        start, span = 0, n
    return [min(start + (k * span) // vi.num_frames, n - 1) for k in range(vi.num_frames)]


def random_clip_start(meta: VideoMeta, vi: VideoInput) -> int:
    free = meta.num_frames - clip_span(meta, vi)
    return int(torch.randint(0, free + 1, ()).item()) if free > 0 else 0


def uniform_clip_starts(meta: VideoMeta, vi: VideoInput, clips: int) -> list[int]:
    """``clips`` starts spread evenly from the first to the last possible one (one clip: the
    centre), as in PyTorchVideo's constant-clips-per-video evaluation."""
    free = max(meta.num_frames - clip_span(meta, vi), 0)
    if clips == 1:
        return [free // 2]
    return [int(round(i * free / (clips - 1))) for i in range(clips)]


# The training clip samplers, named as in PyTorchVideo (and Flash's ``clip_sampler=``), each with
# the ``clip_sampler_kwargs`` it takes.
CLIP_SAMPLERS = {
    "random": (),
    "uniform": ("stride",),
    "constant_clips_per_video": ("clips_per_video", "augs_per_clip"),
}


def check_clip_sampler(sampler: str, kwargs: dict | None = None) -> None:
    """Raise DataError for an unknown sampler or a keyword argument it does not take."""
    if sampler not in CLIP_SAMPLERS:
        raise DataError(f"clip_sampler {sampler!r}: choose one of {', '.join(CLIP_SAMPLERS)}")
    unknown = sorted(set(kwargs or {}) - set(CLIP_SAMPLERS[sampler]))
    if unknown:
        allowed = ", ".join(CLIP_SAMPLERS[sampler]) or "none"
        raise DataError(
            f"clip_sampler_kwargs {unknown} are not taken by {sampler!r} (it takes: {allowed})"
        )


def training_clips(
    items: Sequence[VideoItem],
    vi: VideoInput,
    sampler: str = "random",
    random_clips: int = 1,
    **kwargs,
) -> list[tuple[int, int | None]]:
    """The training items of one epoch: ``(video index, clip start frame)``, the start None
    for a fresh random one each time the item is read.

    - ``random``: ``random_clips`` random clips of each video (PyTorchVideo's
      RandomClipSampler gives one; torchvision's reference up to ``--clips-per-video``);
    - ``uniform``: every clip of the video, one after the other (``stride`` seconds apart,
      default: one clip's duration), as PyTorchVideo's UniformClipSampler;
    - ``constant_clips_per_video``: ``clips_per_video`` evenly spaced clips of each video, each
      read ``augs_per_clip`` times, as PyTorchVideo's ConstantClipsPerVideoSampler.
    """
    check_clip_sampler(sampler, kwargs)
    if sampler == "random":
        return [(i, None) for i in range(len(items)) for _ in range(random_clips)]
    if sampler == "constant_clips_per_video":
        n = int(kwargs.get("clips_per_video", 1))
        augs = int(kwargs.get("augs_per_clip", 1))
        if n < 1 or augs < 1:
            raise DataError(f"clips_per_video={n}, augs_per_clip={augs}: both must be >= 1")
        return [
            (i, start)
            for i, item in enumerate(items)
            for start in uniform_clip_starts(item.meta, vi, n)
            for _ in range(augs)
        ]
    stride_s = kwargs.get("stride")
    if stride_s is not None and float(stride_s) <= 0:
        raise DataError(f"stride={stride_s}: must be > 0 seconds")
    out: list[tuple[int, int | None]] = []
    for i, item in enumerate(items):
        span = clip_span(item.meta, vi)
        step = max(1, round(float(stride_s) * item.meta.fps)) if stride_s else span
        count = max(0, item.meta.num_frames - span) // step + 1
        out.extend((i, k * step) for k in range(count))
    return out


# -- datasets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoItem:
    path: Path
    label: int  # -1 when unlabelled
    meta: VideoMeta


class FailureLog:
    """Append-only ``path<TAB>reason`` lines, shared by loader worker processes through the
    file system (an O_APPEND write of one short line is atomic)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def record(self, path: Path | str, reason: str) -> None:
        line = f"{path}\t{' '.join(reason.split())}\n".encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def read(self) -> dict[str, str]:
        try:
            text = self.path.read_text()
        except OSError:
            return {}
        return dict(line.rsplit("\t", 1) for line in text.splitlines() if "\t" in line)


def _failure_reason(e: Exception) -> str:
    if isinstance(e, VideoError):
        return e.reason
    return f"failed to load ({type(e).__name__}: {e})"


class _VideoDataset(Dataset):
    """Videos with their metadata, the clip geometry, a transform, and the log that decode
    failures go to.

    The transform is either one of the presets (:mod:`trainer.transforms`), whose uint8 ``crop``
    half runs here and whose normalisation runs in the collate, straight into the batch; or any
    callable on the clip dict ``{"video": tv_tensors.Video uint8 [T, C, H, W], "label", ...}``
    returning such a dict (torchvision v2 transforms take it as it is). Its ``video`` may come
    back uint8 (then normalised with the backbone's mean/std like the presets') or float
    (taken as final); either way ``T x C x H x W``.
    """

    def __init__(
        self, items: list[VideoItem], vi: VideoInput, transform: Callable, failures: FailureLog
    ):
        self.items, self.vi, self.transform, self.failures = items, vi, transform, failures
        self.preset = hasattr(transform, "crop")

    def __len__(self) -> int:
        return len(self.items)

    def _sample(self, frames: torch.Tensor, fields: dict) -> dict:
        """One clip (uint8 ``T x H x W x 3``) through the transform, as the clip dict."""
        if self.preset:
            # uint8 T,C,H,W: the collate normalises it straight into the batch tensor.
            return {"video": self.transform.crop(frames), **fields}
        from torchvision import tv_tensors

        out = self.transform({"video": tv_tensors.Video(frames.permute(0, 3, 1, 2)), **fields})
        video = out.get("video") if isinstance(out, dict) else None
        if not isinstance(video, torch.Tensor) or video.ndim != 4:
            raise DataError(
                f"transform {self.transform!r} must return the clip dict with 'video' a "
                f"T x C x H x W tensor, got {type(out).__name__}"
                + (f" with video of shape {tuple(video.shape)}" if hasattr(video, "shape") else "")
            )
        return {**fields, **out, "video": video.as_subclass(torch.Tensor)}


class ClipDataset(_VideoDataset):
    """Training: one clip per item of :func:`training_clips` (by default one random clip per
    video per epoch: a random start is temporal jitter)."""

    def __init__(
        self,
        items: list[VideoItem],
        vi: VideoInput,
        transform: Callable,
        failures: FailureLog,
        retries: int = 10,
        clips: list[tuple[int, int | None]] | None = None,
    ):
        super().__init__(items, vi, transform, failures)
        self.retries = retries
        self.clips = clips if clips is not None else [(i, None) for i in range(len(items))]

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, j: int) -> dict:
        reason = ""
        for _ in range(self.retries + 1):
            i, start = self.clips[j]
            item = self.items[i]
            try:
                if start is None:
                    start = random_clip_start(item.meta, self.vi)
                idx = clip_indices(item.meta, self.vi, start)
                frames = torch.from_numpy(read_frames(item.path, idx, item.meta))
                return self._sample(frames, {"label": item.label})
            except DataError:
                raise  # a transform that returns the wrong thing: not the video's fault
            except Exception as e:  # any one bad file must not end the epoch
                reason = _failure_reason(e)
                self.failures.record(item.path, reason)
                j = int(torch.randint(0, len(self.clips), ()).item())
        raise DataError(
            f"{self.retries + 1} videos in a row failed to load (last: {reason}); the data looks "
            f"broken, see {self.failures.path}"
        )


class MultiClipDataset(_VideoDataset):
    """Evaluation/prediction: one item per video, ``clips`` uniformly spaced clips stacked
    (``N x C x T x H x W``, or ``[slow, fast]`` of such), to average the clip logits."""

    def __init__(
        self,
        items: list[VideoItem],
        vi: VideoInput,
        transform: Callable,
        failures: FailureLog,
        clips: int = 4,
        with_label: bool = True,
        with_path: bool = False,
        stacked: bool = True,
    ):
        super().__init__(items, vi, transform, failures)
        self.clips, self.with_label, self.with_path = clips, with_label, with_path
        self.stacked = stacked

    def __len__(self) -> int:
        return len(self.items) if self.stacked else len(self.items) * self.clips

    def __getitem__(self, i: int) -> dict | None:
        """Stacked: video ``i`` with its clips. Else item ``i`` is clip ``i % clips`` of video
        ``i // clips`` alone (``C x T x H x W``), its video's number in ``index``."""
        k = None if self.stacked else i % self.clips
        if k is not None:
            i //= self.clips
        item = self.items[i]
        starts = uniform_clip_starts(item.meta, self.vi, self.clips)
        if k is not None:
            starts = starts[k : k + 1]
        per_clip = [clip_indices(item.meta, self.vi, s) for s in starts]
        try:
            frames = read_frames(item.path, [j for idx in per_clip for j in idx], item.meta)
        except Exception as e:  # any one bad file must not end the evaluation
            self.failures.record(item.path, _failure_reason(e))
            return None  # dropped by the collate
        frames = torch.from_numpy(frames).view(len(starts), self.vi.num_frames, *frames.shape[1:])
        fields: dict = {"index": i}
        if self.with_label:
            fields["label"] = item.label
        if self.with_path:
            fields["path"] = str(item.path)
        if k is not None:
            return {**self._sample(frames[0], fields), "clip": k}
        samples = [self._sample(c, fields) for c in frames]
        # N,T,C,H,W (uint8 from the presets: the collate normalises it into the batch tensor).
        return {**samples[0], "video": torch.stack([s["video"] for s in samples])}


class ClipCollate:
    """Batches uint8 clips from the datasets above into normalised float batches.

    Items that failed to decode (``None``) are dropped. Each clip is converted to float once,
    straight into its slot of the batch tensor (allocated in shared memory inside a loader
    worker, as ``default_collate`` does, so handing it to the main process copies nothing).
    ``[B, C, T, H, W]`` (``clips=None``) or ``[B, N, C, T, H, W]``; ``[slow, fast]`` for
    SlowFast. A batch where every item failed has batch size 0 and the right shapes.
    """

    def __init__(self, vi: VideoInput, clips: int | None, keys: Sequence[str]):
        from trainer.transforms import Normalize

        self.vi, self.clips, self.keys = vi, clips, keys
        self.normalize = Normalize(vi.mean, vi.std)

    def _empty(self, shape: tuple[int, ...]) -> torch.Tensor:
        if get_worker_info() is None:
            return torch.empty(shape)
        numel = 1
        for d in shape:
            numel *= d
        storage = torch.empty(0)._typed_storage()._new_shared(numel)
        return torch.empty(0).new(storage).view(shape)

    def __call__(self, batch: list) -> dict:
        from trainer.transforms import pack_pathways

        batch = [b for b in batch if b is not None]
        lead = (len(batch), self.clips) if self.clips else (len(batch),)
        vi = self.vi
        if batch:
            t, c, h, w = batch[0]["video"].shape[-4:]
        else:
            t, c, h, w = vi.num_frames, 3, vi.crop_size, vi.crop_size
        video = self._empty((*lead, c, t, h, w))
        for b, item in enumerate(batch):
            clip = item["video"]
            if clip.shape[-4:] != (t, c, h, w):
                raise DataError(
                    f"clips of one batch differ in shape: {tuple(clip.shape[-4:])} and "
                    f"{(t, c, h, w)} (T, C, H, W); a transform must give every clip one size"
                )
            if clip.dtype == torch.uint8:
                self.normalize.into(clip, video[b])
            else:  # a user's transform that normalised it already
                video[b].copy_(clip.transpose(-4, -3))
        out: dict = {"video": pack_pathways(video, vi.slowfast_alpha)}
        for k in self.keys:
            values = [item[k] for item in batch]
            out[k] = values if k == "path" else torch.tensor(values, dtype=torch.long)
        if batch and "clip" in batch[0]:
            out["clip"] = torch.tensor([item["clip"] for item in batch], dtype=torch.long)
        return out
