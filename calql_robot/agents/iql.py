"""IQL, implicit Q-learning (Kostrikov, Nair & Levine 2022): its config, per-domain presets,
pure losses and learner (`--algo iql`, flags `--iql.*`). A baseline of the Cal-QL paper's
comparison (Appendix E.4: the authors ran the official code with its recommended settings).

Read against the official code (ikostrikov/implicit_q_learning, `critic.py`, `actor.py`,
`learner.py`, `policy.py`); with u = min_i Q_targ_i(s, a) - V(s) on the data's (s, a):

- value:  `mean(|tau - 1(u < 0)| * u^2)`, the expectile loss (`critic.loss`), V reads
  the target critics' min (`update_v(target_critic, ...)`);
- critic: `sum_i mean((Q_i(s, a) - y)^2)`, y = r + gamma (1 - done) V(s') (`update_q`);
- actor:  `-mean(min(exp(beta * u), 100) * log pi(a|s))` (`actor.update`: the clip at 100
  is the official `jnp.minimum(exp_a, 100.0)`, a constant there and here), with
  u's V detached; the policy is the official unsquashed Gaussian (`networks.GaussianActor`:
  tanh mean, state-independent log-std clipped to [-5, 2]; its reason is written there);
- target critics: Polyak tau = 5e-3 after every update; Adam 3e-4 for all three; one
  hidden size for all networks (256x2 in every official config).
Fine-tuning uses the same losses and settings (the official `train_finetune.py` and
`antmaze_finetune_config.py`); no loss reads Monte-Carlo returns (`needs_returns` False).

Where this differs from the official code, and why:
- All three losses are computed from the same pre-update parameters and stepped together
  (`base.apply_losses`, SPEC section 1's rule for every agent here). The official update is
  sequential: V first, then the actor's advantage and the critic's target read the new V.
  CORL's PyTorch IQL (`algorithms/offline/iql.py`) computes V(s') and the advantage before
  the V step, i.e. what this does; it is a one-Adam-step lag on V.
- No cosine decay of the actor's learning rate (the official offline runs decay it over
  `max_steps`; its fine-tuning config, the setting the Cal-QL paper compares, does not).
- Initialisation: the project's JaxCQL orthogonal init (hidden gain sqrt 2, output gain
  1e-2) where the official code uses gain sqrt 2 on the output layers too; it changes the
  scale of the networks' outputs at the start only.
- Rewards are the domain's (`--reward.*`): on the command line `--algo iql` starts from
  the reward IQL's reference trained on where the preset's differs - AntMaze r - 1 (the
  official `train_finetune.py`), Adroit's raw {-1, 0}, pick-and-place +1/0 - since
  exp(beta * A) reads the advantage's scale (`registry.BASELINE_REWARDS`,
  `pickplace_state.BASELINE_REWARDS`). The official code also rescales locomotion rewards
  by 1000 / (return range); no domain here needs it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from calql_robot.agents import weighted
from calql_robot.agents.base import AgentSpec
from calql_robot.config import flag
from calql_robot.errors import ConfigError
from calql_robot.networks import CriticEnsemble, GaussianActor, ValueNetwork

EXP_ADV_MAX = 100.0
"""The official clip of the actor's weights exp(beta * A) (`actor.py`: `jnp.minimum(exp_a, 100.0)`)."""
LOG_STD_MIN = -5.0
"""The official actor's lower log-std clip (`learner.py`: `log_std_min=-5.0`)."""


