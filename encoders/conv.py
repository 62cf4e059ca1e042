"""The small PTR conv stack for uint8 camera images (SIM.md, "Encoder in the PTR code").

Layout follows the PTR/jaxrl2 small encoder: 3x3 convolutions with stride 2 and ReLU,
channels 16-32-64-128-256. Where we differ: padding is 1 ("SAME"-like) instead of VALID,
so five stride-2 layers still leave a >= 1x1 map on a 32 px image (VALID padding would
shrink 32 -> 15 -> 7 -> 3 -> 1 and fail on the fifth layer).

Initialisation: orthogonal weights (gain sqrt(2) for the ReLU convs) and zero biases, as
DrQ-v2's `utils.weight_init`. Orthogonal init keeps activation scale roughly constant
through the stack without a normalisation layer, which is what an RL encoder trained from
scratch by a critic loss (no pretraining, small batches of augmented frames) needs; the
default PyTorch (Kaiming-uniform with a=sqrt(5)) init shrinks activations layer by layer.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

PTR_CHANNELS: tuple[int, ...] = (16, 32, 64, 128, 256)


def orthogonal_init_(module: nn.Module) -> None:
    """DrQ-v2 `weight_init`: orthogonal weights, zero bias; ReLU gain for convolutions."""
    if isinstance(module, nn.Conv2d):
        nn.init.orthogonal_(module.weight, gain=nn.init.calculate_gain("relu"))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight, gain=1.0)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


KEYPOINT_CHANNELS: tuple[int, ...] = (16, 32, 64)
KEYPOINT_STRIDES: tuple[int, ...] = (2, 2, 1)
"""The keypoint encoder's trunk: two stride-2 layers, then one at stride 1, so a 48 px frame
leaves a 12 x 12 map for the spatial softmax (about the PTR stack's cost per frame)."""


class ConvTrunk(nn.Module):
    """Stack of `Conv2d(3x3, stride s, padding 1) -> ReLU`, one per entry of `channels`.

    Input `(B, in_channels, H, W)` float (already scaled to [0, 1] by the caller);
    output the last feature map `(B, channels[-1], H', W')`, H' = ceil(H / prod(strides)).
    `stride` is one stride for every layer (PTR: 2) or one per layer.
    """

    def __init__(
        self,
        in_channels: int = 3,
        channels: Sequence[int] = PTR_CHANNELS,
        kernel_size: int = 3,
        stride: int | Sequence[int] = 2,
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        strides = (int(stride),) * len(channels) if isinstance(stride, int) else tuple(int(s) for s in stride)
        if in_channels < 1:
            raise ValueError(f"ConvTrunk: in_channels must be >= 1, got {in_channels}")
        if not channels or min(channels) < 1:
            raise ValueError(f"ConvTrunk: channels must be a non-empty tuple of positive ints, got {channels}")
        if len(strides) != len(channels) or min(strides) < 1:
            raise ValueError(f"ConvTrunk: need one positive stride per layer, got {strides} for {channels}")
        layers: list[nn.Module] = []
        prev = in_channels
        for out, step in zip(channels, strides):
            layers += [nn.Conv2d(prev, out, kernel_size, stride=step, padding=kernel_size // 2), nn.ReLU()]
            prev = out
        self.net = nn.Sequential(*layers)
        self.in_channels = in_channels
        self.out_channels = prev
        self.apply(orthogonal_init_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
