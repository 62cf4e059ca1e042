"""bench/learner.py runs the real learner and ends with the JSON line BENCHMARKS.md quotes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_learner_prints_consistent_json() -> None:
    out = subprocess.run([sys.executable, "bench/learner.py", "--updates", "2", "--rounds", "2",
                          "--matmul-seconds", "0.1", "--threads", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["rounds"] == 2 and result["threads"] == 1
    assert result["updates_per_s"] > 0 and result["matmul_gflops"] > 0
    assert abs(result["achieved_gflops"] - 23.7 * result["updates_per_s"]) < 0.05 + 1e-3 * result["achieved_gflops"]
    low, high = result["ceiling_fraction_range"]
    assert 0 < low <= result["ceiling_fraction"] <= high
    assert set(result["matmul_gflops_by_shape"]) == {"2560x256@256x256", "7936x256@256x256"}
