"""Data + smoke tiers for the state domains (AntMaze, Kitchen, Adroit) on real env rollouts.

``scripts/make_test_datasets.py`` rolls out random actions in the real gymnasium-robotics
envs (half the episodes from a start state near the goal) and writes each real layout. The
tests load every layout through the task registry and check counts, boundaries, terminal
vs timeout and the MC returns against values recomputed here, step by step, from the
episodes as collected; then they run train_state.py briefly on each domain.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from calql_robot.domains import antmaze
from calql_robot.domains.registry import (TASKS, build_task_domain, load_task_dataset,
                                          make_task_env, preset_config)
from data.schema import DatasetFormatError
from data.transitions import returns_of

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from make_test_datasets import make_all  # noqa: E402

GAMMA = 0.99


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("datasets")
    return {"root": out, **make_all(out, seed=0, episodes=6, horizon=20)}


def hand_returns(episodes: list[dict], scale: float, bias: float, fail: float | None,
                 cut: str = "none") -> np.ndarray:
    """G per kept step, one episode and one step at a time (SPEC section 2)."""
    out = []
    for ep in episodes:
        r = scale * ep["rewards"].astype(np.float64) + bias
        done = ep["terminals"].copy()
        if cut == "binary":  # Adroit: keep up to the last success, success steps terminal
            hits = np.flatnonzero(ep["goal_achieved"])
            if not hits.size:
                continue
            r = scale * (ep["goal_achieved"][:hits[-1] + 1] - 1.0) + bias
            done = ep["goal_achieved"][:hits[-1] + 1]
        g, nxt = np.zeros(len(r)), 0.0
        for t in reversed(range(len(r))):
            nxt = r[t] + GAMMA * nxt * (1.0 - done[t]) if t < len(r) - 1 else r[t]
            g[t] = nxt
        if fail is not None and np.allclose(r, scale * fail + bias):
            g[:] = (scale * fail + bias) / (1 - GAMMA)
        out.append(g)
    return np.concatenate(out)


# ----------------------------------------------------------------------------- AntMaze
def test_antmaze_d4rl_layout(made: dict) -> None:
    path, eps = made["antmaze_d4rl"]
    t, opts = load_task_dataset("antmaze-umaze", str(path))
    assert opts["frame"] == "d4rl" and t.obs_dim == 29
    # qlearning_dataset: a timeout row is dropped, and so is the file's last row.
    kept = [len(ep["rewards"]) - (1 if ep["timeouts"][-1] else 0) for ep in eps]
    kept[-1] -= 0 if eps[-1]["timeouts"][-1] else 1
    assert len(t) == sum(kept) and t.num_trajectories == len(eps)
    n_term = sum(bool(ep["terminals"][-1]) for ep in eps) - (0 if eps[-1]["timeouts"][-1] else 1)
    assert int(t.terminals.sum()) == n_term and n_term >= 1
    assert int(t.timeouts.sum()) == len(eps) - n_term
    assert not (t.terminals & t.timeouts).any()
    np.testing.assert_array_equal(t.observations[:kept[0]], eps[0]["observations"][:kept[0]])
    # Returns: 10r-5 with r_neg = 0, episode by episode over the kept steps.
    trimmed = [{k: ep[k][:n] for k in ("rewards", "terminals")} for ep, n in zip(eps, kept)]
    _, g = returns_of(t, GAMMA, 10.0, -5.0, 0.0)
    np.testing.assert_allclose(g, hand_returns(trimmed, 10.0, -5.0, 0.0), rtol=1e-5)
    assert g.min() == pytest.approx(-500.0)


def test_antmaze_minari_layout(made: dict) -> None:
    dataset, eps = made["antmaze_minari"]
    t, opts = load_task_dataset("antmaze-umaze", dataset, minari_root=str(made["root"] / "minari"))
    assert opts["frame"] == "gymnasium"
    assert len(t) == sum(len(ep["rewards"]) for ep in eps) and t.num_trajectories == len(eps)
    assert int(t.terminals.sum()) == sum(bool(ep["terminals"][-1]) for ep in eps)
    assert int(t.timeouts.sum()) == sum(bool(ep["timeouts"][-1]) for ep in eps)
    # achieved_goal ++ observation is exactly the adapter's flat observation.
    np.testing.assert_allclose(t.observations[:5], eps[0]["observations"][:5], atol=1e-6)
    _, g = returns_of(t, GAMMA, 10.0, -5.0, 0.0)
    np.testing.assert_allclose(g, hand_returns(eps, 10.0, -5.0, 0.0), rtol=1e-5)


def test_antmaze_env_frame_goal_and_termination(made: dict) -> None:
    env = make_task_env("antmaze-medium-play")
    obs, info = env.reset(seed=3)
    assert obs.shape == (29,) and np.all(np.abs(obs[:2]) <= 0.1)  # D4RL: start at the origin
    goal = info["goal"]  # D4RL medium goal cell (6, 6) -> (20, 20) + U(0,1) + U(0,0.5)
    assert np.all(goal >= 20.0) and np.all(goal <= 21.5)
    assert env.spec.max_episode_steps == 1000
    env.close()
    for ep in made["antmaze_d4rl"][1]:
        if ep["terminals"][-1]:  # success: reward 1, terminal, and only at the last step
            assert ep["rewards"][-1] == 1.0 and ep["goal_achieved"][-1]
            assert not ep["terminals"][:-1].any() and not ep["rewards"][:-1].any()
        else:
            assert ep["timeouts"][-1] and not ep["rewards"].any()


def test_antmaze_mirrored_map_is_refused() -> None:
    """The same map list unreversed is D4RL's maze mirrored: the frame check must refuse."""
    antmaze.register_robotics()
    raw = gym.make("AntMaze_Medium-v4", maze_map=antmaze.D4RL_MAPS["medium"],
                   disable_env_checker=True)
    with pytest.raises(RuntimeError, match="frame mapping does not hold"):
        antmaze.AntMazeAdapter(raw, "medium", "d4rl")
    raw.close()


