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

With `--learner.reference learned` the learner also owns Q_mu, the bound's learned reference
value (Appendix G; `agents/reference.py`): fitted once in `prepare`, which the loop calls
before the first update, frozen after, kept in the state dict with a flag that it is fitted
(a resumed run, and a run forked from this one's switch.pt, do not fit it again).
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import numpy as np
import torch
from torch import nn

from calql_robot.agents import gripper
from calql_robot.agents.base import (AgentSpec, Batch, BatchSource, apply_losses, batch_to_torch, check_batch,
                                     forward_precision, load_optimizers, metrics_to_floats, obs_to_tensor)
from calql_robot.agents.calql import CalQLConfig, Nets, UpdateSettings, compute_losses, data_actions, policy_values
from calql_robot.agents.reference import ReferenceQ, bound_reference, fit_reference
from calql_robot.networks import CriticEnsemble, TanhGaussianActor

BATCH_KEYS = ("observations", "next_observations", "actions", "rewards", "dones", "mc_returns")


class CalQLLearner:
    """Cal-QL (Nakamoto et al. 2023) over features of `encoder` (Identity for states)."""

    learns_online = True

    def __init__(self, cfg: CalQLConfig, spec: AgentSpec) -> None:
        cfg.validate()
        self.cfg = cfg
        self.discount = spec.discount
        self.failure_return = spec.failure_return
        self.device = torch.device(spec.device)
        self.precision = spec.precision
        feature_dim, action_dim = spec.feature_dim, spec.action_dim
        self.action_dim = action_dim
        self.feature_dim = feature_dim
        self.online = False
        self.num_updates = 0
        self.augment = spec.augment
        self.encoder = (spec.encoder or nn.Identity()).to(self.device)
        if cfg.discrete_gripper and action_dim < 2:
            raise ValueError(f"discrete_gripper needs an arm dim besides the gripper, got action_dim={action_dim}")
        actor_dim = action_dim - 1 if cfg.discrete_gripper else action_dim  # gripper: critic's choice
        self.actor = TanhGaussianActor(feature_dim, actor_dim, cfg.actor_hidden, True,
                                       cfg.log_std_multiplier, cfg.log_std_offset).to(self.device)
        self.critic = CriticEnsemble(cfg.num_critics, feature_dim, action_dim, cfg.critic_hidden,
                                     True).to(self.device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.zeros((), device=self.device, requires_grad=True)
        self.log_alpha_prime = torch.ones((), device=self.device, requires_grad=True)
        self.optimizers = self._make_optimizers()
        # built last, so the actor's and critics' initial weights do not depend on the option
        self.reference = (ReferenceQ(copy.deepcopy(self.encoder), feature_dim, action_dim, cfg.critic_hidden)
                          .to(self.device).requires_grad_(False) if cfg.reference == "learned" else None)
        self.reference_fitted = False

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

    # ------------------------------------------------------------------ training
    def set_online(self, online: bool) -> None:
        """Switch to the fine-tuning settings (CQL weight, bound on/off, multiplier on/off)."""
        self.online = online

    def settings(self) -> UpdateSettings:
        """This phase's CQL weight and bound, the actor's TD3+BC alpha and the discount."""
        cfg = self.cfg
        if not self.online:
            return UpdateSettings(cfg.cql_weight, cfg.calql_bound, cfg.td3bc_alpha, self.discount, self.failure_return,
                                  lagrange=cfg.lagrange)
        weight = cfg.cql_weight if cfg.cql_weight_online is None else cfg.cql_weight_online
        return UpdateSettings(weight, cfg.calql_bound and cfg.calibrate_online, cfg.td3bc_alpha if cfg.bc_online else None,
                              self.discount, self.failure_return, encoder_bc=cfg.bc_online,
                              lagrange=cfg.lagrange and cfg.lagrange_online)

    @property
    def needs_returns(self) -> bool:
        """The bound reads the MC return: online episodes are stored with theirs only
        while it is on (off online with `--learner.no-calibrate-online`: G = 0, CORL; and
        in a phase without a CQL term, where nothing reads them). The same with
        `--learner.reference learned`: online rows are bounded by their own G
        (`agents/reference.py`)."""
        settings = self.settings()
        return settings.bound and settings.conservative

    def prepare(self, offline: BatchSource, batch_size: int, rng: np.random.Generator) -> dict[str, float]:
        """Fit the learned reference Q_mu on the offline rows' Monte-Carlo returns (Appendix
        G), once; nothing to do with `--learner.reference mc` or when it is fitted already
        (a resumed run). Returns the fit's metrics, `reference/*`."""
        if self.reference is None or self.reference_fitted:
            return {}
        cfg = self.cfg
        self.reference.requires_grad_(True)
        metrics = fit_reference(self.reference, offline, cfg.reference_steps, cfg.reference_lr, batch_size, rng,
                                self.device, functools.partial(data_actions, cfg=cfg))
        self.reference.requires_grad_(False)
        self.reference_fitted = True
        return {f"reference/{k}": v for k, v in metrics.items()}

    def _with_reference(self, batch: dict, settings: UpdateSettings) -> tuple[dict, dict[str, torch.Tensor]]:
        """The batch with the bound's learned reference values, `batch["reference"]`, when the
        bound reads them in this phase (and the metric `reference_minus_g`: Q_mu - G over
        the batch's offline rows)."""
        if self.reference is None or not (settings.bound and settings.conservative):
            return batch, {}
        if not self.reference_fitted:
            raise RuntimeError("--learner.reference learned: Q_mu is not fitted; call prepare(offline buffer, "
                               "batch_size, rng) before the first update (the loop does)")
        values, offline = bound_reference(self.reference, batch, data_actions(batch["actions"], self.cfg))
        metrics = {}
        if bool(offline.any()):
            metrics["reference_minus_g"] = (values - batch["mc_returns"])[offline].mean()
        return {**batch, "reference": values}, metrics

    def nets(self) -> Nets:
        return Nets(self.encoder, self.actor, self.critic, self.target_critic,
                    self.log_alpha, self.log_alpha_prime)

    def update(self, batch: Batch) -> dict[str, float]:
        """One official Cal-QL step on a batch (numpy or torch); returns float metrics."""
        batch = batch_to_torch(batch, self.device)
        check_batch(batch, self.action_dim, BATCH_KEYS)
        settings = self.settings()
        batch, reference_metrics = self._with_reference(batch, settings)
        with forward_precision(self.precision, self.device):
            losses, metrics = compute_losses(batch, self.nets(), self.cfg, settings, self.augment)
        metrics.update(reference_metrics)
        # without a CQL term, or without the multiplier in this phase, alpha' has nothing to
        # follow: its Adam moments must not move it either
        optimizers = [opt for name, opt in self.optimizers.items()
                      if (settings.conservative and settings.lagrange) or name != "alpha_prime"]
        apply_losses(losses, optimizers, self.num_updates)
        self._update_target()
        self.num_updates += 1
        return metrics_to_floats(metrics)

    @torch.no_grad()
    def _update_target(self) -> None:
        """target <- tau * online + (1 - tau) * target, every step."""
        online = list(self.critic.parameters())
        target = list(self.target_critic.parameters())
        torch._foreach_lerp_(target, online, self.cfg.tau)

    # ------------------------------------------------------------------ acting
    def act(self, obs: np.ndarray | dict[str, np.ndarray], deterministic: bool) -> np.ndarray:
        """Action(s) for one observation or a batch; deterministic is tanh(mean)."""
        return greedy_act(self.encoder, self.actor, self.critic, obs, self.device, deterministic,
                          self.cfg.discrete_gripper)

    def value(self, obs: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        """min_i Q_i(s, pi(s)) at the deterministic action (at g* with the discrete gripper):
        the value the loop compares with the realised return of evaluation episodes."""
        return greedy_value(self.encoder, self.actor, self.critic, obs, self.device, self.cfg.discrete_gripper)

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
            **({"reference": self.reference.state_dict(), "reference_fitted": self.reference_fitted}
               if self.reference is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.encoder.load_state_dict(state["encoder"])
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.target_critic.load_state_dict(state["target_critic"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
            self.log_alpha_prime.copy_(state["log_alpha_prime"])
        load_optimizers(self.optimizers, state["optimizers"], self._learning_rates())
        self.set_online(bool(state["online"]))
        self.num_updates = int(state["num_updates"])
        if self.reference is not None and "reference" in state:  # absent: a state saved with reference mc
            self.reference.load_state_dict(state["reference"])
            self.reference_fitted = bool(state["reference_fitted"])


# ---------------------------------------------------------------- acting, shared with SAC
@torch.no_grad()
def greedy_act(encoder: nn.Module, actor: TanhGaussianActor, critic: CriticEnsemble,
               obs: np.ndarray | dict[str, np.ndarray], device: torch.device, deterministic: bool,
               discrete_gripper: bool) -> np.ndarray:
    """A tanh-Gaussian actor's action(s) (tanh(mean) when deterministic, else a sample), with
    g* = argmax_g min_i Q_i(s, a_arm, g) appended when the gripper is the critic's choice."""
    tensor, single = obs_to_tensor(obs, device)
    features = encoder(tensor)
    policy = actor(features)
    action = policy.deterministic() if deterministic else policy.sample()[0]
    if discrete_gripper:
        arm = action.unsqueeze(0)
        action = gripper.greedy_actions(arm, critic(features, gripper.both_grippers(arm)))[0]
    action = action.cpu().numpy()
    return action[0] if single else action


@torch.no_grad()
def greedy_value(encoder: nn.Module, actor: TanhGaussianActor, critic: CriticEnsemble,
                 obs: np.ndarray | dict[str, np.ndarray], device: torch.device, discrete_gripper: bool) -> np.ndarray:
    """min_i Q_i(s, pi(s)) at the deterministic action (at g* with the discrete gripper), per obs."""
    tensor, single = obs_to_tensor(obs, device)
    features = encoder(tensor)
    arm = actor(features).deterministic().unsqueeze(0)
    q = policy_values(critic, features, arm, discrete_gripper)  # (E, 1, B)
    v = q.min(dim=0).values[0].float().cpu().numpy()
    return v[0] if single else v
