"""Behaviour cloning: the reference line every learning result is read against.

A deterministic MLP with a tanh output regressed on the data actions by mean squared error
(the BC baseline of TD3+BC / CORL's `any_percent_bc`), over the same encoder slot as Cal-QL
(observation normaliser for states, the shared image encoder with random shift for pixels,
trained here by the BC loss). It learns offline only: the loop's online phase is skipped for
`--algo bc` (cloning one's own rollouts would not be a reference for anything), so its
"final" success is its offline success. The same `update / act / state_dict` interface as
`CalQLLearner`, so the loop, checkpoints, evaluation and rollout.py treat it alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from calql_robot.config import LearnerConfig
from calql_robot.errors import ConfigError
from calql_robot.agents.calql_learner import NonFiniteLossError, UpdateSettings, batch_to_torch, obs_to_tensor


@dataclass
class BCConfig:
    """Hyper-parameters of the behaviour-cloning reference (`--algo bc`)."""

    hidden: tuple[int, ...] = (256, 256)
    """Hidden widths of the policy MLP."""
    lr: float = 1e-3
    """Adam learning rate (policy and encoder)."""


def bc_loss(pred: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """`mean((pi(s) - a)^2)` over batch and action dims."""
    return (pred - actions).pow(2).mean()


class BCPolicy(nn.Module):
    """MLP -> tanh, one action per state."""

    def __init__(self, feature_dim: int, action_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = feature_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, action_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(features))


class BCLearner:
    """Behaviour cloning with the learner interface of `CalQLLearner`."""

    def __init__(self, cfg: BCConfig, learner_cfg: LearnerConfig, feature_dim: int, action_dim: int,
                 encoder: nn.Module | None = None, augment: nn.Module | None = None,
                 device: str | torch.device = "cpu") -> None:
        if cfg.lr <= 0 or not cfg.hidden or min(cfg.hidden) < 1:
            raise ConfigError(f"--bc.lr must be > 0 and --bc.hidden positive widths, got {cfg.lr}, {cfg.hidden}")
        self.bc_cfg, self.cfg = cfg, learner_cfg  # cfg.discount sizes online returns (unused offline)
        self.device = torch.device(device)
        self.action_dim, self.feature_dim = action_dim, feature_dim
        self.online, self.num_updates = False, 0
        self.augment = augment
        self.encoder = (encoder or nn.Identity()).to(self.device)
        self.policy = BCPolicy(feature_dim, action_dim, cfg.hidden).to(self.device)
        params = list(self.policy.parameters()) + list(self.encoder.parameters())
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr)

    def set_online(self, online: bool) -> None:
        self.online = online

    def settings(self) -> UpdateSettings:
        """No CQL and no bound; online episodes (if any) are stored without returns."""
        return UpdateSettings(0.0, False, 0.0)

    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        batch = batch_to_torch(batch, self.device)
        obs = batch["observations"]
        if self.augment is not None:
            obs = self.augment(obs)
        actions = batch["actions"].clamp(-1.0, 1.0)
        loss = bc_loss(self.policy(self.encoder(obs)), actions)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"non-finite BC loss at update {self.num_updates}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.num_updates += 1
        return {"bc_loss": float(loss.detach())}

    @torch.no_grad()
    def act(self, obs: np.ndarray | dict[str, np.ndarray], deterministic: bool) -> np.ndarray:
        """The policy's action (deterministic either way)."""
        tensor, single = obs_to_tensor(obs, self.device)
        action = self.policy(self.encoder(tensor)).cpu().numpy()
        return action[0] if single else action

    def state_dict(self) -> dict[str, Any]:
        return {"encoder": self.encoder.state_dict(), "policy": self.policy.state_dict(),
                "optimizer": self.optimizer.state_dict(), "online": self.online,
                "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.encoder.load_state_dict(state["encoder"])
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # the saved lr would win; a resumed run's flag applies
            group["lr"] = self.bc_cfg.lr
        self.online = bool(state["online"])
        self.num_updates = int(state["num_updates"])
