"""Lightning video classification on Kinetics-format data. Knows nothing of the launcher.

``from trainer import VideoClassifier`` imports torch lazily, on first use of the name. The
names of Lightning Flash's video API are here too, so ``import trainer as flash`` (and
``from trainer import VideoClassificationData, VideoClassifier``) runs a Flash script.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainer.flash import Trainer, VideoClassificationData, download_data
    from trainer.model import VideoClassifier

__all__ = ["Trainer", "VideoClassificationData", "VideoClassifier", "download_data"]

_HOMES = {
    "VideoClassifier": "trainer.model",
    "Trainer": "trainer.flash",
    "VideoClassificationData": "trainer.flash",
    "download_data": "trainer.flash",
}


def __getattr__(name: str):
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")
