"""Lightning video classification on Kinetics-format data. Knows nothing of the launcher.

``from trainer import VideoClassifier`` imports torch lazily, on first use of the name.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainer.model import VideoClassifier

__all__ = ["VideoClassifier"]


def __getattr__(name: str):
    if name == "VideoClassifier":
        from trainer.model import VideoClassifier

        return VideoClassifier
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")