# ----------------------------------------------------------------------------- Kitchen
def test_kitchen_minari_layout_and_reward(made: dict) -> None:
    dataset, eps = made["kitchen_minari"]
    t, _ = load_task_dataset("kitchen-complete", dataset, minari_root=str(made["root"] / "minari"))
    assert t.obs_dim == 59 and len(t) == sum(len(ep["rewards"]) for ep in eps)
    assert int(t.terminals.sum()) == 0 and int(t.timeouts.sum()) == len(eps)  # never terminal
    _, g = returns_of(t, GAMMA, 1.0, 0.0, None)
    np.testing.assert_allclose(g, hand_returns(eps, 1.0, 0.0, None), rtol=1e-5)
    opened = eps[0]  # started with the microwave open: 1 subtask solved from step 1 on
    assert opened["rewards"].min() >= 1.0
    for ep in eps:
        assert np.all(np.diff(ep["rewards"]) >= 0) and np.all(ep["rewards"] == np.round(ep["rewards"]))


def test_kitchen_nested_dict_default_key_order(made: dict) -> None:
    from data.minari_local import read_minari

    dataset, eps = made["kitchen_minari"]
    t = read_minari(dataset, made["root"] / "minari", use_minari=False)
    assert t.obs_dim == 7 + 1 + 59  # achieved_goal/kettle, achieved_goal/microwave, observation
    np.testing.assert_allclose(t.observations[0, 8:], eps[0]["observations"][0], atol=1e-6)
    assert "achieved_goal/kettle ++ achieved_goal/microwave ++ observation" in t.notes[0]


def test_kitchen_d4rl_60d_is_refused(made: dict) -> None:
    path, _ = made["kitchen_d4rl60"]
    with pytest.raises(DatasetFormatError) as err:
        load_task_dataset("kitchen-mixed", str(path))
    msg = str(err.value)
    assert str(path) in msg and "'observations'" in msg and "D4RL/kitchen/mixed-v2" in msg


# ----------------------------------------------------------------------------- Adroit
@pytest.mark.parametrize("name", ["door_awac_expert", "door_awac_bc", "door_d4rl"])
def test_door_binary_layouts(made: dict, name: str) -> None:
    path, eps = made[name]
    t, _ = load_task_dataset("door", str(path), trust_pickle=True)
    wins = [ep for ep in eps if ep["goal_achieved"].any()]
    assert wins and len(wins) < len(eps)  # some trajectories dropped, some kept
    if name == "door_d4rl" and eps[-1]["goal_achieved"].any():
        pytest.skip("the last episode succeeded: qlearning_dataset drops its last row")
    expected = sum(int(np.flatnonzero(ep["goal_achieved"])[-1]) + 1 for ep in wins)
    assert len(t) == expected
    assert set(np.unique(t.rewards)) <= {-1.0, 0.0} and not t.timeouts.any()
    np.testing.assert_array_equal(t.terminals, t.rewards == 0.0)
    _, g = returns_of(t, GAMMA, 10.0, 5.0, -1.0)
    np.testing.assert_allclose(g, hand_returns(eps, 10.0, 5.0, -1.0, cut="binary"), rtol=1e-5)


