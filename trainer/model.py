"""VideoClassifier: a backbone from the registry, trained with Lightning, predicting Flash-style.

The checkpoint carries everything prediction needs: the backbone name, the labels and the exact
``VideoInput`` (clip geometry and normalisation), all saved as hyperparameters. Validation and
test batches hold N clips per video; their softmax scores are averaged into one video-level
prediction, as the published model zoo accuracies are measured.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import move_data_to_device
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from trainer.backbones import build_backbone, check_input, get_backbone
from trainer.cli_args import OPTIMIZERS, SCHEDULERS
from trainer.finetune import check_strategy
from trainer.transforms import pack_pathways
from trainer.video_input import VideoInput

Video = Tensor | list[Tensor]


def _merge_clips(video: Video) -> tuple[Video, int, int]:
    """[B, N, C, T, H, W] (or a list of two) -> [B*N, C, T, H, W], B, N; a batch of single
    clips ([B, C, T, H, W], ``stack_clips=False``) is B videos of one clip."""
    first = video[0] if isinstance(video, list | tuple) else video
    if first.ndim == 5:
        return video, first.shape[0], 1
    b, n = first.shape[:2]
    if isinstance(video, list | tuple):
        return [v.flatten(0, 1) for v in video], b, n
    return video.flatten(0, 1), b, n


def _choice(kind: str, value, allowed: tuple[str, ...]) -> str:
    """A case-insensitive choice (Flash spells them "Adam", "SGD"); None means "none"."""
    if value is None and "none" in allowed:
        return "none"
    if isinstance(value, type):  # torch.optim.AdamW and the like
        value = value.__name__
    if isinstance(value, str) and value.lower() in allowed:
        return value.lower()
    raise ValueError(f"unknown {kind} {value!r}; choose one of: {', '.join(allowed)}")


class VideoClassifier(pl.LightningModule):
    """Video classifier over a registry backbone.

    Args:
        backbone: registry name (see :meth:`available_backbones`).
        labels: class names; their order defines the output indices. Or ``num_classes``
            alone (Flash's spelling): the labels are then "0" ... "N-1".
        video_input: ``VideoInput.to_dict()`` of the clips the model is trained on; defaults to
            the backbone's published input.
        lr (or Flash's ``learning_rate``), optimizer (sgd, adam, adamw; any case),
            weight_decay, momentum: the optimizer (``sgd`` uses ``momentum``).
        lr_scheduler: ``cosine`` (to 0 over training), ``step`` (x0.1 at 50% and 75% of the
            steps) or ``none``/None; ``warmup_epochs`` of linear warmup precede it.
        finetune_strategy, unfreeze_epoch: see ``trainer.finetune``. The model brings its own
            finetuning callback (``configure_callbacks``), so the strategy holds however it is
            trained: a plain ``pl.Trainer().fit`` too.
        pretrained, weights: initial backbone weights (published Kinetics weights, or a file).
        clips_per_video: clips averaged per video at validation, test and prediction.
        head: None for the backbone's own linear classifier, or an ``nn.Module`` (or a callable
            ``(in_features, num_classes) -> nn.Module``) put in its place. A checkpoint of a
            model with such a head loads with the same ``head=`` passed to
            ``load_from_checkpoint``.
        load_weights: fetch ``pretrained``/``weights`` at construction. Saved as False in
            checkpoints, so loading one never downloads or needs the original weights file.

    ``serve()`` (Flash's model server) is out of scope here: it raises NotImplementedError.
    """

    multi_label = False  # one label per video

    def __init__(
        self,
        backbone: str = "x3d_xs",
        labels: list[str] | None = None,
        video_input: dict | None = None,
        lr: float = 0.1,
        optimizer: str = "sgd",
        weight_decay: float = 5e-5,
        momentum: float = 0.9,
        lr_scheduler: str | None = "cosine",
        warmup_epochs: float = 0.0,
        finetune_strategy: str = "no_freeze",
        unfreeze_epoch: int = 1,
        pretrained: bool = False,
        weights: str | None = None,
        clips_per_video: int = 4,
        load_weights: bool = True,
        num_classes: int | None = None,
        learning_rate: float | None = None,
        head: Any = None,
        multi_label: bool = False,
    ) -> None:
        super().__init__()
        if multi_label:
            raise ValueError("multi_label=True: not supported; each video has one label")
        if labels is None and num_classes is not None:
            if num_classes < 1:
                raise ValueError(f"num_classes {num_classes}: need at least one class")
            labels = [str(i) for i in range(num_classes)]
        if not labels:
            raise ValueError("labels: need at least one class name (or give num_classes)")
        labels = list(labels)
        if num_classes is not None and num_classes != len(labels):
            raise ValueError(f"num_classes {num_classes} and {len(labels)} labels disagree")
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels must be unique, got {labels}")
        if learning_rate is not None:
            lr = learning_rate
        optimizer = _choice("optimizer", optimizer, OPTIMIZERS)
        lr_scheduler = _choice("lr_scheduler", lr_scheduler, SCHEDULERS)
        check_strategy(finetune_strategy, unfreeze_epoch)
        entry = get_backbone(backbone)
        vi = VideoInput.from_dict(video_input) if video_input else entry.default_input
        check_input(backbone, vi)
        custom_head = head is not None and head != "custom"
        self.save_hyperparameters(ignore=["head"])
        # What is saved is what the model is: one spelling of each choice.
        self.hparams.update(
            labels=labels,
            num_classes=None,
            lr=lr,
            learning_rate=None,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            video_input=vi.to_dict(),
            head="custom" if custom_head else None,
        )
        if head == "custom":
            raise ValueError(
                "this checkpoint's model has a head of its own: pass the same head= to "
                "load_from_checkpoint"
            )
        if finetune_strategy != "no_freeze" and not (pretrained or weights) and load_weights:
            warnings.warn(
                f"finetune_strategy {finetune_strategy!r} freezes a randomly initialised "
                "backbone (no pretrained= or weights=): only the head learns",
                stacklevel=2,
            )
        self.head_path = entry.head
        self.backbone = build_backbone(
            backbone,
            len(labels),
            video_input=vi,
            pretrained=pretrained and load_weights,
            weights=weights if load_weights else None,
        )
        if custom_head:
            _replace_head(self.backbone, entry.head, head, len(labels))
        # One clip of the model's input: Lightning's model summary runs it to report the
        # layers' sizes and the FLOPs per clip (else it prints "Total FLOPs: 0").
        clip = torch.zeros(1, 3, vi.num_frames, vi.crop_size, vi.crop_size)
        self.example_input_array = (pack_pathways(clip, vi.slowfast_alpha),)
        k5 = min(5, len(labels))
        self.train_acc1 = MulticlassAccuracy(len(labels), top_k=1, average="micro")
        for stage in ("val", "test"):
            setattr(
                self, f"{stage}_acc1", MulticlassAccuracy(len(labels), top_k=1, average="micro")
            )
            setattr(
                self, f"{stage}_acc5", MulticlassAccuracy(len(labels), top_k=k5, average="micro")
            )

    @staticmethod
    def available_backbones() -> list[str]:
        """The registry's backbone names."""
        from trainer.backbones import REGISTRY

        return sorted(REGISTRY)

    available_models = available_backbones  # Flash's older spelling

    @staticmethod
    def available_optimizers() -> list[str]:
        return list(OPTIMIZERS)

    @staticmethod
    def available_lr_schedulers() -> list[str]:
        return list(SCHEDULERS)

    def serve(self, *args, **kwargs):
        """Flash's model server: out of scope here (no serving stack is shipped)."""
        raise NotImplementedError(
            "VideoClassifier.serve(): serving is out of scope for this project; classify with "
            "model.predict(paths), Trainer.predict, or python -m trainer.predict CKPT VIDEOS"
        )

    def configure_callbacks(self):
        """The finetuning strategy's callback: it replaces one given to the Trainer, so the
        model's own ``finetune_strategy`` holds under any Trainer."""
        from trainer.finetune import VideoFinetuning

        return [VideoFinetuning(self.hparams.finetune_strategy, self.hparams.unfreeze_epoch)]

    def set_finetune_strategy(self, strategy: str, unfreeze_epoch: int | None = None) -> None:
        """Change the strategy before training (``Trainer.finetune`` does)."""
        epoch = self.hparams.unfreeze_epoch if unfreeze_epoch is None else unfreeze_epoch
        check_strategy(strategy, epoch)
        self.hparams.finetune_strategy, self.hparams.unfreeze_epoch = strategy, epoch

    # --- what a checkpoint tells ----------------------------------------------------------

    @property
    def labels(self) -> list[str]:
        return list(self.hparams.labels)

    @property
    def video_input(self) -> VideoInput:
        return VideoInput.from_dict(self.hparams.video_input)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The weights are in the state dict: loading the checkpoint must not fetch them again.
        checkpoint["hyper_parameters"]["load_weights"] = False

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, **kwargs):  # type: ignore[override]
        """Lightning's loader, with a one-line ``CheckpointError`` for a file that is not one of
        our checkpoints. Loads onto the CPU unless ``map_location`` says otherwise."""
        from trainer.predict import check_checkpoint

        check_checkpoint(checkpoint_path)
        # Our checkpoints hold tensors and plain types only: never unpickle arbitrary objects.
        kwargs.setdefault("weights_only", True)
        return super().load_from_checkpoint(
            checkpoint_path, map_location=map_location or "cpu", **kwargs
        )

    # --- forward and steps ----------------------------------------------------------------

    def forward(self, video: Video) -> Tensor:
        """Logits for a batch of clips ([B, C, T, H, W], or [slow, fast] for SlowFast)."""
        return self.backbone(video)

    def video_probs(self, video: Video) -> Tensor:
        """Video-level class probabilities: softmax of each of the N clips, averaged."""
        clips, b, n = _merge_clips(video)
        # Sized explicitly: a batch whose every video failed to decode has b == 0.
        return F.softmax(self(clips), dim=-1).view(b, n, len(self.labels)).mean(dim=1)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        logits = self(batch["video"])
        loss = F.cross_entropy(logits, batch["label"])
        self.train_acc1(logits, batch["label"])
        bs = batch["label"].shape[0]
        # Epoch-level only: metrics.csv gets one row per epoch, train and val side by side.
        epoch = dict(on_step=False, on_epoch=True, batch_size=bs)
        self.log("train_loss", loss, prog_bar=True, sync_dist=True, **epoch)
        self.log("train_acc1", self.train_acc1, **epoch)
        # The learning rate of every parameter group is logged by LearningRateMonitor.
        return loss

    def _eval_step(self, batch: dict, stage: str) -> None:
        y = batch["label"]
        if y.numel() == 0:  # every video of the batch failed to decode (listed in .skipped)
            return
        probs = self.video_probs(batch["video"])
        loss = F.nll_loss(probs.clamp_min(1e-8).log(), y)
        acc1, acc5 = getattr(self, f"{stage}_acc1"), getattr(self, f"{stage}_acc5")
        acc1(probs, y)
        acc5(probs, y)
        bs = y.shape[0]
        # Metric objects sync their state across DDP processes when computed.
        self.log(f"{stage}_loss", loss, batch_size=bs, sync_dist=True)
        self.log(f"{stage}_acc1", acc1, prog_bar=True, batch_size=bs)
        self.log(f"{stage}_acc5", acc5, batch_size=bs)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Per-video probabilities [B, num_classes], in the order of ``self.labels``."""
        return self.video_probs(batch["video"])

    # --- optimisation ---------------------------------------------------------------------

    def configure_optimizers(self):
        hp = self.hparams
        # Frozen parameters (finetune strategies) stay out; BaseFinetuning adds them later.
        params = [p for p in self.parameters() if p.requires_grad]
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(
                params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay
            )
        elif hp.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
        else:
            opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.lr_scheduler == "none" and hp.warmup_epochs <= 0:
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches))
        epochs = self.trainer.max_epochs if (self.trainer.max_epochs or -1) > 0 else 1
        warmup = round(hp.warmup_epochs * total / epochs)
        sched = _GrowingLambdaLR(opt, _schedule(hp.lr_scheduler, warmup, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # --- Flash-style prediction -----------------------------------------------------------

    def predict(
        self,
        paths_or_folder: str | Path | list[str | Path],
        top_k: int | None = None,
        batch_size: int = 4,
        num_workers: int = 0,
    ) -> list | dict:
        """Classify videos with the stored preprocessing: one result per video.

        Returns labels, or with ``top_k`` lists of ``(label, probability)`` pairs, best first.
        For a list of paths (or one path) a list in its order; a file that cannot be decoded
        (or is not a video: an image, a text file) gives ``None`` and a warning naming it and
        why. For a folder, a dict ``{path: result}`` of the videos found in it, sorted: keyed,
        because once some files are skipped a bare list could not be matched to the files.
        A path that does not exist raises FileNotFoundError.
        """
        folder = isinstance(paths_or_folder, str | Path) and Path(paths_or_folder).is_dir()
        if isinstance(paths_or_folder, str | Path) and not folder:
            paths_or_folder = [paths_or_folder]  # one file: [result], [None] if it is unusable
        if not folder:
            missing = [str(p) for p in paths_or_folder if not Path(p).exists()]
            if missing:
                raise FileNotFoundError(
                    f"no such video file(s): {', '.join(missing[:5])}"
                    + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                )
        results, skipped = self.predict_paths(paths_or_folder, top_k, batch_size, num_workers)
        if skipped:
            warnings.warn(
                f"skipped {len(skipped)} video(s): "
                + "; ".join(f"{p} ({why})" for p, why in skipped.items()),
                stacklevel=2,
            )
        if isinstance(paths_or_folder, list | tuple):
            # Results are keyed by str(Path(p)) of each given p (as the loader's items are).
            by_path = dict(results)
            return [by_path.get(str(Path(p))) for p in paths_or_folder]
        return dict(results)

    @torch.no_grad()
    def predict_paths(
        self,
        paths_or_folder: str | Path | list[str | Path],
        top_k: int | None = None,
        batch_size: int = 4,
        num_workers: int = 0,
    ) -> tuple[list[tuple[str, Any]], dict[str, str]]:
        """``([(path, label or top-k pairs), ...], {skipped path: reason})``."""
        from trainer.data import predict_loader

        if top_k is not None and not 1 <= top_k <= len(self.labels):
            raise ValueError(f"top_k {top_k}: must be between 1 and {len(self.labels)}")
        loader, skipped = predict_loader(
            paths_or_folder,
            self.video_input,
            clips_per_video=self.hparams.clips_per_video,
            batch_size=batch_size,
            num_workers=num_workers,
            summarise=False,  # every skipped file is returned, with its reason
        )
        was_training = self.training
        self.eval()
        out: list[tuple[str, Any]] = []
        try:
            for batch in loader:
                probs = self.video_probs(move_data_to_device(batch["video"], self.device)).cpu()
                for path, p in zip(batch["path"], probs, strict=True):
                    out.append((str(path), self.decode(p, top_k)))
        finally:
            self.train(was_training)
        # Files that passed the metadata scan but failed to decode were left out of their batch
        # and logged in the loader's own (fresh) failure log.
        return out, {**skipped, **loader.dataset.failures.read()}

    def decode(self, probs: Tensor, top_k: int | None = None):
        """One video's probabilities -> its label, or the ``top_k`` (label, prob) pairs."""
        if top_k is None:
            return self.labels[int(probs.argmax())]
        values, idx = probs.topk(top_k)
        return [(self.labels[int(i)], float(v)) for v, i in zip(values, idx, strict=True)]


class _GrowingLambdaLR(torch.optim.lr_scheduler.LambdaLR):
    """LambdaLR that also schedules parameter groups added later (``freeze_unfreeze`` adds the
    backbone mid-training): a new group keeps its ratio to the first group's learning rate."""

    def get_lr(self) -> list[float]:
        groups = self.optimizer.param_groups
        for group in groups[len(self.base_lrs) :]:
            head_lr = groups[0]["lr"]
            ratio = group["lr"] / head_lr if head_lr > 0 else 0.1
            self.base_lrs.append(self.base_lrs[0] * ratio)
            group.setdefault("initial_lr", self.base_lrs[-1])
        while len(self.lr_lambdas) < len(groups):
            self.lr_lambdas.append(self.lr_lambdas[0])
        return super().get_lr()


def _schedule(kind: str, warmup: int, total: int):
    """LR multiplier per optimizer step: linear warmup, then cosine, step or constant."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "none":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))

    return factor


def _replace_head(backbone: nn.Module, path: str, head: Any, num_classes: int) -> None:
    """Put ``head`` (a module, or ``(in_features, num_classes) -> module``) at ``path``."""
    parent_path, _, name = path.rpartition(".")
    parent = backbone.get_submodule(parent_path) if parent_path else backbone
    old = getattr(parent, name)
    if not isinstance(head, nn.Module):
        if not callable(head):
            raise ValueError(
                f"head {head!r}: an nn.Module or a callable (in_features, num_classes) -> module"
            )
        if not isinstance(old, nn.Linear):
            raise ValueError(
                f"head: this backbone's classifier ({path}) is a {type(old).__name__}, not a "
                "Linear layer, so a head builder cannot be given its in_features; pass a module"
            )
        head = head(old.in_features, num_classes)
    setattr(parent, name, head)
