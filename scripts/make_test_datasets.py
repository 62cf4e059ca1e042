"""Write small datasets in each real layout from rollouts in the real environments.

The real D4RL / Minari / AWAC files cannot be downloaded here, so this rolls out a uniform
random policy in the project's env adapters (gymnasium-robotics AntMaze, FrankaKitchen,
Adroit door) and stores the episodes exactly as each format lays them out:

    antmaze-umaze.hdf5                D4RL HDF5, D4RL frame (29-d), timeouts and terminals
    minari/test/antmaze/umaze-v0/     Minari (dict obs achieved_goal/desired_goal/observation)
    minari/test/kitchen/complete-v0/  Minari (dict obs with nested per-task goal dicts)
    kitchen-d4rl60.hdf5               D4RL kitchen layout (60-d rows), which must be refused
    door2_sparse.npy, door_bc_sparse4.npy   AWAC pickles (expert and BC styles)
    door-human.hdf5                   D4RL adroit layout with infos/goal_achieved

A random policy almost never reaches a goal, so half of the episodes start from a state
near the goal (ant sliding towards it from 0.7-1 m, microwave already open, door
swinging open from 0.9-1.3 rad); the rest start from the env's own reset. Every step after that is a real
env step. Usage:

    python scripts/make_test_datasets.py --out datasets/test
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from calql_robot.domains.registry import make_task_env  # noqa: E402
from calql_robot.rollouts import run_episode  # noqa: E402
from data.writers import write_awac_npy, write_d4rl_hdf5, write_minari  # noqa: E402

Episode = dict[str, Any]


def rollout(env: Any, seed: int, near_goal: Callable[[Any, np.random.Generator], np.ndarray] | None,
            rng: np.random.Generator) -> Episode:
    """One episode of uniform random actions (the project's one policy rollout loop);
    ``near_goal`` may move the start state."""
    start = None if near_goal is None else (lambda obs: near_goal(env, rng))
    episode = run_episode(env, lambda obs: rng.uniform(-1, 1, env.action_space.shape).astype(np.float32), seed,
                          after_reset=start)
    return {**{k: episode[k] for k in ("observations", "actions", "rewards", "terminals", "timeouts")},
            "goal_achieved": episode["step_success"], "seed": seed}


def ant_near_goal(env: Any, rng: np.random.Generator) -> np.ndarray:
    """Put the ant's torso 0.7-1.0 from the goal, sliding towards it at 1.5-3 m/s."""
    inner = env.unwrapped
    ant = inner.ant_env
    qpos, qvel = ant.data.qpos.copy(), np.zeros_like(ant.data.qvel)
    angle = rng.uniform(0, 2 * np.pi)
    away = np.array([np.cos(angle), np.sin(angle)])
    qpos[:2] = env.goal + env.offset + rng.uniform(0.7, 1.0) * away
    qvel[:2] = -rng.uniform(1.5, 3.0) * away
    ant.set_state(qpos, qvel)
    return env._flat(inner._get_obs(ant._get_obs()))


def kitchen_microwave_open(env: Any, rng: np.random.Generator) -> np.ndarray:
    """Start with the microwave at its goal angle (-0.75 rad; index 22 of qpos)."""
    inner = env.unwrapped
    robot = inner.robot_env
    qpos, qvel = robot.data.qpos.copy(), robot.data.qvel.copy()
    qpos[22] = -0.75
    robot.set_state(qpos, qvel)
    return np.asarray(inner._get_obs(robot._get_obs())["observation"], np.float32)


def door_nearly_open(env: Any, rng: np.random.Generator) -> np.ndarray:
    """Start with the door hinge at U(0.9, 1.3) rad swinging open at U(1, 3) rad/s (success
    is hinge >= 1.35), so that success comes after a few steps, not at the first one."""
    inner = env.unwrapped
    qpos, qvel = inner.data.qpos.copy(), inner.data.qvel.copy()
    qpos[inner.door_hinge_addrs] = rng.uniform(0.9, 1.3)
    qvel[inner.door_hinge_addrs] = rng.uniform(1.0, 3.0)
    inner.set_state(qpos, qvel)
    return np.asarray(inner._get_obs(), np.float32)


def collect(task: str, episodes: int, horizon: int, seed: int,
            near_goal: Callable | None, env_options: dict | None = None) -> list[Episode]:
    env = make_task_env(task, horizon=horizon, env_options=env_options)
    rng = np.random.default_rng(seed)
    try:
        return [rollout(env, seed + i, near_goal if i % 2 == 0 else None, rng)
                for i in range(episodes)]
    finally:
        env.close()


def _antmaze_minari(root: Path, eps: list[Episode], goal: np.ndarray) -> None:
    import gymnasium as gym

    box = lambda n: gym.spaces.Box(-np.inf, np.inf, (n,), np.float64)  # noqa: E731
    space = gym.spaces.Dict({"achieved_goal": box(2), "desired_goal": box(2),
                             "observation": box(27)})
    dict_eps = [{**ep, "observations": {
        "achieved_goal": ep["observations"][:, :2].astype(np.float64),
        "desired_goal": np.repeat(goal[None], len(ep["observations"]), 0),
        "observation": ep["observations"][:, 2:].astype(np.float64)}} for ep in eps]
    write_minari(root, "test/antmaze/umaze-v0", dict_eps, space,
                 gym.spaces.Box(-1, 1, (8,), np.float32))


def _kitchen_minari(root: Path, eps: list[Episode]) -> None:
    import gymnasium as gym

    box = lambda n: gym.spaces.Box(-np.inf, np.inf, (n,), np.float64)  # noqa: E731
    goals = {"microwave": 1, "kettle": 7}
    space = gym.spaces.Dict({"achieved_goal": gym.spaces.Dict({k: box(n) for k, n in goals.items()}),
                             "observation": box(59)})
    dict_eps = []
    for ep in eps:
        obs = ep["observations"].astype(np.float64)
        # achieved goals are object joint positions inside the 59-d vector (qpos[22], qpos[23:30]).
        ach = {"microwave": obs[:, 18 + 13:18 + 14], "kettle": obs[:, 18 + 14:18 + 21]}
        dict_eps.append({**ep, "observations": {"achieved_goal": ach, "observation": obs}})
    write_minari(root, "test/kitchen/complete-v0", dict_eps, space,
                 gym.spaces.Box(-1, 1, (9,), np.float32))


def _kitchen_d4rl60(eps: list[Episode]) -> list[Episode]:
    """D4RL's kitchen row: robot qpos (9) ++ object qpos (21) ++ goal (30)."""
    out = []
    for ep in eps:
        obs = ep["observations"]
        goal = np.zeros((len(obs), 30), np.float32)
        out.append({**ep, "observations": np.concatenate([obs[:, :9], obs[:, 18:39], goal], 1)})
    return out


def make_all(out: Path, seed: int = 0, episodes: int = 6, horizon: int = 20) -> dict[str, Any]:
    """Write every layout under ``out``; return {name: (path, episodes)} for the tests."""
    out.mkdir(parents=True, exist_ok=True)
    made: dict[str, Any] = {}
    ant = collect("antmaze-umaze", episodes, horizon, seed, ant_near_goal)
    write_d4rl_hdf5(out / "antmaze-umaze.hdf5", ant)
    made["antmaze_d4rl"] = (out / "antmaze-umaze.hdf5", ant)

    gr_env = make_task_env("antmaze-umaze", horizon=horizon, env_options={"frame": "gymnasium"})
    gr_env.reset(seed=seed)
    goal = gr_env.goal.copy()
    gr_env.close()
    ant_gr = collect("antmaze-umaze", episodes, horizon, seed + 100, ant_near_goal,
                     {"frame": "gymnasium"})
    _antmaze_minari(out / "minari", ant_gr, goal)
    made["antmaze_minari"] = ("test/antmaze/umaze-v0", ant_gr)

    kit = collect("kitchen-complete", episodes, horizon, seed + 200, kitchen_microwave_open)
    _kitchen_minari(out / "minari", kit)
    made["kitchen_minari"] = ("test/kitchen/complete-v0", kit)
    write_d4rl_hdf5(out / "kitchen-d4rl60.hdf5", _kitchen_d4rl60(kit))
    made["kitchen_d4rl60"] = (out / "kitchen-d4rl60.hdf5", kit)

    door = collect("door", episodes, horizon, seed + 300, door_nearly_open)
    write_awac_npy(out / "door2_sparse.npy", door, "expert")
    write_awac_npy(out / "door_bc_sparse4.npy", door, "bc")
    write_d4rl_hdf5(out / "door-human.hdf5", door)
    made["door_awac_expert"] = (out / "door2_sparse.npy", door)
    made["door_awac_bc"] = (out / "door_bc_sparse4.npy", door)
    made["door_d4rl"] = (out / "door-human.hdf5", door)
    return made


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("datasets/test"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--episodes", type=int, default=6, help="episodes per dataset")
    p.add_argument("--horizon", type=int, default=20, help="time limit of the rollouts")
    args = p.parse_args()
    made = make_all(args.out, args.seed, args.episodes, args.horizon)
    summary = {name: {"path": str(path), "episodes": len(eps),
                      "steps": int(sum(len(e["rewards"]) for e in eps)),
                      "successes": int(sum(e["goal_achieved"].any() for e in eps))}
               for name, (path, eps) in made.items()}
    for name, s in summary.items():
        print(f"{name:<18} {s['steps']:>5} steps, {s['episodes']} episodes, "
              f"{s['successes']} reach the goal: {s['path']}")
    print(f"Minari root for the Minari ids: {args.out / 'minari'}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
