"""Cal-QL (Nakamoto et al. 2023): its config, its per-domain presets and its losses, as
pure functions of tensors and modules. No optimizer lives here (`calql_learner.py` owns them).

Term by term this is `../shared/SPEC.md` section 1, i.e. the official Cal-QL update
(nakamotoo/Cal-QL `ConservativeSAC.train`, itself JaxCQL's CQL plus one `jnp.maximum`):
every loss is computed from the same pre-update parameters and reaches only its own
parameters. The learner sums them and runs ONE backward pass; because the losses touch
disjoint parameter sets this gives exactly the per-loss gradients of the official code,
without CORL's extra critic backward (`tests/test_losses.py` checks the isolation).

THE Cal-QL change to CQL is `calql_bound` below: one `torch.maximum`; with
`--learner.no-calql-bound` nothing else changes and the update is CQL's.

Read `compute_losses` against SPEC section 1 in four named steps, as d3rlpy's
`cql_impl.py` splits CQL: `actor_losses` (policy and temperature), `backup_target`,
`conservative_gap` (the CQL sets with the bound), `update_metrics`.

Shapes: E critics, B states, n CQL actions, k backup actions, A action dims.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import nn

from calql_robot.agents import gripper
from calql_robot.config import flag
from calql_robot.errors import ConfigError
from calql_robot.networks import CriticEnsemble, TanhGaussianActor


# ---------------------------------------------------------------- config
@dataclass
class CalQLConfig:
    """Hyper-parameters of the Cal-QL update (SPEC section 1; flags `--learner.*`).

    Defaults are the official values (JaxCQL `ConservativeSAC.get_default_config` with the
    Cal-QL scripts' overrides). What SPEC fixes is not a flag unless a preset or a test
    varies it: the temperature is always tuned towards -|A| (SAC), the networks always get
    JaxCQL's orthogonal init. The discount is `--reward.discount`, read by the returns too.
    """

    tau: float = 5e-3
    """Polyak rate of the target critics, applied after every update (a flag: the target
    update's test varies it)."""
    actor_lr: float = 1e-4
    """Adam learning rate of the actor and of the temperature log_alpha (presets: 1e-3)."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critics, the shared encoder and log_alpha' (varied in the
    fine-tuning studies of RESULTS.md, session 6)."""
    actor_hidden: tuple[int, ...] = (256, 256)
    """Hidden widths of the actor MLP (Adroit: 512x2)."""
    critic_hidden: tuple[int, ...] = (256, 256, 256, 256)
    """Hidden widths of each critic MLP (Adroit: 512x3, the pick-and-place state preset 256x2)."""
    num_critics: int = 2
    """Number of critics in the ensemble (the min over them is used); the SAC family of the
    baselines (RLPD: 10) varies it."""
    log_std_multiplier: float = 1.0
    """Initial value of the learnable multiplier m in log_std = m*log_std + b (JaxCQL's; the
    NumPy reference tests vary it)."""
    log_std_offset: float = -1.0
    """Initial value of the learnable offset b in log_std = m*log_std + b (as above)."""
    cql_n_actions: int = 10
    """n: actions per set (random, pi(s), pi(s')) in the CQL regulariser (presets: 4)."""
    max_target_backup: bool = True
    """Back up max over backup_k sampled next actions of min-critic (official default; off
    is CORL's and CQL's plain backup, pinned by the loss tests)."""
    backup_k: int = 10
    """k: next actions sampled for the max target backup (visual domain: 4)."""
    importance_sample: bool = True
    """Correct the logsumexp sets by their sampling densities (data Q excluded); off is
    JaxCQL's other form, pinned by the loss tests."""
    cql_temp: float = 1.0
    """Temperature T of the logsumexp (JaxCQL's option; the loss tests vary it)."""
    cql_weight: float = 5.0
    """CQL weight w during offline pre-training."""
    cql_weight_online: float | None = None
    """CQL weight w during online fine-tuning; None keeps cql_weight (visual paper: 0.5). At 0
    the regulariser is not computed at all: the critic loss is the Bellman error alone."""
    lagrange: bool = False
    """Tune alpha' by dual ascent towards target_action_gap (AntMaze)."""
    lagrange_online: bool = True
    """With `lagrange`: keep tuning alpha' during fine-tuning. False holds the CQL weight
    fixed online at cql_weight_online (None: cql_weight), with no alpha' (the paper's visual
    setting has no multiplier; the visual cpu preset pre-trains with it and fine-tunes
    without it: RESULTS.md, session 13). The same online phase as a fork with
    `--learner.no-lagrange` from the switch (tests/test_forks.py)."""
    target_action_gap: float = 0.8
    """Gap the Lagrange version holds the CQL difference to."""
    cql_clip_min: float = -math.inf
    """Per-sample lower clip of the CQL difference (CORL's antmaze configs: -200)."""
    cql_clip_max: float = math.inf
    """Per-sample upper clip of the CQL difference (CORL's option; the loss tests vary it)."""
    calql_bound: bool = True
    """Bound policy-action Q-values below by the MC return (Cal-QL); False is exactly CQL."""
    calibrate_online: bool = True
    """Keep the bound during fine-tuning (official); False is CORL's choice (bound off, G=0 stored)."""
    reference: Literal["mc", "learned"] = "mc"
    """The bound's reference value: 'mc', the Monte-Carlo return G(s, a) of the data row (the
    paper's runs); 'learned', a network Q_mu(s, a) regressed on the offline data's G before
    pre-training and read at each offline row's data action (Appendix G; online rows keep
    their G; `calql_robot/agents/reference.py` says why)."""
    reference_steps: int = 5000
    """With reference 'learned': Adam steps of the regression, on batches of --loop.batch-size
    (Appendix G gives none; the tests' smooth returns are fitted in far fewer)."""
    reference_lr: float = 3e-4
    """With reference 'learned': Adam learning rate of the regression (the critics' default)."""
    bc_online: bool = True
    """Keep the behaviour-cloning terms (`td3bc_alpha`'s actor objective, `bc_encoder_weight`'s
    encoder loss) during fine-tuning; False drops both at the switch. With
    `cql_weight_online 0` and no bound online the fine-tuning update is then exactly SAC's
    (`--algo cql-sac` and `--algo wsrl-calql` set all three; tests/test_sac.py pins it)."""
    bc_offline_only: bool = False
    """The behaviour-cloning terms (`td3bc_alpha`'s MSE, the encoder BC) imitate only a
    batch's offline rows, the dataset's (`data/mixing.py` puts its `n_offline` offline rows
    first; a batch without the key is all offline), instead of every row. Online a batch
    also holds the policy's own actions, most of them from failed episodes on the pixel
    task; with this option they train the critic and the actor's Q term but are not
    imitated, so a lower mixing ratio does not dilute the anchor to the data. The mean is
    over the offline rows (0 when a batch has none). Not part of Cal-QL or TD3+BC (TD3+BC
    is offline, where both are the same). At mixing 0.5 from pixels it ended 0.09 higher
    than imitating every row, still 0.12 below the preset's mixing 0.9 (RESULTS.md,
    session 14); session 6 measured the same option on an older preset."""
    action_clip: float = 0.99999
    """Dataset actions are clipped to +-action_clip so their log-probs stay finite (the
    batch checks test its edge)."""
    discrete_gripper: bool = False
    """Treat the last action dim as a binary gripper (-1 close, +1 open) chosen by the
    critic: g* = argmax_g min_i Q_i(s, a_arm, g); the actor outputs the arm dims only
    (calql_robot/agents/gripper.py). For pick-and-place, whose gripper is binary in the env."""
    td3bc_alpha: float | None = None
    """TD3+BC's actor objective with this alpha (Fujimoto & Gu 2021; not part of Cal-QL;
    None, the default, is Cal-QL's own actor loss): (alpha / mean|Q|) * policy loss +
    MSE(tanh(mean), data action) over the actor's dims. TD3+BC's own alpha is 2.5; the
    pick-and-place presets use 0.4, i.e. a BC pull 6.25x TD3+BC's (`PRESETS` says why)."""
    bc_encoder_weight: float = 0.0
    """Weight of an auxiliary behaviour-cloning loss on the shared image encoder (not Cal-QL;
    0 disables): the encoder is trained by critic loss + bc_encoder_weight *
    MSE(tanh(mu(enc(s))), a), with the actor's parameters held fixed in this term (the actor
    keeps its own actor term on detached features, DrQ-v2). Why so large a weight can be
    needed: on the visual preset the critic loss's gradient on the encoder measured ~360x
    that of the BC MSE at weight 10 (RESULTS.md, session 5), so at weight ~2.5 the features
    are the critic's alone. No effect without an encoder (states) beyond the extra pass."""

    def validate(self) -> None:
        """Raise ConfigError naming the flag (`--learner.tau`) when a value cannot work."""
        positive = {"tau": self.tau, "actor_lr": self.actor_lr, "critic_lr": self.critic_lr,
                    "cql_temp": self.cql_temp}
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{flag(name, 'learner')} must be > 0, got {value!r}")
        if self.cql_weight < 0 or (self.cql_weight_online is not None and self.cql_weight_online < 0):
            raise ConfigError(f"{flag('cql_weight', 'learner')} and {flag('cql_weight_online', 'learner')} must be "
                              f">= 0, got {self.cql_weight!r} and {self.cql_weight_online!r}")
        for name in ("cql_n_actions", "backup_k", "num_critics"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{flag(name, 'learner')} must be >= 1, got {getattr(self, name)!r}")
        if self.bc_encoder_weight < 0:
            raise ConfigError(f"{flag('bc_encoder_weight', 'learner')} must be >= 0, got {self.bc_encoder_weight!r}")
        if self.td3bc_alpha is not None and not self.td3bc_alpha > 0:
            raise ConfigError(f"{flag('td3bc_alpha', 'learner')} must be > 0 (or None for Cal-QL's own actor "
                              f"loss), got {self.td3bc_alpha!r}")
        self._validate_reference()
        if self.cql_clip_min > self.cql_clip_max:
            raise ConfigError(f"{flag('cql_clip_min', 'learner')} {self.cql_clip_min} > "
                              f"{flag('cql_clip_max', 'learner')} {self.cql_clip_max}")

    def _validate_reference(self) -> None:
        if self.reference not in ("mc", "learned"):
            raise ConfigError(f"{flag('reference', 'learner')} must be mc or learned, got {self.reference!r}")
        if self.reference == "learned" and not self.calql_bound:
            raise ConfigError(f"{flag('reference', 'learner')} learned needs the Cal-QL bound: with "
                              f"--learner.no-calql-bound (CQL) nothing reads a reference value")
        if self.reference_steps < 1 or not self.reference_lr > 0:
            raise ConfigError(f"{flag('reference_steps', 'learner')} must be >= 1 and "
                              f"{flag('reference_lr', 'learner')} > 0, got {self.reference_steps!r} and "
                              f"{self.reference_lr!r}")


# ---------------------------------------------------------------- presets, per domain
def _pickplace_state() -> CalQLConfig:
    """The pick-and-place state preset, set by measurement (RESULTS.md, "Making it learn").

    - critic-greedy binary gripper: a tanh-Gaussian gripper dim stayed "open" (SPEC section 8);
    - Lagrange CQL with gap 0.8 and reward 10r - 5 (the AntMaze form): fixed w = 5 with
      r in {0, 1} let the values drift far above the achievable 1 (RESULTS.md, sessions 1-2);
    - actor lr 1e-3: 1e-4 (official) barely moved the actor in these budgets;
    - 4 CQL actions per set (paper: 10): 1.6x faster on the CPU; with both gripper values
      enumerated each policy set is already 8 critic evaluations per state;
    - TD3+BC's actor objective at alpha 0.4 (`td3bc_alpha`; TD3+BC's own alpha is 2.5, so
      this pulls to the data 6.25x harder), not part of Cal-QL: without it the same preset
      reached 0.45 at the switch and dipped to 0.0-0.15 online. (Sessions 1-7 wrote it as
      `policy_loss / mean|Q| + 2.5 * MSE`, 2.5 times this objective; Adam's steps do not
      see a constant factor, and RESULTS.md, session 8, re-measures the preset);
    - CQL weight 5 online as offline (the visual column's 0.5 online let the CQL gap jump
      from 0.4 to 20 within 600 env steps and success fall 0.75 -> 0.0; with 5: 0.75 -> 0.6).
    With observations standardised by `encoders.normalize` (std floor and clip), this preset
    reached 0.77 success at the switch and 0.92 after 3,000 online env steps (3 seeds;
    RESULTS.md, session 4).
    Pass `--learner.td3bc-alpha None` for Cal-QL's own actor loss, `--learner.no-calql-bound`
    for CQL.
    """
    return CalQLConfig(actor_hidden=(256, 256), critic_hidden=(256, 256), actor_lr=1e-3, cql_weight=5.0,
                       cql_weight_online=None, lagrange=True, target_action_gap=0.8, cql_n_actions=4,
                       backup_k=4, discrete_gripper=True, td3bc_alpha=0.4)


def _pickplace_state_paper() -> CalQLConfig:
    """The paper's Cal-QL on the state pick-and-place task (issue 18): SPEC section 4's
    manipulation column - a fixed CQL weight, 5 offline and 0.5 online at unit reward scale,
    max backup - with no BC term of any kind and no Lagrange multiplier. The domain's `paper`
    preset runs it at reward 10r - 5, so the weights are carried 10x, to 50 and 5: at 10x
    the reward, Q and the Bellman residual's gradient grow 10x while the CQL gap's gradient
    with respect to Q is scale-free (softmax weights minus one), so only a 10x weight keeps
    the paper's balance between the two (RESULTS.md, session 8). Departures, each measured:
    - reward 10r - 5 rather than +1/0 (set by the domain preset): at +1/0 with w 5/0.5 the
      critic's Q(s0, pi) climbed to 8-10 where 1 is the most possible, and 3 seeds ended at
      0.00 (0.05 at the switch); at 10r - 5 with w 50/5 it is calibrated within ~10
      (RESULTS.md, session 8);
    - actor lr 1e-3 (official 1e-4): in 4,000 updates (the paper pre-trains for hundreds of
      thousands) 1e-4 left the actor at 0.10 at the switch on seed 0, 1e-3 at 0.35;
    - the critic-greedy binary gripper and observations standardised by the offline data,
      each needed before anything learned here (SPEC section 8);
    - sized for the CPU like the default preset: 256x2 critics, 4 CQL actions per set and
      k = 4 backup samples (paper: 256x4, 10 and 10). With both gripper values enumerated,
      the official sizes took 4.5x longer per update here (117 s against 26 s for 200
      updates and data), about an hour a run.
    Measured (3 seeds, 20 episodes): 0.20 at the switch, 0.58 after 3,000 online env steps,
    no seed below its switch online (RESULTS.md, session 8).
    """
    return CalQLConfig(critic_hidden=(256, 256), actor_lr=1e-3, cql_n_actions=4, cql_weight=50.0,
                       cql_weight_online=5.0, backup_k=4, discrete_gripper=True)


def _visual_paper() -> CalQLConfig:
    """SPEC section 4, visual column: CQL weight 5 offline and 0.5 online, max backup k=4."""
    return CalQLConfig(cql_weight=5.0, cql_weight_online=0.5, backup_k=4)


def _visual_cpu() -> CalQLConfig:
    """The visual CPU preset's learner: the state preset's recipe (RESULTS.md, "Making it
    learn": binary critic-greedy gripper, Lagrange CQL gap 0.8 with reward 10r - 5, actor lr
    1e-3, 4 CQL actions, TD3+BC's actor objective at alpha 0.4, CQL weight 5 online as offline: the
    visual column's 0.5 online collapsed the state runs) with max backup k=4, plus the
    auxiliary BC loss on the shared encoder at weight 3000 (`bc_encoder_weight`, not part of
    Cal-QL): trained by the critic loss alone, the features left the actor's arm unable to
    find the cube (0.10 at the switch, 0 after fine-tuning, 3 seeds); at 3000 the two
    gradients on the encoder are about equal and the same runs reached 0.30 and 0.23
    (RESULTS.md, session 5). Online the weight is held fixed at 5 (`lagrange_online=False`,
    the paper's visual setting has no multiplier): the multiplier kept falling online
    (effective weight 2.4 -> 1.5) and, forked from the same 5 pre-trainings, the fixed
    weight ended higher on every seed (0.53 against 0.41 over 100 episodes, paired
    +0.12 ± 0.09) with the same regret (RESULTS.md, session 13)."""
    return dataclasses.replace(_visual_paper(), cql_weight_online=None, actor_lr=1e-3, lagrange=True,
                               lagrange_online=False, target_action_gap=0.8, cql_n_actions=4, discrete_gripper=True,
                               td3bc_alpha=0.4, bc_encoder_weight=3000.0)


PRESETS: dict[str, Callable[[], CalQLConfig]] = {
    "antmaze": lambda: CalQLConfig(critic_hidden=(256, 256, 256, 256), actor_hidden=(256, 256), cql_weight=5.0,
                                   lagrange=True, target_action_gap=0.8, cql_clip_min=-200.0),
    "kitchen": lambda: CalQLConfig(cql_weight=5.0),
    "adroit": lambda: CalQLConfig(actor_hidden=(512, 512), critic_hidden=(512, 512, 512), cql_weight=1.0),
    "visual_paper": _visual_paper,
    "visual_cpu": _visual_cpu,
    "pickplace_state": _pickplace_state,
    "pickplace_state_paper": _pickplace_state_paper,
}
"""Cal-QL's learner per domain preset (SPEC section 4; the pick-and-place ones measured in
RESULTS.md). Each call returns a fresh config; the domains' configs take theirs from here."""


# ---------------------------------------------------------------- elementary terms
def alpha_loss(log_alpha: torch.Tensor, log_pi: torch.Tensor,
               target_entropy: float) -> torch.Tensor:
    """SAC temperature loss `-log_alpha * mean(log_pi + target_entropy)` (log_pi detached)."""
    return -(log_alpha * (log_pi.detach() + target_entropy)).mean()


def policy_loss(log_pi: torch.Tensor, q_new: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """`mean(alpha * log_pi - min_i Q_i(s, a~))`; q_new is (E, B), alpha is detached."""
    return (alpha.detach() * log_pi - q_new.min(dim=0).values).mean()


def td3bc_policy_loss(log_pi: torch.Tensor, q_new: torch.Tensor, alpha: torch.Tensor,
                      mean_action: torch.Tensor, data_action: torch.Tensor,
                      td3bc_alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """TD3+BC's actor objective (Fujimoto & Gu 2021, their Eq. 3: maximise
    `lambda * Q(s, pi(s)) - (pi(s) - a)^2` with `lambda = alpha / mean|Q|`), on the SAC
    policy loss in place of `-Q`:

        (td3bc_alpha / mean_b |min_i Q_i(s_b, a~_b)|) * policy_loss  +  mean((tanh(mu(s)) - a)^2)

    The normaliser is detached (TD3+BC: "lambda ... is not differentiated"), so the Q term has
    unit scale whatever the reward scale; with a zero temperature this is TD3+BC's loss
    term by term (`tests/test_losses.py` pins it against NumPy). Not part of Cal-QL: an
    option, off by default (`CalQLConfig.td3bc_alpha = None`). Returns (loss, bc_mse).
    """
    scale = q_new.min(dim=0).values.abs().mean().detach().clamp(min=1e-6)
    bc_mse = mean_squared_error(mean_action, data_action)
    return (td3bc_alpha / scale) * policy_loss(log_pi, q_new, alpha) + bc_mse, bc_mse.detach()


def mean_squared_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`mean((pred - target)^2)` over batch and action dims (0 over no rows: a BC term
    restricted to a batch's offline rows, `bc_offline_only`, when it has none)."""
    if pred.shape[0] == 0:
        return pred.sum() * 0.0
    return (pred - target).pow(2).mean()


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
    return-to-go of the data transition (or, with `--learner.reference learned`, the
    learned Q_mu(s, a) that stands for it, Appendix G: `reference_values`). Returns the bounded values and the fraction that
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


# ---------------------------------------------------------------- the whole update, in named steps
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
    """What the learner resolves for one update: the phase's CQL weight, bound and actor BC
    weight, and the run's discount (`--reward.discount`, the same in both phases)."""

    cql_weight: float
    bound: bool  # apply the Cal-QL bound (False gives exactly CQL)
    td3bc_alpha: float | None  # TD3+BC's alpha of the actor objective (None: Cal-QL's own actor loss)
    discount: float = 0.99
    failure_return: float | None = None
    """G of a failure-rule row, r_neg' / (1 - gamma) (SPEC section 2), or None without the
    rule; the calibration metrics are split into those rows and the others by it."""
    encoder_bc: bool = True
    """Apply the config's encoder BC loss (`bc_encoder_weight`) in this phase (off online
    with `bc_online=False`)."""
    lagrange: bool = False
    """Scale the CQL term by the tuned alpha' in this phase (`lagrange`, and online also
    `lagrange_online`); False: the fixed weight alone."""

    @property
    def conservative(self) -> bool:
        """Whether this phase has a CQL term; at weight 0 (both the fixed and the Lagrange
        form vanish) the CQL sets are neither drawn nor evaluated."""
        return self.cql_weight > 0


@dataclass
class Features:
    """One batch through the encoder: `feat` carries the critic's gradient to the encoder,
    `feat_next` (no grad) feeds the target, the actor reads `feat.detach()` (DrQ-v2)."""

    feat: torch.Tensor
    feat_next: torch.Tensor
    actions: torch.Tensor
    """Data actions clipped to +-action_clip (and the gripper snapped to +-1 when discrete)."""

    @property
    def detached(self) -> torch.Tensor:
        return self.feat.detach()


def encode(batch: dict, nets: Nets, cfg: CalQLConfig, augment: nn.Module | None) -> Features:
    """Augment obs and next obs (DrQ random shift), encode them, clip the data actions."""
    obs, next_obs = batch["observations"], batch["next_observations"]
    if augment is not None:
        obs, next_obs = augment(obs), augment(next_obs)
    feat = nets.encoder(obs)  # critic gradient trains the encoder
    with torch.no_grad():
        feat_next = nets.encoder(next_obs)
    return Features(feat, feat_next, data_actions(batch["actions"], cfg))


def data_actions(actions: torch.Tensor, cfg: CalQLConfig) -> torch.Tensor:
    """Data actions as the critics read them: clipped to +-action_clip, the gripper snapped
    to +-1 when discrete (the learned reference reads the same)."""
    actions = actions.clamp(-cfg.action_clip, cfg.action_clip)
    return gripper.snap(actions) if cfg.discrete_gripper else actions


def policy_values(critic: CriticEnsemble, features: torch.Tensor, arm: torch.Tensor, discrete: bool,
                  detach_params: bool = False) -> torch.Tensor:
    """(E, M, B) values of (M, B, actor_dim) policy samples, at g* when the gripper is discrete."""
    if not discrete:
        return critic(features, arm, detach_params=detach_params)
    return gripper.greedy_values(critic(features, gripper.both_grippers(arm), detach_params=detach_params))


def bc_row_count(batch: dict, cfg: CalQLConfig) -> int | None:
    """How many leading rows the BC terms imitate: the batch's `n_offline` with
    `bc_offline_only` (all rows when the key is absent), None (every row) otherwise."""
    if not cfg.bc_offline_only:
        return None
    return int(batch.get("n_offline", batch["actions"].shape[0]))


def actor_losses(f: Features, nets: Nets, cfg: CalQLConfig, settings: UpdateSettings, bc_rows: int | None = None
                 ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], object, torch.Tensor]:
    """SPEC 1, actor and temperature: `actor` (SAC policy loss, or with td3bc_alpha set
    TD3+BC's objective on it), `alpha` (towards -|A_actor|), and with bc_encoder_weight > 0 `encoder_bc`.
    `bc_rows`: the BC terms read the first that many rows only (`bc_row_count`; None: all).
    Returns (losses, metrics, the policy at s, the (B,) min-critic Q of its sample) - the
    policy's samples feed the CQL sets, the Q-values the calibration metrics."""
    actor_dim = nets.actor.action_dim
    pi_s = nets.actor(f.detached)
    new_actions, log_pi = pi_s.sample()
    alpha = nets.log_alpha.exp()
    q_new = policy_values(nets.critic, f.detached, new_actions.unsqueeze(0), cfg.discrete_gripper,
                          detach_params=True)[:, 0]
    data_arm = f.actions[:, :actor_dim]
    q_pi = q_new.detach().min(dim=0).values  # (B,) min-critic value of the policy's sample
    metrics = {"alpha": alpha.detach(), "log_pi": log_pi.detach().mean(), "q_pi": q_pi.mean()}
    rows = slice(None) if bc_rows is None else slice(0, bc_rows)
    if settings.td3bc_alpha is not None:
        actor, metrics["bc_mse"] = td3bc_policy_loss(log_pi, q_new, alpha, pi_s.deterministic()[rows],
                                                     data_arm[rows], settings.td3bc_alpha)
    else:
        actor = policy_loss(log_pi, q_new, alpha)
    losses = {"actor": actor}
    if cfg.bc_encoder_weight > 0 and settings.encoder_bc:
        losses["encoder_bc"] = cfg.bc_encoder_weight * encoder_bc_mse(nets.actor, f.feat[rows], data_arm[rows])
    losses["alpha"] = alpha_loss(nets.log_alpha, log_pi, -float(actor_dim))
    return losses, metrics, pi_s, q_pi


@dataclass
class PolicySets:
    """The CQL regulariser's action sets at s (no gradient to the actor): n random, and
    the policy's at s and at s' (2n each with both gripper values), with log-densities."""

    a_rand: torch.Tensor
    a_cur: torch.Tensor
    logp_cur: torch.Tensor
    a_nxt: torch.Tensor
    logp_nxt: torch.Tensor


@torch.no_grad()
def backup_target(f: Features, batch: dict, nets: Nets, cfg: CalQLConfig, settings: UpdateSettings,
                  pi_s) -> tuple[torch.Tensor, PolicySets | None]:
    """SPEC 1, the TD target `y = r + (1 - done) gamma max_k min_i Q_targ_i(s', a'_k)`, and
    the sampled CQL sets (drawn here, in the official order: pi(s) x n, pi(s') x n, backup
    pi(s') x k, then the uniform set); no sets (None) in a phase without a CQL term."""
    n, batch_size, action_dim = cfg.cql_n_actions, f.actions.shape[0], f.actions.shape[1]
    pi_next = nets.actor(f.feat_next)
    if settings.conservative:
        a_cur, logp_cur = pi_s.detached().sample(n)
        a_nxt, logp_nxt = pi_next.sample(n)
    a_backup, _ = pi_next.sample(cfg.backup_k if cfg.max_target_backup else 1)
    next_q = policy_values(nets.target_critic, f.feat_next, a_backup, cfg.discrete_gripper)
    y = td_target(batch["rewards"], batch["dones"], next_q, settings.discount, cfg.max_target_backup)
    if not settings.conservative:
        return y, None
    a_rand = torch.empty(n, batch_size, action_dim, device=f.actions.device).uniform_(-1.0, 1.0)
    if cfg.discrete_gripper:
        a_rand[..., -1] = torch.where(a_rand[..., -1] >= 0, gripper.OPEN, gripper.CLOSE)
        a_cur, a_nxt = gripper.both_grippers(a_cur), gripper.both_grippers(a_nxt)
        logp_cur, logp_nxt = logp_cur.repeat(2, 1), logp_nxt.repeat(2, 1)
    return y, PolicySets(a_rand, a_cur, logp_cur, a_nxt, logp_nxt)


def conservative_gap(f: Features, sets: PolicySets, y: torch.Tensor, batch: dict, nets: Nets,
                     cfg: CalQLConfig, settings: UpdateSettings) -> tuple[dict[str, torch.Tensor],
                                                                         dict[str, torch.Tensor], torch.Tensor]:
    """SPEC 1, the critic: one critic pass over [data, random, pi(s), pi(s')] actions at s;
    THE Cal-QL bound on the policy columns (both sets, before the density correction); the
    CQL gap; Bellman error plus the (fixed or Lagrange) CQL penalty; alpha' by dual ascent.
    Returns (losses `critic` and `alpha_prime`, metrics, the (B,) fraction of each row's
    policy columns below G before the bound)."""
    n, m = cfg.cql_n_actions, sets.a_cur.shape[0]  # m: n, or 2n with both gripper values
    q_all = nets.critic(f.feat, torch.cat([f.actions.unsqueeze(0), sets.a_rand, sets.a_cur, sets.a_nxt], dim=0))
    q_data, q_rand = q_all[:, 0], q_all[:, 1:1 + n]
    q_cur, q_nxt = q_all[:, 1 + n:1 + n + m], q_all[:, 1 + n + m:]
    mask_cur = gripper.greedy_mask(q_cur) if cfg.discrete_gripper else None
    mask_nxt = gripper.greedy_mask(q_nxt) if cfg.discrete_gripper else None
    bound_rate = torch.zeros((), device=q_all.device)
    reference = reference_values(batch)
    below_rows = policy_below_rows(q_cur, q_nxt, reference, mask_cur, mask_nxt)
    if settings.bound:
        q_cur, below_cur = calql_bound(q_cur, reference, mask_cur)
        q_nxt, below_nxt = calql_bound(q_nxt, reference, mask_nxt)
        bound_rate = 0.5 * (below_cur + below_nxt)
    diff, ood = cql_difference(q_data, q_rand, q_cur, q_nxt, sets.logp_cur, sets.logp_nxt, f.actions.shape[1],
                               cfg.importance_sample, cfg.cql_temp, cfg.cql_clip_min, cfg.cql_clip_max)
    bellman = bellman_error(q_data, y)
    alpha_prime = clipped_alpha_prime(nets.log_alpha_prime) if settings.lagrange else None
    cql = cql_penalty(diff, settings.cql_weight, alpha_prime, cfg.target_action_gap)
    losses = {"critic": (bellman + cql).sum(),
              "alpha_prime": (alpha_prime_loss(alpha_prime, diff, settings.cql_weight, cfg.target_action_gap)
                              if alpha_prime is not None else nets.log_alpha_prime.sum() * 0.0)}
    metrics = {
        "critic_loss": losses["critic"].detach() / q_all.shape[0], "bellman_loss": bellman.detach().mean(),
        "cql_diff": diff.detach().mean(), "cql_ood": ood.detach().mean(),
        "alpha_prime": alpha_prime.detach() if alpha_prime is not None else torch.zeros((), device=q_all.device),
        "q_data": q_data.detach().mean(), "q_rand": q_rand.detach().mean(),
        "q_cur": q_all[:, 1 + n:1 + n + m].detach().mean(), "q_next": q_all[:, 1 + n + m:].detach().mean(),
        "target_q": y.mean(), "mc_return": batch["mc_returns"].mean(), "bound_rate": bound_rate.detach(),
    }
    if cfg.discrete_gripper:
        metrics["gripper_open_cur"] = mask_cur[m // 2:].float().mean()
        metrics["gripper_open_data"] = (f.actions[:, -1] > 0).float().mean()
    return losses, metrics, below_rows


def reference_values(batch: dict) -> torch.Tensor:
    """(B,) the bound's reference value per row: `batch["reference"]` where the learner put
    one (`--learner.reference learned`, Appendix G: Q_mu(s, a) on offline rows), else the
    Monte-Carlo return G (the paper's runs). The bound rate counts against the same values."""
    return batch["reference"] if "reference" in batch else batch["mc_returns"]


def bellman_only(f: Features, y: torch.Tensor, batch: dict, nets: Nets
                 ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The critic of a phase without a CQL term: the Bellman error alone, summed over the
    critics (SAC's critic loss; `agents/sac.py` computes the same); alpha' gets no loss."""
    q_data = nets.critic(f.feat, f.actions.unsqueeze(0))[:, 0]
    bellman = bellman_error(q_data, y)
    losses = {"critic": bellman.sum(), "alpha_prime": nets.log_alpha_prime.sum() * 0.0}
    metrics = {"critic_loss": losses["critic"].detach() / q_data.shape[0], "bellman_loss": bellman.detach().mean(),
               "q_data": q_data.detach().mean(), "target_q": y.mean(), "mc_return": batch["mc_returns"].mean()}
    return losses, metrics


def policy_below_rows(q_cur: torch.Tensor, q_nxt: torch.Tensor, mc_returns: torch.Tensor,
                      mask_cur: torch.Tensor | None, mask_nxt: torch.Tensor | None) -> torch.Tensor:
    """(B,) fraction of each row's policy columns (both sets, all critics; with the discrete
    gripper only the g* columns) whose Q lies below the row's G, before any bound: the
    bound rate of that row, logged whether or not the bound is on (CQL shows it too)."""
    below = torch.cat([q_cur, q_nxt], dim=1) < mc_returns  # (E, 2m, B)
    if mask_cur is None:
        return below.float().mean(dim=(0, 1))
    mask = torch.cat([mask_cur, mask_nxt], dim=0)  # (2m, B)
    return (below & mask).float().sum(dim=(0, 1)) / (mask.float().sum(dim=0) * below.shape[0]).clamp(min=1.0)


def split_calibration(q_pi: torch.Tensor, below_rows: torch.Tensor, mc_returns: torch.Tensor,
                      failure_return: float | None) -> dict[str, torch.Tensor]:
    """Calibration read on the right rows (SPEC section 8): a failure-rule row's G,
    r_neg'/(1-gamma), says only "one bad step, then act well" and bounds nothing for a
    learned policy, and such rows dominate a batch's mean G. So Q(s, pi(s)) - G and the bound
    rate are logged separately on failure-rule rows (`_fail`) and on the others (`_succ`:
    for pick-and-place, the rows of successful trajectories). Without the failure rule
    there is no split; a group absent from the batch is not logged (no NaN in the window)."""
    if failure_return is None:
        return {}
    fail = torch.isclose(mc_returns, mc_returns.new_tensor(failure_return), rtol=1e-5, atol=1e-4)
    out = {}
    for name, rows in (("succ", ~fail), ("fail", fail)):
        count = int(rows.sum())
        if count:
            out[f"q_pi_minus_g_{name}"] = (q_pi - mc_returns)[rows].mean()
            out[f"bound_rate_{name}"] = below_rows[rows].mean()
    return out


def update_metrics(losses: dict[str, torch.Tensor], actor_metrics: dict[str, torch.Tensor],
                   critic_metrics: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The logged metrics of one update, in the order of the metrics file's columns."""
    metrics = {"critic_loss": critic_metrics.pop("critic_loss"), "actor_loss": losses["actor"].detach(),
               "alpha_loss": losses["alpha"].detach(), "alpha_prime_loss": losses["alpha_prime"].detach(),
               **critic_metrics, **actor_metrics}
    if "encoder_bc" in losses:
        metrics["encoder_bc_loss"] = losses["encoder_bc"].detach()
    return metrics


def compute_losses(batch: dict, nets: Nets, cfg: CalQLConfig, settings: UpdateSettings,
                   augment: nn.Module | None = None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """All Cal-QL losses from one batch and the pre-update parameters.

    Returns (losses, metrics). The four losses reach disjoint parameters: `actor` -> actor,
    `alpha` -> log_alpha, `critic` -> critics and encoder, `alpha_prime` -> log_alpha'
    (with the option `bc_encoder_weight > 0`, a fifth loss, `encoder_bc`, reaches the encoder
    alone: bc_encoder_weight * mean((tanh(mu(enc(s))) - a)^2) with the actor's parameters fixed).

    With `cfg.discrete_gripper` the last action dim is the critic-chosen binary gripper
    (`calql_robot/agents/gripper.py`); every policy action is then (a_arm, g*) with
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
    f = encode(batch, nets, cfg, augment)
    losses, actor_metrics, pi_s, q_pi = actor_losses(f, nets, cfg, settings, bc_row_count(batch, cfg))
    y, sets = backup_target(f, batch, nets, cfg, settings, pi_s)
    if sets is None:  # no CQL term in this phase (weight 0): SAC's critic loss
        critic_losses, critic_metrics = bellman_only(f, y, batch, nets)
        losses.update(critic_losses)
        return losses, update_metrics(losses, actor_metrics, critic_metrics)
    critic_losses, critic_metrics, below_rows = conservative_gap(f, sets, y, batch, nets, cfg, settings)
    losses.update(critic_losses)
    metrics = update_metrics(losses, actor_metrics, critic_metrics)
    metrics.update(split_calibration(q_pi, below_rows, batch["mc_returns"], settings.failure_return))
    return losses, metrics
