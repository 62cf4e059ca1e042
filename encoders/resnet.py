"""ResNet-18 trunk with GroupNorm, adapted to small robot-camera images (SIM.md, PTR).

PTR's image encoder is a ResNet with GroupNorm (batch statistics are a poor fit for RL,
where batches mix offline and online data and the target network sees other batches)
followed by learned spatial embeddings. We build torchvision's `resnet18(weights=None)`
with GroupNorm; no pretrained weights are ever downloaded (`weights=None`).

Small-image adaptation: the 7x7/stride-2 stem is kept; `drop_maxpool=True` removes the
stride-2 max-pool so a 64 px frame ends at a 4x4 map instead of 2x2 (more spatial detail
for the spatial embeddings, at ~4x the compute of the later stages). Default keeps it.
The classifier head (avgpool, fc) is removed: the trunk returns the conv feature map.

Spatial reduction: `SpatialLearnedEmbeddings` as in PTR/jaxrl2 (`num_features=8`): one
learned weight per (position, channel, feature), summed over positions. Unlike global
average pooling it keeps *where* things are, which a pick-and-place critic needs.
"""
from __future__ import annotations

import math

import torch
import torchvision
from torch import nn


def group_norm(num_channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= `max_groups` that divides the channels."""
    groups = math.gcd(num_channels, max_groups)
    return nn.GroupNorm(groups, num_channels)


class ResNet18Trunk(nn.Module):
    """torchvision ResNet-18 (GroupNorm, random init) returning the layer4 feature map.

    Input `(B, in_channels, H, W)` float in [0, 1]; output `(B, 512, H', W')`.
    With the max-pool H' = ceil(H / 32); without it H' = ceil(H / 16).
    """

    def __init__(self, in_channels: int = 3, drop_maxpool: bool = False, max_groups: int = 32) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"ResNet18Trunk: in_channels must be >= 1, got {in_channels}")
        net = torchvision.models.resnet18(weights=None, norm_layer=lambda c: group_norm(c, max_groups))
        if in_channels != 3:
            # Same shape of stem for stacked frames / extra channels; torchvision inits it
            # with Kaiming-normal fan_out, repeated here for the replacement.
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        stem: list[nn.Module] = [net.conv1, net.bn1, net.relu]
        if not drop_maxpool:
            stem.append(net.maxpool)
        self.net = nn.Sequential(*stem, net.layer1, net.layer2, net.layer3, net.layer4)
        self.in_channels = in_channels
        self.out_channels = 512
        self.drop_maxpool = drop_maxpool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SpatialLearnedEmbeddings(nn.Module):
    """PTR/jaxrl2 `SpatialLearnedEmbeddings`: `out[b, c, f] = sum_hw x[b, c, h, w] * K[c, h, w, f]`.

    Input `(B, C, H, W)`, output `(B, C * num_features)`. The kernel is initialised like
    flax's `lecun_normal` on jaxrl2's `(H, W, C, F)` kernel: std = 1 / sqrt(H * W * C)
    (plain normal here rather than flax's truncated normal).
    """

    def __init__(self, channels: int, height: int, width: int, num_features: int = 8) -> None:
        super().__init__()
        if min(channels, height, width, num_features) < 1:
            raise ValueError(
                f"SpatialLearnedEmbeddings: all sizes must be >= 1, got channels={channels}, "
                f"height={height}, width={width}, num_features={num_features}"
            )
        self.kernel = nn.Parameter(torch.randn(channels, height, width, num_features) / math.sqrt(channels * height * width))
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != tuple(self.kernel.shape[:3]):
            raise ValueError(
                f"SpatialLearnedEmbeddings: expected feature map (B, {', '.join(map(str, self.kernel.shape[:3]))}), "
                f"got {tuple(x.shape)}"
            )
        return torch.einsum("bchw,chwf->bcf", x, self.kernel).flatten(1)
