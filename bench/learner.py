"""Updates per second of the Cal-QL learner at the AntMaze preset, against this machine's
fp32 matmul rate at the shapes that dominate the update.

    python bench/learner.py [--threads 2] [--updates 30] [--rounds 5] [--device cpu]

Preset: obs 29, actions 8, actor 256x2, critics 256x4, batch 256, 10 CQL actions, max
backup over 10, Lagrange. One official update is counted as 23.7 GFLOP (critic forward
0.413 MFLOP per row; trained critics 2 x 7,936 rows x 3 for forward and backward = 19.65;
critics inside the policy loss 0.63; target critics over 5,120 backup rows 2.11; actor
1.30) whatever this implementation does to save work. The learner and the matmul ceiling
are timed in alternating rounds and `ceiling_fraction` is the median of the per-round
ratios. The last line is one JSON object.
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

from calql_robot.agents.base import AgentSpec, batch_to_torch  # noqa: E402
from calql_robot.agents.calql import PRESETS  # noqa: E402
from calql_robot.agents.calql_learner import CalQLLearner  # noqa: E402
from calql_robot.perf import tune_malloc  # noqa: E402

GFLOP_PER_UPDATE = 23.7
OBS_DIM, ACTION_DIM, BATCH = 29, 8, 256
MATMUL_SHAPES = ((2560, 256, 256), (7936, 256, 256))


def matmul_gflops(m: int, k: int, n: int, device: torch.device, seconds: float = 1.5) -> float:
    """Sustained fp32 rate of (m x k) @ (k x n), the best of several timed windows."""
    a = torch.randn(m, k, device=device)
    b = torch.randn(k, n, device=device)
    out = torch.empty(m, n, device=device)
    for _ in range(10):
        torch.mm(a, b, out=out)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        reps, start = 20, time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b, out=out)
        _sync(device)
        best = max(best, 2.0 * m * k * n * reps / (time.perf_counter() - start) / 1e9)
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def random_batch(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "observations": rng.normal(size=(BATCH, OBS_DIM)).astype(np.float32),
        "next_observations": rng.normal(size=(BATCH, OBS_DIM)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(BATCH, ACTION_DIM)).astype(np.float32),
        "rewards": rng.choice([-5.0, 5.0], size=BATCH).astype(np.float32),
        "dones": (rng.random(BATCH) < 0.05).astype(np.float32),
        "mc_returns": rng.normal(-100, 50, size=BATCH).astype(np.float32),
    }


def timed_updates(learner: CalQLLearner, batches: list[dict], updates: int, device: torch.device) -> float:
    """Updates per second over one block of `updates` consecutive updates."""
    _sync(device)
    start = time.perf_counter()
    for i in range(updates):
        learner.update(batches[i % len(batches)])
    _sync(device)
    return updates / (time.perf_counter() - start)


def interleaved_rounds(learner: CalQLLearner, batches: list[dict], updates: int, rounds: int,
                       device: torch.device, matmul_seconds: float = 1.0) -> list[dict[str, float]]:
    """Rounds of (one block of learner updates, then the matmul ceiling at each shape).

    A shared 2-core VM drifts by 10-20% over a minute; timing the learner and the ceiling
    back to back in every round and taking the median of the per-round ratios keeps that
    drift out of `ceiling_fraction`, where one early learner block against one late
    ceiling would not.
    """
    for b in batches[:5]:
        learner.update(b)
    out = []
    for _ in range(rounds):
        ups = timed_updates(learner, batches, updates, device)
        rates = {f"{m}x{k}@{k}x{n}": matmul_gflops(m, k, n, device, matmul_seconds) for m, k, n in MATMUL_SHAPES}
        ceiling = max(rates.values())
        out.append({"updates_per_s": ups, "ceiling": ceiling,
                    "fraction": ups * GFLOP_PER_UPDATE / ceiling, **rates})
    return out


def print_profile(learner: CalQLLearner, batches: list[dict], updates: int = 3) -> None:
    """Where an update's time goes, op by op and input shape (profiler overhead included)."""
    from torch.profiler import ProfilerActivity, profile  # lazy: only with --profile
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for i in range(updates):
            learner.update(batches[i % len(batches)])
    print(f"torch.profiler, {updates} updates:")
    print(prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=30, max_shapes_column_width=60))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--updates", type=int, default=30, help="updates per timed block")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved (updates, matmul) rounds")
    parser.add_argument("--matmul-seconds", type=float, default=1.0, help="timing window per matmul shape per round")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--no-tune-malloc", action="store_true", help="keep glibc's default allocator settings")
    parser.add_argument("--profile", action="store_true", help="also print a torch.profiler table of 3 updates")
    args = parser.parse_args()
    for name in ("threads", "updates", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.matmul_seconds <= 0:
        parser.error(f"--matmul-seconds must be > 0, got {args.matmul_seconds}")
    malloc_tuned = False if args.no_tune_malloc else tune_malloc()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    learner = CalQLLearner(PRESETS["antmaze"](), AgentSpec(OBS_DIM, ACTION_DIM, device=device))
    batches = [batch_to_torch(random_batch(rng), device) for _ in range(8)]
    rounds = interleaved_rounds(learner, batches, args.updates, args.rounds, device, args.matmul_seconds)
    if args.profile:
        print_profile(learner, batches)

    def median(key: str) -> float:
        return float(np.median([r[key] for r in rounds]))

    ups, ceiling, fraction = median("updates_per_s"), median("ceiling"), median("fraction")
    rates = {f"{m}x{k}@{k}x{n}": median(f"{m}x{k}@{k}x{n}") for m, k, n in MATMUL_SHAPES}
    achieved = ups * GFLOP_PER_UPDATE
    fractions = [r["fraction"] for r in rounds]
    result = {
        "updates_per_s": round(ups, 3), "achieved_gflops": round(achieved, 2),
        "matmul_gflops": round(ceiling, 2),
        "matmul_gflops_by_shape": {k: round(v, 2) for k, v in rates.items()},
        "ceiling_fraction": round(fraction, 3),
        "ceiling_fraction_range": [round(min(fractions), 3), round(max(fractions), 3)],
        "rounds": args.rounds, "threads": args.threads, "malloc_tuned": malloc_tuned,
        "device": str(device), "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
    }
    print(f"Cal-QL update, AntMaze preset, batch {BATCH}, {args.threads} threads, {device}")
    print(f"  updates/s            {ups:8.2f}")
    print(f"  achieved GFLOP/s     {achieved:8.2f}  (counting {GFLOP_PER_UPDATE} GFLOP per update)")
    for name, rate in rates.items():
        print(f"  matmul {name:>18} {rate:8.2f} GFLOP/s")
    print(f"  ceiling fraction     {fraction:8.3f}  (median over {args.rounds} rounds of updates/s x "
          f"{GFLOP_PER_UPDATE} / the faster matmul shape in the same round; "
          f"range {min(fractions):.3f}-{max(fractions):.3f})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
