"""Loading a run's policy back: config.json -> typed config -> env + learner, then the
checkpoint's weights (always `weights_only=True`, `calql_robot.run.checkpoint.load_checkpoint`).

A run records its domain in its config (`domain: "pickplace_state" | "pickplace_visual" |
"state_task"`, the last for `train_state.py --task` runs),
so a rollout rebuilds exactly the env and networks the run trained, without touching the
offline dataset (only the env's observation space is needed to size the networks).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
from torch import nn

from calql_robot.agents import BCConfig, make_learner
from calql_robot.run.checkpoint import check_keys, fits_run, load_checkpoint, resume_state
from calql_robot.errors import CheckpointNotFoundError, ConfigError, RunDirError
from calql_robot.agents.calql_learner import CalQLLearner, resolve_device
from calql_robot.run.runlog import CONFIG_FILE, DERIVED_KEYS


@dataclass
class DomainSpec:
    """How to rebuild one domain's env and modules from its typed config."""

    config_cls: type
    make_env: Callable[[Any], gym.Env]
    make_modules: Callable[[Any, gym.Env], tuple[nn.Module | None, int]]


def _state_spec() -> DomainSpec:
    from sim import make_pickplace

    from calql_robot.domains.pickplace_state import StateExperimentConfig
    from encoders.normalize import ObsNormalizer

    def make_env(cfg: StateExperimentConfig) -> gym.Env:
        # the same env as pickplace_state.build_state_domain's make_env
        return make_pickplace(cfg.target, cfg.distractor, privileged=True, render_mode="rgb_array")

    def make_modules(cfg: StateExperimentConfig, env: gym.Env) -> tuple[nn.Module | None, int]:
        dim = int(env.observation_space.shape[0])
        # the checkpoint's encoder buffers overwrite the placeholder statistics
        return (ObsNormalizer.identity(dim) if cfg.normalize_obs else None), dim

    return DomainSpec(StateExperimentConfig, make_env, make_modules)


def _visual_spec() -> DomainSpec:
    from calql_robot.domains.pickplace_visual import VisualExperimentConfig, make_visual_env, make_visual_modules

    def make_modules(cfg: VisualExperimentConfig, env: gym.Env) -> tuple[nn.Module, int]:
        encoder, _, feature_dim = make_visual_modules(cfg, env.observation_space)
        return encoder, feature_dim

    return DomainSpec(VisualExperimentConfig, make_visual_env, make_modules)


def _task_spec() -> DomainSpec:
    """AntMaze, Kitchen and Adroit runs of `train_state.py --task` (domains/registry.py)."""
    from calql_robot.domains.registry import TaskExperimentConfig, make_task_env, task_env_options

    def make_env(cfg: TaskExperimentConfig) -> gym.Env:
        return make_task_env(cfg.task, cfg.horizon, "rgb_array", task_env_options(cfg))

    def make_modules(cfg: TaskExperimentConfig, env: gym.Env) -> tuple[nn.Module | None, int]:
        from encoders.normalize import ObsNormalizer
        dim = int(env.observation_space.shape[0])
        return (ObsNormalizer.identity(dim) if cfg.normalize_obs else None), dim

    return DomainSpec(TaskExperimentConfig, make_env, make_modules)


DOMAINS: dict[str, Callable[[], DomainSpec]] = {"pickplace_state": _state_spec, "pickplace_visual": _visual_spec,
                                                "state_task": _task_spec}
"""Domain name (the `domain` field of a run's config.json) -> its rebuild recipe."""


def from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Rebuild a (nested) config dataclass from its `to_dict` JSON form.

    Inverts `calql_robot.config.to_dict`: lists back to tuples, "inf"/"-inf" strings back
    to floats. Unknown keys are an error naming them (a config from other code); missing
    keys keep the dataclass default (a field added after the run was made).
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


