"""The visual pick-and-place domain: pre-train on PTR-style scripted data from pixels,
fine-tune online on the held-out task (with `--data.target-episodes N`, after N offline
episodes of it, PTR's "handful of trials").

Observations are `{"image": uint8 (H,W,3), "state": proprio, "task": one-hot target ++
one-hot distractor}` (ARCHITECTURE.md). Offline data: scripted episodes of every
(target, distractor) task except the held-out one (`calql_robot.domains.pickplace_data`, SIM.md); online
fine-tuning and every evaluation run on the held-out task (0, 1), as PTR / Cal-QL's
visual manipulation experiment fine-tunes on a task absent from the pre-training data.
Reward: +1 on success, raw failure reward 0 (SPEC section 4, visual column).

One image encoder is shared by critic and actor (`encoders.ImageStateEncoder`, the rule of
which loss trains it lives in `calql_robot/agents/calql_learner.py`); DrQ random shift (pad 4) augments
obs and next obs. Presets live in `PRESETS`, the one place both `train_visual.py` and the
tests read them from.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
from torch import nn

from calql_robot.agents.awac import PRESETS as AWAC_PRESETS
from calql_robot.agents.awac import AWACConfig
from calql_robot.agents.bc import BCConfig
from calql_robot.agents.calql import PRESETS as CALQL_PRESETS
from calql_robot.agents.calql import CalQLConfig
from calql_robot.agents.catalog import Algo, agent_config
from calql_robot.agents.iql import PRESETS as IQL_PRESETS
from calql_robot.agents.iql import IQLConfig
from calql_robot.agents.odt import PRESETS as ODT_PRESETS
from calql_robot.agents.odt import ODTConfig
from calql_robot.agents.sac import PRESETS as SAC_PRESETS
from calql_robot.agents.sac import SACConfig
from calql_robot.config import LoopConfig, RewardConfig, RunConfig
from calql_robot.domains.base import Domain, naming_the_action_flag, obs_spec_of
from calql_robot.domains.pickplace_data import (PickPlaceDataConfig, check_data_config, find_or_create_dataset,
                                                recorded_settings, reusable_dataset)
from calql_robot.errors import ConfigError, DatasetError
from data.replay import EpisodeReplayBuffer
from data.suspicious import ActionFix

DOMAIN_NAME = "pickplace_visual"


@dataclass
class EncoderConfig:
    """The shared image encoder and its augmentation (SIM.md, DrQ-v2 / PTR)."""

    kind: Literal["conv", "keypoints", "resnet18"] = "conv"
    """'conv': PTR's small stride-2 conv stack; 'keypoints': a shallower conv trunk pooled by
    a spatial softmax into 32 keypoint coordinates (Levine et al. 2016); 'resnet18':
    GroupNorm ResNet-18 (no pretrained weights), PTR's larger encoder and ~10x slower on a CPU."""
    latent_dim: int = 50
    """Width of the bottleneck Linear -> LayerNorm -> tanh (DrQ-v2 / PTR: 50)."""
    shift_pad: int = 4
    """DrQ random-shift padding in pixels, applied to obs and next obs (0 disables). The cpu
    preset uses 1: at 48 px one pixel is ~1.4 cm of table, and pad 4 moved the scene by up
    to 5.7 cm against the unshifted proprio state (RESULTS.md, session 7)."""


