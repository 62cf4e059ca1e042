"""The table of domains: the `domain` field of a run's config -> its config class, how a
run builds it (data and env), how a rollout rebuilds its env and encoder slot without the
data, the checks made before a run directory is touched, and whether it records videos.

`experiment.run_experiment` and `policy_io.load_policy` read this one table. Adding a domain
is one module in `domains/` and one line here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import gymnasium as gym
from torch import nn

from calql_robot.domains import pickplace_state, pickplace_visual, registry
from calql_robot.domains.base import Domain, vector_rollout_modules
from calql_robot.errors import ConfigError


@dataclass(frozen=True)
class DomainEntry:
    """One domain: `config` its experiment config class; `build(cfg)` reads the data into a
    `Domain`; `make_env(cfg)` and `modules(cfg, env) -> (encoder slot, feature_dim)` rebuild a
    finished run for a rollout; `prepare(cfg) -> cfg` checks flags (and adopts a dataset's
    recorded settings) first; `videos(cfg)` says whether evaluations are recorded;
    `command(cfg)` is the entry point (script and the arguments that pick the config class)
    that resumes a run of it with `--run.resume --run.run-dir DIR`."""

    config: type
    build: Callable[[Any], Domain]
    make_env: Callable[[Any], gym.Env]
    modules: Callable[[Any, gym.Env], tuple[nn.Module | None, int]]
    prepare: Callable[[Any], Any]
    videos: Callable[[Any], bool]
    command: Callable[[Any], list[str]]


DOMAINS: dict[str, DomainEntry] = {
    "pickplace_state": DomainEntry(
        pickplace_state.StateExperimentConfig, pickplace_state.build_state_domain, pickplace_state.make_state_env,
        vector_rollout_modules, pickplace_state.prepare_state_config, lambda cfg: False,
        lambda cfg: ["train_state.py"]),
    "pickplace_visual": DomainEntry(
        pickplace_visual.VisualExperimentConfig, pickplace_visual.build_visual_domain,
        pickplace_visual.make_visual_env, pickplace_visual.rollout_modules, pickplace_visual.prepare_visual_config,
        lambda cfg: cfg.video, lambda cfg: ["train_visual.py"]),
    "state_task": DomainEntry(
        registry.TaskExperimentConfig, registry.build_task_domain, registry.make_rollout_env,
        vector_rollout_modules, lambda cfg: cfg, lambda cfg: cfg.videos,
        lambda cfg: ["train_state.py", "--task", cfg.task]),
}
"""Domain name (the `domain` field of a run's config.json) -> its entry. `state_task` is
AntMaze, Kitchen and Adroit (`train_state.py --task`, `domains/registry.py`)."""


def domain_entry(name: str, where: str = "config") -> DomainEntry:
    """The table's line of `name`; an unknown one is a one-line ConfigError naming it."""
    if name not in DOMAINS:
        raise ConfigError(f"{where}: unknown domain {name!r}; known domains: {', '.join(sorted(DOMAINS))}")
    return DOMAINS[name]