def read_config_json(path: Path) -> dict[str, Any]:
    """A run's config.json as a dict of config fields only (the derived facts of its data,
    `DERIVED_KEYS`, taken out); a file that is not a JSON object is a ConfigError."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not a JSON config ({err})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, found {type(data).__name__}")
    for key in DERIVED_KEYS:  # facts of the run's data, not config fields
        data.pop(key, None)
    return upgrade_legacy_fields(data)


def upgrade_legacy_fields(data: dict[str, Any]) -> dict[str, Any]:
    """Renamed fields of configs saved by earlier code, mapped to what they meant, so old run
    directories still load and resume: `learner.bc_trains_encoder` (session 4) put the BC
    term on the encoder at the actor's bc_weight, which is `bc_encoder_weight = bc_weight`."""
    learner = data.get("learner")
    if isinstance(learner, dict) and "bc_trains_encoder" in learner:
        if learner.pop("bc_trains_encoder") and "bc_encoder_weight" not in learner:
            learner["bc_encoder_weight"] = learner.get("bc_weight", 0.0)
    return data


def read_run_config(run_dir: Path) -> tuple[str, Any]:
    """(domain name, typed config) of a run directory; clear errors for what is missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"run directory not found: {run_dir}")
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise RunDirError(f"{path}: no {CONFIG_FILE}; is {run_dir} a run directory?")
    data = read_config_json(path)
    domain = data.get("domain", _legacy_domain(data))
    if domain not in DOMAINS:
        raise ConfigError(f"{path}: unknown domain {domain!r}; known domains: {', '.join(sorted(DOMAINS))}")
    try:
        return domain, from_dict(DOMAINS[domain]().config_cls, data, str(path))
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{' '.join(str(err).split())}",
                        "was the run made by another version of this code?") from err


def _legacy_domain(data: dict[str, Any]) -> str | None:
    """Runs made before configs recorded their domain: the state config is the one with a
    top-level `target`; anything else stays unknown (and is reported as such)."""
    return "pickplace_state" if "target" in data and "encoder" not in data else None


@dataclass
class LoadedPolicy:
    """A run's learner with its checkpoint loaded, and a factory of its env."""

    domain: str
    config: Any
    learner: CalQLLearner
    make_env: Callable[[], gym.Env]
    checkpoint: Path
    step_info: dict[str, Any]


def load_policy(run_dir: Path, checkpoint: Path | None = None, device: str = "cpu") -> LoadedPolicy:
    """Rebuild a run's env and learner from config.json and load `checkpoint` (default:
    `<run_dir>/checkpoints/latest.pt`, or the newest numbered one)."""
    run_dir = Path(run_dir)
    domain, cfg = read_run_config(run_dir)
    dev = resolve_device(device)
    if checkpoint is None:
        found = resume_state(run_dir / "checkpoints", map_location=dev, required=("learner",))
        if found is None:
            raise CheckpointNotFoundError(f"{run_dir / 'checkpoints'}: no checkpoint (latest.pt, step_*.pt or "
                                          "previous.pt) to load")
        checkpoint, state = found
    else:
        state = load_checkpoint(Path(checkpoint), map_location=dev)
        check_keys(Path(checkpoint), state, ("learner",))
    spec = DOMAINS[domain]()
    env = spec.make_env(cfg)
    try:
        encoder, feature_dim = spec.make_modules(cfg, env)
        action_dim = int(env.action_space.shape[0])
    finally:
        env.close()
    learner = make_learner(getattr(cfg, "algo", "calql"), cfg.learner, getattr(cfg, "bc", BCConfig()),
                           feature_dim, action_dim, encoder=encoder, device=dev)
    with fits_run(Path(checkpoint), f"the networks described by {run_dir / CONFIG_FILE}"):
        learner.load_state_dict(state["learner"])
    learner.encoder.eval()
    counters = state.get("counters", {})
    info = {k: counters[k] for k in ("offline_updates", "online_updates", "env_steps") if k in counters}
    return LoadedPolicy(domain, cfg, learner, lambda: spec.make_env(cfg), Path(checkpoint), info)


def policy_fn(learner: CalQLLearner, deterministic: bool) -> Callable[[Any], Any]:
    """The learner as an `obs -> action` function (act() itself runs under no_grad)."""
    return lambda obs: learner.act(obs, deterministic=deterministic)
