"""Typed configuration: the learner's hyper-parameters, the training loop's, and presets.

Defaults are the official Cal-QL values (`../shared/SPEC.md` sections 1 and 3; JaxCQL
`ConservativeSAC.get_default_config` with the Cal-QL scripts' overrides). Each field's
docstring is what `--help` prints (tyro reads them).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

from calql_robot.errors import ConfigError


@dataclass
class LearnerConfig:
    """Hyper-parameters of the Cal-QL update (SPEC section 1)."""

    discount: float = 0.99
    """Discount gamma of the TD backup and of the Monte-Carlo returns."""
    tau: float = 5e-3
    """Polyak rate of the target critics, applied after every update."""
    actor_lr: float = 1e-4
    """Adam learning rate of the actor and of the temperature log_alpha."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critics, the shared encoder and log_alpha'."""
    actor_hidden: tuple[int, ...] = (256, 256)
    """Hidden widths of the actor MLP."""
    critic_hidden: tuple[int, ...] = (256, 256, 256, 256)
    """Hidden widths of each critic MLP."""
    num_critics: int = 2
    """Number of critics in the ensemble (the min over them is used)."""
    orthogonal_init: bool = True
    """Orthogonal init (hidden gain sqrt(2), output gain 1e-2, zero bias), as JaxCQL."""
    log_std_multiplier: float = 1.0
    """Initial value of the learnable multiplier m in log_std = m*log_std + b."""
    log_std_offset: float = -1.0
    """Initial value of the learnable offset b in log_std = m*log_std + b."""
    auto_alpha: bool = True
    """Tune the SAC temperature towards target_entropy; otherwise use fixed_alpha."""
    fixed_alpha: float = 1.0
    """Temperature used when auto_alpha is off."""
    target_entropy: float | None = None
    """Entropy target of the temperature loss; None means -action_dim."""
    cql_n_actions: int = 10
    """n: actions per set (random, pi(s), pi(s')) in the CQL regulariser."""
    max_target_backup: bool = True
    """Back up max over backup_k sampled next actions of min-critic (official default)."""
    backup_k: int = 10
    """k: next actions sampled for the max target backup (visual domain: 4)."""
    importance_sample: bool = True
    """Correct the logsumexp sets by their sampling densities (data Q excluded)."""
    cql_temp: float = 1.0
    """Temperature T of the logsumexp."""
    cql_weight: float = 5.0
    """CQL weight w during offline pre-training."""
    cql_weight_online: float | None = None
    """CQL weight w during online fine-tuning; None keeps cql_weight."""
    lagrange: bool = False
    """Tune alpha' by dual ascent towards target_action_gap (AntMaze)."""
    target_action_gap: float = 0.8
    """Gap the Lagrange version holds the CQL difference to."""
    cql_clip_min: float = -math.inf
    """Per-sample lower clip of the CQL difference (CORL's antmaze configs: -200)."""
    cql_clip_max: float = math.inf
    """Per-sample upper clip of the CQL difference."""
    calql_bound: bool = True
    """Bound policy-action Q-values below by the MC return (Cal-QL); False is exactly CQL."""
    calibrate_online: bool = True
    """Keep the bound during fine-tuning (official); False is CORL's choice (bound off, G=0 stored)."""
    action_clip: float = 0.99999
    """Dataset actions are clipped to +-action_clip so their log-probs stay finite."""
    discrete_gripper: bool = False
    """Treat the last action dim as a binary gripper (-1 close, +1 open) chosen by the
    critic: g* = argmax_g min_i Q_i(s, a_arm, g); the actor outputs the arm dims only
    (calql_robot/agents/gripper.py). For pick-and-place, whose gripper is binary in the env."""
    bc_weight: float = 0.0
    """TD3+BC actor term (not Cal-QL; 0 disables): policy loss / mean|Q| + bc_weight *
    MSE(tanh(mean), data action) over the actor's dims (TD3+BC: 2.5)."""
    bc_weight_online: float | None = None
    """The TD3+BC actor term's weight after the switch; None keeps bc_weight. With
    bc_offline_only it anchors the fine-tuning actor to the offline data's actions."""
    bc_encoder_weight: float = 0.0
    """Weight of an auxiliary behaviour-cloning loss on the shared image encoder (not Cal-QL;
    0 disables): the encoder is trained by critic loss + bc_encoder_weight *
    MSE(tanh(mu(enc(s))), a), with the actor's parameters held fixed in this term (the actor
    keeps its own bc_weight on detached features, DrQ-v2). Why so large a weight can be
    needed: on the visual preset the critic loss's gradient on the encoder measured ~360x
    that of the BC MSE at weight 10 (RESULTS.md, session 5), so at weight ~2.5 the features
    are the critic's alone. No effect without an encoder (states) beyond the extra pass."""
    bc_offline_only: bool = False
    """With bc_weight or bc_encoder_weight > 0: the BC terms cover only the offline rows of a
    mixed online batch. Online rows hold the policy's own exploratory actions, so imitating
    them pulls the policy toward its own noise; the Q term and the critic still see every row."""
    freeze_encoder_online: bool = False
    """Keep the pre-trained image encoder fixed during fine-tuning (not Cal-QL; the critic
    and actor heads still train). Why: on the visual preset, the critic's TD updates on the
    held-out task's online transitions moved the shared features by 30% in 1K env steps and
    the pre-trained arm degraded with them (RESULTS.md, session 6). No effect on states."""
    q_init_mc: bool = False
    """Start the critics (and their target) at the offline data's mean MC return instead of
    0 (their output biases). Not part of Cal-QL's update. Measured on the visual preset: Q
    went back from -163 to ~-45, the level a run from 0 reaches, within 4K updates, with a
    larger early Bellman loss and no gain in success (RESULTS.md, session 4)."""

    def resolved_target_entropy(self, action_dim: int) -> float:
        return -float(action_dim) if self.target_entropy is None else self.target_entropy

    def validate(self) -> None:
        """Raise ConfigError naming the flag (`--learner.discount`) when a value cannot work."""
        positive = {"discount": self.discount, "tau": self.tau, "actor_lr": self.actor_lr,
                    "critic_lr": self.critic_lr, "cql_temp": self.cql_temp}
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{_flag(name)} must be > 0, got {value!r}")
        if not self.discount < 1:
            raise ConfigError(f"{_flag('discount')} must be < 1, got {self.discount!r}",
                              "the Monte-Carlo returns of the Cal-QL bound need gamma < 1")
        for name in ("cql_n_actions", "backup_k", "num_critics"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{_flag(name)} must be >= 1, got {getattr(self, name)!r}")
        for name in ("bc_weight", "bc_encoder_weight", "bc_weight_online"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ConfigError(f"{_flag(name)} must be >= 0, got {getattr(self, name)!r}")
        if self.cql_clip_min > self.cql_clip_max:
            raise ConfigError(f"{_flag('cql_clip_min')} {self.cql_clip_min} > {_flag('cql_clip_max')} "
                              f"{self.cql_clip_max}")


def _flag(field_name: str, group: str = "learner") -> str:
    """A config field as the user types it on the command line (tyro's spelling)."""
    return f"--{group}.{field_name.replace('_', '-')}"


@dataclass
class RewardConfig:
    """One reward transform for offline data, online data, returns and logs (SPEC 7)."""

    scale: float = 1.0
    """r' = scale * r + bias."""
    bias: float = 0.0
    """r' = scale * r + bias."""
    failure_reward: float | None = None
    """Raw reward of failure for sparse tasks (a trajectory of only this reward gets
    G = r_neg'/(1-gamma)); None disables the rule."""


@dataclass
class LoopConfig:
    """The offline-to-online schedule (SPEC section 3)."""

    offline_steps: int = 1000
    """Gradient updates of offline pre-training."""
    online_env_steps: int = 2000
    """Environment steps of online fine-tuning."""
    utd: int = 1
    """Updates per environment step online (len(trajectory) * utd after each episode)."""
    batch_size: int = 256
    """Transitions per update."""
    mixing_ratio: float = 0.5
    """Fraction of each online batch from offline data; -1 pools both uniformly."""
    warmup_env_steps: int = 0
    """Online env steps collected with the pre-trained policy before the first online
    update (WSRL's warm-up, Zhou et al. 2024): the first updates then draw their online rows
    from a buffer of many episodes, not re-sample one or two dozen times each. They count
    as online env steps (and in the regret); no updates are made up for them."""
    eval_episodes: int = 10
    """Deterministic episodes per evaluation."""
    eval_every_offline: int = 500
    """Evaluate every this many offline updates (0 disables in-phase evaluations)."""
    eval_every: int = 1000
    """Evaluate every this many online env steps."""
    checkpoint_every: int = 1000
    """Write latest.pt every this many updates (offline) or env steps (online)."""
    log_every: int = 100
    """Average and log training metrics every this many updates."""


@dataclass
class RunConfig:
    """Where a run writes and how it is seeded."""

    seed: int = 0
    """Seeds torch, numpy, the learner's sampling and the environments."""
    run_dir: str | None = None
    """Run directory; None creates runs/<name>-<time>."""
    name: str = "calql"
    """Run name used in the run directory and wandb."""
    resume: bool = False
    """Continue the run in run_dir from its latest checkpoint."""
    finetune_from: str | None = None
    """Skip pre-training: start this run at another run directory's checkpoints/switch.pt
    (its pre-trained state, RNG included) and fine-tune with this run's online settings.
    Its offline metrics rows are copied, so the curves show the whole run; with the same
    settings the fine-tuning repeats that run's exactly. For comparing online settings on
    one pre-training."""
    device: str = "auto"
    """'auto' (CUDA when available), 'cpu' or 'cuda'."""
    threads: int = 0
    """torch CPU threads; 0 keeps torch's default."""
    wandb: Literal["disabled", "offline", "online"] = "disabled"
    """Weights & Biases mode; 'offline' and 'disabled' never need an account."""
    progress: bool = True
    """Show tqdm progress bars."""


def replace(cfg, **changes):
    """dataclasses.replace for nested presets."""
    return dataclasses.replace(cfg, **changes)


def to_dict(cfg) -> dict:
    """A JSON-ready dict of a (nested) config dataclass; infinities become strings."""
    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value
    return clean(dataclasses.asdict(cfg))


# Per-domain learner presets (SPEC section 4). One place, read by every entry point.
LEARNER_PRESETS: dict[str, LearnerConfig] = {
    "antmaze": LearnerConfig(critic_hidden=(256, 256, 256, 256), actor_hidden=(256, 256),
                             cql_weight=5.0, lagrange=True, target_action_gap=0.8,
                             cql_clip_min=-200.0),
    "kitchen": LearnerConfig(cql_weight=5.0),
    "adroit": LearnerConfig(actor_hidden=(512, 512), critic_hidden=(512, 512, 512), cql_weight=1.0),
    "visual": LearnerConfig(cql_weight=5.0, cql_weight_online=0.5, backup_k=4),
}
