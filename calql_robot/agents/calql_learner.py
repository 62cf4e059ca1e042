"""The Cal-QL learner: owns the networks, optimizers and target critics; one `update` is
the official simultaneous update of SPEC section 1.

Gradient rule for a shared image encoder (DrQ-v2): the critic loss trains it; the actor
reads detached features; next observations are encoded by the ONLINE encoder under
no_grad for the target critic (DrQ-v2 does the same and it saves a second encoder and its
forward pass; a slowly moving target copy is what RAD/CURL use and was not needed there).
With `bc_encoder_weight > 0` an auxiliary behaviour-cloning loss trains the encoder beside
the critic loss (the actor still reads detached features); the visual cpu preset uses it,
since the critic's gradient alone left the actor without the cube's position (RESULTS.md,
session 5).
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import numpy as np
import torch
from torch import nn

from calql_robot.agents import gripper
from calql_robot.config import LearnerConfig
from calql_robot.agents.calql import Nets, UpdateSettings, compute_losses
from calql_robot.networks import CriticEnsemble, TanhGaussianActor

Obs = torch.Tensor | dict[str, torch.Tensor]


class NonFiniteLossError(RuntimeError):
    """Raised before any parameter changes when a loss is NaN or infinite."""


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def batch_to_torch(batch: dict[str, Any], device: torch.device) -> dict[str, Obs]:
    """numpy batch -> tensors on device; uint8 images stay uint8 (the encoder divides)."""
    def convert(value):
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, np.ndarray):
            return torch.from_numpy(value).to(device, non_blocking=True)
        return value
    return {k: convert(v) for k, v in batch.items()}


class CalQLLearner:
    """Cal-QL (Nakamoto et al. 2023) over features of `encoder` (Identity for states)."""

    def __init__(self, cfg: LearnerConfig, feature_dim: int, action_dim: int,
                 encoder: nn.Module | None = None, augment: nn.Module | None = None,
                 device: str | torch.device = "cpu") -> None:
        cfg.validate()
        self.cfg = cfg
        self.device = torch.device(device)
        self.action_dim = action_dim
        self.feature_dim = feature_dim
        self.online = False
        self.num_updates = 0
        self.augment = augment
        self.encoder = (encoder or nn.Identity()).to(self.device)
        if cfg.discrete_gripper and action_dim < 2:
            raise ValueError(f"discrete_gripper needs an arm dim besides the gripper, got action_dim={action_dim}")
        actor_dim = action_dim - 1 if cfg.discrete_gripper else action_dim  # gripper: critic's choice
        self.actor = TanhGaussianActor(feature_dim, actor_dim, cfg.actor_hidden, cfg.orthogonal_init,
                                       cfg.log_std_multiplier, cfg.log_std_offset).to(self.device)
        self.critic = CriticEnsemble(cfg.num_critics, feature_dim, action_dim, cfg.critic_hidden,
                                     cfg.orthogonal_init).to(self.device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.zeros((), device=self.device, requires_grad=True)
        self.log_alpha_prime = torch.ones((), device=self.device, requires_grad=True)
        self.optimizers = self._make_optimizers()

    def _make_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Adam per loss. One Adam over the stacked ensemble equals one Adam per critic:
        Adam is elementwise, so stacking parameters changes nothing."""
        critic_params = list(self.critic.parameters()) + list(self.encoder.parameters())
        # fused: one kernel per step instead of ~10 elementwise passes per tensor (CPU and CUDA)
        adam = functools.partial(torch.optim.Adam, fused=True)
        lr = self._learning_rates()
        return {
            "actor": adam(self.actor.parameters(), lr=lr["actor"]),
            "critic": adam(critic_params, lr=lr["critic"]),
            "alpha": adam([self.log_alpha], lr=lr["alpha"]),
            "alpha_prime": adam([self.log_alpha_prime], lr=lr["alpha_prime"]),
        }

    def _learning_rates(self) -> dict[str, float]:
        """Each optimizer's learning rate from the config (the temperature's follows the
        actor's, alpha prime's the critic's, as in the official code)."""
        cfg = self.cfg
        return {"actor": cfg.actor_lr, "critic": cfg.critic_lr, "alpha": cfg.actor_lr, "alpha_prime": cfg.critic_lr}

    @torch.no_grad()
    def set_q_level(self, value: float) -> None:
        """Set every critic's output bias, and the target's, to `value` (`q_init_mc`); the
        output layer's weights start near 0 (orthogonal gain 1e-2), so Q(s, a) ~ value."""
        for critic in (self.critic, self.target_critic):
            critic.biases[-1].fill_(float(value))

    # ------------------------------------------------------------------ training
    def set_online(self, online: bool) -> None:
        """Switch to the fine-tuning settings (CQL weight, bound on/off; with
        `freeze_encoder_online`, the encoder's parameters stop taking gradients)."""
        self.online = online
        self.encoder.requires_grad_(not (online and self.cfg.freeze_encoder_online))

    def settings(self) -> UpdateSettings:
        cfg = self.cfg
        if not self.online:
            return UpdateSettings(cfg.cql_weight, cfg.calql_bound, cfg.bc_weight)
        weight = cfg.cql_weight if cfg.cql_weight_online is None else cfg.cql_weight_online
        bc_weight = cfg.bc_weight if cfg.bc_weight_online is None else cfg.bc_weight_online
        return UpdateSettings(weight, cfg.calql_bound and cfg.calibrate_online, bc_weight)

    def nets(self) -> Nets:
        return Nets(self.encoder, self.actor, self.critic, self.target_critic,
                    self.log_alpha, self.log_alpha_prime)

    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        """One official Cal-QL step on a batch (numpy or torch); returns float metrics."""
        batch = batch_to_torch(batch, self.device)
        check_batch(batch, self.action_dim)
        losses, metrics = compute_losses(batch, self.nets(), self.cfg, self.settings(), self.augment)
        total = sum(losses.values())
        if not torch.isfinite(total):
            bad = {k: float(v.detach()) for k, v in losses.items()}
            raise NonFiniteLossError(f"non-finite loss at update {self.num_updates}: {bad}")
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        total.backward()
        for opt in self.optimizers.values():
            opt.step()
        self._update_target()
        self.num_updates += 1
        names = list(metrics)
        values = torch.stack([metrics[k].float() for k in names]).tolist()
        return dict(zip(names, values))

    @torch.no_grad()
    def _update_target(self) -> None:
        """target <- tau * online + (1 - tau) * target, every step."""
        online = list(self.critic.parameters())
        target = list(self.target_critic.parameters())
        torch._foreach_lerp_(target, online, self.cfg.tau)

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs: np.ndarray | dict[str, np.ndarray], deterministic: bool) -> np.ndarray:
        """Action(s) for one observation or a batch; deterministic is tanh(mean)."""
        tensor, single = obs_to_tensor(obs, self.device)
        features = self.encoder(tensor)
        policy = self.actor(features)
        action = policy.deterministic() if deterministic else policy.sample()[0]
        if self.cfg.discrete_gripper:  # g* = argmax_g min_i Q_i(s, a_arm, g)
            arm = action.unsqueeze(0)
            action = gripper.greedy_actions(arm, self.critic(features, gripper.both_grippers(arm)))[0]
        action = action.cpu().numpy()
        return action[0] if single else action

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything `load_state_dict` needs; tensors and plain values only."""
        return {
            "encoder": self.encoder.state_dict(), "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(), "target_critic": self.target_critic.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "log_alpha_prime": self.log_alpha_prime.detach().clone(),
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "online": self.online, "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.encoder.load_state_dict(state["encoder"])
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.target_critic.load_state_dict(state["target_critic"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
            self.log_alpha_prime.copy_(state["log_alpha_prime"])
        lr = self._learning_rates()
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
            for group in opt.param_groups:  # Adam's state restores the saved lr; the config's wins
                group["lr"] = lr[name]  # (a flag given on --run.resume, e.g. --learner.actor-lr, applies)
        self.set_online(bool(state["online"]))
        self.num_updates = int(state["num_updates"])


def obs_to_tensor(obs: np.ndarray | dict[str, np.ndarray], device: torch.device) -> tuple[Obs, bool]:
    """One observation or a batch -> (batched float32/uint8 tensor(s) on device, was it single)."""
    single = _is_single(obs)
    tensor = batch_to_torch({"o": _add_batch_dim(obs) if single else obs}, device)["o"]
    if isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float64:
        tensor = tensor.float()
    return tensor, single


def _is_single(obs: np.ndarray | dict[str, np.ndarray]) -> bool:
    if isinstance(obs, dict):
        return "state" in obs and np.asarray(obs["state"]).ndim == 1
    return np.asarray(obs).ndim == 1


def _add_batch_dim(obs):
    if isinstance(obs, dict):
        return {k: np.asarray(v)[None] for k, v in obs.items()}
    return np.asarray(obs, dtype=np.float32)[None]


REQUIRED_KEYS = ("observations", "next_observations", "actions", "rewards", "dones", "mc_returns")


def check_batch(batch: dict[str, Any], action_dim: int) -> None:
    """Fail with a message naming the key on a malformed batch (shapes, dtypes, NaNs)."""
    missing = [k for k in REQUIRED_KEYS if k not in batch]
    if missing:
        raise KeyError(f"batch is missing keys {missing}; expected {list(REQUIRED_KEYS)}")
    actions = batch["actions"]
    if actions.ndim != 2 or actions.shape[1] != action_dim:
        raise ValueError(f"batch['actions'] has shape {tuple(actions.shape)}, expected (B, {action_dim})")
    size = actions.shape[0]
    for key in ("rewards", "dones", "mc_returns"):
        if tuple(batch[key].shape) != (size,):
            raise ValueError(f"batch['{key}'] has shape {tuple(batch[key].shape)}, expected ({size},)")
        if not batch[key].is_floating_point():
            raise ValueError(f"batch['{key}'] must be floating point, got {batch[key].dtype}")
    finite = torch.stack([torch.isfinite(batch[k]).all() for k in ("actions", "rewards", "mc_returns")])
    if not bool(finite.all()):
        names = [k for k, ok in zip(("actions", "rewards", "mc_returns"), finite.tolist()) if not ok]
        raise ValueError(f"batch has non-finite values in {names}")