@dataclass
class VisualExperimentConfig:
    """Cal-QL from pixels: offline pre-training on many tasks, fine-tuning on a held-out one.

    Fields in the order `--help` shows them: what a user changes first (the data, the
    algorithm, the loop's budget), then the encoder, rewards, run and the agents' knobs."""

    data: PickPlaceDataConfig = field(default_factory=PickPlaceDataConfig)
    dataset: str | None = None
    """Train on this existing HDF5 file as it is, whatever settings produced it; its recorded
    collection settings replace --data.* (shown, and saved in the run's config.json)."""
    out_of_range_actions: ActionFix = "error"
    """Dataset actions outside [-1, 1]: 'error' stops the run naming the file, key, row and
    value; 'clip' clips them to [-1, 1]; 'rescale' divides all by their largest |a|."""
    algo: Algo = "calql"
    """The method (the Algorithms list above); given here it also sets what the method implies
    (IQL, AWAC and ODT, on the command line, start from their reference's reward, `BASELINE_REWARDS`)."""
    loop: LoopConfig = field(default_factory=LoopConfig)
    finetune_task: tuple[int, int] | None = None
    """(target, distractor) of online fine-tuning and evaluation; None: --data.held-out-task."""
    video: bool = True
    """Write an mp4 of the first episode of every evaluation into <run_dir>/videos."""
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    normalize_state: bool = True
    """Standardise the proprio state by the offline data's mean and std (fixed; in checkpoints)."""
    reward: RewardConfig = field(default_factory=lambda: RewardConfig(scale=1.0, bias=0.0, failure_reward=0.0))
    run: RunConfig = field(default_factory=lambda: RunConfig(name="pickplace-visual"))
    learner: CalQLConfig = field(default_factory=CALQL_PRESETS["visual_paper"])
    bc: BCConfig = field(default_factory=BCConfig)
    """Behaviour cloning's settings (used with --algo bc)."""
    sac: SACConfig = field(default_factory=SAC_PRESETS["visual_paper"])
    """SAC's settings (used with --algo sac, sac-offline, hybrid)."""
    iql: IQLConfig = field(default_factory=IQL_PRESETS["manipulation"])
    """IQL's settings (used with --algo iql; the Cal-QL paper's manipulation column)."""
    awac: AWACConfig = field(default_factory=AWAC_PRESETS["manipulation"])
    """AWAC's settings (used with --algo awac; the Cal-QL paper's manipulation lambda)."""
    odt: ODTConfig = field(default_factory=ODT_PRESETS["manipulation"])
    """Online decision transformer's settings (used with --algo odt; the official AntMaze ones)."""
    domain: Literal["pickplace_visual"] = DOMAIN_NAME
    """Which domain this config describes (rollout.py rebuilds the run from it)."""

    def resolved_task(self) -> tuple[int, int]:
        task = self.data.held_out_task if self.finetune_task is None else self.finetune_task
        return int(task[0]), int(task[1])


def _cpu_preset() -> VisualExperimentConfig:
    """Sized for this 2-core CPU: `python train_visual.py` (collection included) in ~15 min.

    48 px frames (COG's size): the conv encoder costs ~2x less than at 64 px. Data: the 8
    pairs that share one object with the held-out pair (`--data.split related`) x 60
    episodes (~11K transitions, ~100 s to collect): on the same 480 episodes, behaviour
    cloning reached 0.35 on the held-out pair against 0.15 with all 24 pairs x 20, and the
    24-pair policy failed on pairs it was trained on too (RESULTS.md, session 4). Measured on
    a quiet machine (bench/visual.py): 21 updates/s at batch 64 with 2 threads (6 at 256),
    so 8000 offline + 2500 online updates take ~9 of the 15 minutes. Two torch threads are
    1.8x faster than one when the cores are free, but far slower when other processes load
    them (OpenMP threads wait on each other): pass --run.threads 1 on a busy machine.

    Random shift pad 1 instead of DrQ's 4: the grasp needs the cube's position to about
    2 cm, one 48 px pixel is ~1.4 cm, and behaviour cloning missed the cube by 2-3 cm at pad
    4. Over 100 episodes, pad 1 lifted behaviour cloning (8K updates, seed 0) from 0.24 to
    0.34, and Cal-QL (3-seed means) from 0.27 to 0.45 at the switch and from 0.21 to 0.26
    after fine-tuning; pad 0 (none) overfit (RESULTS.md, session 7).

    Mixing ratio 0.9 (90% offline rows in each online batch; the paper's visual range is
    0.2-0.9): at 0.5 every seed lost 0.09-0.28 of its pre-trained success within 2,500 env
    steps; forked from the same three switches, 0.9 kept it (finals 0.42 against 0.45 at
    the switch over 100 episodes; 0.47 over the runs' 20; RESULTS.md, session 7)."""
    return VisualExperimentConfig(
        learner=CALQL_PRESETS["visual_cpu"](),
        sac=SAC_PRESETS["visual_cpu"](),
        loop=LoopConfig(offline_steps=8000, online_env_steps=2500, utd=1, batch_size=64, mixing_ratio=0.9,
                        eval_episodes=20, eval_every_offline=2000, eval_every=500, checkpoint_every=1000,
                        log_every=100),
        reward=RewardConfig(scale=10.0, bias=-5.0, failure_reward=0.0),
        run=RunConfig(name="pickplace-visual-cpu", threads=2),
        data=PickPlaceDataConfig(episodes_per_task=60, image_size=48, split="related"),
        encoder=EncoderConfig(shift_pad=1),
    )


