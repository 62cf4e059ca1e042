"""Forward+backward time of the image encoders (and the random shift) on CPU.

Usage: `python bench/encoders.py [--batch 256] [--size 64] [--reps 3] [--threads 2]`.
Times the random shift alone, then one update-shaped pass per kind: random shift of a
uint8 batch, encoder forward, a scalar loss on the feature, backward. Prints one line
each, then a JSON summary as the last line (ms per batch, median of `reps` after one
warm-up). The machine is shared: read numbers together with the load average.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from encoders import KINDS, ImageStateEncoder, random_shift  # noqa: E402


def time_ms(fn, reps: int) -> float:
    """Median wall time of `fn()` in ms, after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench_kind(kind: str, batch: int, size: int, reps: int) -> dict[str, float]:
    torch.manual_seed(0)
    enc = ImageStateEncoder((size, size, 3), state_dim=7, task_dim=4, kind=kind)
    obs = {
        "image": torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8),
        "state": torch.randn(batch, 7),
        "task": torch.zeros(batch, 4),
    }

    def step() -> None:
        enc.zero_grad(set_to_none=True)
        enc({**obs, "image": random_shift(obs["image"], 4)}).square().mean().backward()

    return {"fwd_bwd_ms": time_ms(step, reps), "params": sum(p.numel() for p in enc.parameters())}


def bench_shift(batch: int, size: int, reps: int) -> float:
    images = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8)
    return time_ms(lambda: random_shift(images, 4), reps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, object] = {"random_shift_ms": bench_shift(args.batch, args.size, args.reps)}
    print(f"random_shift B={args.batch} {args.size}px pad 4: {results['random_shift_ms']:.1f} ms")
    for kind in KINDS:
        r = results[kind] = bench_kind(kind, args.batch, args.size, args.reps)
        print(f"{kind:9s} B={args.batch} {args.size}px: shift+fwd+bwd {r['fwd_bwd_ms']:.0f} ms, {r['params'] / 1e6:.2f}M params")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(json.dumps({"batch": args.batch, "size": args.size, "threads": args.threads, "load_avg_1min": load, "results": results}))


if __name__ == "__main__":
    main()
