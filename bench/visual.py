"""Speed of the visual agent: learner updates/s (shared conv encoder + random shift, batch
256 and the cpu preset's batch, at the cpu preset's image size) and image-buffer sampling.

    python bench/visual.py [--threads 2] [--seconds 15] [--preset cpu]

Synthetic uint8 frames and vectors with the pick-and-place observation layout (state 10,
task one-hot 10, action 7); the learner is the `visual` preset (critics 256x4, actor 256x2,
10 CQL actions, max backup over k=4). Each rate is the median of timed windows after two
warm-up updates. Buffer throughput is `EpisodeReplayBuffer.sample` (uniform indices,
gather of obs and next-obs frames by row) of 40-step episodes. The last line is one JSON
object with `updates_per_s` (batch 256), `updates_per_s_default_batch`, `bytes_per_transition`,
`frame_bytes` and the sampling rates, and, where the device multiplies bf16 natively (or
with `--bf16 force`), the same learner under `--run.precision bf16` timed in turns with fp32
(`bf16_speedup`, `bf16_speedup_default_batch`), with the CPU model and its bf16 units.
`--profile` prints where an update's time goes at each batch size.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.hardware import machine, sync  # noqa: E402
from calql_robot.agents.base import AgentSpec, batch_to_torch  # noqa: E402
from calql_robot.agents.calql_learner import CalQLLearner  # noqa: E402
from calql_robot.domains.pickplace_visual import PRESETS, make_visual_modules  # noqa: E402
from calql_robot.perf import tune_malloc  # noqa: E402
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


def make_learner(cfg, px: int, device: torch.device, precision: str = "fp32") -> CalQLLearner:
    """The visual preset's learner (encoder, random shift, critics, actor) from seed 0."""
    torch.manual_seed(0)
    encoder, augment, feature_dim = make_visual_modules(cfg, _space(px))
    return CalQLLearner(cfg.learner, AgentSpec(feature_dim, ACTION_DIM, cfg.reward.discount, encoder, augment,
                                               device, precision=precision))


def updates_per_s(learners: dict[str, CalQLLearner], buf: EpisodeReplayBuffer, batch_size: int, seconds: float,
                  rng: np.random.Generator, device: torch.device) -> dict[str, float]:
    """Median rate of each learner over ~1 s windows, the learners taking turns window by
    window (so a drifting shared machine slows them alike); batches are pre-sampled and on
    the device, so only the update is timed."""
    batches = [batch_to_torch(buf.sample(batch_size, rng), device) for _ in range(4)]
    for learner in learners.values():
        for b in batches[:2]:
            learner.update(b)
    rates: dict[str, list[float]] = {name: [] for name in learners}
    deadline, i = time.perf_counter() + seconds, 0
    while time.perf_counter() < deadline or min(len(r) for r in rates.values()) < 2:
        for name, learner in learners.items():
            sync(device)
            start, count = time.perf_counter(), 0
            while count == 0 or time.perf_counter() - start < 1.0:
                learner.update(batches[i % len(batches)])
                i, count = i + 1, count + 1
            sync(device)
            rates[name].append(count / (time.perf_counter() - start))
    return {name: float(np.median(r)) for name, r in rates.items()}


def print_profile(learner: CalQLLearner, buf: EpisodeReplayBuffer, batch_size: int, rng: np.random.Generator,
                  device: torch.device, updates: int = 4) -> None:
    """Where one update's time goes, op by op (profiler overhead included)."""
    from torch.profiler import ProfilerActivity, profile  # lazy: only with --profile

    batches = [batch_to_torch(buf.sample(batch_size, rng), device) for _ in range(updates)]
    learner.update(batches[0])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for b in batches:
            learner.update(b)
    print(f"torch.profiler, {updates} updates at batch {batch_size}:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=40))


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
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--bf16", choices=("auto", "force", "skip"), default="auto",
                        help="time the learner in bf16 beside fp32: where the device has native bf16 (auto), "
                             "always (force: emulated bf16 is ~100x slower per matmul), or never")
    parser.add_argument("--profile", action="store_true", help="also print a torch.profiler table at each batch size")
    args = parser.parse_args()
    tune_malloc()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = PRESETS[args.preset]
    px, default_batch = cfg.data.image_size, cfg.loop.batch_size
    rng = np.random.default_rng(0)
    buf = filled_buffer(px, args.episodes, rng)
    frame_bytes = px * px * 3
    hw = machine(device)
    print(f"image {px}x{px}x3 ({frame_bytes} B), encoder {cfg.encoder.kind}, threads {args.threads}, "
          f"{hw['cpu']} (bf16 units: {hw['cpu_bf16_units'] or 'none'}), {hw.get('gpu', device)}, "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"buffer: {len(buf)} transitions, {buf.nbytes / 2**20:.1f} MiB, {buf.bytes_per_transition:.0f} B/transition")
    s256 = sampling_per_s(buf, 256, rng)
    s_def = sampling_per_s(buf, default_batch, rng)
    print(f"sampling: {s256:.0f} batches/s at 256, {s_def:.0f} batches/s at {default_batch}")
    timed_bf16 = args.bf16 == "force" or (args.bf16 == "auto" and hw["bf16_native"])
    precisions = ("fp32", "bf16") if timed_bf16 else ("fp32",)
    rates = {}
    for batch in (default_batch, 256):
        learners = {p: make_learner(cfg, px, device, p) for p in precisions}
        rates[batch] = updates_per_s(learners, buf, batch, args.seconds, rng, device)
        shown = ", ".join(f"{rates[batch][p]:.2f} updates/s in {p}" for p in precisions)
        print(f"learner at batch {batch}: {shown}")
        if args.profile:
            print_profile(learners["fp32"], buf, batch, rng, device)
    if not timed_bf16:
        print("bf16: not timed (no native bf16 here; --bf16 force times it emulated)")

    def speedup(batch: int) -> float | None:
        return round(rates[batch]["bf16"] / rates[batch]["fp32"], 3) if timed_bf16 else None

    def bf16_rate(batch: int) -> float | None:
        return round(rates[batch]["bf16"], 3) if timed_bf16 else None

    print(json.dumps({"updates_per_s": round(rates[256]["fp32"], 3),
                      "updates_per_s_default_batch": round(rates[default_batch]["fp32"], 3),
                      "bf16_updates_per_s": bf16_rate(256), "bf16_updates_per_s_default_batch": bf16_rate(default_batch),
                      "bf16_speedup": speedup(256), "bf16_speedup_default_batch": speedup(default_batch),
                      "default_batch": default_batch, "image_size": px, "encoder": cfg.encoder.kind,
                      "threads": args.threads, "bytes_per_transition": round(buf.bytes_per_transition, 1),
                      "frame_bytes": frame_bytes, "sample_batches_per_s_256": round(s256, 1),
                      "sample_batches_per_s_default_batch": round(s_def, 1),
                      "loadavg_1min": round(os.getloadavg()[0], 2), **hw}))


if __name__ == "__main__":
    main()
