"""Cal-QL losses as pure functions of tensors and modules. No optimizer lives here.

Term by term this is `../shared/SPEC.md` section 1, i.e. the official Cal-QL update
(nakamotoo/Cal-QL `ConservativeSAC.train`, itself JaxCQL's CQL plus one `jnp.maximum`):
every loss is computed from the same pre-update parameters and reaches only its own
parameters. The learner sums them and runs ONE backward pass; because the losses touch
disjoint parameter sets this gives exactly the per-loss gradients of the official code,
without CORL's extra critic backward (`tests/test_losses.py` checks the isolation).

Shapes: E critics, B states, n CQL actions, k backup actions, A action dims.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from calql_robot.agents import gripper
from calql_robot.config import LearnerConfig
from calql_robot.networks import CriticEnsemble, TanhGaussianActor


# ---------------------------------------------------------------- elementary terms
def alpha_loss(log_alpha: torch.Tensor, log_pi: torch.Tensor,
               target_entropy: float) -> torch.Tensor:
    """SAC temperature loss `-log_alpha * mean(log_pi + target_entropy)` (log_pi detached)."""
    return -(log_alpha * (log_pi.detach() + target_entropy)).mean()


def policy_loss(log_pi: torch.Tensor, q_new: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """`mean(alpha * log_pi - min_i Q_i(s, a~))`; q_new is (E, B), alpha is detached."""
    return (alpha.detach() * log_pi - q_new.min(dim=0).values).mean()


def bc_regularised_policy_loss(log_pi: torch.Tensor, q_new: torch.Tensor, alpha: torch.Tensor,
                               mean_action: torch.Tensor, data_action: torch.Tensor,
                               bc_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """TD3+BC's actor objective (Fujimoto & Gu 2021) on the SAC policy loss:

        policy_loss / mean_b |min_i Q_i(s_b, a~_b)|  +  bc_weight * mean((tanh(mu(s)) - a)^2)

    The normaliser is detached, so the Q term has unit scale whatever the reward scale and
    bc_weight means the same on every task (TD3+BC's alpha = 2.5). An option, off by default
    (`LearnerConfig.bc_weight = 0`): it is not part of Cal-QL. Returns (loss, bc_mse).
    """
    scale = q_new.min(dim=0).values.abs().mean().detach().clamp(min=1e-6)
    bc_mse = mean_squared_error(mean_action, data_action)
    return policy_loss(log_pi, q_new, alpha) / scale + bc_weight * bc_mse, bc_mse.detach()


def mean_squared_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`mean((pred - target)^2)`, and 0 (still in the graph) over no rows: a mixed batch
    with `bc_offline_only` may hold no offline rows (mixing ratio 0)."""
    if pred.numel() == 0:
        return pred.sum()
    return (pred - target).pow(2).mean()


def bc_rows(batch: dict, cfg: LearnerConfig, batch_size: int) -> slice:
    """The rows the BC terms cover: all, or with `bc_offline_only` the first `n_offline`
    (data/mixing.py puts a mixed batch's offline rows first; offline batches have no key)."""
    n = batch.get("n_offline") if cfg.bc_offline_only else None
    return slice(0, batch_size if n is None else int(n))


def encoder_bc_mse(actor: nn.Module, features: torch.Tensor, data_action: torch.Tensor) -> torch.Tensor:
    """`mean((tanh(mu(features)) - a)^2)` with the actor's parameters detached, so its
    gradient reaches only what produced `features` (the shared encoder): behaviour cloning
    as an auxiliary representation loss, as SAC-AE / CURL add theirs to a shared encoder."""
    fixed = {name: p.detach() for name, p in actor.named_parameters()}
    return mean_squared_error(torch.func.functional_call(actor, fixed, (features,)).deterministic(), data_action)


def td_target(rewards: torch.Tensor, dones: torch.Tensor, next_q: torch.Tensor,
              discount: float, max_backup: bool) -> torch.Tensor:
    """`y = r + (1 - done) * gamma * V(s')` with no gradient.

    next_q: (E, k, B) target-critic values of k actions sampled from pi(s'). The min over
    critics is taken first, then (max target backup, Kumar et al. 2020) the max over the k
    samples; without the max backup k must be 1. No entropy term (backup_entropy=False).
    """
    v = next_q.min(dim=0).values  # (k, B)
    v = v.max(dim=0).values if max_backup else v[0]
    return (rewards + (1.0 - dones) * discount * v).detach()


def bellman_error(q_data: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-critic `mean((Q_i(s,a) - y)^2)` (no 1/2, as JaxCQL's `mse_loss`); returns (E,)."""
    return (q_data - y.unsqueeze(0)).pow(2).mean(dim=-1)


def calql_bound(q_pi: torch.Tensor, mc_returns: torch.Tensor,
                policy_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """THE Cal-QL change to CQL: `Q(s, a_pi) <- max(Q(s, a_pi), G(s, a))`.

    q_pi: (E, n, B) values of policy actions at s; mc_returns: (B,) the Monte-Carlo
    return-to-go of the data transition. Returns the bounded values and the fraction that
    lay below the bound before bounding (the "bound rate" the paper logs).
    policy_mask: (n, B) bool, for the discrete gripper: only the columns that are the
    policy's action (g = g*) are bounded and counted; the other gripper value is an
    action the policy does not take, bounded no more than a random action is.
    """
    below = q_pi < mc_returns
    if policy_mask is None:
        return torch.maximum(q_pi, mc_returns), below.float().mean()
    rate = (below & policy_mask).float().sum() / (policy_mask.float().sum() * q_pi.shape[0]).clamp(min=1.0)
    return torch.where(policy_mask, torch.maximum(q_pi, mc_returns), q_pi), rate


def cql_difference(q_data: torch.Tensor, q_rand: torch.Tensor, q_cur: torch.Tensor,
                   q_nxt: torch.Tensor, logp_cur: torch.Tensor, logp_nxt: torch.Tensor,
                   action_dim: int, importance_sample: bool, temp: float,
                   clip_min: float, clip_max: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-critic CQL gap `mean(clip(T * logsumexp(cat / T) - Q(s,a), min, max))`, (E,).

    With importance sampling the three n-column sets are corrected by their sampling
    densities: uniform 0.5^A for random actions, pi(.|s) and pi(.|s') for the policy sets
    (all evaluated at s), and the data Q is excluded; without it, the uncorrected sets and
    the data Q enter the logsumexp (JaxCQL `cql_importance_sample`). Returns (diff, ood).
    """
    if importance_sample:
        random_density = action_dim * math.log(0.5)
        cat = torch.cat([q_rand - random_density, q_nxt - logp_nxt.detach(),
                         q_cur - logp_cur.detach()], dim=1)
    else:
        cat = torch.cat([q_rand, q_data.unsqueeze(1), q_nxt, q_cur], dim=1)
    ood = temp * torch.logsumexp(cat / temp, dim=1)  # (E, B)
    diff = (ood - q_data).clamp(min=clip_min, max=clip_max).mean(dim=-1)
    return diff, ood


def cql_penalty(diff: torch.Tensor, weight: float, alpha_prime: torch.Tensor | None,
                target_action_gap: float) -> torch.Tensor:
    """Fixed weight: `w * diff_i`; Lagrange: `alpha' * w * (diff_i - gap)`, alpha' detached."""
    if alpha_prime is None:
        return weight * diff
    return alpha_prime.detach() * weight * (diff - target_action_gap)


def alpha_prime_loss(alpha_prime: torch.Tensor, diff: torch.Tensor, weight: float,
                     target_action_gap: float) -> torch.Tensor:
    """Dual ascent on alpha': `-mean_i(alpha' * w * (diff_i - gap))`, diff detached."""
    return -(alpha_prime * weight * (diff.detach() - target_action_gap)).mean()


def clipped_alpha_prime(log_alpha_prime: torch.Tensor) -> torch.Tensor:
    """`clip(exp(log_alpha'), 0, 1e6)` as in JaxCQL."""
    return log_alpha_prime.exp().clamp(0.0, 1e6)


# ---------------------------------------------------------------- the whole update
@dataclass
class Nets:
    """Everything the losses read. `encoder` maps observations to features (Identity for
    state observations); the target critic reads next-state features of the online encoder
    under no_grad (DrQ-v2's rule; see `calql_robot/agents/calql_learner.py`)."""

    encoder: nn.Module
    actor: TanhGaussianActor
    critic: CriticEnsemble
    target_critic: CriticEnsemble
    log_alpha: torch.Tensor
    log_alpha_prime: torch.Tensor


@dataclass
class UpdateSettings:
    """What changes between the offline and the online phase."""

    cql_weight: float
    bound: bool  # apply the Cal-QL bound (False gives exactly CQL)
    bc_weight: float  # the actor's TD3+BC weight of this phase (0: pure Cal-QL actor loss)


def compute_losses(batch: dict, nets: Nets, cfg: LearnerConfig, settings: UpdateSettings,
                   augment: nn.Module | None = None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """All Cal-QL losses from one batch and the pre-update parameters.

    Returns (losses, metrics). The four losses reach disjoint parameters: `actor` -> actor,
    `alpha` -> log_alpha, `critic` -> critics and encoder, `alpha_prime` -> log_alpha'
    (with the option `bc_encoder_weight > 0`, a fifth loss, `encoder_bc`, reaches the encoder
    alone: bc_encoder_weight * mean((tanh(mu(enc(s))) - a)^2) with the actor's parameters fixed).

    With `cfg.discrete_gripper` the last action dim is the critic-chosen binary gripper
    (`calql_robot/agents/gripper.py`); every policy action below is then (a_arm, g*) with
    g* = argmax_g min_i Q_i(s, a_arm, g):
    - policy loss: `mean(alpha * log pi(a_arm) - max_g min_i Q_i(s, a_arm, g))`;
    - backup: `max_k max_g min_i Q_targ_i(s', a_arm_k, g)`;
    - CQL: each policy arm sample is scored with both gripper values, so the logsumexp is
      `log( sum_rand e^(Q - log 0.5^A) + sum_{j, g} e^(Q(s, a_j, g) - log pi(a_j)) )`: exact
      over the discrete dim for the policy sets (a stratified draw of a uniform gripper,
      whose weight 1/2 cancels its density 1/2), and a uniform draw over {-1, +1} for the
      random set, whose probability 1/2 is the same factor as the density 1/2 of a
      continuous dim on [-1, 1] (so `action_dim * log 0.5` stays right);
    - Cal-QL bound: on the policy's own columns (g = g*), both sets, before the correction.
    """
    obs, next_obs = batch["observations"], batch["next_observations"]
    if augment is not None:
        obs, next_obs = augment(obs), augment(next_obs)
    feat = nets.encoder(obs)  # critic gradient trains the encoder
    with torch.no_grad():
        feat_next = nets.encoder(next_obs)
    feat_d = feat.detach()  # the actor sees detached features (DrQ-v2)
    actions = batch["actions"].clamp(-cfg.action_clip, cfg.action_clip)
    discrete = cfg.discrete_gripper
    if discrete:
        actions = gripper.snap(actions)
    batch_size, action_dim = actions.shape
    actor_dim = nets.actor.action_dim

    def policy_values(critic: CriticEnsemble, features: torch.Tensor, arm: torch.Tensor,
                      detach_params: bool = False) -> torch.Tensor:
        """(E, M, B) values of (M, B, actor_dim) policy samples, at g* when discrete."""
        if not discrete:
            return critic(features, arm, detach_params=detach_params)
        return gripper.greedy_values(critic(features, gripper.both_grippers(arm), detach_params=detach_params))

    # actor and temperature
    pi_s = nets.actor(feat_d)
    new_actions, log_pi = pi_s.sample()
    device = actions.device
    alpha = nets.log_alpha.exp() if cfg.auto_alpha else torch.tensor(cfg.fixed_alpha, device=device)
    q_new = policy_values(nets.critic, feat_d, new_actions.unsqueeze(0), detach_params=True)[:, 0]
    extra: dict[str, torch.Tensor] = {}
    rows = bc_rows(batch, cfg, batch_size)
    if settings.bc_weight > 0:
        losses = {}
        losses["actor"], extra["bc_mse"] = bc_regularised_policy_loss(
            log_pi, q_new, alpha, pi_s.deterministic()[rows], actions[rows, :actor_dim], settings.bc_weight)
    else:
        losses = {"actor": policy_loss(log_pi, q_new, alpha)}
    if cfg.bc_encoder_weight > 0:
        losses["encoder_bc"] = cfg.bc_encoder_weight * encoder_bc_mse(nets.actor, feat[rows], actions[rows, :actor_dim])
    losses["alpha"] = (alpha_loss(nets.log_alpha, log_pi, cfg.resolved_target_entropy(actor_dim))
                       if cfg.auto_alpha else nets.log_alpha.sum() * 0.0)

    # samples for the backup and the regulariser: no gradient to the actor
    n = cfg.cql_n_actions
    with torch.no_grad():
        pi_next = nets.actor(feat_next)
        a_cur, logp_cur = pi_s.detached().sample(n)
        a_nxt, logp_nxt = pi_next.sample(n)
        k = cfg.backup_k if cfg.max_target_backup else 1
        a_backup, _ = pi_next.sample(k)
        next_q = policy_values(nets.target_critic, feat_next, a_backup)
        y = td_target(batch["rewards"], batch["dones"], next_q, cfg.discount, cfg.max_target_backup)
        a_rand = torch.empty(n, batch_size, action_dim, device=device).uniform_(-1.0, 1.0)
        if discrete:
            a_rand[..., -1] = torch.where(a_rand[..., -1] >= 0, gripper.OPEN, gripper.CLOSE)
            a_cur, a_nxt = gripper.both_grippers(a_cur), gripper.both_grippers(a_nxt)
            logp_cur, logp_nxt = logp_cur.repeat(2, 1), logp_nxt.repeat(2, 1)
    m = a_cur.shape[0]  # n, or 2n with both gripper values

    # one critic pass over [data, random, current, next] actions, all at s
    q_all = nets.critic(feat, torch.cat([actions.unsqueeze(0), a_rand, a_cur, a_nxt], dim=0))
    q_data, q_rand = q_all[:, 0], q_all[:, 1:1 + n]
    q_cur, q_nxt = q_all[:, 1 + n:1 + n + m], q_all[:, 1 + n + m:]
    mask_cur = gripper.greedy_mask(q_cur) if discrete else None
    mask_nxt = gripper.greedy_mask(q_nxt) if discrete else None
    bound_rate = torch.zeros((), device=device)
    if settings.bound:
        mc = batch["mc_returns"]
        q_cur, below_cur = calql_bound(q_cur, mc, mask_cur)
        q_nxt, below_nxt = calql_bound(q_nxt, mc, mask_nxt)
        bound_rate = 0.5 * (below_cur + below_nxt)
    diff, ood = cql_difference(q_data, q_rand, q_cur, q_nxt, logp_cur, logp_nxt, action_dim,
                               cfg.importance_sample, cfg.cql_temp, cfg.cql_clip_min, cfg.cql_clip_max)
    bellman = bellman_error(q_data, y)
    alpha_prime = clipped_alpha_prime(nets.log_alpha_prime) if cfg.lagrange else None
    cql = cql_penalty(diff, settings.cql_weight, alpha_prime, cfg.target_action_gap)
    losses["critic"] = (bellman + cql).sum()
    losses["alpha_prime"] = (alpha_prime_loss(alpha_prime, diff, settings.cql_weight, cfg.target_action_gap)
                             if alpha_prime is not None else nets.log_alpha_prime.sum() * 0.0)

    metrics = {
        "critic_loss": losses["critic"] / q_all.shape[0], "actor_loss": losses["actor"],
        "alpha_loss": losses["alpha"], "alpha_prime_loss": losses["alpha_prime"],
        "bellman_loss": bellman.mean(), "cql_diff": diff.detach().mean(), "cql_ood": ood.detach().mean(),
        "alpha": alpha.detach(), "alpha_prime": alpha_prime.detach() if alpha_prime is not None
        else torch.zeros((), device=device), "log_pi": log_pi.detach().mean(), "q_data": q_data.detach().mean(),
        "q_pi": q_new.detach().min(dim=0).values.mean(),
        "q_rand": q_rand.detach().mean(), "q_cur": q_all[:, 1 + n:1 + n + m].detach().mean(),
        "q_next": q_all[:, 1 + n + m:].detach().mean(), "target_q": y.mean(),
        "mc_return": batch["mc_returns"].mean(), "bound_rate": bound_rate.detach(), **extra,
    }
    if "encoder_bc" in losses:
        metrics["encoder_bc_loss"] = losses["encoder_bc"].detach()
    if discrete:
        metrics["gripper_open_cur"] = mask_cur[m // 2:].float().mean()
        metrics["gripper_open_data"] = (actions[:, -1] > 0).float().mean()
    return losses, metrics
