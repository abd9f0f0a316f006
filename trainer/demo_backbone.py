"""A deliberately small 3D CNN for CPU smoke tests and demos (registry name ``demo_cnn``).

Not a published model and not for real data: it exists so the end-to-end tests and the README
demo train to high accuracy on synthetic motion videos in seconds on two CPU cores.

Its stem takes frame-to-frame differences (parameter-free), so from the first step it sees
motion rather than each video's colours, which a net this small and data this scarce would
otherwise memorise (measured: without it, 100% train and chance validation accuracy on
make_motion_dataset). Global pooling makes it take any clip of two frames or more.
"""

from __future__ import annotations

from torch import Tensor, nn


def _block(c_in: int, c_out: int, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
    pad = tuple(k // 2 for k in kernel)
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, kernel, stride=stride, padding=pad, bias=False),
        nn.BatchNorm3d(c_out),
        nn.ReLU(inplace=True),
    )


class TinyVideoNet(nn.Module):
    """Temporal differences, three conv blocks, global average pool, linear head ``fc``."""

    def __init__(self, num_classes: int, width: int = 16, dropout: float = 0.2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _block(3, width, (3, 5, 5), (1, 2, 2)),
            _block(width, 2 * width, (3, 3, 3), (1, 2, 2)),
            _block(2 * width, 4 * width, (3, 3, 3), (2, 2, 2)),
            nn.AdaptiveAvgPool3d(1),
            nn.Flatten(1),
        )
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        motion = x[:, :, 1:] - x[:, :, :-1]  # [B, C, T-1, H, W]
        return self.fc(self.dropout(self.features(motion)))
