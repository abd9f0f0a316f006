"""Lightning Flash's video API on top of this trainer, working on Lightning 2.

Flash (``pip install lightning-flash``) needs ``pytorch-lightning<2`` and is no longer
maintained; its video scripts run here with their imports changed::

    import trainer as flash
    from trainer import VideoClassificationData, VideoClassifier, download_data

- :class:`VideoClassificationData`: Flash's constructors (``from_folders``, ``from_csv``,
  ``from_files``/``from_paths``, ``from_kinetics``) and arguments (``clip_sampler``,
  ``clip_duration``, ``clip_sampler_kwargs``, ``video_sampler``, ``decode_audio``,
  ``batch_size``, ``num_workers``, per-sample and per-batch transforms) over
  :class:`trainer.data.VideoDataModule`. The clip geometry follows the model's backbone.
- :class:`Trainer`: a ``pytorch_lightning.Trainer`` that also takes ``gpus=`` (Flash's and
  Lightning 1's), with Flash's ``finetune(model, datamodule=, strategy=)`` and
  ``predict(model, datamodule=, output="labels"|"probabilities"|"preds")``.
- :func:`download_data`: Flash's ``download_data(url, path)``: fetch an archive and extract it
  into ``path`` (any fsspec URL; safe extraction as :mod:`trainer.download`).

Not provided: ``model.serve()`` (raises NotImplementedError), Flash's ``InputTransform``
classes (pass plain callables), ``multi_label=True`` and audio (``decode_audio=True``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from trainer.data import DataError, VideoDataModule
from trainer.datasets import VideoSource
from trainer.finetune import check_strategy

__all__ = ["Trainer", "VideoClassificationData", "download_data"]

OUTPUTS = ("labels", "probabilities", "preds")


class VideoClassificationData(VideoDataModule):
    """Flash's ``VideoClassificationData``: a :class:`~trainer.data.VideoDataModule` built
    Flash's way. Every constructor takes the data module's keyword arguments (see its
    docstring), and Flash's: ``decode_audio`` (False only), ``clip_sampler`` and
    ``clip_duration`` (seconds), ``clip_sampler_kwargs``, ``video_sampler`` (a Sampler class),
    ``train_transform``/``val_transform``/``test_transform``/``predict_transform`` and
    ``per_batch_transform_on_device``. ``video_input`` is optional: the model's backbone sets
    it when a Trainer runs the model on this data.
    """

    def __init__(self, *, decode_audio: bool = False, **kw: Any) -> None:
        if decode_audio:
            raise DataError(
                "decode_audio=True: not supported; videos are classified from their frames "
                "(use decode_audio=False)"
            )
        super().__init__(**kw)

    @classmethod
    def from_folders(  # type: ignore[override]
        cls,
        train_folder: str | Path | None = None,
        val_folder: str | Path | None = None,
        test_folder: str | Path | None = None,
        predict_folder: str | Path | None = None,
        **kw: Any,
    ) -> VideoClassificationData:
        """``FOLDER/<label>/<video>`` per split; ``predict_folder`` holds videos to classify."""
        return super().from_folders(train_folder, val_folder, test_folder, predict_folder, **kw)

    @classmethod
    def from_files(
        cls,
        train_files: Sequence[str | Path] | None = None,
        train_targets: Sequence[Any] | None = None,
        val_files: Sequence[str | Path] | None = None,
        val_targets: Sequence[Any] | None = None,
        test_files: Sequence[str | Path] | None = None,
        test_targets: Sequence[Any] | None = None,
        predict_files: Sequence[str | Path] | None = None,
        **kw: Any,
    ) -> VideoClassificationData:
        """Lists of video files and their targets (class names, or integer class indices)."""
        sources = {}
        for split, files, targets in (
            ("train", train_files, train_targets),
            ("val", val_files, val_targets),
            ("test", test_files, test_targets),
        ):
            if files is None:
                continue
            if targets is None or len(targets) != len(files):
                raise DataError(
                    f"{split}_files: {len(files)} files need as many {split}_targets, got "
                    f"{'none' if targets is None else len(targets)}"
                )
            sources[split] = _files_source(split, files, targets)
        predict = [str(p) for p in predict_files] if predict_files is not None else None
        return cls(**sources, predict=predict, **kw)

    @classmethod
    def from_paths(
        cls,
        train_data_path: str | Path | None = None,
        val_data_path: str | Path | None = None,
        test_data_path: str | Path | None = None,
        predict_data_path: str | Path | None = None,
        **kw: Any,
    ) -> VideoClassificationData:
        """Flash 0.3's spelling of :meth:`from_folders`."""
        return cls.from_folders(
            train_data_path, val_data_path, test_data_path, predict_data_path, **kw
        )

    @classmethod
    def from_csv(  # type: ignore[override]
        cls,
        input_field: str | None = None,
        target_fields: str | None = None,
        train_file: str | Path | None = None,
        val_file: str | Path | None = None,
        test_file: str | Path | None = None,
        videos_root: str | Path | None = None,
        **kw: Any,
    ) -> VideoClassificationData:
        """CSVs of ``path,label`` rows (or PyTorchVideo's ``path label`` lists); Flash's
        ``input_field``/``target_fields`` name the columns when the CSV has others too."""
        if input_field or target_fields:
            paths = {"train": train_file, "val": val_file, "test": test_file}
            src = {
                split: _columns_source(
                    f, input_field or "path", target_fields or "label", videos_root
                )
                for split, f in paths.items()
                if f is not None
            }
            return cls(**src, **kw)
        return super().from_csv(train_file, val_file, test_file, root=videos_root, **kw)


