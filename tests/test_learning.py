"""Learning: the dip and outcome arithmetic, bench/learning.py's JSON line, and the guard
that a short state run on a fixed seed really learns (a change that breaks learning fails CI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from calql_robot.analysis import dip

ROOT = Path(__file__).resolve().parents[1]


def test_dip_worked_by_hand() -> None:
    evals = [(0, 0.0), (100, 0.6), (150, 0.2), (200, 0.4), (400, 0.9)]  # switch at 100, 500 online steps
    assert dip(evals, 100, 500) == pytest.approx(0.2 - 0.6)  # min over (100, 200] is 0.2
    assert dip(evals, 100, 500, early_fraction=0.05) is None  # no evaluation in (100, 125]
    assert dip([(100, 0.3), (150, 0.5)], 100, 500) == 0.0  # no loss: no dip
    assert dip([(150, 0.5)], 100, 500) is None  # no evaluation at the switch


def test_bench_learning_prints_its_json_line(tmp_path: Path) -> None:
    cmd = [sys.executable, "bench/learning.py", "--entry", "state", "--algo", "bc", "--seeds", "0", "1",
           "--parallel", "2", "--runs-dir", str(tmp_path), "--", "--data.episodes", "4",
           "--loop.offline-steps", "20", "--loop.eval-episodes", "1", "--loop.eval-every-offline", "10",
           "--loop.batch-size", "16", "--loop.log-every", "5"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("success_offline_mean", "success_final_mean", "regret_mean", "wall_s_mean", "dip_mean"):
        assert key in result
    assert result["seeds"] == [0, 1] and len(result["success_final"]) == 2
    assert all(0.0 <= s <= 1.0 for s in result["success_offline"] + result["success_final"])
    assert result["regret"] == [None, None]  # BC has no online episodes
    assert all(w > 0 for w in result["wall_s"])


GUARD_FLAGS = ["--run.seed", "0", "--loop.offline-steps", "2000",
               "--loop.online-env-steps", "0", "--loop.eval-every-offline", "0", "--loop.eval-episodes", "20",
               "--loop.checkpoint-every", "2000"]
"""The state preset (its data, learner and reward) with a shorter schedule: 1000 scripted
episodes, 2000 updates, 20 evaluation episodes at the end. Measured: see
RESULTS.md ("learning guard")."""


def test_learning_guard_short_state_run_succeeds(tmp_path: Path) -> None:
    """A change that breaks learning (the gripper, the losses, normalisation, the data) makes
    this run end at 0 success; on the current code the preset's recipe clears it."""
    run_dir = tmp_path / "guard"
    cmd = [sys.executable, "train_state.py", "--run.run-dir", str(run_dir), "--run.no-progress", *GUARD_FLAGS]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["offline_updates"] == 2000
    assert summary["final_success"] > 0.0, summary
