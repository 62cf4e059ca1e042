"""Updates per second of the Cal-QL learner at the AntMaze preset, against this machine's
fp32 matmul rate at the shapes that dominate the update.

    python bench/learner.py [--threads 2] [--updates 30] [--rounds 5] [--device cpu]

Preset: obs 29, actions 8, actor 256x2, critics 256x4, batch 256, 10 CQL actions, max
backup over 10, Lagrange. One official update is counted as 23.7 GFLOP (critic forward
0.413 MFLOP per row; trained critics 2 x 7,936 rows x 3 for forward and backward = 19.65;
critics inside the policy loss 0.63; target critics over 5,120 backup rows 2.11; actor
1.30) whatever this implementation does to save work. The learner and the matmul ceiling
are timed in alternating rounds and `ceiling_fraction` is the median of the per-round
ratios. Beside it, the same preset in bf16 (`--run.precision bf16`): `bf16_speedup` is the
median per-round ratio of bf16 to fp32 updates/s, timed where the device multiplies bf16
natively (CUDA, avx512_bf16 / AMX CPUs), with the bf16 matmul rate at the same shapes and
the CPU model and its bf16 units. The last line is one JSON object.
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

from bench.hardware import machine, matmul_gflops, sync  # noqa: E402
from calql_robot.agents.base import AgentSpec, batch_to_torch  # noqa: E402
from calql_robot.agents.calql import PRESETS  # noqa: E402
from calql_robot.agents.calql_learner import CalQLLearner  # noqa: E402
from calql_robot.perf import tune_malloc  # noqa: E402

GFLOP_PER_UPDATE = 23.7
OBS_DIM, ACTION_DIM, BATCH = 29, 8, 256
MATMUL_SHAPES = ((2560, 256, 256), (7936, 256, 256))


_sync = sync


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


def precision_rounds(fp32: CalQLLearner, bf16: CalQLLearner, batches: list[dict], updates: int, rounds: int,
                     device: torch.device) -> list[dict[str, float]]:
    """Rounds of (an fp32 block, a bf16 block) of the same preset on the same batches;
    `bf16_speedup` is the median of the per-round ratios (the drift argument above)."""
    for b in batches[:3]:
        bf16.update(b)
    out = []
    for _ in range(rounds):
        f = timed_updates(fp32, batches, updates, device)
        h = timed_updates(bf16, batches, updates, device)
        out.append({"fp32": f, "bf16": h, "ratio": h / f})
    return out


def bf16_figures(fp32: CalQLLearner, batches: list[dict], args, device: torch.device) -> dict:
    """bf16 updates/s beside fp32 and the bf16 matmul rate at the same shapes. Without
    native bf16 (precision.native_bf16) the learner is not timed in bf16 unless
    `--bf16 force` (emulated, ~100x slower per matmul): only the matmul rate is measured,
    which shows why."""
    shapes = {f"{m}x{k}@{k}x{n}": (m, k, n) for m, k, n in MATMUL_SHAPES}
    native = machine(device)["bf16_native"]
    window = args.matmul_seconds if native else 0.2
    rates = {name: round(matmul_gflops(*shape, device, window, torch.bfloat16), 2) for name, shape in shapes.items()}
    out = {"bf16_matmul_gflops_by_shape": rates, "bf16_updates_per_s": None, "bf16_speedup": None}
    if args.bf16 == "skip" or (args.bf16 == "auto" and not native):
        return out
    torch.manual_seed(0)
    bf16 = CalQLLearner(PRESETS["antmaze"](), AgentSpec(OBS_DIM, ACTION_DIM, device=device, precision="bf16"))
    updates = args.updates if native else 2
    rounds = precision_rounds(fp32, bf16, batches, updates, args.rounds, device)
    out["bf16_updates_per_s"] = round(float(np.median([r["bf16"] for r in rounds])), 3)
    out["fp32_updates_per_s_same_rounds"] = round(float(np.median([r["fp32"] for r in rounds])), 3)
    out["bf16_speedup"] = round(float(np.median([r["ratio"] for r in rounds])), 3)
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
    parser.add_argument("--bf16", choices=("auto", "force", "skip"), default="auto",
                        help="time the learner in bf16 too: where the device has native bf16 (auto), always "
                             "(force: emulated bf16 is ~100x slower per matmul), or never")
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
    bf16 = bf16_figures(learner, batches, args, device)

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
        "rounds": args.rounds, "threads": args.threads, "malloc_tuned": malloc_tuned, **bf16, **machine(device),
    }
    print(f"Cal-QL update, AntMaze preset, batch {BATCH}, {args.threads} threads, {device}")
    print(f"  updates/s            {ups:8.2f}")
    print(f"  achieved GFLOP/s     {achieved:8.2f}  (counting {GFLOP_PER_UPDATE} GFLOP per update)")
    for name, rate in rates.items():
        print(f"  matmul {name:>18} {rate:8.2f} GFLOP/s")
    print(f"  ceiling fraction     {fraction:8.3f}  (median over {args.rounds} rounds of updates/s x "
          f"{GFLOP_PER_UPDATE} / the faster matmul shape in the same round; "
          f"range {min(fractions):.3f}-{max(fractions):.3f})")
    hw = machine(device)
    print(f"  bf16                 {hw['cpu']}, bf16 units {hw['cpu_bf16_units'] or 'none'}"
          + (f", {hw['gpu']}" if "gpu" in hw else "") + f" (native: {hw['bf16_native']})")
    for name, rate in bf16["bf16_matmul_gflops_by_shape"].items():
        print(f"  bf16 matmul {name:>13} {rate:8.2f} GFLOP/s")
    if bf16["bf16_speedup"] is None:
        print("  bf16 updates/s           -  (not timed: no native bf16 here; --bf16 force times it emulated)")
    else:
        print(f"  bf16 updates/s       {bf16['bf16_updates_per_s']:8.2f}  bf16_speedup {bf16['bf16_speedup']:.2f} "
              f"(median per-round ratio to fp32 over {args.rounds} rounds)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
