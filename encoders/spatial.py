"""Spatial softmax: a feature map -> the expected image coordinates of learned keypoints.

Levine, Finn, Darrell & Abbeel 2016 ("End-to-End Training of Deep Visuomotor Policies",
section 4.1) and robomimic's `SpatialSoftmax` (the pooling of its ResNet visual core): a
1x1 convolution makes K keypoint maps, a softmax over each map's H x W positions turns it
into a distribution, and the keypoint is that distribution's mean (x, y) in [-1, 1]. Unlike
a flatten of a coarse stride-2 map, the mean is continuous, so an object's position is read
to a fraction of a feature cell: what a grasp from 48 px frames needs (one pixel is about
1.4 cm of table here, the grasp tolerance about 2 cm; RESULTS.md, session 7).
"""
from __future__ import annotations

import torch
from torch import nn


class SpatialSoftmax(nn.Module):
    """`(B, C, H, W)` -> `(B, 2K)`: `[x_1..x_K, y_1..y_K]`, each the softmax-weighted mean
    coordinate of one keypoint map (x across the width, y down the height, both in [-1, 1])."""

    def __init__(self, channels: int, height: int, width: int, num_keypoints: int = 32,
                 temperature: float = 1.0) -> None:
        super().__init__()
        if min(channels, height, width, num_keypoints) < 1 or temperature <= 0:
            raise ValueError(f"SpatialSoftmax: need positive channels, height, width, keypoints and temperature; "
                             f"got {channels}, {height}, {width}, {num_keypoints}, {temperature}")
        self.keypoints = nn.Conv2d(channels, num_keypoints, kernel_size=1)
        self.num_keypoints, self.temperature = int(num_keypoints), float(temperature)
        ys, xs = torch.meshgrid(torch.linspace(-1.0, 1.0, height), torch.linspace(-1.0, 1.0, width), indexing="ij")
        self.register_buffer("pos_x", xs.reshape(-1), persistent=False)
        self.register_buffer("pos_y", ys.reshape(-1), persistent=False)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        logits = self.keypoints(feature_map).flatten(2) / self.temperature  # (B, K, H*W)
        attention = torch.softmax(logits, dim=-1)
        return torch.cat([attention @ self.pos_x, attention @ self.pos_y], dim=1)
