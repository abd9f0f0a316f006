"""The LightningDataModule: folders, CSVs or Kinetics annotations in, clip batches out.

Batches:

- train: ``{"video": Tensor[B, C, T, H, W] (or [slow, fast]), "label": LongTensor[B]}``, one
  clip per item of the ``clip_sampler`` (by default one random clip per video per epoch:
  random start, scale jitter, crop, optional flip);
- val/test: **6-D**, one item per *video* with ``clips_per_video`` uniformly spaced clips
  stacked, ``{"video": Tensor[B, N, C, T, H, W] (or [slow, fast] of such), "label", "index"}``,
  so the model averages the N clip scores (video-level accuracy, as published Kinetics numbers
  are). With ``stack_clips=False`` every clip is its own item instead, 5-D like training
  (``{"video": [B, C, T, H, W], "label", "index": its video, "clip"}``), as PyTorchVideo's
  datasets yield them to a LightningModule of one's own;
- predict: as val without ``label``, with ``path`` (list of str).

The clip geometry (``video_input``) may be left out: it then follows the model's backbone when
a Trainer runs the model on this data module (``VideoClassifier.video_input``), with
``clip_duration`` seconds, if given, spread over the backbone's frames at the data's frame rate.

Everything about the videos (frame counts, rates, keyframes) is scanned once at construction,
in parallel, and cached (:mod:`trainer.meta_cache`); unusable files are skipped and listed in
``.skipped`` with a one-line warning summary, never a crash mid-epoch.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from trainer.datasets import (
    ClipCollate,
    ClipDataset,
    DataError,
    DataNotFoundError,
    DataWarning,
    FailureLog,
    MultiClipDataset,
    VideoItem,
    VideoSource,
    check_clip_sampler,
    training_clips,
)
from trainer.meta_cache import scan
from trainer.transforms import eval_transform, train_transform
from trainer.video_input import VideoInput

__all__ = [
    "VideoDataModule",
    "VideoSource",
    "DataError",
    "DataNotFoundError",
    "DataWarning",
    "predict_loader",
]

Paths = str | Path | Sequence[str | Path]


def _summarise(name: str, total: int, skipped: dict[str, str]) -> None:
    if not skipped:
        return
    kinds = Counter(r.split(" (")[0] for r in skipped.values())
    detail = ", ".join(f"{n} {k}" for k, n in kinds.most_common())
    warnings.warn(
        f"{name}: skipped {len(skipped)} of {total} files ({detail}); see .skipped for the list",
        DataWarning,
        stacklevel=3,
    )


def resolve(
    source: VideoSource,
    cache_dir: str | Path | None,
    allow_empty: bool = False,
    summarise: bool = True,
) -> tuple[list, dict[str, str]]:
    """Probe (or read cached metadata of) every video of ``source``.

    Returns ``([(path, label, meta)], skipped)``; raises :class:`DataError` if nothing is left
    (with ``allow_empty``, only if the source listed no file at all). ``summarise`` warns with
    a count of the skipped files (callers that report each file themselves turn it off).
    """
    metas, errors = scan([p for p, _ in source.items], source.root, cache_dir)
    skipped = dict(source.skipped)
    skipped.update({str(p): r for p, r in errors.items()})
    usable = [(p, label, metas[p]) for p, label in source.items if p in metas]
    if summarise:
        _summarise(source.name, len(source.items) + len(source.skipped), skipped)
    if not usable and not (allow_empty and skipped):
        raise DataError(source.empty_message or f"no usable videos in {source.name}")
    return usable, skipped


class VideoDataModule(pl.LightningDataModule):
    """Video classification data for Lightning. Build it with :meth:`from_folders`,
    :meth:`from_csv` or :meth:`from_kinetics`, or pass :class:`VideoSource` objects.

    ``labels`` and ``num_classes`` are known right after construction (no ``setup()``): the
    sorted labels of the data (of the Kinetics annotations when given; numerically sorted when
    every label is an integer, so label ``k`` is class ``k``), or ``labels=`` for predict-only
    use (left out, a predict-only module takes the model's labels). ``hflip=False`` disables
    the horizontal flip augmentation (needed when left/right carries the class).

    Clips: ``video_input`` (default: the model's, see the module docstring), ``clip_duration``
    (seconds a clip spans), ``clip_sampler`` for training (``random``, ``uniform`` or
    ``constant_clips_per_video``, with ``clip_sampler_kwargs``; see
    :func:`trainer.datasets.training_clips`), ``train_clips_per_video`` random clips per video
    per epoch, ``clips_per_video`` clips averaged per video at evaluation, ``stack_clips``.
    ``video_sampler``: a Sampler class for the training items (default: shuffled).

    Transforms (default: the fast backbone-aware presets of :mod:`trainer.transforms`):
    ``train_transform``/``val_transform``/``test_transform``/``predict_transform`` are
    per-sample callables on the clip dict (test and predict default to ``val_transform``;
    see :class:`trainer.datasets._VideoDataset` for what they get and return);
    ``per_batch_transform_on_device`` is called on each batch dict once it is on the device
    (``on_after_batch_transfer``; e.g. kornia's video augmentations): one callable for every
    stage, or a dict ``{"train": fn, "val": fn, "test": fn, "predict": fn}``.
    """

    multi_label = False  # one label per video (as Flash's attribute says)

    def __init__(
        self,
        *,
        video_input: VideoInput | None = None,
        train: VideoSource | None = None,
        val: VideoSource | None = None,
        test: VideoSource | None = None,
        predict: Paths | None = None,
        labels: Sequence[str] | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        clips_per_video: int = 4,
        hflip: bool = True,
        cache_dir: str | Path | None = None,
        seed: int = 0,
        clip_duration: float | None = None,
        clip_sampler: str = "random",
        clip_sampler_kwargs: dict | None = None,
        train_clips_per_video: int = 1,
        stack_clips: bool = True,
        video_sampler: Callable | None = None,
        train_transform: Callable | None = None,
        val_transform: Callable | None = None,
        test_transform: Callable | None = None,
        predict_transform: Callable | None = None,
        per_batch_transform_on_device: Callable | dict[str, Callable] | None = None,
    ):
        super().__init__()
        if batch_size < 1 or num_workers < 0 or clips_per_video < 1:
            raise DataError(
                f"batch_size={batch_size}, clips_per_video={clips_per_video}, "
                f"num_workers={num_workers}: the first two must be >= 1, num_workers >= 0"
            )
        if train_clips_per_video < 1:
            raise DataError(f"train_clips_per_video={train_clips_per_video}: must be >= 1")
        if clip_duration is not None and not clip_duration > 0:
            raise DataError(f"clip_duration={clip_duration}: must be > 0 seconds")
        check_clip_sampler(clip_sampler, clip_sampler_kwargs)
        if not any(s is not None for s in (train, val, test, predict)):
            raise DataError("no data given: pass at least one of train, val, test or predict")
        self._video_input = video_input
        self._given_input = video_input
        self.clip_duration = clip_duration
        self.clip_sampler, self.clip_sampler_kwargs = clip_sampler, dict(clip_sampler_kwargs or {})
        self.train_clips_per_video, self.stack_clips = train_clips_per_video, stack_clips
        self.video_sampler = video_sampler
        self.transforms = {
            "train": train_transform,
            "val": val_transform,
            "test": test_transform or val_transform,
            "predict": predict_transform or val_transform,
        }
        self.batch_transforms = _per_stage(per_batch_transform_on_device)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.clips_per_video, self.hflip, self.seed = clips_per_video, hflip, seed
        self._scan_skipped: dict[str, str] = {}
        self._failures = _temp_failure_log()

        resolved: dict[str, list] = {}
        declared: set[str] = set()
        for split, source in (("train", train), ("val", val), ("test", test)):
            if source is None:
                continue
            usable, skipped = resolve(source, cache_dir)
            if any(label is None for _, label, _ in usable):
                raise DataError(
                    f"{source.name} has no labels, so it cannot be the {split} split; "
                    "classify unlabelled videos with predict= instead"
                )
            resolved[split] = usable
            self._scan_skipped.update(skipped)
            if source.classes is not None:
                declared.update(source.classes)
        found = {label for usable in resolved.values() for _, label, _ in usable}
        if labels is not None:
            self.labels = list(labels)
            unknown = sorted(found - set(self.labels))
            if unknown:
                raise DataError(
                    f"labels {unknown[:5]} in the data are not among the "
                    f"{len(self.labels)} given labels"
                )
        else:
            self.labels = sort_labels(found | declared)
        if not self.labels and predict is None:
            raise DataError("no labels: give labels= for predict-only use")
        index = {label: i for i, label in enumerate(self.labels)}
        self.items = {
            split: [VideoItem(p, index[label], meta) for p, label, meta in usable]
            for split, usable in resolved.items()
        }
        fps = sorted(it.meta.fps for items in self.items.values() for it in items)
        # The data's frame rate (the median video's), onto which clip_duration is mapped.
        self.frame_rate: float | None = fps[len(fps) // 2] if fps else None
        self._predict = predict
        if video_input is not None and clip_duration is not None:
            self._video_input = with_clip_duration(video_input, clip_duration, self.frame_rate)

    # -- the clip geometry, given or the model's -------------------------------------------------
    @property
    def video_input(self) -> VideoInput:
        if self._video_input is None:
            raise DataError(
                "video_input: not given, and no model to take it from yet; pass video_input= "
                "or let a Trainer run a VideoClassifier on this data module"
            )
        return self._video_input

    @video_input.setter
    def video_input(self, value: VideoInput) -> None:
        self._video_input = self._given_input = value

    def setup(self, stage: str | None = None) -> None:
        """Take the clip geometry (and, predicting, the labels) from the model being run."""
        model = self.trainer.lightning_module if self.trainer is not None else None
        if model is None or not hasattr(model, "video_input"):
            return
        if not self.labels:
            self.labels = list(model.labels)
        elif len(model.labels) != len(self.labels):
            raise DataError(
                f"the model has {len(model.labels)} classes, the data {len(self.labels)} "
                f"({', '.join(self.labels[:5])}{', ...' if len(self.labels) > 5 else ''}): "
                "build it with labels=datamodule.labels"
            )
        if self._given_input is not None:
            return  # given explicitly: the model must fit it (checked by its forward)
        vi = model.video_input
        if self.clip_duration is not None:
            vi = with_clip_duration(vi, self.clip_duration, self.frame_rate)
            if stage == "fit" and vi != model.video_input:
                # The clip's span is part of the preprocessing the checkpoint carries, so
                # prediction samples clips as training did.
                model.hparams.video_input = vi.to_dict()
        self._video_input = vi

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if not self.batch_transforms or self.trainer is None:
            return batch
        stage = self.trainer.state.stage
        stage = _STAGES.get(getattr(stage, "value", stage), "val")
        fn = self.batch_transforms.get(stage)
        return fn(batch) if fn is not None else batch

    # -- construction helpers ------------------------------------------------------------------
    @classmethod
    def from_folders(
        cls,
        train_folder: str | Path | None = None,
        val_folder: str | Path | None = None,
        test_folder: str | Path | None = None,
        predict_folder: str | Path | None = None,
        **kw,
    ) -> VideoDataModule:
        """Class-per-folder layout: ``FOLDER/<label>/<video>`` for each split given."""
        src = _sources(VideoSource.from_folder, train_folder, val_folder, test_folder)
        return cls(**src, predict=predict_folder, **kw)

    @classmethod
    def from_csv(
        cls,
        train_csv: str | Path | None = None,
        val_csv: str | Path | None = None,
        test_csv: str | Path | None = None,
        root: str | Path | None = None,
        **kw,
    ) -> VideoDataModule:
        """CSVs of ``path,label`` rows; paths relative to ``root`` or to each CSV's folder."""
        src = _sources(lambda f: VideoSource.from_csv(f, root), train_csv, val_csv, test_csv)
        return cls(**src, **kw)

    @classmethod
    def from_kinetics(
        cls,
        annotations: dict[str, str | Path] | str | Path,
        video_root: str | Path,
        **kw,
    ) -> VideoDataModule:
        """Kinetics annotation CSVs per split (``{"train": ..., "val": ...}``), or one CSV whose
        ``split`` column says each row's split, over the crawler's
        ``video_root/<label>/<ytid>_<start>_<end>.mp4`` layout (or flat ``<split>/...``, any
        extension: see :mod:`trainer.kinetics`). Classes come from the CSVs."""
        from trainer.kinetics import kinetics_source, read_annotations, splits_of

        if not isinstance(annotations, dict):
            found = splits_of(read_annotations(annotations))
            if not found:
                raise DataError(
                    f"{annotations}: no split column values; pass {{split: csv}} instead"
                )
            annotations = dict.fromkeys(sorted(found), annotations)
        allowed = {"train", "val", "test"}
        bad = sorted(set(annotations) - allowed)
        if bad:
            raise DataError(f"unknown split(s) {bad} in annotations; allowed: {sorted(allowed)}")
        src = {k: kinetics_source(v, video_root, split=k) for k, v in annotations.items()}
        return cls(**src, **kw)

    # -- what the model reads -------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def skipped(self) -> dict[str, str]:
        """Every bad file found: by the metadata scan and by decoding during loading."""
        return {**self._scan_skipped, **self._failures.read()}

    # -- loaders -------------------------------------------------------------------------------
    def _loader(self, dataset, shuffle: bool, collate, batch_size: int) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
            drop_last=False,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
        )

    def train_dataloader(self) -> DataLoader:
        if "train" not in self.items:
            raise DataError("no train data: give a train folder, CSV or annotations")
        vi = self.video_input
        clips = training_clips(
            self.items["train"],
            vi,
            self.clip_sampler,
            self.train_clips_per_video,
            **self.clip_sampler_kwargs,
        )
        transform = self.transforms["train"] or train_transform(vi, hflip=self.hflip)
        ds = ClipDataset(self.items["train"], vi, transform, self._failures, clips=clips)
        collate = ClipCollate(vi, None, ["label"])
        if self.video_sampler is None:
            return self._loader(ds, True, collate, self.batch_size)
        loader = self._loader(ds, False, collate, self.batch_size)
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=self.video_sampler(ds),
            num_workers=loader.num_workers,
            collate_fn=collate,
            pin_memory=loader.pin_memory,
            persistent_workers=loader.persistent_workers,
        )

    def _eval_loader(self, split: str) -> DataLoader | list:
        if split not in self.items:
            return []  # Lightning's "no such split": the loop is skipped, not an error
        vi = self.video_input
        ds = MultiClipDataset(
            self.items[split],
            vi,
            self.transforms[split] or eval_transform(vi),
            self._failures,
            clips=self.clips_per_video,
            stacked=self.stack_clips,
        )
        collate = ClipCollate(
            vi, self.clips_per_video if self.stack_clips else None, ["label", "index"]
        )
        loader = self._loader(ds, False, collate, self.batch_size)
        return _unpadded(loader, self.trainer, f"{split} data")

    def val_dataloader(self) -> DataLoader | list:
        """Every val video once (an empty list when there is no val split)."""
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader | list:
        """Every test video once (an empty list when there is no test split)."""
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        if self._predict is None:
            raise DataError("no predict data: give predict= (a folder or a list of videos)")
        loader, skipped = predict_loader(
            self._predict,
            self.video_input,
            self.clips_per_video,
            self.batch_size,
            self.num_workers,
            failures=self._failures,
            transform=self.transforms["predict"],
        )
        self._scan_skipped.update(skipped)
        return _unpadded(loader, self.trainer, "videos to predict")


# Lightning's running stages -> the names of the transform hooks.
_STAGES = {
    "train": "train",
    "validate": "val",
    "sanity_check": "val",
    "test": "test",
    "predict": "predict",
}


def _per_stage(fn: Callable | dict[str, Callable] | None) -> dict[str, Callable]:
    if fn is None:
        return {}
    if isinstance(fn, dict):
        bad = sorted(set(fn) - {"train", "val", "test", "predict"})
        if bad:
            raise DataError(
                f"per_batch_transform_on_device stages {bad}: allowed: train, val, test, predict"
            )
        return dict(fn)
    if not callable(fn):
        raise DataError(
            f"per_batch_transform_on_device {fn!r}: a callable on the batch dict, or a dict "
            "of them per stage"
        )
    return dict.fromkeys(("train", "val", "test", "predict"), fn)


def sort_labels(labels) -> list[str]:
    """Sorted labels; numerically when every one is an integer (then label k is class k, and a
    list with labels 0..K-1 keeps them in that order, not 0, 1, 10, 11, 2...)."""
    labels = set(labels)
    if labels and all(str(label).isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def with_clip_duration(vi: VideoInput, seconds: float, fps: float | None) -> VideoInput:
    """``vi`` with its ``num_frames`` spread over ``seconds``: the sampling rate (every Nth
    frame) that spans it at the data's frame rate ``fps`` (30 if unknown), the nominal rate
    adjusted so the clip spans ``seconds`` exactly."""
    fps = fps or vi.fps
    rate = max(1, round(seconds * fps / vi.num_frames))
    return replace(vi, sampling_rate=rate, fps=vi.num_frames * rate / seconds)


def _sources(make, train, val, test) -> dict[str, VideoSource | None]:
    """``{"train": make(train), ...}`` for the splits given, None for the others."""
    given = {"train": train, "val": val, "test": test}
    return {split: make(f) if f is not None else None for split, f in given.items()}


def unpadded_sampler(dataset, num_replicas: int, rank: int, what: str = "data"):
    """A distributed sampler that gives each of ``num_replicas`` processes a disjoint share of
    ``dataset`` (sizes differ by at most one), in order.

    PyTorch's DistributedSampler pads the dataset to a multiple of the process count by
    repeating items, which would count some videos twice in video-level accuracy; torchmetrics
    sums the per-process counts, so unequal shares are exact. Every process must get at least
    one item (a process with no batch would leave the others waiting for its metrics), so with
    fewer items than processes this falls back to padding, with a warning.
    """
    from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
    from torch.utils.data import DistributedSampler

    if len(dataset) < num_replicas:
        warnings.warn(
            f"{what}: {len(dataset)} video(s) on {num_replicas} processes; some are counted "
            "twice in the metrics",
            DataWarning,
            stacklevel=2,
        )
        return DistributedSampler(dataset, num_replicas, rank, shuffle=False)
    return UnrepeatedDistributedSampler(dataset, num_replicas, rank, shuffle=False)


def _unpadded(loader: DataLoader, trainer, what: str) -> DataLoader:
    """``loader`` with an :func:`unpadded_sampler` when ``trainer`` runs several processes
    (Lightning keeps a DistributedSampler it finds instead of adding its padding one)."""
    if trainer is None or trainer.world_size <= 1:
        return loader
    sampler = unpadded_sampler(loader.dataset, trainer.world_size, trainer.global_rank, what)
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        persistent_workers=loader.persistent_workers,
    )


def predict_loader(
    paths_or_folder: Paths,
    video_input: VideoInput,
    clips_per_video: int = 4,
    batch_size: int = 4,
    num_workers: int = 0,
    cache_dir: str | Path | None = None,
    failures: FailureLog | None = None,
    summarise: bool = True,
    transform: Callable | None = None,
) -> tuple[DataLoader, dict[str, str]]:
    """A loader of ``{"video": [B, N, C, T, H, W], "index", "path"}`` over videos to classify,
    and the ``{path: reason}`` of the ones the metadata scan skipped (missing, not a video).
    If every file is bad the loader is empty; only a folder or list holding no file at all is
    an error. A file that fails to decode while loading is left out of its batch and recorded
    in ``failures`` (a fresh log by default): read it with ``loader.dataset.failures.read()``.
    ``summarise=False`` leaves out the warning that counts the skipped files; ``transform``
    replaces the evaluation preset (a per-sample callable on the clip dict).
    """
    from trainer.cli_args import user_cache_dir

    source = VideoSource.from_paths(paths_or_folder)
    # Videos to classify are the user's own files: cache their metadata out of their folders.
    usable, skipped = resolve(
        source, cache_dir or user_cache_dir(), allow_empty=True, summarise=summarise
    )
    items = [VideoItem(p, -1, meta) for p, _, meta in usable]
    ds = MultiClipDataset(
        items,
        video_input,
        transform or eval_transform(video_input),
        failures or _temp_failure_log(),
        clips=clips_per_video,
        with_label=False,
        with_path=True,
    )
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=ClipCollate(video_input, clips_per_video, ["index", "path"]),
    )
    return loader, skipped


def _temp_failure_log() -> FailureLog:
    """A FailureLog in a temporary file, removed when the log object is collected."""
    fd, log_path = tempfile.mkstemp(prefix="video-failures-", suffix=".log")
    os.close(fd)
    log = FailureLog(log_path)
    weakref.finalize(log, _unlink, log_path)
    return log


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
