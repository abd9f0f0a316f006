"""What a training run leaves in its output dir, and the callbacks that keep it current.

Lightning's CSVLogger writes this attempt's metrics to a scratch folder outside the output dir;
``metrics.csv`` at the top is the one table users read, one row per (epoch, step): the history
of earlier attempts (a run interrupted and resumed) merged with this attempt's rows. So the
output dir holds a single metrics.csv and a single hparams.yaml. Beside it, ``tensorboard/``
holds the same metrics as TensorBoard event files (``tensorboard --logdir OUTPUT_DIR``), each
attempt appending its own events file.
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
import time
import weakref
from pathlib import Path

from pytorch_lightning import Callback
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities.exceptions import SIGTERMException

Rows = dict[tuple[int, int], dict[str, str]]


class RunOutputs:
    """Paths and writers for one output dir."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.ckpt_dir = self.root / "checkpoints"
        self.last_ckpt = self.ckpt_dir / "last.ckpt"
        self.best_ckpt = self.ckpt_dir / "best.ckpt"
        self.metrics_csv = self.root / "metrics.csv"
        self.tensorboard_dir = self.root / "tensorboard"
        self.predictions_csv = self.root / "predictions.csv"
        self._history: Rows = {}
        self._columns: list[str] = ["epoch", "step"]
        self._log_dir: Path | None = None

    def logger(self, resume: bool):
        """A CSVLogger for this attempt, writing to a scratch folder removed at exit. With
        ``resume`` the rows already in metrics.csv are kept as history; otherwise a fresh run
        replaces them."""
        from pytorch_lightning.loggers import CSVLogger

        if resume and self.metrics_csv.is_file():
            self._history = _read_rows(self.metrics_csv, self._columns)
        scratch = tempfile.mkdtemp(prefix="train-logs-")
        weakref.finalize(self, shutil.rmtree, scratch, True)
        logger = CSVLogger(scratch, name="", version=0)
        self._log_dir = Path(logger.log_dir)
        return logger

    def loggers(self, resume: bool) -> list:
        """This attempt's CSVLogger (see :meth:`logger`) and the TensorBoard logger."""
        return [self.logger(resume), _TensorBoard(str(self.root), name="tensorboard", version="")]

    def write_run_info(self, args, labels: list[str], model) -> None:
        """labels.txt and args.json (the flags, resolved input included)."""
        from trainer.backbones import count_params

        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "labels.txt").write_text("".join(f"{label}\n" for label in labels))
        flat = {
            k: (v.to_dict() if hasattr(v, "to_dict") else v)
            for k, v in vars(args).items()
            if k != "kinetics_splits" or v
        }
        flat["backbone_params"] = count_params(model)
        (self.root / "args.json").write_text(json.dumps(flat, indent=2, default=str) + "\n")

    def write_metrics(self) -> None:
        """Write metrics.csv (history plus this attempt) and hparams.yaml from the logger."""
        columns = list(self._columns)
        rows = {k: dict(v) for k, v in self._history.items()}
        log = self._log_dir / "metrics.csv" if self._log_dir else None
        if log is not None and log.is_file():
            for key, row in _read_rows(log, columns).items():
                rows.setdefault(key, {}).update(row)
        if rows:
            self.root.mkdir(parents=True, exist_ok=True)
            with self.metrics_csv.open("w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=columns)
                w.writeheader()
                for key in sorted(rows):
                    w.writerow(rows[key])
        if self._log_dir is not None and (self._log_dir / "hparams.yaml").is_file():
            shutil.copyfile(self._log_dir / "hparams.yaml", self.root / "hparams.yaml")

    def finish(self, trainer) -> tuple[Path, float | None]:
        """The best checkpoint (last.ckpt when none was kept) and its val_acc1, if any."""
        cb = trainer.checkpoint_callback
        score = cb.best_model_score if cb is not None else None
        path = self.best_ckpt if self.best_ckpt.is_file() else self.last_ckpt
        if cb is not None and cb.monitor is None:
            score = None
        return path, (float(score) if score is not None else None)

    def write_predictions(self, results: list[tuple[str, object]], skipped: dict) -> None:
        with self.predictions_csv.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "label"])
            w.writerows(results)
            for path, why in skipped.items():
                w.writerow([path, f"SKIPPED: {why}"])