def _files_source(split: str, files, targets) -> VideoSource:
    items = [(Path(f), str(t)) for f, t in zip(files, targets, strict=True)]
    root = Path(os.path.commonpath([str(Path(f).resolve().parent) for f in files]))
    return VideoSource(f"{split}_files", root, items, empty_message=f"no usable {split}_files")


def _columns_source(csv_path, input_field: str, target_field: str, root) -> VideoSource:
    import csv

    path = Path(csv_path)
    if not path.is_file():
        raise DataError(f"CSV file {path} does not exist")
    base = Path(root) if root is not None else path.parent
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in (input_field, target_field) if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: no column(s) {missing}; it has {reader.fieldnames}")
        items = [(base / row[input_field], row[target_field]) for row in reader]
    return VideoSource(str(path), base, items, empty_message=f"no videos listed in {path}")


class Trainer(pl.Trainer):
    """``pytorch_lightning.Trainer`` plus Flash's ``gpus=``, ``finetune`` and ``predict(output=)``.

    ``gpus``: None (Lightning's ``accelerator="auto"``), 0 (the CPU), N (N GPUs; fewer here:
    a warning and those, none: the CPU) or -1 (every GPU). Lightning 2's own ``accelerator`` and
    ``devices`` win when given.
    """

    def __init__(self, *args: Any, gpus: int | str | list[int] | None = None, **kw: Any) -> None:
        if gpus is not None and "accelerator" not in kw and "devices" not in kw:
            kw["accelerator"], kw["devices"] = _gpus(gpus)
        super().__init__(*args, **kw)

    def finetune(
        self,
        model: pl.LightningModule,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        datamodule: pl.LightningDataModule | None = None,
        strategy: str | tuple[str, int] = "no_freeze",
        ckpt_path: str | None = None,
    ) -> None:
        """Train ``model`` with a finetuning ``strategy``: ``no_freeze``, ``freeze``,
        ``freeze_unfreeze`` (the backbone joins at the model's ``unfreeze_epoch``), or
        ``("freeze_unfreeze", EPOCH)``."""
        name, epoch = _strategy(strategy)
        if not hasattr(model, "set_finetune_strategy"):
            raise TypeError(
                f"finetune: {type(model).__name__} is not a trainer.VideoClassifier; use fit()"
            )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*freezes a randomly initialised")
            model.set_finetune_strategy(name, epoch)
        return self.fit(model, train_dataloaders, val_dataloaders, datamodule, ckpt_path)

    def predict(  # type: ignore[override]
        self,
        model: pl.LightningModule | None = None,
        dataloaders: Any = None,
        datamodule: pl.LightningDataModule | None = None,
        return_predictions: bool | None = None,
        ckpt_path: str | None = None,
        output: str | None = None,
        **kw: Any,
    ):
        """Lightning's predict; with ``output`` one list per batch of, per video: its label
        (``labels``), its class probabilities (``probabilities``, in ``model.labels`` order),
        or the model's raw output (``preds``, the default: a tensor per batch)."""
        if output is not None and output not in OUTPUTS:
            raise ValueError(f"output {output!r}: choose one of {', '.join(OUTPUTS)}")
        batches = super().predict(
            model, dataloaders, datamodule, return_predictions, ckpt_path, **kw
        )
        if output in (None, "preds") or batches is None:
            return batches
        module = model or self.lightning_module
        if output == "probabilities":
            return [probs.tolist() for probs in batches]
        return [[module.labels[int(i)] for i in probs.argmax(-1)] for probs in batches]


