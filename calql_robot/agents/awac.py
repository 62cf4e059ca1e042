"""AWAC, advantage-weighted actor-critic (Nair, Gupta, Dalal & Levine 2020): its config,
per-domain presets, pure losses and learner (`--algo awac`, flags `--awac.*`). A baseline
of the Cal-QL paper's comparison (Appendix E.5: the authors ran jaxrl's AWAC,
ikostrikov/jaxrl `agents/awac/`, with the recommended settings and their lambda per domain).

Read against jaxrl (`awac_learner.py`, `actor.py`, `value.py`, `sac/critic.py`):

- critic: `sum_i mean((Q_i(s, a) - y)^2)`, y = r + gamma (1 - done) min_i Q_targ_i(s', a'),
  one a' ~ pi(.|s'). No entropy term: jaxrl calls the SAC critic update without a
  temperature (`temp=None`, "soft_critic=False"), and rlkit's AWAC examples set alpha = 0
  with entropy tuning off; this is the paper's Eq. 3 backup.
- value: V(s) = min_i mean_k Q_i(s, a_k), a_k ~ pi(.|s), k = 1..`value_samples` (jaxrl
  `get_value`: the mean over samples per critic, then the min; 1 sample by default).
- actor: `-sum_b w_b log pi(a_b|s_b)` with w = softmax over the batch of A / lambda,
  A = min_i Q_i(s, a) - V(s), no gradient through w. That is the batch-normalised weight
  `exp(A_b / lambda) / sum_c exp(A_c / lambda)`, the form of both reference codes (jaxrl
  `actor.py`: `-(softmax(a / beta) * log_probs).sum()`, "biased but lower variance" than
  exp(A / lambda); rlkit `awac_trainer.py`: `normalize_over_batch=True` ->
  `F.softmax(score / beta, dim=0)`), not the paper's unnormalised exp(A / lambda). No clip
  of the weights: a softmax is bounded by 1.
- the policy: jaxrl's unsquashed Gaussian (`networks.GaussianActor`: tanh mean,
  state-independent log-std clipped to [-10, 2]); AdamW for the actor (lr 3e-4, weight
  decay 1e-4), Adam 3e-4 for the critics; actor 256x4, critics 256x2; Polyak 5e-3 every
  update (jaxrl `awac_default.py`, "hyper parameters from the official implementation").
Fine-tuning uses the same losses and settings (jaxrl `train_finetuning.py`).

Where this differs from jaxrl, and why:
- Both losses are computed from the same pre-update parameters and stepped together
  (`base.apply_losses`, SPEC section 1's rule for every agent here); jaxrl steps the critic
  first and weights the actor with the new critic: a one-Adam-step lag.
- Policy samples (a' of the backup, the a_k of V) are clipped to [-1, 1] before the critic
  reads them, the actions the env would execute; jaxrl evaluates the unclipped Gaussian
  sample, i.e. Q outside the action box the data cover.
- Initialisation: the project's JaxCQL orthogonal init (output gain 1e-2); jaxrl uses gain
  sqrt 2 (critic) and 1 (mean) on the output layers. It sets the output scale at the start only.
- Data actions are not clipped to +-(1 - 1e-5) as jaxrl's dataset does (a leftover of
  tanh policies; the Gaussian here has a finite density at +-1).
Rewards are the domain's (`--reward.*`); on the command line `--algo awac` starts from the
reward jaxrl trained on where the preset's differs (AntMaze's raw 0/1, Adroit's raw
{-1, 0}, pick-and-place +1/0), since softmax(A / lambda) reads the advantage's scale
(`registry.BASELINE_REWARDS`, `pickplace_state.BASELINE_REWARDS`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from calql_robot.agents import weighted
from calql_robot.agents.base import AgentSpec
from calql_robot.config import flag
from calql_robot.errors import ConfigError
from calql_robot.networks import CriticEnsemble, GaussianActor

LOG_STD_MIN = -10.0
"""jaxrl's lower log-std clip (`networks/policies.py`: `LOG_STD_MIN = -10.0`)."""