@dataclass
class IQLConfig:
    """Hyper-parameters of IQL (`--iql.*`). Defaults are the official `mujoco_config.py`;
    every domain takes its preset from `PRESETS` (the Cal-QL paper's Table 4)."""

    expectile: float = 0.7
    """tau of the expectile value loss, in (0, 1); 0.5 is a mean, -> 1 a max over the data's actions."""
    temperature: float = 3.0
    """beta of the actor's weights exp(beta * A) (inverse temperature; 0 is behaviour cloning)."""
    lr: float = 3e-4
    """Adam learning rate of the actor, the critics (with the shared encoder) and V."""
    tau: float = 5e-3
    """Polyak rate of the target critics, applied after every update."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden widths of the actor, each critic and V (one size for all, as in the official configs)."""
    actor_dropout: float = 0.0
    """Dropout rate after each hidden layer of the actor, in its loss only (official kitchen config: 0.1)."""

    def validate(self) -> None:
        """Raise ConfigError naming the flag when a value cannot work."""
        if not 0.0 < self.expectile < 1.0:
            raise ConfigError(f"{flag('expectile', 'iql')} must be in (0, 1), got {self.expectile!r}")
        if not self.temperature >= 0.0:
            raise ConfigError(f"{flag('temperature', 'iql')} must be >= 0 (0 is behaviour cloning), "
                              f"got {self.temperature!r}")
        for name in ("lr", "tau"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{flag(name, 'iql')} must be > 0, got {getattr(self, name)!r}")
        if self.tau > 1:
            raise ConfigError(f"{flag('tau', 'iql')} must be <= 1, got {self.tau!r}")
        if not self.hidden or min(self.hidden) < 1:
            raise ConfigError(f"{flag('hidden', 'iql')} must be positive widths, got {self.hidden!r}")
        if not 0.0 <= self.actor_dropout < 1.0:
            raise ConfigError(f"{flag('actor_dropout', 'iql')} must be in [0, 1), got {self.actor_dropout!r}")


PRESETS: dict[str, Callable[[], IQLConfig]] = {
    "adroit": lambda: IQLConfig(expectile=0.8, temperature=3.0),
    "kitchen": lambda: IQLConfig(expectile=0.7, temperature=0.5, actor_dropout=0.1),
    "antmaze": lambda: IQLConfig(expectile=0.9, temperature=10.0),
    "manipulation": lambda: IQLConfig(expectile=0.7, temperature=10.0),
}
"""IQL per domain. Expectile and temperature: the Cal-QL paper's Table 4 (Adroit 0.8 / 3,
Kitchen 0.7 / 0.5, AntMaze 0.9 / 10, manipulation 0.7 / 10, the last found by the authors'
sweep); they equal the official configs for Kitchen and AntMaze. Kitchen's actor dropout
0.1: the official `kitchen_config.py`. Everything else: the official values (256x2, 3e-4,
tau 5e-3). "manipulation" serves both pick-and-place domains (state and pixels)."""


# ---------------------------------------------------------------- losses
def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """`mean(|tau - 1(diff < 0)| * diff^2)` (official `critic.loss`: weight tau where diff > 0)."""
    weight = torch.where(diff > 0, expectile, 1.0 - expectile)
    return (weight * diff.pow(2)).mean()


def advantage_weights(advantage: torch.Tensor, temperature: float) -> torch.Tensor:
    """`min(exp(beta * A), 100)`, no gradient (official `actor.update`)."""
    return (temperature * advantage).exp().clamp(max=EXP_ADV_MAX).detach()


@dataclass
class Nets:
    """Everything IQL's losses read."""

    encoder: nn.Module
    actor: GaussianActor
    critic: CriticEnsemble
    target_critic: CriticEnsemble
    value: ValueNetwork


def compute_losses(batch: dict, nets: Nets, cfg: IQLConfig, discount: float, augment: nn.Module | None = None
                   ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """IQL's three losses from one batch and the pre-update parameters; they reach disjoint
    parameters: `value` -> V, `critic` -> critics and the shared encoder, `actor` -> actor."""
    f = weighted.encode(batch, nets.encoder, augment)
    data_actions = f.actions.unsqueeze(0)
    with torch.no_grad():
        q_target = nets.target_critic(f.detached, data_actions)[:, 0].min(dim=0).values  # (B,)
        y = weighted.td_target(batch["rewards"], batch["dones"], nets.value(f.feat_next), discount)
    v = nets.value(f.detached)
    advantage = q_target - v.detach()
    weights = advantage_weights(advantage, cfg.temperature)
    log_prob = nets.actor(f.detached, training=True).log_prob(f.actions)
    q_data = nets.critic(f.feat, data_actions)[:, 0]  # (E, B)
    losses = {"value": expectile_loss(q_target - v, cfg.expectile),
              "critic": weighted.critic_loss(q_data, y),
              "actor": -(weights * log_prob).mean()}
    metrics = {"critic_loss": losses["critic"].detach() / q_data.shape[0], "value_loss": losses["value"].detach(),
               "actor_loss": losses["actor"].detach(), "q_data": q_data.detach().mean(), "v": v.detach().mean(),
               "target_q": y.mean(), "advantage": advantage.mean(), "weight_mean": weights.mean(),
               "weight_clipped": (weights >= EXP_ADV_MAX).float().mean(), "log_pi_data": log_prob.detach().mean()}
    return losses, metrics


# ---------------------------------------------------------------- learner
class IQLLearner(weighted.WeightedLearner):
    """IQL under the agent contract (`weighted.WeightedLearner`), over features of the encoder
    slot, with its expectile value network beside the shared ones."""

    compute_losses = staticmethod(compute_losses)

    def __init__(self, cfg: IQLConfig, spec: AgentSpec) -> None:
        super().__init__(cfg, spec, cfg.hidden, cfg.hidden, LOG_STD_MIN, cfg.actor_dropout)
        self.value_net = ValueNetwork(spec.feature_dim, cfg.hidden).to(self.device)
        adam = functools.partial(torch.optim.Adam, lr=cfg.lr)
        self.optimizers = {"actor": adam(self.actor.parameters()),
                           "critic": adam(list(self.critic.parameters()) + list(self.encoder.parameters())),
                           "value": adam(self.value_net.parameters())}

    def nets(self) -> Nets:
        return Nets(self.encoder, self.actor, self.critic, self.target_critic, self.value_net)

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"value": self.value_net}