def _read_rows(path: Path, columns: list[str]) -> Rows:
    """Rows of a metrics CSV keyed by (epoch, step), empty cells dropped; new column names are
    appended to ``columns``."""
    rows: Rows = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            key = (int(row.get("epoch") or 0), int(row.get("step") or 0))
            merged = rows.setdefault(key, {"epoch": str(key[0]), "step": str(key[1])})
            for k, v in row.items():
                if v not in (None, ""):
                    merged[k] = v
                    if k not in columns:
                        columns.append(k)
    return rows


class _TensorBoard(TensorBoardLogger):
    """TensorBoard's events only: the hyperparameters are in the output dir's hparams.yaml
    already (one copy, not a second one under tensorboard/)."""

    def save(self) -> None:
        if self._experiment is not None:
            self._experiment.flush()


class LearningRates(LearningRateMonitor):
    """Every parameter group's learning rate (``lr-SGD``, or ``lr-SGD/pg1``, ``lr-SGD/pg2`` once
    freeze_unfreeze adds the backbone), one value per epoch: the rate its first batch trained
    with, logged with the epoch's other metrics so metrics.csv keeps one row per epoch."""

    def __init__(self) -> None:
        super().__init__(logging_interval="epoch")
        self._stats: dict[str, float] | None = None

    def on_train_epoch_start(self, trainer, *args, **kwargs) -> None:
        self._stats = None  # read at the first batch: after this epoch's new groups are added

    def on_train_batch_start(self, trainer, *args, **kwargs) -> None:
        if self._stats is None:
            self._stats = self._extract_stats(trainer, "any")

    def on_train_epoch_end(self, trainer, *args, **kwargs) -> None:
        if self._stats:
            # The step Lightning logs the epoch's metrics at, so they share a row.
            step = max(0, trainer.fit_loop.epoch_loop._batches_that_stepped - 1)
            for logger in trainer.loggers:
                logger.log_metrics({**self._stats, "epoch": trainer.current_epoch}, step=step)


class MetricsCsv(Callback):
    """Refresh metrics.csv after every epoch, so an interrupted run still has its history."""

    def __init__(self, outputs: RunOutputs) -> None:
        self.outputs = outputs

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and trainer.logger is not None:
            trainer.logger.save()
            self.outputs.write_metrics()


class EpochLine(Callback):
    """Print one line per finished epoch (for logs, where there is no progress bar): its
    metrics and how long it took."""

    KEYS = ("train_loss", "train_acc1", "val_loss", "val_acc1", "val_acc5")

    def __init__(self) -> None:
        self.started: float | None = None  # unknown for an epoch resumed mid-way

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.started = time.monotonic()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        m = trainer.callback_metrics
        # Top-5 accuracy says nothing with 5 classes or fewer (it is always 1).
        few = len(getattr(pl_module, "labels", ())) <= 5
        keys = [k for k in self.KEYS if k in m and not (few and k.endswith("acc5"))]
        keys += sorted(k for k in m if k.startswith("lr-"))  # from LearningRates
        values = " ".join(f"{k}={float(m[k]):.4g}" for k in keys)
        last = f"/{trainer.max_epochs - 1}" if (trainer.max_epochs or -1) > 0 else ""
        took = f" ({time.monotonic() - self.started:.1f}s)" if self.started is not None else ""
        print(f"epoch {trainer.current_epoch}{last}: {values}{took}", flush=True)


class SigtermCheckpoint(Callback):
    """On SIGTERM (Lightning stops after the current batch) save last.ckpt before exiting."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and not trainer.fast_dev_run:
            trainer.save_checkpoint(self.path)
            if trainer.logger is not None and trainer.is_global_zero:
                trainer.logger.save()
