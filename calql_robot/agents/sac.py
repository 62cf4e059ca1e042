"""SAC (Haarnoja et al. 2018, "SAC and applications", the version with automatic entropy
tuning): its config, per-domain presets and losses as pure functions. One SAC serves the
paper's SAC-family baselines (Cal-QL Appendix E.6) - SAC on online data only, SAC + offline
data in one pool, hybrid RL at the domain's mixing ratio - which differ only in their data
(`agents/catalog.py` names them as `--algo` lines with loop settings), and the critic
options of the ensemble methods, as rlpd builds RLPD from its `SACLearner` plus a config.

The update, every loss from the same pre-update parameters (SPEC section 1's simultaneous
update, as Cal-QL's), each reaching only its own parameters:
- actor: `mean(alpha * log pi(a~|s) - Q_agg(s, a~))`, a~ ~ pi(s) reparameterised, critics
  detached; Q_agg the min over all critics (`actor_q="min"`, SAC's clipped double Q) or their
  mean (`"mean"`, rlpd's `q = qs.mean(axis=0)` and REDQ's policy objective);
- temperature: `-log_alpha * mean(log_pi + target_entropy)`, target -|A| (Cal-QL E.6: "target
  entropy of the negative action dimension"; rlpd's default is -|A|/2);
- critic: `sum_i mean((Q_i(s, a) - y)^2)` with, without gradient,
  `y = r + (1 - done) gamma (max_k min_{i in I} Q_targ_i(s', a'_k) - alpha log pi(a'_k*|s'))`:
  I is all critics, or with `num_min < num_critics` a random subset of num_min of them drawn
  once per update (rlpd's `subsample_ensemble`, REDQ's M); k = backup_k samples of pi(s') with
  the max over them (1: SAC's backup), a'_k* the sample the max picked (JaxCQL's choice when
  both the max backup and the entropy term are on); the entropy term only with backup_entropy.
- targets: `target = tau * online + (1 - tau) * target` after every critic step.

Where rlpd differs and why this follows the project: rlpd's critic loss is the mean over
the ensemble (here the sum of the per-critic means, as Cal-QL's: each critic's parameters
see only their own term, so the two differ by a constant factor Adam does not see); rlpd's
temperature loss is `alpha * (entropy - target)` (here Cal-QL's `log_alpha` form, the same
fixed point); rlpd initialises with Xavier, here JaxCQL's orthogonal init of every agent.

The image-encoder rule is Cal-QL's (`calql_learner.py`): the critic loss trains the shared
encoder, the actor reads detached features, the target reads next-state features of the
online encoder without gradient. With `discrete_gripper` the last action dim is the
critic-greedy binary gripper of `agents/gripper.py`, as in Cal-QL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from calql_robot.agents.calql import Features, alpha_loss, bellman_error, encode, policy_loss, policy_values
from calql_robot.config import flag
from calql_robot.errors import ConfigError
from calql_robot.networks import CriticEnsemble, TanhGaussianActor


# ---------------------------------------------------------------- config
@dataclass
class SACConfig:
    """Hyper-parameters of SAC (flags `--sac.*`; `--algo sac | sac-offline | hybrid`).

    Defaults are SAC's own (Haarnoja et al. 2018, Table 1: Adam lr 3e-4, tau 5e-3, two
    critics; target entropy -|A|); the domain presets take the network sizes of the domain's
    Cal-QL preset (Cal-QL E.6: "the same other hyperparameters as CQL and Cal-QL"). The
    options below the line are the ensemble methods' (rlpd: `num_qs=10, num_min_qs=2,
    critic_layer_norm=True`, actor on the ensemble mean, UTD G critic updates per actor update).
    """

    tau: float = 5e-3
    """Polyak rate of the target critics, after every critic update."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor and of the temperature log_alpha."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critics and the shared encoder."""
    actor_hidden: tuple[int, ...] = (256, 256)
    """Hidden widths of the actor MLP."""
    critic_hidden: tuple[int, ...] = (256, 256)
    """Hidden widths of each critic MLP."""
    backup_entropy: bool = True
    """Subtract alpha * log pi(a'|s') in the TD target (SAC's soft backup; JaxCQL and Cal-QL
    leave it out, which is what `--algo cql-sac`'s fine-tuning does)."""
    backup_k: int = 1
    """Next actions sampled for the backup, max over them of the min-critic value (1: SAC's
    backup; Cal-QL's max backup takes 10, which `cql-sac`'s fine-tuning keeps)."""
    discrete_gripper: bool = False
    """The last action dim is the critic-greedy binary gripper (`agents/gripper.py`; the
    pick-and-place presets, as Cal-QL's)."""
    num_critics: int = 2
    """Critics in the ensemble (rlpd: 10)."""
    num_min: int | None = None
    """Target critics the backup's min is taken over, a random subset drawn every update;
    None: all of them (rlpd: 2 of 10)."""
    layer_norm: bool = False
    """LayerNorm after every hidden layer of the critics, before the ReLU (rlpd: on)."""
    actor_q: Literal["min", "mean"] = "min"
    """What the actor maximises: the min over the critics (SAC) or their mean (rlpd, REDQ)."""
    critic_updates_per_actor: int = 1
    """G: every update steps the critics, every G-th also the actor and the temperature. With
    `--loop.utd G` that is G critic updates and one actor update per env step, rlpd's UTD G
    (`SACLearner.update(batch, utd_ratio)`: G critic steps on G minibatches, then one actor
    step); here the actor's loss is taken from the same pre-update parameters as its
    update's critic step, not after it."""

    action_clip: ClassVar[float] = 0.99999
    """Data actions are clipped as Cal-QL's (a constant: the critic sees the same inputs)."""

    def validate(self) -> None:
        """Raise ConfigError naming the flag (`--sac.tau`) when a value cannot work."""
        for name in ("tau", "actor_lr", "critic_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{flag(name, 'sac')} must be > 0, got {getattr(self, name)!r}")
        for name in ("backup_k", "num_critics", "critic_updates_per_actor"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{flag(name, 'sac')} must be >= 1, got {getattr(self, name)!r}")
        if self.num_min is not None and not 1 <= self.num_min <= self.num_critics:
            raise ConfigError(f"{flag('num_min', 'sac')} must be in 1..{flag('num_critics', 'sac')} "
                              f"({self.num_critics}), got {self.num_min}")
        if not self.actor_hidden or not self.critic_hidden or min(self.actor_hidden + self.critic_hidden) < 1:
            raise ConfigError(f"{flag('actor_hidden', 'sac')} and {flag('critic_hidden', 'sac')} need positive "
                              f"widths, got {self.actor_hidden} and {self.critic_hidden}")


# ---------------------------------------------------------------- presets, per domain
PRESETS: dict[str, Callable[[], SACConfig]] = {
    # Network sizes: SPEC section 4 (the domain's Cal-QL networks, Cal-QL E.6); the rest SAC's.
    "antmaze": lambda: SACConfig(actor_hidden=(256, 256), critic_hidden=(256, 256, 256, 256)),
    "kitchen": lambda: SACConfig(actor_hidden=(256, 256), critic_hidden=(256, 256, 256, 256)),
    "adroit": lambda: SACConfig(actor_hidden=(512, 512), critic_hidden=(512, 512, 512)),
    # pick-and-place: Cal-QL's pick-and-place networks (256x2 critics) and its critic-greedy
    # binary gripper (SPEC section 8: a tanh-Gaussian gripper stays on one side)
    "pickplace_state": lambda: SACConfig(critic_hidden=(256, 256), discrete_gripper=True),
    "visual_paper": lambda: SACConfig(critic_hidden=(256, 256, 256, 256)),
    "visual_cpu": lambda: SACConfig(critic_hidden=(256, 256, 256, 256), discrete_gripper=True),
}
"""SAC's config per domain preset; each call returns a fresh config."""


# ---------------------------------------------------------------- the update, in named steps
@dataclass
class Nets:
    """What the losses read (the image encoder is Identity for state observations)."""

    encoder: nn.Module
    actor: TanhGaussianActor
    critic: CriticEnsemble
    target_critic: CriticEnsemble
    log_alpha: torch.Tensor


def aggregate(q: torch.Tensor, how: str) -> torch.Tensor:
    """(E, ...) -> (...): the min over the critics, or their mean."""
    return q.min(dim=0).values if how == "min" else q.mean(dim=0)


def actor_losses(f: Features, nets: Nets, cfg: SACConfig) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """SAC's policy loss on detached features and critics, and the temperature loss (target -|A_actor|)."""
    actor_dim = nets.actor.action_dim
    new_actions, log_pi = nets.actor(f.detached).sample()
    alpha = nets.log_alpha.exp()
    q_new = policy_values(nets.critic, f.detached, new_actions.unsqueeze(0), cfg.discrete_gripper,
                          detach_params=True)[:, 0]  # (E, B)
    if cfg.actor_q == "min":
        actor = policy_loss(log_pi, q_new, alpha)
    else:
        actor = (alpha.detach() * log_pi - q_new.mean(dim=0)).mean()
    losses = {"actor": actor, "alpha": alpha_loss(nets.log_alpha, log_pi, -float(actor_dim))}
    metrics = {"actor_loss": actor.detach(), "alpha_loss": losses["alpha"].detach(), "alpha": alpha.detach(),
               "log_pi": log_pi.detach().mean(), "q_pi": aggregate(q_new.detach(), cfg.actor_q).mean()}
    return losses, metrics


def backup_indices(num_critics: int, num_min: int | None, device: torch.device) -> torch.Tensor | None:
    """The target critics of this update's min: None for all, else a random subset of num_min."""
    if num_min is None or num_min == num_critics:
        return None
    return torch.randperm(num_critics, device=device)[:num_min]


@torch.no_grad()
def soft_target(f: Features, batch: dict, nets: Nets, cfg: SACConfig, discount: float) -> torch.Tensor:
    """`y = r + (1 - done) gamma (max_k min_{i in I} Q_targ_i(s', a'_k) - [alpha log pi(a'_k*|s')])`."""
    a_next, logp_next = nets.actor(f.feat_next).sample(cfg.backup_k)  # (k, B, A), (k, B)
    next_q = policy_values(nets.target_critic, f.feat_next, a_next, cfg.discrete_gripper)  # (E, k, B)
    subset = backup_indices(next_q.shape[0], cfg.num_min, next_q.device)
    v = (next_q if subset is None else next_q[subset]).min(dim=0).values  # (k, B)
    best = v.argmax(dim=0, keepdim=True)  # (1, B): k = 1 picks the one sample
    v_next = v.gather(0, best)[0]
    if cfg.backup_entropy:
        v_next = v_next - nets.log_alpha.exp() * logp_next.gather(0, best)[0]
    return batch["rewards"] + (1.0 - batch["dones"]) * discount * v_next


def critic_loss(f: Features, y: torch.Tensor, nets: Nets) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Bellman error per critic, summed over the ensemble; it trains the critics and the encoder."""
    q_data = nets.critic(f.feat, f.actions.unsqueeze(0))[:, 0]  # (E, B)
    bellman = bellman_error(q_data, y)
    metrics = {"critic_loss": bellman.detach().mean(), "q_data": q_data.detach().mean(), "target_q": y.mean()}
    return {"critic": bellman.sum()}, metrics


def compute_losses(batch: dict, nets: Nets, cfg: SACConfig, discount: float, with_actor: bool = True,
                   augment: nn.Module | None = None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """SAC's losses from one batch and the pre-update parameters: `critic` -> critics and
    encoder, and with `with_actor` `actor` -> actor, `alpha` -> log_alpha. Noise is drawn in
    the order actor sample, backup samples (k), backup subset."""
    f = encode(batch, nets, cfg, augment)
    losses, metrics = actor_losses(f, nets, cfg) if with_actor else ({}, {})
    y = soft_target(f, batch, nets, cfg, discount)
    critic, critic_metrics = critic_loss(f, y, nets)
    losses.update(critic)
    return losses, {**critic_metrics, **metrics}
