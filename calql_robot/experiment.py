"""Composing a run: seeds, run directory, buffers, learner and trainer, for any domain.

A domain supplies a `Domain`: how to make its env, how to fill the offline buffer, and
(for pixels) its encoder. Everything else - seeding, the run directory with its config,
resume, the summary - is shared by `train_state.py` and `train_visual.py`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from calql_robot.config import LearnerConfig, LoopConfig, RewardConfig, RunConfig, to_dict
from calql_robot.agents import BCConfig, make_learner
from calql_robot.learner import resolve_device
from calql_robot.loop import Trainer
from calql_robot.perf import tune_malloc
from calql_robot.runlog import RunLogger, atomic_write_text, make_run_dir
from data.replay import EpisodeReplayBuffer

MIN_ONLINE_EPISODE_LENGTH = 4  # sizes the online buffer's observation rows


@dataclass
class Domain:
    """What differs between domains."""

    make_env: Callable[[], gym.Env]
    offline: EpisodeReplayBuffer
    feature_dim: int
    encoder: nn.Module | None = None
    augment: nn.Module | None = None
    record: dict[str, Any] = field(default_factory=dict)
    """Facts the domain derived from its data (e.g. `obs_normalization`), added to config.json."""


def seed_everything(seed: int) -> None:
    """Python, numpy and torch global RNGs (envs are seeded per episode by the loop)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def obs_spec_of(space: gym.Space) -> Any:
    """The replay buffer's observation spec for a Box or a Dict of Boxes."""
    if isinstance(space, gym.spaces.Dict):
        return {k: (tuple(s.shape), s.dtype) for k, s in space.spaces.items()}
    if isinstance(space, gym.spaces.Box):
        return (tuple(space.shape), np.dtype(np.float32))
    raise TypeError(f"observation space {space} is neither a Box nor a Dict of Boxes")


def online_buffer_for(env: gym.Env, online_env_steps: int) -> EpisodeReplayBuffer:
    """Room for every online step (the last episode may overshoot by one horizon)."""
    horizon = env.spec.max_episode_steps if env.spec and env.spec.max_episode_steps else 1000
    capacity = online_env_steps + horizon
    rows = EpisodeReplayBuffer.obs_rows_needed(capacity, MIN_ONLINE_EPISODE_LENGTH)
    return EpisodeReplayBuffer(obs_spec_of(env.observation_space), env.action_space.shape[0],
                               capacity, obs_capacity=rows)


def prepare_run_dir(run: RunConfig) -> Path:
    """A fresh timestamped directory, or the existing one when resuming."""
    if run.resume:
        if run.run_dir is None or not Path(run.run_dir).is_dir():
            raise FileNotFoundError(f"--run.resume needs an existing --run.run-dir, got {run.run_dir!r}")
        return Path(run.run_dir)
    if run.run_dir is not None:
        path = Path(run.run_dir)
        if path.exists() and any(path.iterdir()):
            raise FileExistsError(f"{path} is not empty; pass --run.resume to continue it or pick another dir")
        path.mkdir(parents=True, exist_ok=True)
        return path
    return make_run_dir(Path("runs"), run.name)


def run_experiment(config: Any, learner_cfg: LearnerConfig, loop: LoopConfig, reward: RewardConfig,
                   run: RunConfig, build_domain: Callable[[], Domain], videos: bool = False) -> dict:
    """Build everything, resume if asked, train, and write `summary.json` into the run dir."""
    tune_malloc()
    if run.threads > 0:
        torch.set_num_threads(run.threads)
    validate_loop(loop)
    seed_everything(run.seed)
    device = resolve_device(run.device)
    run_dir = prepare_run_dir(run)
    saved = to_dict(config)
    if isinstance(saved.get("run"), dict):
        saved["run"]["resume"] = False  # how this process started, not a setting of the run
    logger = RunLogger(run_dir, saved, wandb_mode=run.wandb, run_name=run.name, resume=run.resume)
    domain = build_domain()
    logger.add_derived(domain.record)
    algo = getattr(config, "algo", "calql")
    if algo == "bc" and loop.online_env_steps:
        print(f"--algo bc learns offline only: skipping the {loop.online_env_steps} online env steps")
        loop = replace(loop, online_env_steps=0)
    probe = domain.make_env()
    online = online_buffer_for(probe, loop.online_env_steps)
    action_dim = probe.action_space.shape[0]
    probe.close()
    learner = make_learner(algo, learner_cfg, getattr(config, "bc", BCConfig()), domain.feature_dim, action_dim,
                           domain.encoder, domain.augment, device)
    trainer = Trainer(learner, domain.offline, online, domain.make_env, loop, reward, logger, run.seed,
                      progress=run.progress, videos=videos)
    try:
        if run.resume and not trainer.try_resume():
            raise FileNotFoundError(f"{run_dir}/checkpoints has no checkpoint to resume from")
        summary = trainer.run()
    finally:
        trainer.close()
    summary["run_dir"] = str(run_dir)
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def validate_loop(loop: LoopConfig) -> None:
    """Clear errors for schedule values that cannot work."""
    if not (0.0 <= loop.mixing_ratio <= 1.0 or loop.mixing_ratio == -1):
        raise ValueError(f"--loop.mixing-ratio must be in [0, 1] or -1, got {loop.mixing_ratio}")
    for name in ("batch_size", "utd", "eval_episodes", "eval_every", "checkpoint_every", "log_every"):
        if getattr(loop, name) < 1:
            raise ValueError(f"--loop.{name.replace('_', '-')} must be >= 1, got {getattr(loop, name)}")
    for name in ("offline_steps", "online_env_steps", "eval_every_offline"):
        if getattr(loop, name) < 0:
            raise ValueError(f"--loop.{name.replace('_', '-')} must be >= 0, got {getattr(loop, name)}")