def test_door_env_reward_and_first_success_terminal(made: dict) -> None:
    for ep in made["door_d4rl"][1]:
        np.testing.assert_array_equal(ep["rewards"], ep["goal_achieved"] - 1.0)
        assert ep["terminals"][-1] == ep["goal_achieved"][-1]
        assert not ep["goal_achieved"][:-1].any()  # the first success ends the episode
    assert make_task_env("pen").spec.max_episode_steps == 100


def test_reward_transform_applied_once(made: dict) -> None:
    path, _ = made["antmaze_d4rl"]
    cfg = preset_config("antmaze-umaze")
    cfg.dataset = str(path)
    domain = build_task_domain(cfg)
    batch = domain.offline.sample_indices(np.arange(len(domain.offline)))
    assert set(np.unique(batch["rewards"])) == {-5.0, 5.0}  # 10r-5 once (twice: -55, 45)


def test_presets_follow_spec() -> None:
    paper = preset_config("antmaze-large-diverse", "paper")
    assert paper.learner.lagrange and paper.learner.critic_hidden == (256,) * 4
    assert (paper.loop.offline_steps, paper.loop.online_env_steps) == (1_000_000, 1_000_000)
    assert (paper.reward.scale, paper.reward.bias, paper.reward.failure_reward) == (10, -5, 0)
    pen = preset_config("pen", "paper")
    assert (pen.loop.offline_steps, pen.loop.online_env_steps, pen.learner.cql_weight) == \
        (20_000, 200_000, 1.0)
    assert (pen.reward.scale, pen.reward.bias, pen.reward.failure_reward) == (10, 5, -1)
    assert TASKS["antmaze-umaze"].horizon == 700 and TASKS["door"].horizon == 200


# ----------------------------------------------------------------------------- smoke
def test_help_lists_every_task() -> None:
    out = subprocess.run([sys.executable, "train_state.py", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for name in ["pickplace", *TASKS]:
        assert f"  {name} " in out.stdout


TINY = ["--horizon", "12", "--loop.offline-steps", "8", "--loop.online-env-steps", "12",
        "--loop.batch-size", "16", "--loop.log-every", "4", "--learner.actor-hidden", "16", "16",
        "--learner.critic-hidden", "16", "16", "--learner.cql-n-actions", "2",
        "--learner.backup-k", "2", "--run.no-progress", "--run.threads", "1"]


@pytest.mark.parametrize("task, key, extra", [
    ("antmaze-umaze", "antmaze_d4rl", []),
    ("kitchen-complete", "kitchen_minari", ["--minari-root"]),
    ("door", "door_awac_bc", ["--trust-pickle"])])
def test_train_state_task_smoke(made: dict, tmp_path: Path, task: str, key: str,
                                extra: list[str]) -> None:
    dataset = str(made[key][0])
    if extra == ["--minari-root"]:
        extra = ["--minari-root", str(made["root"] / "minari")]
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "train_state.py", "--task", task, "--dataset", dataset, *extra,
           *TINY, "--run.run-dir", str(run_dir)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["offline_updates"] == 8 and summary["env_steps"] >= 12
    assert summary["online_updates"] == summary["env_steps"]  # utd 1: real gradient updates
    config = json.loads((run_dir / "config.json").read_text())
    assert config["task"] == task and config["horizon"] == 12
    # rollout.py's path: the run rebuilds from config.json and its checkpoint acts in the env.
    from calql_robot.policy_io import load_policy, policy_fn
    from calql_robot.rollouts import run_episode

    loaded = load_policy(run_dir)
    assert loaded.domain == "state_task" and loaded.step_info["offline_updates"] == 8
    env = loaded.make_env()
    try:
        ep = run_episode(env, policy_fn(loaded.learner, True), seed=0)
    finally:
        env.close()
    assert 1 <= ep["length"] <= 12 and ep["actions"].shape[1] == env.action_space.shape[0]
