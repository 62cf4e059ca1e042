"""AntMaze on gymnasium-robotics with D4RL's observation, reward, goal and horizon.

The paper's AntMaze tasks are D4RL's (SPEC section 4): reward ``r = 1`` when the ant's torso
is within 0.5 of the goal (0 otherwise; the project's transform makes it ``10r - 5``), the
goal step is terminal (D4RL v2 ``eval=True``), horizon 700 (umaze) / 1000, success = goal
reached. The observation is D4RL's 29-d ``qpos[:15] ++ qvel[:14]``, i.e. the torso's xy
followed by gymnasium-robotics' 27-d ``observation`` (``qpos[2:] ++ qvel``).

**Coordinate frames.** D4RL puts maze cell (row i, col j) at ``(j*s - x0, i*s - y0)`` with
the reset cell at the origin (s = 4); gymnasium-robotics puts it at
``((j+0.5)*s - W*s/2, H*s/2 - (i+0.5)*s)``: centred, and with y pointing *up the rows*, so
the same map list gives the mirror image of D4RL's maze, which no translation can undo. For
``frame="d4rl"`` the adapter therefore hands gymnasium-robotics the map with its rows
reversed; then every cell differs by one constant offset, the env's xy is shifted into D4RL's
frame, and :func:`check_d4rl_frame` verifies at construction that every wall block lands
exactly where D4RL puts it (else it refuses). D4RL's goal noise (``cell + U(0, s/4) +
U(0, s/8)`` per axis, ``maze_env.goal_sampler``) and reset noise (``qpos + U(-0.1, 0.1)``,
``qvel + 0.1 N(0, 1)``) are reproduced.

``frame="gymnasium"`` is for Minari's AntMaze datasets, which were recorded natively in
gymnasium-robotics: its maze list as given, its xy, its goal noise and its 0.45 success
radius, so the online data match the offline ones.

Not checked here: the ant's own MJCF (gymnasium's ``ant.xml``) against D4RL's
``locomotion/assets/ant.xml``; d4rl cannot be installed to compare them.
"""
from __future__ import annotations

from typing import Any, Literal

import gymnasium as gym
import numpy as np

from calql_robot.domains.mujoco_fast import fast_render_settings, register_robotics

