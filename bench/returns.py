"""Speed of the data path: MC returns on 1M transitions and image-buffer sampling.

Usage: `python bench/returns.py [--n 1000000] [--reps 3] [--buffer 20000] [--batch 256]`.
Times `data.returns.mc_returns` on N transitions cut three ways (trajectories of ~1000
steps, one N-long trajectory, N length-1 trajectories; gamma=0.99, with the failure rule),
then `EpisodeReplayBuffer.sample` and `data.mixing.sample_mixed` on a 64x64x3 uint8 image
buffer of 40-step episodes. Prints a table, then one JSON object as the last line (seconds
for returns, median over `reps` after one warm-up; batches per second for sampling).
Runs in well under a minute on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.timing import median_s  # noqa: E402
from data.mixing import sample_mixed  # noqa: E402
from data.replay import EpisodeReplayBuffer  # noqa: E402
from data.returns import mc_returns  # noqa: E402

GAMMA = 0.99
HORIZON = 40
PIXEL_SPEC = {"image": ((64, 64, 3), np.uint8), "state": ((10,), np.float32),
              "task": ((10,), np.float32)}


def returns_cases(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """End masks: lengths ~1000 (uniform 900..1100), one trajectory, length-1 trajectories."""
    lengths = rng.integers(900, 1101, size=n // 900 + 1)
    ends_1000 = np.zeros(n, bool)
    ends_1000[np.cumsum(lengths)[np.cumsum(lengths) <= n] - 1] = True
    single = np.zeros(n, bool)
    for ends in (ends_1000, single):
        ends[-1] = True
    return {"len~1000": ends_1000, "single": single, "len=1": np.ones(n, bool)}


def bench_returns(n: int, reps: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    rewards = np.where(rng.random(n) < 0.01, 5.0, -5.0).astype(np.float32)
    return {name: median_s(lambda e=ends: mc_returns(rewards, e, GAMMA, -5.0), reps)
            for name, ends in returns_cases(n, rng).items()}


def pixel_buffer(transitions: int) -> EpisodeReplayBuffer:
    """Image buffer of 40-step episodes filled with random frames."""
    rng = np.random.default_rng(1)
    n_eps = transitions // HORIZON
    buf = EpisodeReplayBuffer(PIXEL_SPEC, 4, capacity=n_eps * HORIZON,
                              obs_capacity=n_eps * (HORIZON + 1))
    obs = {"image": rng.integers(0, 256, size=(HORIZON + 1, 64, 64, 3), dtype=np.uint8),
           "state": rng.normal(size=(HORIZON + 1, 10)).astype(np.float32),
           "task": np.zeros((HORIZON + 1, 10), np.float32)}
    flags = np.r_[np.zeros(HORIZON - 1, bool), True]
    episode = {"observations": obs, "actions": np.zeros((HORIZON, 4), np.float32),
               "rewards": np.zeros(HORIZON, np.float32), "terminals": np.zeros(HORIZON, bool),
               "timeouts": flags}
    buf.add_episodes([episode] * n_eps, GAMMA, failure_reward=0.0)
    return buf


def bench_sampling(transitions: int, batch: int, reps: int) -> dict[str, float]:
    t0 = time.perf_counter()
    buf = pixel_buffer(transitions)
    fill_s = time.perf_counter() - t0
    online = pixel_buffer(transitions // 4)
    rng = np.random.default_rng(2)
    n_batches = 50
    sample_s = median_s(lambda: [buf.sample(batch, rng) for _ in range(n_batches)], reps)
    mixed_s = median_s(lambda: [sample_mixed(buf, online, batch, 0.5, rng)
                                for _ in range(n_batches)], reps)
    return {"fill_s": fill_s, "transitions": len(buf), "bytes_per_transition":
            buf.bytes_per_transition, "sample_batches_per_s": n_batches / sample_s,
            "mixed_batches_per_s": n_batches / mixed_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="transitions for mc_returns")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--buffer", type=int, default=20_000, help="image buffer transitions")
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    ret = bench_returns(args.n, args.reps)
    for name, sec in ret.items():
        print(f"mc_returns  N={args.n:<9d} {name:9s} {sec * 1e3:8.1f} ms")
    smp = bench_sampling(args.buffer, args.batch, args.reps)
    print(f"buffer fill {smp['transitions']} transitions 64x64x3: {smp['fill_s']:.2f} s, "
          f"{smp['bytes_per_transition']:.0f} B/transition")
    print(f"sample      B={args.batch} 64x64x3: {smp['sample_batches_per_s']:8.1f} batches/s")
    print(f"sample_mixed B={args.batch} m=0.5:   {smp['mixed_batches_per_s']:8.1f} batches/s")
    print(json.dumps({
        "n": args.n, "batch": args.batch,
        "mc_returns_1m_s": ret["len~1000"], "mc_returns_single_traj_s": ret["single"],
        "mc_returns_len1_s": ret["len=1"],
        "sample_batches_per_s_64px": smp["sample_batches_per_s"],
        "sample_mixed_batches_per_s_64px": smp["mixed_batches_per_s"],
        "bytes_per_transition_64px": smp["bytes_per_transition"],
        "buffer_transitions": smp["transitions"], "buffer_fill_s": smp["fill_s"],
    }))


if __name__ == "__main__":
    main()
