"""What a training run leaves in its output dir, and the callbacks that keep it current.

Lightning's CSVLogger writes one ``logs/version_N/metrics.csv`` per attempt (a resumed run is a
new version); ``metrics.csv`` at the top merges them into one flat table, one row per
(epoch, step), so a run interrupted and resumed still reads as one history.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from pytorch_lightning import Callback
from pytorch_lightning.utilities.exceptions import SIGTERMException


class RunOutputs:
    """Paths and writers for one output dir."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.ckpt_dir = self.root / "checkpoints"
        self.last_ckpt = self.ckpt_dir / "last.ckpt"
        self.best_ckpt = self.ckpt_dir / "best.ckpt"
        self.metrics_csv = self.root / "metrics.csv"
        self.logs = self.root / "logs"

    def write_run_info(self, args, labels: list[str], model) -> None:
        """labels.txt and args.json (the flags, resolved input included)."""
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "labels.txt").write_text("".join(f"{label}\n" for label in labels))
        flat = {
            k: (v.to_dict() if hasattr(v, "to_dict") else v)
            for k, v in vars(args).items()
            if k != "kinetics_splits" or v
        }
        flat["backbone_params"] = sum(p.numel() for p in model.parameters())
        (self.root / "args.json").write_text(json.dumps(flat, indent=2, default=str) + "\n")

    def _versions(self) -> list[Path]:
        def number(p: Path) -> int:
            return int(p.name.split("_")[-1]) if p.name.split("_")[-1].isdigit() else -1

        return sorted((p for p in self.logs.glob("version_*") if p.is_dir()), key=number)

    def write_metrics(self) -> None:
        """Merge every attempt's metrics into metrics.csv; copy the latest hparams.yaml."""
        rows: dict[tuple[int, int], dict[str, str]] = {}
        columns: list[str] = ["epoch", "step"]
        versions = self._versions()
        for version in versions:
            f = version / "metrics.csv"
            if not f.is_file():
                continue
            with f.open(newline="") as fh:
                for row in csv.DictReader(fh):
                    key = (int(row.get("epoch") or 0), int(row.get("step") or 0))
                    merged = rows.setdefault(key, {"epoch": str(key[0]), "step": str(key[1])})
                    for k, v in row.items():
                        if v not in (None, ""):
                            merged[k] = v
                            if k not in columns:
                                columns.append(k)
        if rows:
            self.root.mkdir(parents=True, exist_ok=True)
            with self.metrics_csv.open("w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=columns)
                w.writeheader()
                for key in sorted(rows):
                    w.writerow(rows[key])
        for version in reversed(versions):
            if (version / "hparams.yaml").is_file():
                shutil.copyfile(version / "hparams.yaml", self.root / "hparams.yaml")
                break

    def finish(self, trainer) -> tuple[Path, float | None]:
        """The best checkpoint (last.ckpt when none was kept) and its val_acc1, if any."""
        cb = trainer.checkpoint_callback
        score = cb.best_model_score if cb is not None else None
        path = self.best_ckpt if self.best_ckpt.is_file() else self.last_ckpt
        if cb is not None and cb.monitor is None:
            score = None
        return path, (float(score) if score is not None else None)

    def write_predictions(self, results: list[tuple[str, object]], skipped: dict) -> None:
        with (self.root / "predictions.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "label"])
            w.writerows(results)
            for path, why in skipped.items():
                w.writerow([path, f"SKIPPED: {why}"])


class MetricsCsv(Callback):
    """Refresh metrics.csv after every epoch, so an interrupted run still has its history."""

    def __init__(self, outputs: RunOutputs) -> None:
        self.outputs = outputs

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and trainer.logger is not None:
            trainer.logger.save()
            self.outputs.write_metrics()


class SigtermCheckpoint(Callback):
    """On SIGTERM (Lightning stops after the current batch) save last.ckpt before exiting."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and not trainer.fast_dev_run:
            trainer.save_checkpoint(self.path)
            if trainer.logger is not None and trainer.is_global_zero:
                trainer.logger.save()