def _paper_preset() -> VisualExperimentConfig:
    """SPEC section 4, visual column: 50K offline updates, 100K online env steps, UTD 5, CQL
    weight 5 offline / 0.5 online, max backup k=4, mixing ratio 0.5, batch 256; eval 20
    episodes every 2000 env steps; PTR-like data: 24 tasks x 100 episodes at 64 px."""
    return VisualExperimentConfig(
        learner=CALQL_PRESETS["visual_paper"](),
        loop=LoopConfig(offline_steps=50_000, online_env_steps=100_000, utd=5, batch_size=256, mixing_ratio=0.5,
                        eval_episodes=20, eval_every_offline=5000, eval_every=2000, checkpoint_every=2000,
                        log_every=500),
        run=RunConfig(name="pickplace-visual-paper"),
        data=PickPlaceDataConfig(episodes_per_task=100, image_size=64),
    )


PRESETS: dict[str, VisualExperimentConfig] = {"cpu": _cpu_preset(), "paper": _paper_preset()}
"""Named base configs of train_visual.py; every field stays overridable on the command line."""


def make_visual_env(cfg: VisualExperimentConfig) -> gym.Env:
    """The fine-tuning task's env: images at the dataset's size, frames for videos."""
    from sim import make_pickplace

    target, distractor = cfg.resolved_task()
    return make_pickplace(target, distractor, image_size=cfg.data.image_size, render_mode="rgb_array")


def make_visual_modules(cfg: VisualExperimentConfig, observation_space: gym.Space):
    """(encoder, augment, feature_dim) for an env's Dict observation space."""
    from encoders import ImageStateEncoder, RandomShift

    encoder = ImageStateEncoder.from_obs_spec(observation_space, kind=cfg.encoder.kind,
                                              latent_dim=cfg.encoder.latent_dim)
    return encoder, RandomShift(cfg.encoder.shift_pad), encoder.feature_dim


def rollout_modules(cfg: VisualExperimentConfig, env: gym.Env) -> tuple[nn.Module, int]:
    """(encoder, feature_dim) of a run rebuilt for a rollout; the checkpoint fills the weights."""
    encoder, _, feature_dim = make_visual_modules(cfg, env.observation_space)
    return encoder, feature_dim


def prepare_visual_config(cfg: VisualExperimentConfig) -> VisualExperimentConfig:
    """Before the run directory is touched: adopt `--dataset`'s settings, check every flag."""
    cfg = adopt_dataset(cfg)
    check_visual_config(cfg)
    return cfg


def check_visual_config(cfg: VisualExperimentConfig) -> None:
    """Refuse a fine-tuning task that is in the pre-training data (it would not be held out),
    bad --data.* / --encoder.* values, and an existing --data.output collected otherwise."""
    from calql_robot.domains.pickplace_data import pretraining_tasks

    check_data_config(cfg.data, "--data.")
    task = cfg.resolved_task()
    if not all(0 <= t < 5 for t in task):
        raise ConfigError(f"--finetune-task must be two object indices in 0..4, got {task[0]} {task[1]}")
    if task in pretraining_tasks(cfg.data):
        raise ConfigError(f"--finetune-task {task[0]} {task[1]} is one of the pre-training tasks of --data; "
                          f"set --data.held-out-task {task[0]} {task[1]} to hold it out")
    if cfg.encoder.latent_dim < 1 or cfg.encoder.shift_pad < 0:
        raise ConfigError(f"--encoder.latent-dim must be >= 1 and --encoder.shift-pad >= 0, got "
                          f"{cfg.encoder.latent_dim}, {cfg.encoder.shift_pad}")
    if cfg.dataset is None:
        reusable_dataset(cfg.data, "--data.")  # a named file that does not fit stops the run here


def adopt_dataset(cfg: VisualExperimentConfig) -> VisualExperimentConfig:
    """With --dataset PATH: the config with the file's recorded collection settings as its
    --data.* (so the env's image size fits the frames and config.json says what the data
    are), printed for the user; without it, `cfg` unchanged."""
    if cfg.dataset is None:
        return cfg
    attrs, recorded = recorded_settings(Path(cfg.dataset))
    if recorded is None:
        size = int(attrs.get("env_config", {}).get("image_size", cfg.data.image_size))
        recorded = dataclasses.replace(cfg.data, output=cfg.dataset, image_size=size)
        print(f"--dataset {cfg.dataset}: {attrs['num_episodes']} episodes; the file records no collection "
              f"settings, keeping --data.* with image size {size}", flush=True)
    else:
        print(f"--dataset {cfg.dataset}: {attrs['num_episodes']} episodes collected with "
              f"{json.dumps(attrs['collection_config'], separators=(',', ':'))}", flush=True)
    return dataclasses.replace(cfg, data=recorded)


