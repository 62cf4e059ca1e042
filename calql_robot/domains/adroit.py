"""Adroit pen, door and relocate as binary tasks (SPEC section 4), on gymnasium-robotics.

Reward ``goal_achieved - 1`` in {-1, 0} (the project's transform makes it ``10r + 5`` =
{-5, +5}; raw failure reward -1), online episodes end at the first success (terminal),
horizons pen 100 / door 200 / relocate 200, success = goal achieved at any step. The
observations (pen 45, door 39, relocate 39 floats) are the mj_envs hand_dapg ones that the
AWAC demo files and D4RL's adroit v1 files hold, so data load without a mapping;
goal_achieved is gymnasium-robotics' ``info['success']``.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np

from calql_robot.domains.mujoco_fast import fast_render_settings, register_robotics

GR_IDS = {"pen": "AdroitHandPen-v1", "door": "AdroitHandDoor-v1",
          "relocate": "AdroitHandRelocate-v1"}
HORIZONS = {"pen": 100, "door": 200, "relocate": 200}
OBS_DIMS = {"pen": 45, "door": 39, "relocate": 39}
ACTION_DIMS = {"pen": 24, "door": 28, "relocate": 30}


class AdroitBinaryAdapter(gym.Wrapper):
    """Binary reward from the env's goal flag; the first success is terminal."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        shape = env.observation_space.shape
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape, np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        return np.asarray(obs, np.float32), {**info, "success": False}

    def step(self, action: np.ndarray):
        obs, _, _, truncated, info = self.env.step(action)
        reached = bool(info.get("success", False))
        return np.asarray(obs, np.float32), float(reached) - 1.0, reached, \
            bool(truncated and not reached), {**info, "success": reached}


def make_adroit(task: str, horizon: int | None = None, render_mode: str | None = None) -> gym.Env:
    """``AdroitHand{Pen,Door,Relocate}-v1`` with the binary reward and the paper's horizon."""
    if task not in GR_IDS:
        raise ValueError(f"unknown Adroit task {task!r}; choose from {sorted(GR_IDS)}")
    register_robotics()
    env = gym.make(GR_IDS[task], max_episode_steps=horizon or HORIZONS[task],
                   render_mode=render_mode, disable_env_checker=True)
    if render_mode is not None:
        fast_render_settings(env.unwrapped)
    return AdroitBinaryAdapter(env)
