"""Speed of the visual agent: learner updates/s (shared conv encoder + random shift, batch
256 and the cpu preset's batch, at the cpu preset's image size) and image-buffer sampling.

    python bench/visual.py [--threads 2] [--seconds 15] [--preset cpu]

Synthetic uint8 frames and vectors with the pick-and-place observation layout (state 10,
task one-hot 10, action 7); the learner is the `visual` preset (critics 256x4, actor 256x2,
10 CQL actions, max backup over k=4). Each rate is the median of timed windows after two
warm-up updates. Buffer throughput is `EpisodeReplayBuffer.sample` (uniform indices,
gather of obs and next-obs frames by row) of 40-step episodes. The last line is one JSON
object with `updates_per_s` (batch 256), `updates_per_s_default_batch`, `bytes_per_transition`,
`frame_bytes` and the sampling rates.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from calql_robot.agents.base import AgentSpec  # noqa: E402
from calql_robot.agents.calql_learner import CalQLLearner  # noqa: E402
from calql_robot.perf import tune_malloc  # noqa: E402
from calql_robot.domains.pickplace_visual import PRESETS, make_visual_modules  # noqa: E402
from data.replay import EpisodeReplayBuffer  # noqa: E402

STATE_DIM, TASK_DIM, ACTION_DIM, HORIZON = 10, 10, 7, 40


def obs_spec(px: int) -> dict:
    return {"image": ((px, px, 3), np.uint8), "state": ((STATE_DIM,), np.float32),
            "task": ((TASK_DIM,), np.float32)}


def filled_buffer(px: int, episodes: int, rng: np.random.Generator) -> EpisodeReplayBuffer:
    """`episodes` random 40-step episodes, loaded through the bulk path the domain uses."""
    n, rows = episodes * HORIZON, episodes * (HORIZON + 1)
    obs = {"image": rng.integers(0, 256, (rows, px, px, 3), dtype=np.uint8),
           "state": rng.standard_normal((rows, STATE_DIM)).astype(np.float32),
           "task": np.zeros((rows, TASK_DIM), np.float32)}
    timeouts = np.zeros(n, bool)
    timeouts[HORIZON - 1::HORIZON] = True
    buf = EpisodeReplayBuffer(obs_spec(px), ACTION_DIM, n, obs_capacity=rows)
    buf.add_episode_arrays(obs, rng.uniform(-1, 1, (n, ACTION_DIM)).astype(np.float32),
                           np.zeros(n, np.float32), np.zeros(n, bool), timeouts,
                           np.full(episodes, HORIZON), gamma=0.99, failure_reward=0.0)
    return buf


def updates_per_s(cfg, buf: EpisodeReplayBuffer, batch_size: int, seconds: float,
                  rng: np.random.Generator) -> float:
    """Median rate over ~1 s windows; batches are pre-sampled so only the update is timed."""
    px = buf.obs_spec["image"][0][0]
    encoder, augment, feature_dim = make_visual_modules(cfg, _space(px))
    learner = CalQLLearner(cfg.learner, AgentSpec(feature_dim, ACTION_DIM, cfg.reward.discount, encoder, augment, "cpu"))
    batches = [buf.sample(batch_size, rng) for _ in range(4)]
    for b in batches[:2]:
        learner.update(b)
    rates, deadline, i = [], time.perf_counter() + seconds, 0
    while time.perf_counter() < deadline or len(rates) < 2:
        start, count = time.perf_counter(), 0
        while count == 0 or time.perf_counter() - start < 1.0:
            learner.update(batches[i % len(batches)])
            i, count = i + 1, count + 1
        rates.append(count / (time.perf_counter() - start))
    return float(np.median(rates))


def _space(px: int):
    """The pick-and-place Dict observation space (what the encoder is sized from)."""
    import gymnasium as gym

    return gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (px, px, 3), np.uint8),
                            "state": gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32),
                            "task": gym.spaces.Box(0.0, 1.0, (TASK_DIM,), np.float32)})


def sampling_per_s(buf: EpisodeReplayBuffer, batch_size: int, rng: np.random.Generator,
                   seconds: float = 2.0) -> float:
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        buf.sample(batch_size, rng)
        count += 1
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--seconds", type=float, default=15.0, help="timing budget per learner rate")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                        help="preset giving the image size, encoder and default batch")
    parser.add_argument("--episodes", type=int, default=500, help="episodes in the sampled buffer")
    args = parser.parse_args()
    tune_malloc()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = PRESETS[args.preset]
    px, default_batch = cfg.data.image_size, cfg.loop.batch_size
    rng = np.random.default_rng(0)
    buf = filled_buffer(px, args.episodes, rng)
    frame_bytes = px * px * 3
    print(f"image {px}x{px}x3 ({frame_bytes} B), encoder {cfg.encoder.kind}, threads {args.threads}, "
          f"{platform.processor() or platform.machine()}, load {os.getloadavg()[0]:.2f}")
    print(f"buffer: {len(buf)} transitions, {buf.nbytes / 2**20:.1f} MiB, {buf.bytes_per_transition:.0f} B/transition")
    s256 = sampling_per_s(buf, 256, rng)
    s_def = sampling_per_s(buf, default_batch, rng)
    print(f"sampling: {s256:.0f} batches/s at 256, {s_def:.0f} batches/s at {default_batch}")
    u_def = updates_per_s(cfg, buf, default_batch, args.seconds, rng)
    print(f"learner: {u_def:.2f} updates/s at batch {default_batch}")
    u256 = updates_per_s(cfg, buf, 256, args.seconds, rng)
    print(f"learner: {u256:.2f} updates/s at batch 256")
    print(json.dumps({"updates_per_s": round(u256, 3), "updates_per_s_default_batch": round(u_def, 3),
                      "default_batch": default_batch, "image_size": px, "encoder": cfg.encoder.kind,
                      "threads": args.threads, "bytes_per_transition": round(buf.bytes_per_transition, 1),
                      "frame_bytes": frame_bytes, "sample_batches_per_s_256": round(s256, 1),
                      "sample_batches_per_s_default_batch": round(s_def, 1),
                      "loadavg_1min": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
