"""Behaviour cloning: the reference line every learning result is read against.

A deterministic MLP with a tanh output regressed on the data actions by mean squared error
(the BC baseline of TD3+BC / CORL's `any_percent_bc`), over the same encoder slot as Cal-QL
(observation normaliser for states, the shared image encoder with random shift for pixels,
trained here by the BC loss). It learns offline only: the loop's online phase is skipped for
`--algo bc` (cloning one's own rollouts would not be a reference for anything), so its
"final" success is its offline success. The same `update / act / state_dict` interface as
`agents/base.Agent` contract as Cal-QL, so the loop, checkpoints, evaluation and rollout.py
treat it alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from calql_robot.agents.base import (AgentSpec, Batch, apply_losses, batch_to_torch, forward_precision, load_optimizers,
                                     obs_to_tensor)
from calql_robot.errors import ConfigError
from calql_robot.precision import full_precision


@dataclass
class BCConfig:
    """Hyper-parameters of the behaviour-cloning reference (`--algo bc`)."""

    hidden: tuple[int, ...] = (256, 256)
    """Hidden widths of the policy MLP."""
    lr: float = 1e-3
    """Adam learning rate (policy and encoder)."""

    def validate(self) -> None:
        """Raise ConfigError naming the flags when a value cannot work."""
        if self.lr <= 0 or not self.hidden or min(self.hidden) < 1:
            raise ConfigError(f"--bc.lr must be > 0 and --bc.hidden positive widths, got {self.lr}, {self.hidden}")


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
    """Behaviour cloning under the agent contract (`agents/base.Agent`)."""

    learns_online = False
    needs_returns = False  # online episodes, were there any, are stored without returns

    def __init__(self, cfg: BCConfig, spec: AgentSpec) -> None:
        cfg.validate()
        self.cfg = cfg
        self.device = torch.device(spec.device)
        self.precision = spec.precision
        self.action_dim, self.feature_dim = spec.action_dim, spec.feature_dim
        self.online, self.num_updates = False, 0
        self.augment = spec.augment
        self.encoder = (spec.encoder or nn.Identity()).to(self.device)
        self.policy = BCPolicy(spec.feature_dim, spec.action_dim, cfg.hidden).to(self.device)
        params = list(self.policy.parameters()) + list(self.encoder.parameters())
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr)

    def set_online(self, online: bool) -> None:
        self.online = online

    def update(self, batch: Batch) -> dict[str, float]:
        batch = batch_to_torch(batch, self.device)
        obs = batch["observations"]
        if self.augment is not None:
            obs = self.augment(obs)
        actions = batch["actions"].clamp(-1.0, 1.0)
        with forward_precision(self.precision, self.device):
            loss = bc_loss(full_precision(self.policy(self.encoder(obs))), actions)
        apply_losses({"bc": loss}, [self.optimizer], self.num_updates)
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
        load_optimizers({"bc": self.optimizer}, {"bc": state["optimizer"]}, {"bc": self.cfg.lr})
        self.online = bool(state["online"])
        self.num_updates = int(state["num_updates"])
