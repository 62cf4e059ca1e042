"""Fixed standardisation of vector observations, as a module in the encoder slot.

Why: the privileged pick-and-place state is in metres (~0.1) next to a one-hot task code;
fed raw, behaviour cloning on 1000 scripted episodes reached 0.05-0.15 success, standardised
0.65-0.75 (SPEC section 8). The statistics come from the offline data once and stay fixed
(as D4RL-era CQL/IQL code normalises states by the dataset's mean and std), so the critic's
inputs do not drift while it trains; they live in buffers, so they are saved in every
checkpoint and restored with the weights.

Two guards keep a standardised input bounded (SPEC section 8): the hand's quaternion
components y, z vary by contact jitter only (std 1.6e-4 and 6.9e-4 in 1000 scripted
episodes), so an ordinary tilt read 70-146 standard deviations off in the offline data and
in online episodes of a trained policy, and the critic's TD errors on those rows reached
1e3-5e4 (seed 1 of the state preset collapsed online with them). Hence a floor on the std
(`STD_FLOOR`, in the observation's own units) and a clip of the result (`CLIP`, the value
of Stable-Baselines3's VecNormalize).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

MIN_STD = 1e-6
"""Dimensions with a smaller std (constant in the data, e.g. a one-hot of the only task)
are centred but not scaled."""

STD_FLOOR = 1e-2
"""Other dimensions are divided by at least this (metres here: 1 cm; quaternion components
that only jitter are not blown up into outliers)."""

CLIP = 10.0
"""Standardised values are clipped to [-CLIP, CLIP]."""


def effective_std(std: torch.Tensor) -> torch.Tensor:
    """The divisor used for a data std: 1 for constant dims, else max(std, STD_FLOOR)."""
    return torch.where(std < MIN_STD, torch.ones_like(std), std.clamp(min=STD_FLOOR))


def standardize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """`clip((x - mean) / std, -CLIP, CLIP)` with `std` already an `effective_std`."""
    return ((x - mean) / std).clamp(-CLIP, CLIP)


class ObsNormalizer(nn.Module):
    """`clip((obs - mean) / std)` with fixed per-dimension statistics; feature_dim = obs_dim."""

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
        self.register_buffer("std", effective_std(std))
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
        return standardize(obs, self.mean, self.std)

    def stats(self) -> dict[str, list[float]]:
        """JSON-ready statistics (recorded in the run's config.json)."""
        return {"mean": [round(float(v), 6) for v in self.mean], "std": [round(float(v), 6) for v in self.std]}