def _gpus(gpus) -> tuple[str, Any]:
    import torch

    have = torch.cuda.device_count()
    if isinstance(gpus, str):
        gpus = [int(g) for g in gpus.split(",") if g.strip()] if "," in gpus else int(gpus)
    if gpus == 0 or gpus == []:
        return "cpu", "auto"
    if have == 0:
        warnings.warn(f"gpus={gpus}: no GPU here; training on the CPU", stacklevel=3)
        return "cpu", "auto"
    if gpus == -1:
        return "gpu", -1
    if isinstance(gpus, int) and gpus > have:
        warnings.warn(f"gpus={gpus}: only {have} GPU(s) here; using {have}", stacklevel=3)
        gpus = have
    return "gpu", gpus


def _strategy(strategy) -> tuple[str, int | None]:
    """Flash's finetuning strategy spellings -> (name, unfreeze epoch or None)."""
    epoch = None
    if isinstance(strategy, tuple | list):
        if len(strategy) != 2 or not isinstance(strategy[1], int):
            raise ValueError(
                f"finetune strategy {strategy!r}: a tuple is ('freeze_unfreeze', EPOCH)"
            )
        strategy, epoch = strategy
        if strategy != "freeze_unfreeze":
            raise ValueError(
                f"finetune strategy ({strategy!r}, {epoch}): only freeze_unfreeze takes an epoch"
            )
    if not isinstance(strategy, str):
        raise ValueError(
            f"finetune strategy {strategy!r}: one of no_freeze, freeze, freeze_unfreeze, or "
            "('freeze_unfreeze', EPOCH)"
        )
    check_strategy(strategy, epoch or 0)
    return strategy, epoch


def download_data(url: str, path: str | Path = ".", verbose: bool = False) -> Path:
    """Flash's ``download_data``: fetch the zip/tar at ``url`` (a path or any fsspec URL) and
    extract it into ``path`` as it is (``kinetics.zip`` holding ``kinetics/`` gives
    ``path/kinetics/``), with :mod:`trainer.download`'s checks (no member outside ``path``, no
    links). Done once: a rerun finds the marker and does nothing."""
    import tarfile
    import zipfile

    from trainer import download

    dest = Path(path)
    marker = dest / f"{download.MARKER}-{Path(url.rstrip('/')).name}"
    if marker.exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".download-", dir=dest))
    try:
        archive, out = work / "archive", work / "extracted"
        download._fetch(url, archive)
        out.mkdir()
        if zipfile.is_zipfile(archive):
            download._extract_zip(archive, out, url)
        elif tarfile.is_tarfile(archive):
            download._extract_tar(archive, out, url)
        else:
            raise download.DownloadError(f"{url} is not a zip or tar(.gz/.bz2/.xz) archive")
        for entry in sorted(out.iterdir()):
            if entry.name == "__MACOSX":
                continue
            target = dest / entry.name
            if target.exists():
                raise download.DownloadError(f"download_data {url}: {target} exists already")
            shutil.move(str(entry), target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    marker.write_text(url + "\n")
    if verbose:
        print(f"extracted {url} into {dest}")
    return dest
