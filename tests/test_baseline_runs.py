"""IQL and AWAC through the real entry points (tiny): offline updates, online episodes with
updates after them, metrics of both phases, calibration logged, config.json recording the
agent and its reference reward, `--run.resume` continuing the counters, the run rebuilt
from its directory as rollout.py does; and bad `--iql.*` / `--awac.*` flags as one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from calql_robot.policy_io import load_policy, policy_fn
from calql_robot.rollouts import run_episode
from tests.test_user_errors import ENV, cli, user_error

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--run.no-progress", "--run.threads", "1", "--loop.batch-size", "16", "--loop.eval-episodes", "1",
          "--loop.log-every", "10", "--loop.checkpoint-every", "20"]
NETS = {"iql": ["--iql.hidden", "32", "32"],
        "awac": ["--awac.actor-hidden", "32", "32", "--awac.critic-hidden", "32", "32"]}
STATE = [*COMMON, "--data.episodes", "6", "--loop.offline-steps", "40", "--loop.online-env-steps", "40",
         "--loop.eval-every-offline", "20", "--loop.eval-every", "40"]
VISUAL = [*COMMON, "--data.num-tasks", "2", "--data.episodes-per-task", "3", "--data.image-size", "32",
          "--data.workers", "1", "--loop.offline-steps", "30", "--loop.online-env-steps", "40",
          "--loop.eval-every-offline", "15", "--loop.eval-every", "40", "--no-video"]
LOSSES = {"iql": ("critic_loss", "value_loss", "actor_loss"), "awac": ("critic_loss", "actor_loss", "v_pi")}


def train(script: str, args: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
                          env=ENV)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def check_run(run_dir: Path, algo: str, offline_steps: int, online_steps: int) -> dict:
    """The run reached gradient updates offline and online (UTD 1) and logged both phases."""
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["offline_updates"] == offline_steps
    assert summary["env_steps"] >= online_steps and summary["online_updates"] == summary["env_steps"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if f"train/{LOSSES[algo][0]}" in r]
    assert {r["phase"] for r in train_rows} == {"offline", "online"}
    assert all(np.isfinite(r[f"train/{k}"]) for r in train_rows for k in LOSSES[algo])
    assert any("online/episode_return" in r for r in rows) and any("eval/q0" in r for r in rows)  # value(s0) logged
    config = json.loads((run_dir / "config.json").read_text())
    assert config["algo"] == algo and (config["reward"]["scale"], config["reward"]["bias"]) == (1.0, 0.0)
    return summary


@pytest.mark.parametrize("algo", ["iql", "awac"])
def test_train_state_runs_resumes_and_rolls_out(algo: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train("train_state.py", ["--algo", algo, *STATE, *NETS[algo], "--run.run-dir", str(run_dir)])
    after = check_run(run_dir, algo, 40, 40)
    if algo == "iql":  # resume is the agent's state dict (unit-tested for both) plus the generic loop: once
        train("train_state.py", ["--run.resume", "--run.run-dir", str(run_dir), "--loop.online-env-steps", "80"])
        before, after = after, check_run(run_dir, algo, 40, 80)  # the saved config (algo, reward, nets) came back
        assert after["env_steps"] > before["env_steps"] and after["online_updates"] == after["env_steps"]
    loaded = load_policy(run_dir)  # rollout.py's path: config.json + latest.pt
    assert type(loaded.learner).__name__ == {"iql": "IQLLearner", "awac": "AWACLearner"}[algo]
    assert loaded.learner.num_updates == 40 + after["env_steps"] and loaded.learner.online
    env = loaded.make_env()
    try:
        episode = run_episode(env, policy_fn(loaded.learner, True), seed=0)
    finally:
        env.close()
    assert episode["length"] >= 1 and np.all(np.abs(episode["actions"]) <= 1)


@pytest.fixture(scope="module")
def visual_data(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("visual_baselines") / "data.hdf5"  # collected by the first run, reused after


@pytest.mark.parametrize("algo", ["iql", "awac"])
def test_train_visual_runs_with_the_shared_encoder(algo: str, visual_data: Path, tmp_path: Path) -> None:
    from calql_robot.run.checkpoint import load_checkpoint

    run_dir = tmp_path / "run"
    train("train_visual.py", ["--algo", algo, *VISUAL, *NETS[algo], "--data.output", str(visual_data),
                              "--run.run-dir", str(run_dir)])
    check_run(run_dir, algo, 30, 40)
    state = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert any(k.startswith("trunk.") for k in state["learner"]["encoder"])  # the image encoder is the agent's


def test_a_bad_baseline_flag_is_one_line(tmp_path: Path) -> None:
    """Through the entry point once (every agent config is checked whichever --algo runs,
    `catalog.validate_agent_configs`); each flag's message is unit-tested in test_iql/test_awac."""
    run_dir = tmp_path / "run"
    user_error(cli("train_state.py", "--algo", "iql", "--awac.lam", "0", "--run.run-dir", str(run_dir)), "--awac.lam")
    assert not run_dir.exists()


def test_baselines_start_from_their_references_reward_and_presets() -> None:
    """`--algo iql|awac` picks the reward its reference trained on where the task's differs
    (`BASELINE_REWARDS`) and the paper's per-domain settings; --reward.* flags still win."""
    from calql_robot.cli import parse_state_cli, parse_visual_cli

    def reward(cfg) -> tuple:
        return cfg.reward.scale, cfg.reward.bias, cfg.reward.failure_reward

    assert reward(parse_state_cli(["--task", "antmaze-umaze", "--algo", "iql"])) == (1.0, -1.0, 0.0)  # IQL: r - 1
    assert reward(parse_state_cli(["--task", "antmaze-umaze", "--algo", "awac"])) == (1.0, 0.0, 0.0)
    assert reward(parse_state_cli(["--task", "door", "--algo", "iql"])) == (1.0, 0.0, -1.0)  # raw {-1, 0}
    assert reward(parse_state_cli(["--task", "antmaze-umaze"])) == (10.0, -5.0, 0.0)  # Cal-QL's, unchanged
    assert reward(parse_state_cli(["--algo", "awac"])) == (1.0, 0.0, 0.0) == reward(parse_visual_cli(["--algo", "iql"]))
    assert reward(parse_state_cli([])) == (10.0, -5.0, 0.0) == reward(parse_visual_cli([]))
    assert parse_state_cli(["--algo", "iql", "--reward.scale", "10"]).reward.scale == 10.0
    door, kitchen = parse_state_cli(["--task", "door"]), parse_state_cli(["--task", "kitchen-mixed"])
    assert (door.iql.expectile, door.iql.temperature, door.awac.lam) == (0.8, 3.0, 0.3)
    assert (kitchen.iql.expectile, kitchen.iql.temperature, kitchen.awac.lam) == (0.7, 0.5, 1.0)
    state, visual = parse_state_cli([]), parse_visual_cli(["--preset", "paper"])
    assert (state.iql.temperature, visual.iql.temperature, state.awac.lam, visual.awac.lam) == (10.0, 10.0, 1.0, 1.0)
