"""What IQL and AWAC share: the advantage-weighted actor's policy and critics over the
encoder slot, the encoder gradient rule, acting, the value estimate and the target update.

The two methods differ in how they get the advantage (IQL: an expectile value network, no
policy sample anywhere; AWAC: a SAC-style critic and V(s) from policy samples) and in how
they weight it; their losses live in `iql.py` and `awac.py`. Everything here is the same
for both and for the same reasons:

- Gradient rule for a shared image encoder (Cal-QL's, DrQ-v2's): the critic (Q) loss
  trains it; every other loss reads detached features; next observations are encoded by
  the online encoder under no_grad (`calql_learner.py` says why no target encoder).
- The gripper of pick-and-place is one more continuous dimension here (Cal-QL's critic-greedy
  binary gripper is not used): an advantage-weighted regression fits the data's actions by
  likelihood, so it does not get stranded on one side of a bimodal dimension the way a
  Q-gradient actor did under CQL (SPEC section 8); the env reads the continuous value as
  it reads the scripted data's (close below -0.5, hold between, open above 0.5).
- Actions the policy proposes are clipped to [-1, 1], as the official `sample_actions` of
  IQL and jaxrl clip them before the env; the Gaussian is not squashed (`GaussianActor`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from calql_robot.agents.base import (AgentSpec, Batch, Obs, apply_losses, batch_to_torch, check_batch,
                                     forward_precision, load_optimizers, metrics_to_floats, obs_to_tensor)
from calql_robot.networks import CriticEnsemble, GaussianActor

NUM_CRITICS = 2
"""Twin critics, the min over them used (IQL and jaxrl AWAC both: `DoubleCritic`)."""


@dataclass
class Features:
    """One batch through the encoder: `feat` carries the critic loss's gradient to the
    encoder, `detached` is what every other loss reads, `feat_next` (no grad) the targets."""

    feat: torch.Tensor
    feat_next: torch.Tensor
    actions: torch.Tensor
    """Data actions clipped to [-1, 1] (the buffer's are already; a guard, not a change)."""

    @property
    def detached(self) -> torch.Tensor:
        return self.feat.detach()


def encode(batch: dict, encoder: nn.Module, augment: nn.Module | None) -> Features:
    """Augment obs and next obs (DrQ random shift, pixels only), encode them."""
    obs, next_obs = batch["observations"], batch["next_observations"]
    if augment is not None:
        obs, next_obs = augment(obs), augment(next_obs)
    feat = encoder(obs)
    with torch.no_grad():
        feat_next = encoder(next_obs)
    return Features(feat, feat_next, batch["actions"].clamp(-1.0, 1.0))


def td_target(rewards: torch.Tensor, dones: torch.Tensor, next_v: torch.Tensor, discount: float) -> torch.Tensor:
    """`y = r + gamma * (1 - done) * V(s')`, no gradient."""
    return (rewards + discount * (1.0 - dones) * next_v).detach()


def critic_loss(q_data: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sum over critics of `mean((Q_i(s, a) - y)^2)`: IQL's and jaxrl's
    `((q1 - y)**2 + (q2 - y)**2).mean()`; q_data is (E, B)."""
    return (q_data - y.unsqueeze(0)).pow(2).mean(dim=-1).sum()


@torch.no_grad()
def polyak(target: nn.Module, online: nn.Module, tau: float) -> None:
    """target <- tau * online + (1 - tau) * target, after every update (both methods, tau 5e-3)."""
    torch._foreach_lerp_(list(target.parameters()), list(online.parameters()), tau)


@torch.no_grad()
def act(encoder: nn.Module, actor: GaussianActor, obs: np.ndarray | dict[str, np.ndarray], device: torch.device,
        deterministic: bool) -> np.ndarray:
    """The policy's mean (deterministic) or a Gaussian sample, clipped to [-1, 1]."""
    tensor, single = obs_to_tensor(obs, device)
    policy = actor(encoder(tensor))
    action = policy.deterministic() if deterministic else policy.sample().clamp(-1.0, 1.0)
    action = action.cpu().numpy()
    return action[0] if single else action


@torch.no_grad()
def q_at_mean(encoder: nn.Module, actor: GaussianActor, critic: CriticEnsemble, obs: Obs | np.ndarray | dict,
              device: torch.device) -> np.ndarray:
    """min_i Q_i(s, mean(s)): the `ValueEstimator` contract's V(s) = Q(s, pi(s)) at the
    deterministic action, the quantity the loop compares with realised returns for every
    agent alike (IQL's own V network estimates an expectile of the data's actions instead)."""
    tensor, single = obs_to_tensor(obs, device)
    features = encoder(tensor)
    q = critic(features, actor(features).deterministic().unsqueeze(0))  # (E, 1, B)
    v = q.min(dim=0).values[0].float().cpu().numpy()
    return v[0] if single else v


BATCH_KEYS = ("observations", "next_observations", "actions", "rewards", "dones")


class WeightedLearner:
    """The learner both methods are under the agent contract (`agents/base.Agent`): the
    encoder slot, a Gaussian actor, twin critics and their Polyak target, one update of the
    subclass's pure `compute_losses` with every loss stepped together, acting, the value
    estimate and the state dict. A subclass builds its optimizers (and IQL its value
    network) after `__init__` here, so the networks are made in the order, and so with the
    initial weights, each method had on its own; it sets `compute_losses` and `lrs`.

    Fine-tuning uses the same losses and settings (official IQL `train_finetune.py`, jaxrl
    AWAC `train_finetuning.py`): `set_online` only records the phase."""

    learns_online = True
    needs_returns = False  # no loss reads G; online episodes are stored with G = 0
    compute_losses: Callable[..., tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]
    optimizers: dict[str, torch.optim.Optimizer]

    def __init__(self, cfg: Any, spec: AgentSpec, actor_hidden: tuple[int, ...], critic_hidden: tuple[int, ...],
                 log_std_min: float, actor_dropout: float = 0.0) -> None:
        cfg.validate()
        self.cfg, self.discount = cfg, spec.discount
        self.device = torch.device(spec.device)
        self.precision = spec.precision
        self.action_dim = spec.action_dim
        self.online, self.num_updates = False, 0
        self.augment = spec.augment
        self.encoder = (spec.encoder or nn.Identity()).to(self.device)
        feature_dim, action_dim = spec.feature_dim, spec.action_dim
        self.actor = GaussianActor(feature_dim, action_dim, actor_hidden, log_std_min, actor_dropout).to(self.device)
        self.critic = CriticEnsemble(NUM_CRITICS, feature_dim, action_dim, critic_hidden).to(self.device)
        self.target_critic = CriticEnsemble(NUM_CRITICS, feature_dim, action_dim,
                                            critic_hidden).to(self.device).requires_grad_(False)
        self.target_critic.load_state_dict(self.critic.state_dict())

    def nets(self) -> Any:
        raise NotImplementedError

    def lrs(self) -> dict[str, float]:
        """Each optimizer's learning rate from the config (wins over a checkpoint's)."""
        return {k: self.cfg.lr for k in self.optimizers}

    def set_online(self, online: bool) -> None:
        self.online = online

    def update(self, batch: Batch) -> dict[str, float]:
        batch = batch_to_torch(batch, self.device)
        check_batch(batch, self.action_dim, BATCH_KEYS)
        with forward_precision(self.precision, self.device):
            losses, metrics = type(self).compute_losses(batch, self.nets(), self.cfg, self.discount, self.augment)
        apply_losses(losses, self.optimizers.values(), self.num_updates)
        polyak(self.target_critic, self.critic, self.cfg.tau)
        self.num_updates += 1
        return metrics_to_floats(metrics)

    def act(self, obs: np.ndarray | dict[str, np.ndarray], deterministic: bool) -> np.ndarray:
        """The mean action, or a Gaussian sample clipped to [-1, 1] (official `sample_actions`)."""
        return act(self.encoder, self.actor, obs, self.device, deterministic)

    def value(self, obs: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        """min_i Q_i(s, mean(s)) (`q_at_mean`), the contract's V(s) for calibration."""
        return q_at_mean(self.encoder, self.actor, self.critic, obs, self.device)

    def extra_modules(self) -> dict[str, nn.Module]:
        """Networks a method adds to the shared ones, by state-dict key."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        modules = {"encoder": self.encoder, "actor": self.actor, "critic": self.critic,
                   "target_critic": self.target_critic, **self.extra_modules()}
        return {**{k: m.state_dict() for k, m in modules.items()},
                "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
                "online": self.online, "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore; the config's learning rates win over the saved ones."""
        modules = {"encoder": self.encoder, "actor": self.actor, "critic": self.critic,
                   "target_critic": self.target_critic, **self.extra_modules()}
        for key, module in modules.items():
            module.load_state_dict(state[key])
        load_optimizers(self.optimizers, state["optimizers"], self.lrs())
        self.set_online(bool(state["online"]))
        self.num_updates = int(state["num_updates"])
