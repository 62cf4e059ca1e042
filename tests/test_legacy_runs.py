"""Run directories written by earlier code still resume and roll out.

`tests/fixtures/legacy_run/` is a tiny state run (16-wide networks, 40 offline updates, 80
online env steps) made by the code of commit 2e7c96b, before the agent contract (issue 17):
its `config.json` holds `learner.discount` and the four tuning options removed since, and
its `latest.pt` the learner, online buffer, counters and RNG of that code.
`legacy_visual_config.json` is the config.json of a tiny visual run of the same code.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from calql_robot.policy_io import load_policy, read_run_config

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _copy_run(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURES / "legacy_run", run_dir)
    return run_dir


def test_a_legacy_run_resumes_with_more_online_steps(tmp_path: Path) -> None:
    run_dir = _copy_run(tmp_path)
    proc = subprocess.run([sys.executable, "train_state.py", "--run.resume", "--run.run-dir", str(run_dir),
                           "--run.no-progress", "--run.threads", "1", "--loop.online-env-steps", "120"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["offline_updates"] == 40  # taken from the old checkpoint, not redone
    assert summary["env_steps"] >= 120 and summary["online_updates"] >= 120
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("phase") == "online" and r["step"] > 40 + 80 and "train/critic_loss" in r for r in rows)


def test_a_legacy_run_loads_and_acts(tmp_path: Path) -> None:
    run_dir = _copy_run(tmp_path)
    loaded = load_policy(run_dir)
    assert loaded.domain == "pickplace_state"
    assert loaded.step_info == {"offline_updates": 40, "online_updates": 80, "env_steps": 80}
    env = loaded.make_env()
    try:
        obs, _ = env.reset(seed=0)
        action = loaded.learner.act(obs, deterministic=True)
    finally:
        env.close()
    assert action.shape == env.action_space.shape and np.all(np.abs(action) <= 1.0)


def test_a_legacy_run_rolls_out_through_the_entry_point(tmp_path: Path) -> None:
    run_dir = _copy_run(tmp_path)
    out = tmp_path / "legacy.mp4"
    proc = subprocess.run([sys.executable, "rollout.py", "--run-dir", str(run_dir), "--episodes", "1",
                           "--output", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.stat().st_size > 0


def test_a_legacy_visual_config_reads_back(tmp_path: Path) -> None:
    run_dir = tmp_path / "visual"
    run_dir.mkdir()
    shutil.copy(FIXTURES / "legacy_visual_config.json", run_dir / "config.json")
    domain, cfg = read_run_config(run_dir)
    assert domain == "pickplace_visual"
    assert cfg.learner.critic_hidden == (16, 16) and cfg.encoder.latent_dim == 8
    assert cfg.data.image_size == 32 and cfg.loop.offline_steps == 10
