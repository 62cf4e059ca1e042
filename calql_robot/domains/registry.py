"""Task registry of the state domains: name -> env factory, dataset reader, reward, preset.

One line per task (SPEC section 4). Adding a task is adding a :class:`Task` to ``TASKS``.
The reward transform (``scale * r + bias``) and the raw failure reward ``r_neg`` live here
only, and reach offline data, online data, MC returns and logs through one
:class:`~calql_robot.config.RewardConfig` (SPEC section 7).

Datasets (``--dataset PATH_OR_ID``, ``--format auto`` picks by the name):
``*.hdf5``/``*.h5`` a D4RL file; ``*.npy`` an AWAC pickle (needs ``--trust-pickle``);
``d4rl:<name>`` the d4rl package (only where it imports); anything else a Minari dataset id
under ``--minari-root`` / ``$MINARI_DATASETS_PATH`` (or a Minari dataset directory).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import gymnasium as gym

from calql_robot.agents.awac import PRESETS as AWAC_PRESETS
from calql_robot.agents.awac import AWACConfig
from calql_robot.agents.bc import BCConfig
from calql_robot.agents.calql import PRESETS as CALQL_PRESETS
from calql_robot.agents.calql import CalQLConfig
from calql_robot.agents.catalog import Algo, reward_method
from calql_robot.agents.iql import PRESETS as IQL_PRESETS
from calql_robot.agents.iql import IQLConfig
from calql_robot.agents.odt import PRESETS as ODT_PRESETS
from calql_robot.agents.odt import ODTConfig
from calql_robot.agents.sac import PRESETS as SAC_PRESETS
from calql_robot.agents.sac import SACConfig
from calql_robot.config import LoopConfig, RewardConfig, RunConfig
from calql_robot.domains.base import Domain, naming_the_action_flag
from data.suspicious import ActionFix
from data.transitions import Transitions

Family = Literal["antmaze", "kitchen", "adroit"]
Format = Literal["auto", "d4rl", "minari", "awac"]


@dataclass(frozen=True)
class Task:
    """Everything that differs between two state tasks."""

    name: str
    family: Family
    variant: str
    """Maze (umaze/medium/large), kitchen dataset or Adroit task."""
    horizon: int
    reward: RewardConfig
    offline_steps: int
    online_env_steps: int
    mixing_ratio: float
    minari_id: str
    d4rl_name: str


def _antmaze(maze: str, data: str) -> Task:
    name = f"antmaze-{maze}" + (f"-{data}" if data else "")
    minari = f"D4RL/antmaze/{maze}" + (f"-{data}" if data else "") + "-v1"
    return Task(name, "antmaze", maze, 700 if maze == "umaze" else 1000,
                RewardConfig(scale=10.0, bias=-5.0, failure_reward=0.0), 1_000_000, 1_000_000,
                0.5, minari, f"{name}-v2")


def _kitchen(data: str) -> Task:
    return Task(f"kitchen-{data}", "kitchen", data, 1000,
                RewardConfig(scale=1.0, bias=0.0, failure_reward=None), 500_000, 1_250_000,
                0.25, f"D4RL/kitchen/{data}-v2", f"kitchen-{data}-v0")


def _adroit(task: str) -> Task:
    return Task(task, "adroit", task, 100 if task == "pen" else 200,
                RewardConfig(scale=10.0, bias=5.0, failure_reward=-1.0), 20_000,
                200_000 if task == "pen" else 1_000_000, 0.5, f"D4RL/{task}/human-v2",
                f"{task}-human-v1")


TASKS: dict[str, Task] = {t.name: t for t in [
    _antmaze("umaze", ""), _antmaze("umaze", "diverse"), _antmaze("medium", "play"),
    _antmaze("medium", "diverse"), _antmaze("large", "play"), _antmaze("large", "diverse"),
    _kitchen("complete"), _kitchen("partial"), _kitchen("mixed"),
    _adroit("pen"), _adroit("door"), _adroit("relocate")]}
"""SPEC section 4: rewards, budgets, mixing ratios, horizons. Kitchen's mixing ratio is
listed as -1/0.25/0.5 in the paper; 0.25 is used for all three datasets."""

BASELINE_REWARDS: dict[tuple[str, str], RewardConfig] = {
    ("antmaze", "iql"): RewardConfig(scale=1.0, bias=-1.0, failure_reward=0.0),
    ("antmaze", "awac"): RewardConfig(scale=1.0, bias=0.0, failure_reward=0.0),
    ("adroit", "iql"): RewardConfig(scale=1.0, bias=0.0, failure_reward=-1.0),
    ("adroit", "awac"): RewardConfig(scale=1.0, bias=0.0, failure_reward=-1.0),
    ("antmaze", "odt"): RewardConfig(scale=1.0, bias=0.0, failure_reward=0.0),
    ("adroit", "odt"): RewardConfig(scale=1.0, bias=0.0, failure_reward=-1.0),
}
"""(family, method) -> the reward that method's reference trained on (the method of an
`--algo`: `catalog.reward_method`, so `wsrl-iql` reads IQL's), where it is not the
task's (Cal-QL's) reward: IQL's AntMaze r - 1 (the official `train_finetune.py` subtracts 1
in every batch; SPEC section 7), jaxrl AWAC's raw D4RL 0/1, and on Adroit both the raw
{-1, 0} of the AWAC data the two papers fine-tuned on (IQL's repository holds no Adroit
script), and ODT's raw rewards (the official AntMaze data keep D4RL's 0/1; `agents/odt.py`'s
return targets are written in them). Kitchen's reward is raw for every method. The temperatures of Table 4 and the
lambdas of Appendix E.5 are tied to these scales (the weights read the advantage's scale)."""

PICKPLACE = "pickplace"
"""The default task of train_state.py: the privileged-state pick-and-place domain (its own
module, `domains/pickplace_state.py`; not a line of `TASKS`)."""

TaskName = Literal["antmaze-umaze", "antmaze-umaze-diverse", "antmaze-medium-play",
                   "antmaze-medium-diverse", "antmaze-large-play", "antmaze-large-diverse",
                   "kitchen-complete", "kitchen-partial", "kitchen-mixed", "pen", "door",
                   "relocate"]
assert set(TaskName.__args__) == set(TASKS)  # one list, checked at import


@dataclass
class TaskExperimentConfig:
    """Cal-QL on a state task (AntMaze, Kitchen, Adroit) from the dataset a user holds."""

    task: TaskName = "antmaze-umaze"
    """Task name (the registry in calql_robot/domains/registry.py)."""
    dataset: str = ""
    """D4RL .hdf5 file, AWAC .npy file, d4rl:<name>, or a Minari dataset id / directory."""
    format: Format = "auto"
    """Dataset layout; 'auto' decides from the name (see the registry's docstring)."""
    minari_root: str | None = None
    """Root of local Minari datasets (default $MINARI_DATASETS_PATH, then ~/.minari/datasets)."""
    trust_pickle: bool = False
    """Allow loading AWAC .npy pickles (they can run code: only files from a trusted source)."""
    out_of_range_actions: ActionFix = "error"
    """Dataset actions outside [-1, 1] (unnormalised?): 'error' stops the run naming the file,
    key, row and value; 'clip' clips them to [-1, 1]; 'rescale' divides all by their largest |a|."""
    preset: Literal["smoke", "paper"] = "smoke"
    """'smoke': a CPU-sized run of a few minutes (100 offline updates at batch 64, one online
    episode capped at 100 steps); 'paper': SPEC section 4's budgets and horizons."""
    algo: Algo = "calql"
    """The method (the Algorithms list above); given here it also sets what the method implies
    (IQL, AWAC and ODT, on the command line, start from their reference's reward, the task's `BASELINE_REWARDS`)."""
    loop: LoopConfig = field(default_factory=LoopConfig)
    horizon: int | None = None
    """Episode length of the env; None = the paper's (SPEC section 4)."""
    normalize_obs: bool = True
    """Standardise observations by the offline data's mean and std (fixed; saved in checkpoints)."""
    videos: bool = False
    """Record evaluation videos (set MUJOCO_GL=egl when headless)."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    run: RunConfig = field(default_factory=RunConfig)
    learner: CalQLConfig = field(default_factory=CalQLConfig)
    bc: BCConfig = field(default_factory=BCConfig)
    """Behaviour cloning's settings (used with --algo bc)."""
    sac: SACConfig = field(default_factory=SACConfig)
    """SAC's settings (used with --algo sac, sac-offline, hybrid)."""
    iql: IQLConfig = field(default_factory=IQLConfig)
    """IQL's settings (used with --algo iql; the task's preset sets the paper's Table 4 values)."""
    awac: AWACConfig = field(default_factory=AWACConfig)
    """AWAC's settings (used with --algo awac; the task's preset sets the paper's lambda)."""
    odt: ODTConfig = field(default_factory=ODTConfig)
    """Online decision transformer's settings (used with --algo odt; the task's preset sets its return targets)."""
    domain: Literal["state_task"] = "state_task"
    """Which kind of config this is."""


SMOKE_HORIZON = 100
"""Episode cap of the smoke preset (the paper preset keeps the paper's horizons). With the
paper's network sizes one update at batch 256 took ~0.9 s on this project's busy 2-core
machine (Adroit, 512x3 critics), so the smoke preset uses batch 64, 100 offline updates and
one online episode of at most 100 steps: a few CPU minutes at most."""


def preset_config(task: str, preset: str = "smoke", algo: str = "calql") -> TaskExperimentConfig:
    """The task's defaults: SPEC section 4 learner and reward, paper or smoke budgets; with
    `--algo iql` / `awac`, that method's reference reward where it differs (`BASELINE_REWARDS`)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {sorted(TASKS)}")
    t = TASKS[task]
    learner = CALQL_PRESETS[t.family]()
    if preset == "paper":
        loop = LoopConfig(offline_steps=t.offline_steps, online_env_steps=t.online_env_steps,
                          utd=1, batch_size=256, mixing_ratio=t.mixing_ratio, eval_episodes=20,
                          eval_every_offline=max(t.offline_steps // 20, 1), eval_every=2000,
                          checkpoint_every=10_000, log_every=1000)
    elif preset == "smoke":
        horizon = min(t.horizon, SMOKE_HORIZON)
        loop = LoopConfig(offline_steps=100, online_env_steps=horizon, utd=1, batch_size=64,
                          mixing_ratio=t.mixing_ratio, eval_episodes=1, eval_every_offline=0,
                          eval_every=horizon, checkpoint_every=100_000, log_every=50)
    else:
        raise ValueError(f"--preset must be 'smoke' or 'paper', got {preset!r}")
    return TaskExperimentConfig(task=task, preset=preset, learner=learner, sac=SAC_PRESETS[t.family](), loop=loop,
                                iql=IQL_PRESETS[t.family](), awac=AWAC_PRESETS[t.family](), odt=ODT_PRESETS[t.family](),
                                reward=dataclasses.replace(BASELINE_REWARDS.get((t.family, reward_method(algo)), t.reward)),
                                run=RunConfig(name=task),
                                horizon=min(t.horizon, SMOKE_HORIZON) if preset == "smoke" else None)


# ----------------------------------------------------------------------------- envs
def make_task_env(task: str, horizon: int | None = None, render_mode: str | None = None,
                  env_options: dict[str, Any] | None = None) -> gym.Env:
    """The task's env adapter (flat Box observation, paper reward, success in info)."""
    t = TASKS[task]
    opts = env_options or {}
    if t.family == "antmaze":
        from calql_robot.domains.antmaze import make_antmaze
        return make_antmaze(t.variant, opts.get("frame", "d4rl"), horizon or t.horizon,
                            render_mode, opts.get("maze_map"))
    if t.family == "kitchen":
        from calql_robot.domains.kitchen import make_kitchen
        return make_kitchen(horizon or t.horizon, render_mode)
    from calql_robot.domains.adroit import make_adroit
    return make_adroit(t.variant, horizon or t.horizon, render_mode)


# ----------------------------------------------------------------------------- data
def resolve_format(dataset: str, fmt: str) -> str:
    """'auto' -> d4rl (.hdf5/.h5, d4rl:<name>), awac (.npy) or minari (anything else)."""
    if fmt != "auto":
        return fmt
    low = dataset.lower()
    if low.startswith("d4rl:") or low.endswith((".hdf5", ".h5")):
        return "d4rl"
    if low.endswith(".npy"):
        return "awac"
    return "minari"


def load_task_dataset(task: str, dataset: str, fmt: str = "auto",
                      minari_root: str | None = None,
                      trust_pickle: bool = False,
                      actions: ActionFix = "error") -> tuple[Transitions, dict[str, Any]]:
    """Read ``dataset`` for ``task`` into Transitions; also the env options it implies.

    The options pick the AntMaze frame: D4RL data run in the D4RL frame, Minari data in
    gymnasium-robotics' own (with the dataset's recorded maze when its metadata has one).
    Sizes are checked against the task's env; mismatches name the file and the key. Actions
    outside [-1, 1] stop it unless ``actions`` says to clip or rescale them
    (`--out-of-range-actions`, data/suspicious.py).
    """
    from calql_robot.errors import DatasetError
    from data.transitions import check_dims

    t = TASKS[task]
    if not dataset:
        raise DatasetError(f"--dataset is required for task {task} (e.g. a D4RL file "
                           f"{t.d4rl_name}.hdf5 or the Minari id {t.minari_id})")
    kind = resolve_format(dataset, fmt)
    reader = {"antmaze": _antmaze_data, "kitchen": _kitchen_data, "adroit": _adroit_data}
    try:
        with naming_the_action_flag():
            data, options = reader[t.family](t, dataset, kind, minari_root, trust_pickle, actions)
    except FileNotFoundError as err:  # the readers name the path; say which flag it came from
        raise DatasetError(f"--dataset {dataset}: {err}") from err
    probe = make_task_env(task, env_options=options)
    try:
        check_dims(data, probe.observation_space.shape[0], probe.action_space.shape[0], task)
    finally:
        probe.close()
    return data, options


def _d4rl(dataset: str, actions: ActionFix) -> Transitions:
    from data.d4rl_hdf5 import load_with_d4rl, read_d4rl_hdf5

    if dataset.lower().startswith("d4rl:"):
        return load_with_d4rl(dataset[5:], actions)
    return read_d4rl_hdf5(Path(dataset).expanduser(), actions)


def _antmaze_data(t: Task, dataset: str, kind: str, root: str | None,
                  trust: bool, actions: ActionFix) -> tuple[Transitions, dict[str, Any]]:
    if kind == "d4rl":
        return _d4rl(dataset, actions), {"frame": "d4rl"}
    if kind == "minari":
        from data.minari_local import (
            minari_dataset_dir,
            read_minari,
            read_minari_metadata,
        )

        data = read_minari(dataset, root, obs_keys=("achieved_goal", "observation"), actions=actions)
        meta = read_minari_metadata(minari_dataset_dir(dataset, root))
        return data, {"frame": "gymnasium", "maze_map": _recorded_maze(meta)}
    raise ValueError(f"{t.name}: --format {kind} is not an AntMaze layout (use d4rl or minari)")


def _recorded_maze(meta: dict[str, Any]) -> list | None:
    """The maze list of a Minari dataset's eval env spec, if it recorded one."""
    import json

    for key in ("eval_env_spec", "env_spec"):
        spec = meta.get(key)
        if isinstance(spec, str):
            try:
                kwargs = json.loads(spec).get("kwargs", {})
            except ValueError:
                continue
            if "maze_map" in kwargs:
                return kwargs["maze_map"]
    return None


def _kitchen_data(t: Task, dataset: str, kind: str, root: str | None,
                  trust: bool, actions: ActionFix) -> tuple[Transitions, dict[str, Any]]:
    from calql_robot.domains.kitchen import D4RL_OBS_DIM, refuse_d4rl_kitchen
    from calql_robot.domains.kitchen import TASKS as SUBTASKS

    if kind == "d4rl":
        data = _d4rl(dataset, actions)
        if data.obs_dim == D4RL_OBS_DIM:
            refuse_d4rl_kitchen(data.source, data.obs_dim, t.minari_id)
    elif kind == "minari":
        from data.minari_local import read_minari
        data = read_minari(dataset, root, obs_keys=("observation",), actions=actions)
    else:
        raise ValueError(f"{t.name}: --format {kind} is not a Kitchen layout (use minari)")
    # Success = all four subtasks solved (reward 4), the env adapter's info['success'].
    return dataclasses.replace(data, success=data.rewards >= len(SUBTASKS)), {}


def _adroit_data(t: Task, dataset: str, kind: str, root: str | None,
                 trust: bool, actions: ActionFix) -> tuple[Transitions, dict[str, Any]]:
    from data.schema import DatasetFormatError
    from data.transitions import binary_success_cut

    if kind == "awac":
        from data.awac import read_awac
        return read_awac(Path(dataset).expanduser(), trust_pickle=trust, actions=actions), {}
    if kind == "d4rl":
        data = _d4rl(dataset, actions)
        if data.success is None:
            raise DatasetFormatError(data.source, "infos/goal_achieved", "missing; the binary "
                                     "Adroit task needs the per-step goal flag")
        return binary_success_cut(data, data.success, "D4RL adroit: reward = goal_achieved - 1"), {}
    raise ValueError(f"{t.name}: Minari's Adroit datasets hold no per-step goal flag for the "
                     f"binary reward; use an AWAC .npy demo file or a D4RL adroit .hdf5 file")


def task_env_options(cfg: TaskExperimentConfig) -> dict[str, Any]:
    """The env options a run used, rebuilt from its config alone (for rollout.py).

    Only AntMaze has any: the frame follows the dataset's layout; a Minari dataset's
    recorded maze is used when the dataset is still where the run found it.
    """
    if TASKS[cfg.task].family != "antmaze":
        return {}
    if resolve_format(cfg.dataset, cfg.format) != "minari":
        return {"frame": "d4rl"}
    from data.minari_local import minari_dataset_dir, read_minari_metadata
    try:
        meta = read_minari_metadata(minari_dataset_dir(cfg.dataset, cfg.minari_root))
    except FileNotFoundError:
        meta = {}
    return {"frame": "gymnasium", "maze_map": _recorded_maze(meta)}


def build_task_domain(cfg: TaskExperimentConfig) -> Domain:
    """Read the dataset, fill the offline buffer (one reward transform), make the env."""
    from data.transitions import buffer_from_transitions, dataset_summary

    data, options = load_task_dataset(cfg.task, cfg.dataset, cfg.format, cfg.minari_root,
                                      cfg.trust_pickle, cfg.out_of_range_actions)
    r = cfg.reward
    offline = buffer_from_transitions(data, cfg.reward.discount, r.scale, r.bias, r.failure_reward)
    s = dataset_summary(data, cfg.reward.discount, r.scale, r.bias, r.failure_reward)
    print(f"offline data: {s['transitions']} transitions, {s['trajectories']} trajectories, "
          f"{s['terminals']} terminals, {s['timeouts']} timeouts, MC return "
          f"[{s['mc_return_min']:.2f}, {s['mc_return_max']:.2f}]")
    render = "rgb_array" if cfg.videos else None
    make_env: Callable[[], gym.Env] = lambda: make_task_env(  # noqa: E731
        cfg.task, cfg.horizon, render, options)
    encoder, record = None, {}
    if cfg.normalize_obs:
        from encoders.normalize import ObsNormalizer
        encoder = ObsNormalizer.from_data(data.observations)
        record = {"obs_normalization": encoder.stats()}
    return Domain(make_env=make_env, offline=offline, feature_dim=int(data.obs_dim), encoder=encoder,
                  record=record)


def task_table() -> str:
    """One line per task for ``--help``."""
    example = {"antmaze": lambda t: f"{t.d4rl_name}.hdf5 or {t.minari_id}",
               "kitchen": lambda t: t.minari_id,
               "adroit": lambda t: f"{t.variant}2_sparse.npy --trust-pickle"}
    rows = [f"  {name:<24} horizon {t.horizon:<5} reward {t.reward.scale:g}r{t.reward.bias:+g}  "
            f"--dataset {example[t.family](t)}" for name, t in TASKS.items()]
    return "\n".join(rows)


def make_rollout_env(cfg: TaskExperimentConfig) -> gym.Env:
    """The env a run trained in, rebuilt from its config alone (frames for videos)."""
    return make_task_env(cfg.task, cfg.horizon, "rgb_array", task_env_options(cfg))

