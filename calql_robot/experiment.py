"""Composing a run: seeds, run directory, buffers, learner and trainer, for any domain.

A domain supplies a `Domain`: how to make its env, how to fill the offline buffer, and
(for pixels) its encoder. Everything else - seeding, the run directory with its config,
resume, the summary - is shared by `train_state.py` and `train_visual.py`.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from calql_robot.run.checkpoint import precheck_resume, remove_stale_temporaries
from calql_robot.config import LearnerConfig, LoopConfig, RewardConfig, RunConfig, to_dict
from calql_robot.agents import BCConfig, make_learner
from calql_robot.run.diskspace import CHECKPOINT_COPIES, SLACK_BYTES, VIDEO_BYTES, require_free_space, tensor_bytes
from calql_robot.errors import ConfigError, RunDirError
from calql_robot.run.finetune import FLAG, source_for
from calql_robot.agents.calql_learner import resolve_device
from calql_robot.loop import Trainer
from calql_robot.perf import tune_malloc
from calql_robot.run.runlog import CONFIG_FILE, RunLogger, atomic_write_text, make_run_dir
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


def saved_config_for_resume(cls: type, argv: list[str]) -> Any | None:
    """On `--run.resume --run.run-dir D`: the typed config saved in D/config.json, meant as
    the parser's defaults, so a resumed run continues with its own settings (issue 9: the
    README's resume command passes no other flag) while flags given now still override
    them; None when not resuming or when D has no config (prepare_run_dir says so)."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--run.resume", dest="resume", action="store_true")
    pre.add_argument("--run.no-resume", dest="resume", action="store_false")
    pre.add_argument("--run.run-dir", "--run.run_dir", dest="run_dir")
    known, _ = pre.parse_known_args(argv)
    path = Path(known.run_dir) / CONFIG_FILE if known.resume and known.run_dir else None
    if path is None or not path.is_file():
        return None
    from calql_robot.policy_io import from_dict, read_config_json  # noqa: PLC0415 - it imports the domains

    data = read_config_json(path)
    want = getattr(cls, "__dataclass_fields__", {}).get("domain")
    if want is not None and data.get("domain", want.default) != want.default:
        raise ConfigError(f"--run.run-dir {known.run_dir} is a {data.get('domain')} run, not a {want.default} one",
                        "resume it with the entry point that started it")
    try:
        saved = from_dict(cls, data, str(path))
    except (ValueError, TypeError) as err:
        raise ConfigError(" ".join(str(err).split()), "was the run made by another version of this code?") from err
    print(f"--run.resume: continuing with the settings saved in {path} (flags given now override them)",
          flush=True)
    return saved


def parse_config(cls: type, argv: list[str], default: Any | None = None, description: str | None = None) -> Any:
    """`tyro.cli` of an entry point's config, with a resumed run's saved config as default."""
    import tyro  # noqa: PLC0415 - only the entry points parse command lines

    base = saved_config_for_resume(cls, argv)
    return tyro.cli(cls, default=base if base is not None else default, args=argv, description=description)


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
        if run.run_dir is None:
            raise ConfigError("--run.resume needs --run.run-dir, the directory of the run to continue")
        path = Path(run.run_dir)
        if not path.is_dir():
            raise RunDirError(f"--run.run-dir {run.run_dir}: no such directory to resume",
                              "drop --run.resume to start a new run there")
        if not (path / CONFIG_FILE).is_file():
            raise RunDirError(f"--run.run-dir {run.run_dir}: no {CONFIG_FILE}, so not a run directory to resume")
        return path
    if run.run_dir is not None:
        path = Path(run.run_dir)
        if path.exists() and not path.is_dir():
            raise ConfigError(f"--run.run-dir {run.run_dir} is a file, not a directory")
        if path.exists() and any(path.iterdir()):
            raise ConfigError(f"--run.run-dir {run.run_dir} is not empty",
                              "pass --run.resume to continue that run, or pick another --run.run-dir")
        path.mkdir(parents=True, exist_ok=True)
        return path
    return make_run_dir(Path("runs"), run.name)


def expected_videos(loop: LoopConfig) -> int:
    """Evaluations of a run (each writes one mp4 when videos are on): start, in-phase
    offline ones, the switch, online ones and the final one."""
    offline = loop.offline_steps // loop.eval_every_offline if loop.eval_every_offline else 0
    return 3 + offline + loop.online_env_steps // loop.eval_every


def check_run_space(run_dir: Path, learner: Any, online: EpisodeReplayBuffer, loop: LoopConfig,
                    videos: bool) -> None:
    """Refuse to start training when the run directory's disk cannot hold what the run
    will write (calql_robot/run/diskspace.py): checkpoints with a full online buffer, videos.
    `learner` is any of `agents.make_learner`'s (only its `state_dict()` is read)."""
    buffer_bytes = (online.obs_capacity * online._row_bytes()  # the formula of its own memory check
                    + online.capacity * online._transition_bytes())
    checkpoint = tensor_bytes(learner.state_dict()) + buffer_bytes
    need = CHECKPOINT_COPIES * checkpoint + SLACK_BYTES + (VIDEO_BYTES * expected_videos(loop) if videos else 0)
    require_free_space(run_dir, need, "this run's checkpoints" + (", videos" if videos else "") + " and logs")


