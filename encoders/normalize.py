"""Fixed standardisation of vector observations, as a module in the encoder slot.

Why: the privileged pick-and-place state is in metres (~0.1) next to a one-hot task code;
fed raw, behaviour cloning on 1000 scripted episodes reached 0.05-0.15 success, standardised
0.65-0.75 (SPEC section 8). The statistics come from the offline data once and stay fixed
(as D4RL-era CQL/IQL code normalises states by the dataset's mean and std), so the critic's
inputs do not drift while it trains; they live in buffers, so they are saved in every
checkpoint and restored with the weights.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

MIN_STD = 1e-6
"""Dimensions with a smaller std (constant in the data, e.g. a one-hot of the only task)
are centred but not scaled."""


class ObsNormalizer(nn.Module):
    """`(obs - mean) / std` with fixed per-dimension statistics; feature_dim = obs_dim."""

    def __init__(self, mean: np.ndarray | torch.Tensor, std: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        mean = torch.as_tensor(np.asarray(mean, np.float32))
        std = torch.as_tensor(np.asarray(std, np.float32))
        if mean.ndim != 1 or mean.shape != std.shape:
            raise ValueError(f"ObsNormalizer: mean and std must be 1-d of one size, got {tuple(mean.shape)} "
                             f"and {tuple(std.shape)}")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
            raise ValueError("ObsNormalizer: mean and std must be finite")
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", torch.where(std < MIN_STD, torch.ones_like(std), std))
        self.feature_dim = int(mean.shape[0])

    @classmethod
    def from_data(cls, observations: np.ndarray) -> ObsNormalizer:
        """Statistics of (N, D) observations (float64 accumulation)."""
        obs = np.asarray(observations, np.float64)
        if obs.ndim != 2 or obs.shape[0] < 1:
            raise ValueError(f"ObsNormalizer.from_data: need (N, D) observations, got {obs.shape}")
        return cls(obs.mean(axis=0), obs.std(axis=0))

    @classmethod
    def identity(cls, dim: int) -> ObsNormalizer:
        """Placeholder of the right size whose buffers a checkpoint then overwrites."""
        return cls(np.zeros(dim, np.float32), np.ones(dim, np.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.mean) / self.std

    def stats(self) -> dict[str, list[float]]:
        """JSON-ready statistics (recorded in the run's config.json)."""
        return {"mean": [round(float(v), 6) for v in self.mean], "std": [round(float(v), 6) for v in self.std]}
