"""Flash's finetuning strategies: which parameters train, and when the backbone joins."""

from __future__ import annotations

import pytest
from pytorch_lightning import Callback
from torch.utils.data import DataLoader

from tests.trainer.test_model import Clips, make_model
from trainer.finetune import VideoFinetuning, backbone_modules


@pytest.fixture
def run(quiet_trainer, tmp_path):
    """``run(strategy, epochs, unfreeze_epoch)`` trains on noise and returns the model and,
    per epoch, which parameters train and the optimizer's groups."""

    def train(strategy: str, epochs: int = 2, unfreeze_epoch: int = 1):
        return _run(quiet_trainer, tmp_path, strategy, epochs, unfreeze_epoch)

    return train


def _run(quiet_trainer, tmp_path, strategy: str, epochs: int, unfreeze_epoch: int):
    seen: list[dict] = []

    class Record(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            names = {id(p): n for n, p in pl_module.named_parameters()}
            seen.append(
                {
                    "grad": {n for n, p in pl_module.named_parameters() if p.requires_grad},
                    "groups": [
                        {names[id(p)] for p in g["params"]}
                        for g in trainer.optimizers[0].param_groups
                    ],
                    "lrs": [g["lr"] for g in trainer.optimizers[0].param_groups],
                }
            )

    model = make_model(finetune_strategy=strategy, unfreeze_epoch=unfreeze_epoch)
    trainer = quiet_trainer(
        default_root_dir=tmp_path,
        max_epochs=epochs,
        callbacks=[VideoFinetuning(strategy, unfreeze_epoch), Record()],
    )
    trainer.fit(model, DataLoader(Clips(), batch_size=3))
    return model, seen


HEAD = {"backbone.fc.weight", "backbone.fc.bias"}


def test_backbone_modules_exclude_nested_head():
    model = make_model()
    frozen = backbone_modules(model.backbone, "fc")
    assert model.backbone.fc not in frozen and model.backbone.features in frozen
    from trainer.backbones import build_backbone

    x3d = build_backbone("x3d_xs", 3)
    parts = backbone_modules(x3d, "blocks.5.proj")
    params = {id(p) for m in parts for p in m.parameters()}
    assert id(x3d.blocks[5].proj.weight) not in params
    assert id(x3d.blocks[5].pool.pre_conv.weight) in params  # the rest of the head block
    assert len(params) == sum(1 for _ in x3d.parameters()) - 2


def test_no_freeze_trains_everything(run):
    model, seen = run("no_freeze", epochs=1)
    everything = {n for n, _ in model.named_parameters()}
    assert seen[0]["grad"] == everything
    assert seen[0]["groups"] == [everything]


def test_freeze_trains_only_the_head(run):
    _, seen = run("freeze")
    for epoch in seen:
        assert epoch["grad"] == HEAD
        assert epoch["groups"] == [HEAD]


def test_freeze_unfreeze_adds_backbone_group_at_unfreeze_epoch(run):
    model, seen = run("freeze_unfreeze", epochs=3, unfreeze_epoch=1)
    everything = {n for n, _ in model.named_parameters()}
    assert seen[0]["grad"] == HEAD and seen[0]["groups"] == [HEAD]
    for epoch in seen[1:]:
        assert epoch["grad"] == everything
        assert epoch["groups"] == [HEAD, everything - HEAD]
        # The backbone joins at a tenth of the head's rate, and the schedule drives both.
        assert epoch["lrs"][1] == pytest.approx(epoch["lrs"][0] / 10)


def test_bad_strategy():
    with pytest.raises(ValueError, match="unknown finetune strategy 'freeze_all'.*no_freeze"):
        VideoFinetuning("freeze_all")
    with pytest.raises(ValueError, match="--unfreeze_epoch -1"):
        VideoFinetuning("freeze_unfreeze", -1)


def test_freeze_holds_under_a_plain_lightning_trainer(quiet_trainer, tmp_path):
    """No VideoFinetuning given to the Trainer: the model brings it (configure_callbacks), so
    ``finetune_strategy="freeze"`` changes no backbone tensor (parameters and BatchNorm
    statistics alike; before, 17 of them changed)."""
    import torch

    model = make_model(finetune_strategy="freeze", lr=0.5)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    trainer = quiet_trainer(default_root_dir=tmp_path, max_epochs=2)
    trainer.fit(model, DataLoader(Clips(), batch_size=3))
    after = model.backbone.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == ["fc.weight", "fc.bias"]


def test_a_callback_given_to_the_trainer_is_replaced_by_the_models(quiet_trainer, tmp_path):
    model = make_model(finetune_strategy="freeze")
    trainer = quiet_trainer(
        default_root_dir=tmp_path, max_steps=1, callbacks=[VideoFinetuning("no_freeze")]
    )
    trainer.fit(model, DataLoader(Clips(), batch_size=3))
    (cb,) = [c for c in trainer.callbacks if isinstance(c, VideoFinetuning)]
    assert cb.strategy == "freeze"