def restart_note(run_dir: Path) -> None:
    """What `--run.resume` does when the run was killed before its first checkpoint."""
    print(f"{run_dir}: no checkpoint yet (the run stopped before its first one); starting it again from "
          f"the beginning with its saved {CONFIG_FILE}", flush=True)


def run_experiment(config: Any, learner_cfg: LearnerConfig, loop: LoopConfig, reward: RewardConfig,
                   run: RunConfig, build_domain: Callable[[], Domain], videos: bool = False) -> dict:
    """Build everything, resume if asked, train, and write `summary.json` into the run dir.

    Every setting is checked before the run directory is touched, so a mistyped flag leaves
    nothing behind. `run.resume` on a run killed before its first checkpoint starts it
    again from the beginning (issue 9): with the same seeds it ends as an uninterrupted run.
    """
    tune_malloc()
    if run.threads > 0:
        torch.set_num_threads(run.threads)
    validate_loop(loop)
    learner_cfg.validate()
    seed_everything(run.seed)
    device = resolve_device(run.device)
    algo = getattr(config, "algo", "calql")
    source = source_for(run, getattr(config, "domain", None), algo)
    if source is not None and source.offline_steps != loop.offline_steps:
        print(f"{FLAG} {run.finetune_from}: pre-trained for {source.offline_steps} offline updates "
              f"(--loop.offline-steps {loop.offline_steps} does not apply)", flush=True)
        loop = replace(loop, offline_steps=source.offline_steps)
    run_dir = prepare_run_dir(run)
    if run.resume:
        remove_stale_temporaries(run_dir / "checkpoints")
        precheck_resume(run_dir / "checkpoints")  # a damaged latest.pt is named before data load
    saved = to_dict(config)
    if source is not None:
        saved["loop"]["offline_steps"] = source.offline_steps
    if isinstance(saved.get("run"), dict):
        saved["run"]["resume"] = False  # how this process started, not a setting of the run
    logger = RunLogger(run_dir, saved, wandb_mode=run.wandb, run_name=run.name, resume=run.resume)
    domain = build_domain()
    logger.add_derived(domain.record)
    if algo == "bc" and loop.online_env_steps:
        print(f"--algo bc learns offline only: skipping the {loop.online_env_steps} online env steps")
        loop = replace(loop, online_env_steps=0)
    probe = domain.make_env()
    online = online_buffer_for(probe, loop.online_env_steps)
    action_dim = probe.action_space.shape[0]
    probe.close()
    learner = make_learner(algo, learner_cfg, getattr(config, "bc", BCConfig()), domain.feature_dim, action_dim,
                           domain.encoder, domain.augment, device)
    if learner_cfg.q_init_mc and not hasattr(learner, "set_q_level"):
        print("--learner.q-init-mc has no effect with --algo bc (behaviour cloning has no critic)")
    elif learner_cfg.q_init_mc:
        level = domain.offline.mean_mc_return()  # a resumed run's checkpoint then replaces it
        learner.set_q_level(level)
        print(f"critics start at the offline data's mean MC return {level:.2f} (--learner.q-init-mc)")
    trainer = Trainer(learner, domain.offline, online, domain.make_env, loop, reward, logger, run.seed,
                      progress=run.progress, videos=videos)
    try:
        check_run_space(run_dir, learner, online, loop, videos)
        resumed = run.resume and trainer.try_resume()
        if run.resume and not resumed:
            restart_note(run_dir)
            logger.truncate_after(-1)  # rows of the killed attempt; this one logs them again
        if source is not None and not resumed:
            logger.adopt_rows(source.rows)
            trainer.start_from_switch(source.switch, source.state, source.wall_s)
        summary = trainer.run()
    finally:
        trainer.close()
    summary["run_dir"] = str(run_dir)
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def validate_loop(loop: LoopConfig) -> None:
    """Clear errors for schedule values that cannot work."""
    if not (0.0 <= loop.mixing_ratio <= 1.0 or loop.mixing_ratio == -1):
        raise ConfigError(f"--loop.mixing-ratio must be in [0, 1] or -1, got {loop.mixing_ratio}")
    for name in ("batch_size", "utd", "eval_episodes", "eval_every", "checkpoint_every", "log_every"):
        if getattr(loop, name) < 1:
            raise ConfigError(f"--loop.{name.replace('_', '-')} must be >= 1, got {getattr(loop, name)}")
    for name in ("offline_steps", "online_env_steps", "eval_every_offline", "warmup_env_steps"):
        if getattr(loop, name) < 0:
            raise ConfigError(f"--loop.{name.replace('_', '-')} must be >= 0, got {getattr(loop, name)}")