def load_offline_buffer(cfg: VisualExperimentConfig, spec, action_dim: int
                        ) -> tuple[EpisodeReplayBuffer, float, tuple[np.ndarray, np.ndarray]]:
    """Find or collect the cached dataset and load it into an image buffer, frames once.

    Returns the buffer, the dataset's success rate and the (mean, std) of its proprio state. MC returns use the run's one reward
    transform (SPEC section 7); the file keeps raw rewards.
    """
    from data.episodes_hdf5 import read_episodes

    path = Path(cfg.dataset) if cfg.dataset is not None else find_or_create_dataset(cfg.data)
    with naming_the_action_flag():
        data = read_episodes(path, exclude_tasks=excluded_tasks(cfg), actions=cfg.out_of_range_actions)
    if data.num_episodes == 0:
        raise DatasetError(f"{path}: no pre-training episodes left after excluding task {cfg.resolved_task()}")
    image = data.observations["image"]
    if tuple(image.shape[1:]) != tuple(spec["image"][0]):
        raise DatasetError(f"{path}: frames are {tuple(image.shape[1:])}, the env gives {spec['image'][0]}; "
                           f"--data.image-size must match the file")
    steps, rows = data.num_steps, data.num_steps + data.num_episodes
    offline = EpisodeReplayBuffer(spec, action_dim, steps, obs_capacity=rows)
    actions = data.actions
    if getattr(agent_config(cfg), "discrete_gripper", False):
        actions = binarize_gripper_flat(actions, data.observations["state"], data.length)
    offline.add_episode_arrays(data.observations, actions, data.rewards, data.terminals, data.timeouts,
                               data.length, cfg.reward.discount, cfg.reward.failure_reward,
                               cfg.reward.scale, cfg.reward.bias)
    states = np.asarray(data.observations["state"], np.float64)
    return offline, float(np.mean(data.success)), (states.mean(axis=0), states.std(axis=0))


def excluded_tasks(cfg: VisualExperimentConfig) -> list[tuple[int, int]]:
    """Tasks dropped from the loaded data: the fine-tuning task, unless it is the held-out
    task and the data hold its `--data.target-episodes` on purpose (PTR's handful of trials)."""
    task = cfg.resolved_task()
    if cfg.data.target_episodes > 0 and task == tuple(cfg.data.held_out_task):
        return []
    return [task]


def binarize_gripper_flat(actions: np.ndarray, states: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """`binary_gripper_actions` over flat episode arrays: step t of episode e was taken in
    observation row (sum of earlier T_i + 1) + t, i.e. step index + e."""
    from sim.pickplace_env import binary_gripper_actions

    lengths = np.asarray(lengths, np.int64)
    rows = np.arange(int(lengths.sum())) + np.repeat(np.arange(len(lengths)), lengths)
    return binary_gripper_actions(actions, states[rows])


def build_visual_domain(cfg: VisualExperimentConfig) -> Domain:
    """Dataset -> image replay buffer, shared encoder + random shift, held-out-task env."""
    check_visual_config(cfg)
    probe = make_visual_env(cfg)
    spec, action_dim = obs_spec_of(probe.observation_space), probe.action_space.shape[0]
    encoder, augment, feature_dim = make_visual_modules(cfg, probe.observation_space)
    probe.close()
    offline, success, state_stats = load_offline_buffer(cfg, spec, action_dim)
    record = {}
    if cfg.normalize_state:
        encoder.set_state_normalization(*state_stats)
        record = {"obs_normalization": {"state": {"mean": [round(float(v), 6) for v in encoder.state_mean],
                                                  "std": [round(float(v), 6) for v in encoder.state_std]}}}
    frame = int(np.prod(spec["image"][0]))
    print(f"offline data: {offline.num_episodes} episodes, {len(offline)} transitions, success {success:.2f}; "
          f"buffer {offline.nbytes / 2**20:.1f} MiB, {offline.bytes_per_transition:.0f} B/transition "
          f"(one frame: {frame} B)", flush=True)
    return Domain(make_env=lambda: make_visual_env(cfg), offline=offline, feature_dim=feature_dim,
                  encoder=encoder, augment=augment, record=record)
