"""PTR-style pick-and-place simulator (pybullet, DIRECT mode); see sim/pickplace_env.py.

Importing registers `PickPlace-v0` (dict observation with image) and `PickPlaceState-v0`
(flat privileged state, no image), both with the 40-step TimeLimit of the PTR task.
"""
from __future__ import annotations

import gymnasium as gym
from gymnasium.wrappers import TimeLimit

from sim.pickplace_env import PickPlaceEnv

MAX_EPISODE_STEPS = 40
_ENTRY = "sim.pickplace_env:PickPlaceEnv"

__all__ = ["MAX_EPISODE_STEPS", "PickPlaceEnv", "make_pickplace"]


def make_pickplace(target: int = 0, distractor: int = 0, image_size: int = 64,
                   privileged: bool = False, render_size: int = 256, **kw) -> gym.Env:
    """A PickPlaceEnv for task (target, distractor) wrapped in the 40-step TimeLimit.

    Extra keyword arguments (render_mode, substeps, action_scale, yaw_scale) go to the env.
    A timeout is reported as truncated=True, never terminated (SPEC: timeouts are not dones).
    """
    env = PickPlaceEnv(target=target, distractor=distractor, image_size=image_size,
                       privileged=privileged, render_size=render_size, **kw)
    return TimeLimit(env, max_episode_steps=MAX_EPISODE_STEPS)


def _register() -> None:
    """Register both ids once; re-importing (or reloading) the module is a no-op."""
    for env_id, kwargs in (("PickPlace-v0", {}), ("PickPlaceState-v0", {"privileged": True})):
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=_ENTRY, max_episode_steps=MAX_EPISODE_STEPS,
                         kwargs=kwargs)


_register()
