"""`--run.precision fp32|bf16`: where an update's arithmetic runs in bfloat16 and where it
must not.

bf16 runs the matmuls and convolutions of the critics, the actor and the image encoder
under `torch.autocast(device, torch.bfloat16)`; everything whose value is read as a number
stays fp32:
- master weights and optimizer state (autocast casts copies for each matmul; Adam steps
  the fp32 parameters);
- the critic's output layer (`networks.CriticEnsemble`): its hidden activations arrive in
  bf16 and the last product and bias run in fp32, because bf16 keeps 8 significant bits and
  a Q-value of -500 would have a resolution of 2 - coarser than the rewards of 10r - 5;
- the actor's mean and log-std are cast to fp32 before the tanh-Gaussian log-probs;
- TD targets, the Cal-QL bound, the CQL logsumexp and every loss: they read only those
  fp32 outputs;
- the backward pass runs outside autocast (PyTorch's recommendation): each op's backward
  runs in the dtype its forward ran in.
Acting and `value` stay fp32 (a few % of a run's wall; evaluation numbers stay exact).

Only worth it where the hardware multiplies bf16 natively: CUDA GPUs with bf16 support,
and CPUs with `avx512_bf16` or AMX. On other CPUs oneDNN emulates bf16 and a matmul is
~100x slower (BENCHMARKS.md: 1.3 against 138 GFLOP/s on an AVX2 EPYC), so a request for
bf16 there says so in one line and runs fp32. None of the Cal-QL implementations (official
JAX, CORL, d3rlpy) offers reduced precision.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Literal

import torch

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
BF16_CPU_FLAGS: tuple[str, ...] = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_bf16_units() -> tuple[str, ...]:
    """The CPU's native bf16 instruction sets named in /proc/cpuinfo's flags (Linux);
    elsewhere, oneDNN's own check stands in for avx512_bf16."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return tuple(f for f in BF16_CPU_FLAGS if f in flags)
        return ()
    return ("avx512_bf16",) if torch.ops.mkldnn._is_mkldnn_bf16_supported() else ()


def native_bf16(device: torch.device) -> bool:
    """Whether `device` multiplies bf16 in hardware (tensor cores; avx512_bf16 / AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return bool(cpu_bf16_units())
    return False


def resolve_precision(requested: str, device: torch.device) -> tuple[str, str | None]:
    """(the precision a run uses, a one-line note when it differs from `requested`).

    bf16 on a device without native bf16 falls back to fp32: emulated bf16 would make the
    run ~100x slower, not faster."""
    if requested not in PRECISIONS:
        raise ValueError(f"--run.precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested == "bf16" and not native_bf16(device):
        what = "this CPU has no avx512_bf16 or AMX" if device.type == "cpu" else f"{device} has no native bf16"
        return "fp32", f"--run.precision bf16: {what}, so emulated bf16 would be slower; running fp32"
    return requested, None


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward pass's context: bf16 autocast for `bf16`, nothing for `fp32`."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def full_precision(tensor: torch.Tensor) -> torch.Tensor:
    """A bf16 / fp16 autocast output as fp32; fp32 and fp64 tensors pass unchanged (the
    exactness tests run in fp64)."""
    return tensor.float() if tensor.dtype in (torch.bfloat16, torch.float16) else tensor


def fp32_region(tensor: torch.Tensor) -> contextlib.AbstractContextManager:
    """Inside an autocast region, a block computed in fp32 (the caller casts its inputs);
    a no-op outside one."""
    kind = tensor.device.type
    if torch.is_autocast_enabled(kind):
        return torch.autocast(kind, enabled=False)
    return contextlib.nullcontext()