R, G = "r", "g"
D4RL_MAPS: dict[str, list[list[Any]]] = {
    # d4rl/locomotion/maze_env.py: U_MAZE_TEST, BIG_MAZE_TEST, HARDEST_MAZE_TEST.
    "umaze": [[1, 1, 1, 1, 1],
              [1, R, 0, 0, 1],
              [1, 1, 1, 0, 1],
              [1, G, 0, 0, 1],
              [1, 1, 1, 1, 1]],
    "medium": [[1, 1, 1, 1, 1, 1, 1, 1],
               [1, R, 0, 1, 1, 0, 0, 1],
               [1, 0, 0, 1, 0, 0, 0, 1],
               [1, 1, 0, 0, 0, 1, 1, 1],
               [1, 0, 0, 1, 0, 0, 0, 1],
               [1, 0, 1, 0, 0, 1, 0, 1],
               [1, 0, 0, 0, 1, 0, G, 1],
               [1, 1, 1, 1, 1, 1, 1, 1]],
    "large": [[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
              [1, R, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1],
              [1, 0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1],
              [1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1],
              [1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1],
              [1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1],
              [1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1, 1],
              [1, 0, 0, 1, 0, 0, 0, 1, 0, G, 0, 1],
              [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]],
}
GR_IDS = {"umaze": "AntMaze_UMaze-v4", "medium": "AntMaze_Medium-v4", "large": "AntMaze_Large-v4"}
HORIZONS = {"umaze": 700, "medium": 1000, "large": 1000}
SCALE = 4.0
D4RL_GOAL_RADIUS = 0.5   # d4rl locomotion/ant.py: reward 1 if ||xy - goal|| <= 0.5
GR_GOAL_RADIUS = 0.45    # gymnasium_robotics maze_v4.compute_reward
OBS_DIM = 29

Frame = Literal["d4rl", "gymnasium"]


def _cell(maze_map: list[list[Any]], mark: str) -> tuple[int, int]:
    return next((i, j) for i, row in enumerate(maze_map) for j, v in enumerate(row) if v == mark)


def d4rl_offset(maze: str) -> np.ndarray:
    """gymnasium-robotics xy minus D4RL xy for the row-reversed map (a constant)."""
    m = D4RL_MAPS[maze]
    i0, j0 = _cell(m, R)
    h, w = len(m), len(m[0])
    return np.array([(j0 + 0.5) * SCALE - w * SCALE / 2, (i0 + 0.5) * SCALE - h * SCALE / 2])


def d4rl_cell_xy(maze: str, i: int, j: int) -> np.ndarray:
    """D4RL's xy of cell (i, j) (``maze_env._rowcol_to_xy`` without noise)."""
    i0, j0 = _cell(D4RL_MAPS[maze], R)
    return np.array([(j - j0) * SCALE, (i - i0) * SCALE])


class AntMazeAdapter(gym.Wrapper):
    """Flat 29-d observation, sparse goal reward, terminal goal step, ``info['success']``."""

    def __init__(self, env: gym.Env, maze: str, frame: Frame) -> None:
        super().__init__(env)
        self.maze, self.frame = maze, frame
        self.offset = d4rl_offset(maze) if frame == "d4rl" else np.zeros(2)
        self.radius = D4RL_GOAL_RADIUS if frame == "d4rl" else GR_GOAL_RADIUS
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
        self.goal = np.zeros(2)  # in this adapter's frame
        if frame == "d4rl":
            self.env.unwrapped.position_noise_range = 0.0  # D4RL noise is applied below
            check_d4rl_frame(self)

    def _flat(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        xy = obs["achieved_goal"] - self.offset
        return np.concatenate([xy, obs["observation"]]).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        inner = self.env.unwrapped
        if self.frame == "d4rl":
            obs = self._d4rl_reset(inner)
        self.goal = np.asarray(inner.goal, dtype=np.float64) - self.offset
        info = {**info, "success": False, "goal": self.goal.copy()}
        return self._flat(obs), info

    def _d4rl_reset(self, inner: Any) -> dict[str, np.ndarray]:
        """D4RL's goal (cell + U(0, s/4) + U(0, s/8)) and ant reset noise, from the env RNG."""
        rng = inner.np_random
        gi, gj = _cell(D4RL_MAPS[self.maze], G)
        goal = d4rl_cell_xy(self.maze, gi, gj) + rng.uniform(0, SCALE * 0.25, 2) \
            + rng.uniform(0, 0.5, 2) * 0.25 * SCALE
        inner.goal = goal + self.offset
        inner.update_target_site_pos()
        ant = inner.ant_env
        qpos = ant.init_qpos + rng.uniform(-0.1, 0.1, ant.model.nq)
        qvel = ant.init_qvel + rng.standard_normal(ant.model.nv) * 0.1
        ant.set_state(qpos, qvel)
        return inner._get_obs(ant._get_obs())

    def step(self, action: np.ndarray):
        obs, _, _, truncated, info = self.env.step(action)
        flat = self._flat(obs)
        reached = bool(np.linalg.norm(flat[:2] - self.goal) <= self.radius)
        info = {**info, "success": reached}
        return flat, float(reached), reached, bool(truncated and not reached), info


def check_d4rl_frame(adapter: AntMazeAdapter) -> None:
    """Refuse unless every D4RL wall block sits exactly on a gymnasium-robotics block.

    The reversed map puts D4RL row i at gymnasium-robotics row ``H-1-i``; each block's
    position minus the offset must equal D4RL's ``(j*s - x0, i*s - y0)``.
    """
    m = D4RL_MAPS[adapter.maze]
    model = adapter.env.unwrapped.ant_env.model
    import mujoco

    h = len(m)
    for i, row in enumerate(m):
        for j, v in enumerate(row):
            if v != 1:
                continue
            gid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, f"block_{h - 1 - i}_{j}")
            got = model.geom_pos[gid][:2] - adapter.offset if gid >= 0 else None
            if got is None or not np.allclose(got, d4rl_cell_xy(adapter.maze, i, j), atol=1e-9):
                raise RuntimeError(
                    f"antmaze-{adapter.maze}: wall ({i}, {j}) is at {got} after mapping, D4RL "
                    f"has it at {d4rl_cell_xy(adapter.maze, i, j)}; the D4RL->gymnasium-robotics "
                    f"frame mapping does not hold for this gymnasium-robotics version, refusing "
                    f"to run D4RL data in a different maze")


def make_antmaze(maze: str, frame: Frame = "d4rl", horizon: int | None = None,
                 render_mode: str | None = None, maze_map: list[list[Any]] | None = None) -> gym.Env:
    """The adapter over ``AntMaze_*-v4`` with the paper's horizon (or ``horizon``).

    ``maze_map`` overrides the gymnasium-frame map (e.g. a Minari dataset's eval env spec).
    """
    if maze not in D4RL_MAPS:
        raise ValueError(f"unknown maze {maze!r}; choose from {sorted(D4RL_MAPS)}")
    register_robotics()
    if frame == "d4rl":
        layout = [list(r) for r in reversed(D4RL_MAPS[maze])]
    elif frame == "gymnasium":
        layout = maze_map if maze_map is not None else D4RL_MAPS[maze]
    else:
        raise ValueError(f"frame must be 'd4rl' or 'gymnasium', got {frame!r}")
    env = gym.make(GR_IDS[maze], maze_map=layout, continuing_task=True, reset_target=False,
                   max_episode_steps=horizon or HORIZONS[maze], render_mode=render_mode,
                   disable_env_checker=True)
    if render_mode is not None:
        fast_render_settings(env.unwrapped.ant_env)
    return AntMazeAdapter(env, maze, frame)
