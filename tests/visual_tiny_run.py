"""A tiny real `train_visual.py` run shared by the visual end-to-end and rollout tests.

Runs once per pytest process (cached by path), in a temporary directory: 2 tasks x 3
episodes at 32 px, 30 offline updates, one 40-step online episode with 40 real updates.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OFFLINE_STEPS, ONLINE_STEPS, HORIZON = 30, 40, 40
_CACHE: dict[str, Path] = {}


def tiny_args(base: Path) -> list[str]:
    """CLI options of the tiny run (data and run dirs under `base`, never the repo's)."""
    return ["--data.output", str(base / "data.hdf5"), "--data.num-tasks", "2", "--data.episodes-per-task", "3",
            "--data.image-size", "32", "--data.workers", "1", "--run.run-dir", str(base / "run"),
            "--run.no-progress", "--run.threads", "1", "--loop.offline-steps", str(OFFLINE_STEPS),
            "--loop.online-env-steps", str(ONLINE_STEPS), "--loop.utd", "1", "--loop.batch-size", "16",
            "--loop.eval-episodes", "1", "--loop.eval-every-offline", "15", "--loop.eval-every", "40",
            "--loop.checkpoint-every", "10", "--loop.log-every", "5",
            "--learner.critic-hidden", "32", "32", "--learner.actor-hidden", "32", "32"]


def run_train(args: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "train_visual.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"train_visual.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def tiny_run(base: Path) -> tuple[Path, subprocess.CompletedProcess | None]:
    """(run_dir, the finished process) of the shared tiny run; trains it on first use."""
    key = "run"
    if key not in _CACHE:
        base.mkdir(parents=True, exist_ok=True)
        _CACHE["proc"] = run_train(tiny_args(base))
        _CACHE[key] = base / "run"
    return _CACHE[key], _CACHE["proc"]
