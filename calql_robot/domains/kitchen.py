"""Franka Kitchen on gymnasium-robotics (``FrankaKitchen-v1``) with the paper's reward.

SPEC section 4 (official D4RL kitchen fork): the four subtasks microwave, kettle, light
switch and slide cabinet; reward = number of them solved so far in the episode (0..4), no
termination when all are solved, horizon 1000; score = solved / 4, reported in
``info['score']``, and ``info['success']`` is True once all four are solved.

The observation is gymnasium-robotics' 59-d ``observation``: robot joint positions (9) and
velocities (9), object positions (21) and velocities (20). D4RL's kitchen files hold 60-d
rows: robot positions (9), object positions (21) and the 30-d goal, **no velocities**.
Velocities cannot be recovered exactly from positions sampled every 80 ms (and D4RL adds
observation noise to them), so there is no exact map from D4RL's 60-d rows to this env and
:func:`refuse_d4rl_kitchen` says so; the Minari datasets ``D4RL/kitchen/{complete,partial,
mixed}-v2`` were recorded in ``FrankaKitchen-v1`` and load as they are.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np

from calql_robot.domains.mujoco_fast import fast_render_settings, register_robotics

TASKS = ("microwave", "kettle", "light switch", "slide cabinet")
HORIZON = 1000
OBS_DIM = 59
D4RL_OBS_DIM = 60


def refuse_d4rl_kitchen(source: str, obs_dim: int, minari_id: str) -> None:
    """Raise the one-line explanation for a D4RL (60-d) kitchen file."""
    from data.schema import DatasetFormatError

    raise DatasetFormatError(
        source, "observations",
        f"{obs_dim}-d D4RL kitchen rows (robot qpos 9 + object qpos 21 + goal 30, no "
        f"velocities) cannot be mapped exactly onto gymnasium-robotics FrankaKitchen-v1's "
        f"59-d observation (qpos 9 + qvel 9 + object qpos 21 + object qvel 20); use the "
        f"Minari dataset {minari_id}, recorded in that env")


class KitchenAdapter(gym.Wrapper):
    """Flat 59-d observation; reward = #subtasks solved so far; never terminates."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
        self.solved: set[str] = set()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.solved = set()
        return np.asarray(obs["observation"], np.float32).copy(), {**info, "success": False,
                                                                 "score": 0.0}

    def step(self, action: np.ndarray):
        obs, _, _, truncated, info = self.env.step(action)
        self.solved |= set(info.get("step_task_completions", ())) & set(TASKS)
        n = len(self.solved)
        info = {**info, "success": n == len(TASKS), "score": n / len(TASKS)}
        return np.asarray(obs["observation"], np.float32).copy(), float(n), False, \
            bool(truncated), info


def make_kitchen(horizon: int | None = None, render_mode: str | None = None) -> gym.Env:
    """``FrankaKitchen-v1`` with the four subtasks, no termination on completion."""
    register_robotics()
    env = gym.make("FrankaKitchen-v1", tasks_to_complete=list(TASKS),
                   terminate_on_tasks_completed=False, remove_task_when_completed=True,
                   max_episode_steps=horizon or HORIZON, render_mode=render_mode,
                   disable_env_checker=True)
    if render_mode is not None:
        fast_render_settings(env.unwrapped.robot_env)
    return KitchenAdapter(env)
