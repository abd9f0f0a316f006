"""Flash's finetuning strategies as a Lightning ``BaseFinetuning`` callback.

- ``no_freeze``: train everything from the start (the default; the only choice from scratch).
- ``freeze``: train only the new classification head; the backbone stays frozen (and its
  BatchNorm statistics fixed).
- ``freeze_unfreeze``: train the head alone until ``unfreeze_epoch``, then add the backbone
  to the optimizer as a new parameter group at a tenth of the head's learning rate (Flash's
  and Lightning's default), which the LR schedule then follows.
"""

from __future__ import annotations

from pytorch_lightning.callbacks import BaseFinetuning
from torch import nn
from torch.optim import Optimizer

from trainer.cli_args import STRATEGIES


def check_strategy(strategy: str, unfreeze_epoch: int = 1) -> None:
    """Raise ValueError for an unknown strategy or a negative unfreeze epoch."""
    if strategy not in STRATEGIES:
        raise ValueError(
            f"unknown finetune strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}"
        )
    if unfreeze_epoch < 0:
        raise ValueError(f"--unfreeze_epoch {unfreeze_epoch}: must be >= 0")


def backbone_modules(model: nn.Module, head: str) -> list[nn.Module]:
    """The modules of ``model`` outside the ``head`` submodule: those a strategy freezes.

    Returned as the leaf-most modules not containing the head, so freezing them never touches
    the head's parameters.
    """
    out: list[nn.Module] = []

    def walk(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            path = f"{prefix}{name}"
            if path == head:
                continue
            if head.startswith(path + "."):
                walk(child, path + ".")
            else:
                out.append(child)

    walk(model, "")
    return out


class VideoFinetuning(BaseFinetuning):
    """Freezes ``pl_module.backbone`` outside its head (``pl_module.head_path``) per strategy."""

    def __init__(self, strategy: str = "no_freeze", unfreeze_epoch: int = 1) -> None:
        check_strategy(strategy, unfreeze_epoch)
        super().__init__()
        self.strategy = strategy
        self.unfreeze_epoch = unfreeze_epoch

    def _frozen(self, pl_module) -> list[nn.Module]:
        return backbone_modules(pl_module.backbone, pl_module.head_path)

    def freeze_before_training(self, pl_module) -> None:
        if self.strategy != "no_freeze":
            self.freeze(self._frozen(pl_module), train_bn=False)

    def finetune_function(self, pl_module, current_epoch: int, optimizer: Optimizer) -> None:
        if self.strategy == "freeze_unfreeze" and current_epoch == self.unfreeze_epoch:
            self.unfreeze_and_add_param_group(
                modules=self._frozen(pl_module), optimizer=optimizer, train_bn=True
            )
