"""Composing a run: seeds, run directory, buffers, agent and trainer, for any domain and
any agent.

The config says which of each: its `domain` is a line of `domains/catalog.DOMAINS` (how to
check the flags, fill the offline buffer, make the env and the encoder slot), its `algo` a
line of `agents/catalog.AGENTS`. Nothing here names a concrete domain or agent: seeding,
the run directory with its config, resume, fine-tuning from another run and the summary
are shared by `train_state.py` and `train_visual.py`.
"""

from __future__ import annotations

import json
import random
import shlex
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from calql_robot.agents.base import Agent, AgentSpec, resolve_device
from calql_robot.agents.catalog import build_agent, same_agent, validate_agent_configs
from calql_robot.config import ExperimentConfig, LoopConfig, RunConfig, to_dict
from calql_robot.domains.base import obs_spec_of
from calql_robot.domains.catalog import DomainEntry, domain_entry
from calql_robot.errors import ConfigError, RunDirError
from calql_robot.loop import Trainer
from calql_robot.perf import tune_malloc
from calql_robot.precision import resolve_precision
from calql_robot.run.checkpoint import precheck_resume, remove_stale_temporaries
from calql_robot.run.diskspace import CHECKPOINT_COPIES, SLACK_BYTES, VIDEO_BYTES, require_free_space, tensor_bytes
from calql_robot.run.finetune import FLAG, PretrainedSource, source_for
from calql_robot.run.lock import LOCK_FILE, RunLock, refuse_if_locked
from calql_robot.run.provenance import record_session, session_info
from calql_robot.run.runlog import CONFIG_FILE, SUMMARY_FILE, RunLogger, atomic_write_text, make_run_dir
from calql_robot.run.stopping import StopRequest, stop_on_signals
from data.replay import EpisodeReplayBuffer

MIN_ONLINE_EPISODE_LENGTH = 4  # sizes the online buffer's observation rows