@dataclass
class AWACConfig:
    """Hyper-parameters of AWAC (`--awac.*`). Defaults are jaxrl's `awac_default.py` except
    lambda (jaxrl: 2.0; here 1.0, the Cal-QL paper's value for three of its four domains);
    every domain takes its preset from `PRESETS`."""

    lam: float = 1.0
    """lambda, the temperature of the weights softmax(A / lambda) (jaxrl's `beta`); smaller is greedier."""
    lr: float = 3e-4
    """Learning rate of the actor (AdamW) and of the critics with the shared encoder (Adam)."""
    actor_weight_decay: float = 1e-4
    """Decoupled weight decay of the actor's AdamW (jaxrl: 1e-4)."""
    tau: float = 5e-3
    """Polyak rate of the target critics, applied after every update."""
    actor_hidden: tuple[int, ...] = (256, 256, 256, 256)
    """Hidden widths of the actor MLP (jaxrl: 256x4)."""
    critic_hidden: tuple[int, ...] = (256, 256)
    """Hidden widths of each critic MLP (jaxrl: 256x2)."""
    value_samples: int = 1
    """Policy samples per state in V(s) = mean_k Q(s, a_k) (jaxrl's `num_samples`: 1)."""

    def validate(self) -> None:
        """Raise ConfigError naming the flag when a value cannot work."""
        for name in ("lam", "lr", "tau"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{flag(name, 'awac')} must be > 0, got {getattr(self, name)!r}")
        if self.tau > 1:
            raise ConfigError(f"{flag('tau', 'awac')} must be <= 1, got {self.tau!r}")
        if not self.actor_weight_decay >= 0:
            raise ConfigError(f"{flag('actor_weight_decay', 'awac')} must be >= 0, got {self.actor_weight_decay!r}")
        if self.value_samples < 1:
            raise ConfigError(f"{flag('value_samples', 'awac')} must be >= 1, got {self.value_samples!r}")
        for name in ("actor_hidden", "critic_hidden"):
            widths = getattr(self, name)
            if not widths or min(widths) < 1:
                raise ConfigError(f"{flag(name, 'awac')} must be positive widths, got {widths!r}")


PRESETS: dict[str, Callable[[], AWACConfig]] = {
    "adroit": lambda: AWACConfig(lam=0.3),
    "kitchen": lambda: AWACConfig(lam=1.0),
    "antmaze": lambda: AWACConfig(lam=1.0),
    "manipulation": lambda: AWACConfig(lam=1.0),
}
"""AWAC per domain: lambda from the Cal-QL paper, Appendix E.5 (1.0 AntMaze and Kitchen, 0.3
Adroit - the AWAC paper's value on its dexterous-hand tasks - and 1 for manipulation, by the
authors' sweep over 0.1-10); everything else jaxrl's defaults. "manipulation" serves both
pick-and-place domains (state and pixels)."""


# ---------------------------------------------------------------- losses
def batch_weights(advantage: torch.Tensor, lam: float) -> torch.Tensor:
    """`softmax(A / lambda)` over the batch, no gradient: jaxrl's and rlkit's normalisation."""
    return torch.softmax(advantage / lam, dim=0).detach()


@dataclass
class Nets:
    """Everything AWAC's losses read."""

    encoder: nn.Module
    actor: GaussianActor
    critic: CriticEnsemble
    target_critic: CriticEnsemble


def compute_losses(batch: dict, nets: Nets, cfg: AWACConfig, discount: float, augment: nn.Module | None = None
                   ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """AWAC's two losses from one batch and the pre-update parameters; they reach disjoint
    parameters: `critic` -> critics and the shared encoder, `actor` -> actor. Noise is drawn
    in this order: the backup's a' (B, A), then V's samples (value_samples, B, A)."""
    f = weighted.encode(batch, nets.encoder, augment)
    policy = nets.actor(f.detached)
    with torch.no_grad():
        next_actions = nets.actor(f.feat_next).sample(1).clamp(-1.0, 1.0)
        next_q = nets.target_critic(f.feat_next, next_actions)[:, 0].min(dim=0).values
        y = weighted.td_target(batch["rewards"], batch["dones"], next_q, discount)
        samples = policy.sample(cfg.value_samples).clamp(-1.0, 1.0)
        v = nets.critic(f.detached, samples).mean(dim=1).min(dim=0).values  # (B,)
    q_data = nets.critic(f.feat, f.actions.unsqueeze(0))[:, 0]  # (E, B)
    advantage = q_data.detach().min(dim=0).values - v
    weights = batch_weights(advantage, cfg.lam)
    log_prob = policy.log_prob(f.actions)
    losses = {"critic": weighted.critic_loss(q_data, y), "actor": -(weights * log_prob).sum()}
    metrics = {"critic_loss": losses["critic"].detach() / q_data.shape[0], "actor_loss": losses["actor"].detach(),
               "q_data": q_data.detach().mean(), "v_pi": v.mean(), "target_q": y.mean(),
               "advantage": advantage.mean(), "weight_max": weights.max() * weights.shape[0],
               "log_pi_data": log_prob.detach().mean()}
    return losses, metrics


# ---------------------------------------------------------------- learner
class AWACLearner(weighted.WeightedLearner):
    """AWAC under the agent contract (`weighted.WeightedLearner`), over features of the encoder slot."""

    compute_losses = staticmethod(compute_losses)

    def __init__(self, cfg: AWACConfig, spec: AgentSpec) -> None:
        super().__init__(cfg, spec, cfg.actor_hidden, cfg.critic_hidden, LOG_STD_MIN)
        self.optimizers = {
            "actor": torch.optim.AdamW(self.actor.parameters(), lr=cfg.lr, weight_decay=cfg.actor_weight_decay),
            "critic": torch.optim.Adam(list(self.critic.parameters()) + list(self.encoder.parameters()), lr=cfg.lr),
        }

    def nets(self) -> Nets:
        return Nets(self.encoder, self.actor, self.critic, self.target_critic)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore; the config's learning rates and actor weight decay win over the saved ones."""
        super().load_state_dict(state)
        for group in self.optimizers["actor"].param_groups:
            group["weight_decay"] = self.cfg.actor_weight_decay
