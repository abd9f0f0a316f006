"""The LightningDataModule: folders, CSVs or Kinetics annotations in, clip batches out.

Batches:

- train: ``{"video": Tensor[B, C, T, H, W] (or [slow, fast]), "label": LongTensor[B]}``, one
  random clip per video per epoch (random start, scale jitter, crop, optional flip);
- val/test: one item per *video* with ``clips_per_video`` uniformly spaced clips stacked,
  ``{"video": Tensor[B, N, C, T, H, W] (or [slow, fast] of such), "label", "index"}``, so the
  model averages the N clip logits (video-level accuracy, as published Kinetics numbers are);
- predict: as val without ``label``, with ``path`` (list of str).

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
from collections.abc import Sequence
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
    sorted labels of the data (of the Kinetics annotations when given), or ``labels=`` for
    predict-only use. ``hflip=False`` disables the horizontal flip augmentation (needed when
    left/right carries the class).
    """

    def __init__(
        self,
        *,
        video_input: VideoInput,
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
    ):
        super().__init__()
        if batch_size < 1 or num_workers < 0 or clips_per_video < 1:
            raise DataError(
                f"batch_size={batch_size}, clips_per_video={clips_per_video}, "
                f"num_workers={num_workers}: the first two must be >= 1, num_workers >= 0"
            )
        if not any(s is not None for s in (train, val, test, predict)):
            raise DataError("no data given: pass at least one of train, val, test or predict")
        self.video_input = video_input
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
            self.labels = sorted(found | declared)
        if not self.labels:
            raise DataError("no labels: give labels= for predict-only use")
        index = {label: i for i, label in enumerate(self.labels)}
        self.items = {
            split: [VideoItem(p, index[label], meta) for p, label, meta in usable]
            for split, usable in resolved.items()
        }
        self._predict = predict

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
        cls, annotations: dict[str, str | Path], video_root: str | Path, **kw
    ) -> VideoDataModule:
        """Kinetics annotation CSVs per split (``{"train": ..., "val": ...}``) over the crawler's
        ``video_root/<label>/<ytid>_<start>_<end>.mp4`` layout. Classes come from the CSVs."""
        from trainer.kinetics import kinetics_source

        allowed = {"train", "val", "test"}
        bad = sorted(set(annotations) - allowed)
        if bad:
            raise DataError(f"unknown split(s) {bad} in annotations; allowed: {sorted(allowed)}")
        src = {k: kinetics_source(v, video_root) for k, v in annotations.items()}
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
        ds = ClipDataset(
            self.items["train"],
            self.video_input,
            train_transform(self.video_input, hflip=self.hflip),
            self._failures,
        )
        collate = ClipCollate(self.video_input, None, ["label"])
        return self._loader(ds, True, collate, self.batch_size)

    def _eval_loader(self, split: str) -> DataLoader | list:
        if split not in self.items:
            return []  # Lightning's "no such split": the loop is skipped, not an error
        ds = MultiClipDataset(
            self.items[split],
            self.video_input,
            eval_transform(self.video_input),
            self._failures,
            clips=self.clips_per_video,
        )
        collate = ClipCollate(self.video_input, self.clips_per_video, ["label", "index"])
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
        )
        self._scan_skipped.update(skipped)
        return _unpadded(loader, self.trainer, "videos to predict")


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
) -> tuple[DataLoader, dict[str, str]]:
    """A loader of ``{"video": [B, N, C, T, H, W], "index", "path"}`` over videos to classify,
    and the ``{path: reason}`` of the ones the metadata scan skipped (missing, not a video).
    If every file is bad the loader is empty; only a folder or list holding no file at all is
    an error. A file that fails to decode while loading is left out of its batch and recorded
    in ``failures`` (a fresh log by default): read it with ``loader.dataset.failures.read()``.
    ``summarise=False`` leaves out the warning that counts the skipped files.
    """
    from trainer.meta_cache import user_cache_dir

    source = VideoSource.from_paths(paths_or_folder)
    # Videos to classify are the user's own files: cache their metadata out of their folders.
    usable, skipped = resolve(
        source, cache_dir or user_cache_dir(), allow_empty=True, summarise=summarise
    )
    items = [VideoItem(p, -1, meta) for p, _, meta in usable]
    ds = MultiClipDataset(
        items,
        video_input,
        eval_transform(video_input),
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
