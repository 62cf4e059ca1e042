"""The SAC learner: owns the networks, optimizers and target critics of `agents/sac.py`'s
losses; one `update` is one critic step and, every `critic_updates_per_actor`-th, one actor
and temperature step. The image encoder follows Cal-QL's rule (`calql_learner.py`)."""

from __future__ import annotations

import copy
import functools
from typing import Any

import numpy as np
import torch
from torch import nn

from calql_robot.agents.base import (AgentSpec, Batch, apply_losses, batch_to_torch, check_batch, forward_precision,
                                     load_optimizers, metrics_to_floats)
from calql_robot.agents.calql_learner import greedy_act, greedy_value
from calql_robot.agents.sac import Nets, SACConfig, compute_losses
from calql_robot.networks import CriticEnsemble, TanhGaussianActor

BATCH_KEYS = ("observations", "next_observations", "actions", "rewards", "dones")


class SACLearner:
    """SAC over features of `encoder` (Identity for states), with the ensemble options."""

    learns_online = True
    needs_returns = False  # nothing reads G: online episodes are stored with G = 0

    def __init__(self, cfg: SACConfig, spec: AgentSpec) -> None:
        cfg.validate()
        self.cfg, self.discount = cfg, spec.discount
        self.device = torch.device(spec.device)
        self.precision = spec.precision
        self.action_dim, self.feature_dim = spec.action_dim, spec.feature_dim
        self.online, self.num_updates = False, 0
        self.augment = spec.augment
        self.encoder = (spec.encoder or nn.Identity()).to(self.device)
        if cfg.discrete_gripper and spec.action_dim < 2:
            raise ValueError(f"discrete_gripper needs an arm dim besides the gripper, got action_dim={spec.action_dim}")
        actor_dim = spec.action_dim - 1 if cfg.discrete_gripper else spec.action_dim
        self.actor = TanhGaussianActor(spec.feature_dim, actor_dim, cfg.actor_hidden, True).to(self.device)
        self.critic = CriticEnsemble(cfg.num_critics, spec.feature_dim, spec.action_dim, cfg.critic_hidden, True,
                                     cfg.layer_norm).to(self.device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.zeros((), device=self.device, requires_grad=True)
        adam = functools.partial(torch.optim.Adam, fused=True)
        lr = self._learning_rates()
        self.optimizers = {
            "actor": adam(self.actor.parameters(), lr=lr["actor"]),
            "critic": adam(list(self.critic.parameters()) + list(self.encoder.parameters()), lr=lr["critic"]),
            "alpha": adam([self.log_alpha], lr=lr["alpha"]),
        }

    def _learning_rates(self) -> dict[str, float]:
        return {"actor": self.cfg.actor_lr, "critic": self.cfg.critic_lr, "alpha": self.cfg.actor_lr}

    def set_online(self, online: bool) -> None:
        """SAC's update is the same in both phases; the loop's batches differ."""
        self.online = online

    def nets(self) -> Nets:
        return Nets(self.encoder, self.actor, self.critic, self.target_critic, self.log_alpha)

    def steps_actor(self) -> bool:
        """Whether this update steps the actor: the last of every G critic updates."""
        return (self.num_updates + 1) % self.cfg.critic_updates_per_actor == 0

    def update(self, batch: Batch) -> dict[str, float]:
        """One SAC step on a batch (numpy or torch); returns float metrics."""
        batch = batch_to_torch(batch, self.device)
        check_batch(batch, self.action_dim, BATCH_KEYS)
        with_actor = self.steps_actor()
        with forward_precision(self.precision, self.device):
            losses, metrics = compute_losses(batch, self.nets(), self.cfg, self.discount, with_actor, self.augment)
        names = ("critic", "actor", "alpha") if with_actor else ("critic",)
        apply_losses(losses, [self.optimizers[n] for n in names], self.num_updates)
        with torch.no_grad():
            torch._foreach_lerp_(list(self.target_critic.parameters()), list(self.critic.parameters()), self.cfg.tau)
        self.num_updates += 1
        return metrics_to_floats(metrics)

    def act(self, obs: np.ndarray | dict[str, np.ndarray], deterministic: bool) -> np.ndarray:
        """Action(s) for one observation or a batch; deterministic is tanh(mean)."""
        return greedy_act(self.encoder, self.actor, self.critic, obs, self.device, deterministic,
                          self.cfg.discrete_gripper)

    def value(self, obs: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        """min_i Q_i(s, pi(s)) at the deterministic action, for the loop's calibration log."""
        return greedy_value(self.encoder, self.actor, self.critic, obs, self.device, self.cfg.discrete_gripper)

    def state_dict(self) -> dict[str, Any]:
        """Everything `load_state_dict` needs; tensors and plain values only."""
        return {"encoder": self.encoder.state_dict(), "actor": self.actor.state_dict(),
                "critic": self.critic.state_dict(), "target_critic": self.target_critic.state_dict(),
                "log_alpha": self.log_alpha.detach().clone(),
                "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
                "online": self.online, "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.encoder.load_state_dict(state["encoder"])
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.target_critic.load_state_dict(state["target_critic"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        load_optimizers(self.optimizers, state["optimizers"], self._learning_rates())
        self.online = bool(state["online"])
        self.num_updates = int(state["num_updates"])
