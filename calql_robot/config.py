"""Typed configuration shared by every agent and domain: rewards and discount, the loop's
schedule, the run's place and seed; and the one JSON form of a config (`to_dict` /
`from_dict`).

Each agent's own hyper-parameters live beside its losses (`calql_robot/agents/calql.py`'s
`CalQLConfig`, `agents/bc.py`'s `BCConfig`), with their per-domain presets. Defaults are
the official Cal-QL values (`../shared/SPEC.md` sections 1 and 3). Each field's docstring
is what `--help` prints (tyro reads them).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from calql_robot.errors import ConfigError


def flag(field_name: str, group: str) -> str:
    """A config field as the user types it on the command line (tyro's spelling)."""
    return f"--{group}.{field_name.replace('_', '-')}"


@dataclass
class RewardConfig:
    """One reward transform and one discount for offline data, online data, the Monte-Carlo
    returns, every agent's backup and the logs (SPEC section 7)."""

    discount: float = 0.99
    """Discount gamma of the TD backup and of the Monte-Carlo returns."""
    scale: float = 1.0
    """r' = scale * r + bias."""
    bias: float = 0.0
    """r' = scale * r + bias."""
    failure_reward: float | None = None
    """Raw reward of failure for sparse tasks (a trajectory of only this reward gets
    G = r_neg'/(1-gamma)); None disables the rule."""

    def failure_return(self) -> float | None:
        """G of a failure-rule trajectory, (scale * r_neg + bias) / (1 - gamma) (SPEC
        section 2), or None without the rule."""
        if self.failure_reward is None:
            return None
        return (self.scale * self.failure_reward + self.bias) / (1.0 - self.discount)

    def validate(self) -> None:
        """Raise ConfigError naming the flag when the discount cannot give MC returns."""
        if not 0 < self.discount < 1:
            raise ConfigError(f"{flag('discount', 'reward')} must be in (0, 1), got {self.discount!r}",
                              "the Monte-Carlo returns of the Cal-QL bound need 0 < gamma < 1")


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
    eval_at: tuple[int, ...] = ()
    """More online env steps to evaluate at, besides every eval_every (e.g. 100 250 500, the
    first steps after the switch, where an unlearning dip shows): each evaluation runs after
    the first episode that reaches its step."""
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
    precision: Literal["fp32", "bf16"] = "fp32"
    """Arithmetic of the updates: 'bf16' runs the matmuls and convolutions in bfloat16 (fp32
    weights, Q-values, targets and losses; `calql_robot/precision.py`) where the device has
    native bf16 (CUDA; CPUs with avx512_bf16 or AMX); elsewhere it says so and runs fp32."""
    wandb: Literal["disabled", "offline", "online"] = "disabled"
    """Weights & Biases mode; 'offline' and 'disabled' never need an account."""
    progress: bool = True
    """Show tqdm progress bars."""


class ExperimentConfig(Protocol):
    """What every entry point's config holds (`domains/catalog.py` lists the classes): the
    domain it describes, the agent it trains (`--algo`, a key of `agents/catalog.AGENTS`),
    and the settings the loop and the run directory read. Each agent's own config is a
    field of it too (`learner` for Cal-QL, `bc` for behaviour cloning)."""

    domain: str
    algo: str
    loop: LoopConfig
    reward: RewardConfig
    run: RunConfig


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


def from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Rebuild a (nested) config dataclass from its `to_dict` JSON form.

    Inverts `to_dict`: lists back to tuples, "inf"/"-inf" strings back to floats. Unknown
    keys are an error naming them (a config from other code); missing keys keep the
    dataclass default (a field added after the run was made).
    """
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown} for {cls.__name__}")
    kwargs = {name: _convert(hints[name], data[name], f"{where}.{name}") for name in names if name in data}
    return cls(**kwargs)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where) if len(inner) == 1 else value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, where) for v in value)
        return tuple(_convert(a, v, where) for a, v in zip(args, value))
    if tp is float and isinstance(value, str):
        parsed = float(value)
        if not math.isinf(parsed) and not math.isnan(parsed):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return parsed
    return value
