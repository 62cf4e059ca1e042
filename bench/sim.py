"""Benchmark the pick-and-place sim: single-process env steps/s and parallel collection.

Usage (from the repository root): python bench/sim.py [--steps 400] [--episodes 12]
Prints a table, then one JSON line (the last line) with the numbers. Steps/s counts
env.step calls with uniform random actions (resets excluded from neither: an episode
reset happens every 40 steps, as in real use). The task asks for >= 100 steps/s at 64 px.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from sim import make_pickplace  # noqa: E402
from sim.collect import collect_episodes  # noqa: E402


def env_steps_per_s(n_steps: int, image_size: int = 64, privileged: bool = False) -> float:
    """Random-action steps/s of one env in this process, resets included."""
    env = make_pickplace(1, 2, image_size=image_size, privileged=privileged)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    start = time.perf_counter()
    for _ in range(n_steps):
        _, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, 7).astype(np.float32))
        if terminated or truncated:
            env.reset()
    elapsed = time.perf_counter() - start
    env.close()
    return n_steps / elapsed


def collect_rate(episodes_per_task: int, workers: int) -> tuple[float, float, float]:
    """(episodes/s, steps/s, success rate) of scripted collection at 64 px, noise 0.1."""
    tasks = [(0, 1), (2, 3)]
    start = time.perf_counter()
    eps = collect_episodes(tasks, episodes_per_task, noise=0.1, image_size=64, seed=0,
                           workers=workers, progress=False)
    elapsed = time.perf_counter() - start
    steps = sum(len(e["actions"]) for e in eps)
    return len(eps) / elapsed, steps / elapsed, float(np.mean([e["success"] for e in eps]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--episodes", type=int, default=12, help="per task, 2 tasks")
    args = parser.parse_args()
    out = {}
    for size in (48, 64, 128):
        out[f"steps_per_s_{size}px"] = env_steps_per_s(args.steps, image_size=size)
    out["steps_per_s_state"] = env_steps_per_s(args.steps, privileged=True)
    workers = os.cpu_count() or 1
    eps_s, steps_s, success = collect_rate(args.episodes, workers)
    out.update(collect_workers=workers, collect_episodes_per_s=eps_s,
               collect_steps_per_s=steps_s, collect_success_rate=success)
    print(f"{'measure':<28}{'value':>12}")
    for key, value in out.items():
        print(f"{key:<28}{value:>12.1f}")
    print("(collection includes spawning workers; other processes may share the CPU)")
    print(json.dumps({k: round(v, 2) for k, v in out.items()}))


if __name__ == "__main__":
    main()
