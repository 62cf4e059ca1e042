"""What machine a benchmark ran on, and its matmul rate in each precision.

Why: a bf16 figure means nothing without the unit that multiplied it. The same 2-vCPU
"AMD EPYC" name covers Zen 3 hosts (AVX2 only: oneDNN emulates bf16, ~100x slower than
fp32) and Zen 4 hosts (`avx512_bf16`: ~4x faster than fp32), so every figure is printed
with the CPU model and its bf16 units (`calql_robot/precision.py` decides from the same
flags whether `--run.precision bf16` runs bf16 at all).
"""

from __future__ import annotations

import time

import torch

from calql_robot.precision import cpu_bf16_units, native_bf16
from calql_robot.run.provenance import cpu_model


def machine(device: torch.device) -> dict:
    """The device's name and bf16 support, for a benchmark's JSON line."""
    info = {"cpu": cpu_model(), "cpu_bf16_units": list(cpu_bf16_units()), "device": str(device),
            "bf16_native": native_bf16(device), "torch": torch.__version__}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(m: int, k: int, n: int, device: torch.device, seconds: float = 1.5,
                  dtype: torch.dtype = torch.float32) -> float:
    """Sustained rate of (m x k) @ (k x n) in `dtype`, the best of several timed windows;
    each window holds as many products as fit in ~0.1 s, at least one (an emulated bf16
    product of the learner's shapes takes ~0.8 s on an AVX2 CPU)."""
    a = torch.randn(m, k, device=device).to(dtype)
    b = torch.randn(k, n, device=device).to(dtype)
    out = torch.empty(m, n, device=device, dtype=dtype)
    torch.mm(a, b, out=out)
    sync(device)
    start = time.perf_counter()
    torch.mm(a, b, out=out)
    sync(device)
    reps = max(1, min(20, int(0.1 / max(time.perf_counter() - start, 1e-6))))
    best = 0.0
    deadline = time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b, out=out)
        sync(device)
        best = max(best, 2.0 * m * k * n * reps / (time.perf_counter() - start) / 1e9)
        if time.perf_counter() >= deadline:
            return best
