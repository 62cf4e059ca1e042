"""Speed of the dataset path and of the state-domain envs.

Usage: `python bench/data.py [--n 1000000] [--reps 3] [--env-steps 1000] [--render-steps 100]`.

1. Writes an N-transition D4RL-layout HDF5 file (AntMaze-sized: 29-d observations, 8-d
   actions, 1,000-step trajectories, 1% of them closed by a terminal, the rest by a timeout)
   to a temporary
   directory, then times the whole path a run takes: `read_d4rl_hdf5` (h5py read,
   qlearning_dataset semantics, trajectory ends with the discontinuity check) plus
   `buffer_from_transitions` (reward transform, MC returns, replay-buffer fill) =
   `load_1m_s`; and `returns_of` alone (transform + MC returns) = `mc_returns_1m_s`.
   Median over `reps` after one warm-up (the file is in the page cache, as on a rerun).
2. Env steps per second of every domain's adapter with random actions, without rendering
   and with a 128x128 rgb frame per step (MUJOCO_GL=egl, shadows/reflections off).

Prints a table, then one JSON object as its last line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("MUJOCO_GL", "egl")

from bench.timing import median_s  # noqa: E402
from data.d4rl_hdf5 import read_d4rl_hdf5  # noqa: E402
from data.transitions import buffer_from_transitions, returns_of  # noqa: E402
from data.writers import write_d4rl_hdf5  # noqa: E402

GAMMA = 0.99
ENV_TASKS = ("antmaze-umaze", "antmaze-large-diverse", "kitchen-complete", "pen", "door",
             "relocate")


def write_file(path: Path, n: int, seed: int = 0) -> None:
    """N + (#episodes) rows: qlearning_dataset drops one timeout row per 1,000-step episode."""
    rng = np.random.default_rng(seed)
    episodes, total = [], 0
    while total < n:
        t = min(1000, n - total)
        obs = np.cumsum(rng.standard_normal((t + 1, 29), dtype=np.float32) * 0.01, axis=0)
        ep = {"observations": obs, "actions": rng.uniform(-1, 1, (t + 1, 8)).astype(np.float32),
              "rewards": np.zeros(t + 1, np.float32), "terminals": np.zeros(t + 1, bool),
              "timeouts": np.zeros(t + 1, bool)}
        if rng.random() < 0.01:
            ep["terminals"][-1], ep["rewards"][-1] = True, 1.0
        else:
            ep["timeouts"][-1] = True
        episodes.append(ep)
        total += t
    write_d4rl_hdf5(path, episodes)


def bench_load(n: int, reps: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d4rl-layout.hdf5"
        t0 = time.perf_counter()
        write_file(path, n)
        write_s = time.perf_counter() - t0
        data = read_d4rl_hdf5(path)
        read_s = median_s(lambda: read_d4rl_hdf5(path), reps)
        fill_s = median_s(lambda: buffer_from_transitions(data, GAMMA, 10.0, -5.0, 0.0), reps)
        load_s = median_s(lambda: buffer_from_transitions(read_d4rl_hdf5(path), GAMMA, 10.0,
                                                          -5.0, 0.0), reps)
        ret_s = median_s(lambda: returns_of(data, GAMMA, 10.0, -5.0, 0.0), reps)
        return {"transitions": len(data), "trajectories": data.num_trajectories,
                "file_mb": path.stat().st_size / 1e6, "write_s": write_s, "read_s": read_s,
                "buffer_fill_s": fill_s, "load_1m_s": load_s, "mc_returns_1m_s": ret_s}


def env_rate(task: str, steps: int, render: bool) -> float:
    from calql_robot.domains.registry import make_task_env

    env = make_task_env(task, render_mode="rgb_array" if render else None)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    if render:
        env.render()  # the renderer's context is created here: not part of the rate
    done, t0 = 0, time.perf_counter()
    while done < steps:
        _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, env.action_space.shape))
        if render:
            env.render()
        done += 1
        if term or trunc:
            env.reset(seed=done)
    rate = steps / (time.perf_counter() - t0)
    env.close()
    return rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--env-steps", type=int, default=1000)
    p.add_argument("--render-steps", type=int, default=100)
    a = p.parse_args()
    if min(a.n, a.reps, a.env_steps, a.render_steps) < 1:
        p.error("--n, --reps, --env-steps and --render-steps must be >= 1")
    load = bench_load(a.n, a.reps)
    print(f"D4RL-layout file: {load['transitions']:,} transitions, {load['trajectories']:,} "
          f"trajectories, {load['file_mb']:.0f} MB (written in {load['write_s']:.1f} s)")
    for key in ("read_s", "buffer_fill_s", "load_1m_s", "mc_returns_1m_s"):
        print(f"  {key:<16} {load[key]:.3f} s")
    envs = {}
    for task in ENV_TASKS:
        envs[task] = {"steps_per_s": env_rate(task, a.env_steps, False),
                      "steps_per_s_render": env_rate(task, a.render_steps, True)}
        print(f"  {task:<22} {envs[task]['steps_per_s']:>7.0f} steps/s, "
              f"{envs[task]['steps_per_s_render']:>6.0f} steps/s with a 128 px frame")
    print(json.dumps({**{k: round(v, 4) if isinstance(v, float) else v for k, v in load.items()},
                      "env": {t: {k: round(v, 1) for k, v in r.items()} for t, r in envs.items()}}))


if __name__ == "__main__":
    main()
