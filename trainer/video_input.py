"""What a backbone eats: the clip geometry and normalisation, stored in every checkpoint.

Shared by the backbone registry (published defaults), the transforms (which follow it) and the
checkpoint (so prediction uses the exact preprocessing the model was trained with).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class VideoInput:
    """One clip as a backbone wants it.

    ``num_frames`` frames are taken every ``sampling_rate`` frames of a ``fps`` stream, so a clip
    spans ``num_frames * sampling_rate / fps`` seconds whatever the video's own frame rate (as
    PyTorchVideo's model zoo does). Frames are resized so the short side is ``short_side``, then
    cropped to ``crop_size`` squared, scaled to [0, 1] and normalised with ``mean``/``std``.
    ``slowfast_alpha`` set means two pathways: the slow one takes every alpha-th frame.
    """

    num_frames: int
    sampling_rate: int
    crop_size: int
    short_side: int
    mean: tuple[float, float, float] = KINETICS_MEAN
    std: tuple[float, float, float] = KINETICS_STD
    slowfast_alpha: int | None = None
    fps: float = 30.0

    @property
    def clip_duration(self) -> float:
        """Seconds of video one clip covers."""
        return self.num_frames * self.sampling_rate / self.fps

    def with_overrides(self, **overrides) -> VideoInput:
        """A copy with the non-None overrides applied."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> VideoInput:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        for k in ("mean", "std"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)
