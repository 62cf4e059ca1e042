"""Shared pieces of the gymnasium-robotics adapters: registration and fast offscreen frames.

ENV.md measured gymnasium-robotics' default offscreen render at 436 ms per Kitchen frame on
these machines; with shadows and reflections off and the offscreen buffer sized to the
frame it drops to 1-27 ms. :func:`fast_render_settings` applies those settings, and also
turns off offscreen multisampling (``offsamples`` 8 -> 0), which on this project's 2-core
machine (software EGL) took a 128 px Kitchen frame from 89 ms to 30 ms with shadows and
reflections already off. Set ``MUJOCO_GL=egl`` for headless rendering.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym

FRAME_SIZE = 128
"""Width and height of evaluation frames (pixels)."""


def register_robotics() -> None:
    """Register gymnasium-robotics' env ids (idempotent); imported lazily, only when used."""
    import gymnasium_robotics

    gym.register_envs(gymnasium_robotics)


def fast_render_settings(mujoco_env: Any, size: int = FRAME_SIZE) -> None:
    """Shadows, reflections and multisampling off; offscreen buffer and frame ``size`` px.

    ``mujoco_env`` is the inner ``MujocoEnv`` (it owns ``model`` and ``mujoco_renderer``).
    Must run before the first ``render()``: the renderer reads the buffer size when it
    creates its context.
    """
    model = mujoco_env.model
    model.vis.global_.offwidth = size
    model.vis.global_.offheight = size
    model.vis.quality.shadowsize = 0
    model.vis.quality.offsamples = 0
    mujoco_env.width = mujoco_env.height = size
    renderer = getattr(mujoco_env, "mujoco_renderer", None)
    if renderer is not None:
        renderer.width = renderer.height = size
        _scene_flags_off(renderer)


def _scene_flags_off(renderer: Any) -> None:
    """Turn the shadow and reflection scene flags off on the renderer's viewers, now and
    whenever it creates one (gymnasium creates the offscreen viewer on first render)."""
    import mujoco

    original = renderer._get_viewer

    def get_viewer(render_mode: str) -> Any:
        viewer = original(render_mode)
        scn = getattr(viewer, "scn", None)
        if scn is not None:
            scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        return viewer

    renderer._get_viewer = get_viewer