def seed_everything(seed: int) -> None:
    """Python, numpy and torch global RNGs (envs are seeded per episode by the loop)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def online_buffer_for(env: gym.Env, online_env_steps: int) -> EpisodeReplayBuffer:
    """Room for every online step (the last episode may overshoot by one horizon)."""
    horizon = env.spec.max_episode_steps if env.spec and env.spec.max_episode_steps else 1000
    capacity = online_env_steps + horizon
    rows = EpisodeReplayBuffer.obs_rows_needed(capacity, MIN_ONLINE_EPISODE_LENGTH)
    return EpisodeReplayBuffer(obs_spec_of(env.observation_space), env.action_space.shape[0],
                               capacity, obs_capacity=rows)


def prepare_run_dir(run: RunConfig) -> RunLock:
    """A fresh timestamped directory, or the existing one when resuming, with its lock
    taken (`run/lock.py`): a directory another live process trains in is refused, naming
    that process."""
    if run.resume:
        if run.run_dir is None:
            raise ConfigError("--run.resume needs --run.run-dir, the directory of the run to continue")
        path = Path(run.run_dir)
        if not path.is_dir():
            raise RunDirError(f"--run.run-dir {run.run_dir}: no such directory to resume",
                              "drop --run.resume to start a new run there")
        if not (path / CONFIG_FILE).is_file():
            raise RunDirError(f"--run.run-dir {run.run_dir}: no {CONFIG_FILE}, so not a run directory to resume")
        return RunLock(path).acquire()
    if run.run_dir is not None:
        path = Path(run.run_dir)
        if path.exists() and not path.is_dir():
            raise ConfigError(f"--run.run-dir {run.run_dir} is a file, not a directory")
        if path.exists() and any(p.name != LOCK_FILE for p in path.iterdir()):
            refuse_if_locked(path)  # a live run there: name it rather than "not empty"
            raise ConfigError(f"--run.run-dir {run.run_dir} is not empty",
                              "pass --run.resume to continue that run, or pick another --run.run-dir")
        path.mkdir(parents=True, exist_ok=True)
        return RunLock(path).acquire()
    return RunLock(make_run_dir(Path("runs"), run.name)).acquire()


def resume_command(command: list[str], run_dir: Path) -> str:
    """The shell command that continues the run in `run_dir` (its saved config.json gives
    every other setting)."""
    return shlex.join(["python", *command, "--run.resume", "--run.run-dir", str(run_dir)])


def expected_videos(loop: LoopConfig) -> int:
    """Evaluations of a run (each writes one mp4 when videos are on): start, in-phase
    offline ones, the switch, online ones and the final one."""
    offline = loop.offline_steps // loop.eval_every_offline if loop.eval_every_offline else 0
    early = sum(1 for m in set(loop.eval_at) if m < loop.online_env_steps and m % loop.eval_every)
    return 3 + offline + loop.online_env_steps // loop.eval_every + early


def check_run_space(run_dir: Path, agent: Agent, online: EpisodeReplayBuffer, loop: LoopConfig,
                    videos: bool) -> None:
    """Refuse to start training when the run directory's disk cannot hold what the run
    will write (calql_robot/run/diskspace.py): checkpoints with a full online buffer, videos."""
    buffer_bytes = (online.obs_capacity * online._row_bytes()  # the formula of its own memory check
                    + online.capacity * online._transition_bytes())
    checkpoint = tensor_bytes(agent.state_dict()) + buffer_bytes
    need = CHECKPOINT_COPIES * checkpoint + SLACK_BYTES + (VIDEO_BYTES * expected_videos(loop) if videos else 0)
    require_free_space(run_dir, need, "this run's checkpoints" + (", videos" if videos else "") + " and logs")


def restart_note(run_dir: Path) -> None:
    """What `--run.resume` does when the run was killed before its first checkpoint."""
    print(f"{run_dir}: no checkpoint yet (the run stopped before its first one); starting it again from "
          f"the beginning with its saved {CONFIG_FILE}", flush=True)


def run_experiment(config: ExperimentConfig) -> dict:
    """Build everything, resume if asked, train, and write `summary.json` into the run dir.

    Every setting is checked before the run directory is touched, so a mistyped flag leaves
    nothing behind. `run.resume` on a run killed before its first checkpoint starts it
    again from the beginning (issue 9): with the same seeds it ends as an uninterrupted run.
    SIGINT and SIGTERM stop it where it stands with a checkpoint (`run/stopping.py`,
    `RunInterrupted`), and the run directory is locked while it runs (`run/lock.py`).
    """
    with stop_on_signals() as stop:
        entry = domain_entry(config.domain)
        config = entry.prepare(config)
        loop, run = config.loop, config.run
        tune_malloc()
        if run.threads > 0:
            torch.set_num_threads(run.threads)
        validate_loop(loop)
        config.reward.validate()
        validate_agent_configs(config)
        seed_everything(run.seed)
        device = resolve_device(run.device)
        precision, note = resolve_precision(run.precision, device)
        if note:
            print(note, flush=True)
        config = replace(config, run=replace(run, precision=precision))  # config.json says what ran
        run = config.run
        source = source_for(run, config.domain, config.algo, lambda other: same_agent(other, config.algo))
        if source is not None and source.offline_steps != loop.offline_steps:
            print(f"{FLAG} {run.finetune_from}: pre-trained for {source.offline_steps} offline updates "
                  f"(--loop.offline-steps {loop.offline_steps} does not apply)", flush=True)
            loop = replace(loop, offline_steps=source.offline_steps)
        with prepare_run_dir(run) as lock:
            stop.resume = resume_command(entry.command(config), lock.run_dir)
            summary = _train_in(lock.run_dir, config, loop, entry, source, device, stop)
    return summary


def _train_in(run_dir: Path, config: ExperimentConfig, loop: LoopConfig, entry: DomainEntry,
              source: PretrainedSource | None, device: torch.device, stop: StopRequest) -> dict:
    """The run itself, in its locked directory: logger, domain, agent, trainer, summary."""
    run = config.run
    if run.resume:
        remove_stale_temporaries(run_dir / "checkpoints")
        precheck_resume(run_dir / "checkpoints")  # a damaged latest.pt is named before data load
    logger = RunLogger(run_dir, saved_config(config, loop), wandb_mode=run.wandb, run_name=run.name,
                       resume=run.resume)
    record_session(run_dir, session_info(run.precision, str(device)))  # run_info.json: code and machine
    domain = entry.build(config)
    logger.add_derived(domain.record)
    probe = domain.make_env()
    action_dim = probe.action_space.shape[0]
    agent = build_agent(config, AgentSpec(domain.feature_dim, action_dim, config.reward.discount, domain.encoder,
                                          domain.augment, device, config.reward.failure_return(), run.precision,
                                          (config.reward.scale, config.reward.bias)))
    if not agent.learns_online and loop.online_env_steps:
        print(f"--algo {config.algo} learns offline only: skipping the {loop.online_env_steps} online env steps")
        loop = replace(loop, online_env_steps=0)
    online = online_buffer_for(probe, loop.online_env_steps)
    probe.close()
    videos = entry.videos(config)
    trainer = Trainer(agent, domain.offline, online, domain.make_env, loop, config.reward, logger, run.seed,
                      progress=run.progress, videos=videos, stop=stop)
    try:
        check_run_space(run_dir, agent, online, loop, videos)
        resumed = run.resume and trainer.try_resume()
        if run.resume and not resumed:
            restart_note(run_dir)
            logger.truncate_after(-1)  # rows of the killed attempt; this one logs them again
        if source is not None and not resumed:
            logger.adopt_rows(source.rows)
            trainer.start_from_switch(source.switch, source.state, source.wall_s)
        stop.graceful = True  # from here a signal stops the run at its next safe point
        summary = trainer.run()
    finally:
        trainer.close()
    summary["run_dir"] = str(run_dir)
    atomic_write_text(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    return summary


def saved_config(config: ExperimentConfig, loop: LoopConfig) -> dict:
    """config.json's content: the resolved config, with the offline steps a fine-tuning run
    took over from its source, and `run.resume` false (how this process started is not a
    setting of the run)."""
    saved = to_dict(config)
    saved["loop"]["offline_steps"] = loop.offline_steps
    saved["run"]["resume"] = False
    return saved


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
    if loop.online_env_steps and loop.warmup_env_steps >= loop.online_env_steps:
        raise ConfigError(f"--loop.warmup-env-steps {loop.warmup_env_steps} >= --loop.online-env-steps "
                          f"{loop.online_env_steps}: no online update would run",
                          "lower the warm-up or raise the online budget")
    if any(m < 1 for m in loop.eval_at):
        raise ConfigError(f"--loop.eval-at takes online env steps >= 1, got {' '.join(map(str, loop.eval_at))}")
