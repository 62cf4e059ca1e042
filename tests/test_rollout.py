"""rollout.py: rebuild a run (visual or state) from config.json + latest.pt, write a
decodable captioned mp4 (and GIF), report the success rate; clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from calql_robot.run.checkpoint import save_run_checkpoint
from calql_robot.agents.base import AgentSpec
from calql_robot.agents.calql_learner import CalQLLearner
from calql_robot.config import from_dict, to_dict
from calql_robot.errors import ConfigError
from calql_robot.policy_io import load_policy, read_run_config
from calql_robot.domains.pickplace_state import StateExperimentConfig
from calql_robot.domains.pickplace_visual import PRESETS, VisualExperimentConfig
from calql_robot.rollouts import run_episode
from calql_robot.run.runlog import read_metrics
import rollout as rollout_script
from rollout import RolloutConfig, rollout
from tests.visual_tiny_run import ROOT, tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory.getbasetemp() / "visual_tiny")


def test_rollout_of_a_visual_run_writes_a_decodable_captioned_video(run, tmp_path):
    run_dir, _ = run
    out = tmp_path / "roll.mp4"
    proc = subprocess.run([sys.executable, "rollout.py", "--run-dir", str(run_dir), "--episodes", "2",
                           "--output", str(out), "--gif", "--hold", "3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "success rate" in proc.stdout and "pickplace_visual" in proc.stdout
    frames = iio.imread(out, index=None)
    # two episodes of at most 40 steps: (T + 1 + hold) frames each, 256 px render frames
    assert 2 * (2 + 3) <= frames.shape[0] <= 2 * (41 + 3) and frames.shape[1:] == (256, 256, 3)
    gif = iio.imread(out.with_suffix(".gif"), index=None)  # Pillow merges repeated (held) frames
    assert gif.shape[1:] == (256, 256, 3) and 2 * 2 <= gif.shape[0] <= frames.shape[0]


def test_rollout_matches_the_runs_final_evaluation(run, tmp_path, monkeypatch):
    """A rollout of the final checkpoint replays the run's final evaluation step by step
    (same checkpoint, same episode seeds, deterministic policy). The run ends at 0.0 success,
    so success and return alone cannot tell; instead: the rollout's video is the final
    evaluation's video frame for frame (both record the first episode, rendered and
    captioned alike), its first observation gives the critic value the run logged as
    eval/q0, its length is the logged eval/length, and every action it played is the
    loaded policy's deterministic action at that step's observation. Random actions or
    other episode seeds in rollout.py change the frames (and the actions)."""
    run_dir, _ = run
    played = []

    def recording(*args, **kwargs):
        episode = run_episode(*args, **kwargs)
        played.append(episode)
        return episode

    monkeypatch.setattr(rollout_script, "run_episode", recording)
    out = tmp_path / "r.mp4"
    result = rollout(RolloutConfig(run_dir=str(run_dir), episodes=1, hold=0, output=str(out)))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert result["success_rate"] == summary["final_success"]
    assert result["mean_return"] == pytest.approx(summary["final_return"])
    (final_video,) = (run_dir / "videos").glob("eval_*_final.mp4")
    np.testing.assert_array_equal(iio.imread(out, index=None), iio.imread(final_video, index=None))

    (episode,) = played
    final_eval = [r for r in read_metrics(run_dir / "metrics.jsonl") if "eval/q0" in r][-1]
    loaded = load_policy(run_dir)
    obs = episode["observations"]
    assert episode["length"] == final_eval["eval/length"]
    assert float(loaded.learner.value({k: v[0] for k, v in obs.items()})) == pytest.approx(final_eval["eval/q0"],
                                                                                          rel=1e-5)
    want = loaded.learner.act({k: v[:-1] for k, v in obs.items()}, deterministic=True)
    np.testing.assert_allclose(episode["actions"], want, atol=1e-5)


def test_no_video_counts_the_same_episodes_and_writes_nothing(run, tmp_path, capsys):
    """--no-video plays the very episodes a recorded rollout plays (same success and return)
    and leaves no file; asking it for an --output or a GIF is a one-line error."""
    run_dir, _ = run
    recorded = rollout(RolloutConfig(run_dir=str(run_dir), episodes=2, hold=0, output=str(tmp_path / "r.mp4")))
    before = sorted(p for p in run_dir.rglob("*") if p.is_file())
    counted = rollout(RolloutConfig(run_dir=str(run_dir), episodes=2, video=False))
    assert (counted["success_rate"], counted["mean_return"]) == (recorded["success_rate"], recorded["mean_return"])
    assert counted["video"] is None and sorted(p for p in run_dir.rglob("*") if p.is_file()) == before
    assert "video" not in capsys.readouterr().out.splitlines()[-1]
    for bad in ({"output": str(tmp_path / "x.mp4")}, {"gif": True}):
        with pytest.raises(ConfigError, match="--no-video writes no file"):
            rollout(RolloutConfig(run_dir=str(run_dir), episodes=1, video=False, **bad))


def test_loaded_visual_policy_equals_the_checkpoint(run):
    run_dir, _ = run
    loaded = load_policy(run_dir)
    state = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
    for name, value in state["learner"]["encoder"].items():
        assert torch.equal(loaded.learner.encoder.state_dict()[name], value), name
    assert loaded.step_info["offline_updates"] > 0


def test_state_run_round_trip(tmp_path):
    cfg = StateExperimentConfig()
    cfg.learner.critic_hidden, cfg.learner.actor_hidden = (16, 16), (16,)
    run_dir = tmp_path / "state_run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(to_dict(cfg)))
    domain, back = read_run_config(run_dir)
    assert domain == "pickplace_state" and back == cfg
    from sim.pickplace_env import PRIVILEGED_DIM

    from encoders.normalize import ObsNormalizer

    stats = ObsNormalizer(np.linspace(-1, 1, PRIVILEGED_DIM), np.linspace(0.5, 2, PRIVILEGED_DIM))
    learner = CalQLLearner(cfg.learner, AgentSpec(PRIVILEGED_DIM, 7, encoder=stats))
    save_run_checkpoint(run_dir / "checkpoints", {"learner": learner.state_dict()}, 0)
    loaded = load_policy(run_dir).learner.encoder  # the checkpoint's statistics, not the placeholder's
    assert torch.equal(loaded.mean, stats.mean) and torch.equal(loaded.std, stats.std)
    result = rollout(RolloutConfig(run_dir=str(run_dir), episodes=1, output=str(tmp_path / "s.mp4")))
    assert result["domain"] == "pickplace_state" and 0.0 <= result["success_rate"] <= 1.0
    assert iio.imread(tmp_path / "s.mp4", index=None).shape[0] >= 2


def test_config_round_trip_keeps_types_and_infinities():
    cfg = PRESETS["paper"]
    back = from_dict(VisualExperimentConfig, json.loads(json.dumps(to_dict(cfg))))
    assert back == cfg and isinstance(back.data.held_out_task, tuple)
    assert back.learner.cql_clip_min == -np.inf
    with pytest.raises(ValueError, match="unknown keys"):
        from_dict(VisualExperimentConfig, {**to_dict(cfg), "bogus": 1})


def test_clear_errors(tmp_path, run):
    with pytest.raises(FileNotFoundError, match="run directory not found"):
        load_policy(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_policy(tmp_path / "empty")
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({"domain": "antmaze"}))
    with pytest.raises(ValueError, match="unknown domain 'antmaze'"):
        load_policy(odd)
    no_ckpt = tmp_path / "no_ckpt"
    no_ckpt.mkdir()
    (no_ckpt / "config.json").write_text((run[0] / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_policy(no_ckpt)


class _ScoredEnv:
    """Three steps; info['score'] counts them (as Kitchen counts solved sub-tasks) when asked."""

    def __init__(self, scored: bool) -> None:
        self.scored, self.t = scored, 0

    def reset(self, seed=None):
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        info = {"score": self.t / 4} if self.scored else {}
        return np.zeros(2, np.float32), 0.0, False, self.t == 3, info


def test_evaluate_reports_the_mean_final_score_only_where_the_env_has_one() -> None:
    from calql_robot.rollouts import evaluate

    policy = lambda obs: np.zeros(1, np.float32)  # noqa: E731
    scored = evaluate(_ScoredEnv(True), policy, episodes=2, seed=0)
    assert scored.mean_score == 0.75 and scored.as_metrics()["eval/score"] == 0.75
    plain = evaluate(_ScoredEnv(False), policy, episodes=2, seed=0)
    assert plain.mean_score is None and "eval/score" not in plain.as_metrics()


def test_configs_with_the_renamed_bc_trains_encoder_still_load(run, tmp_path) -> None:
    """A run saved before `bc_encoder_weight` replaced `bc_trains_encoder` reads back with
    the same meaning: True -> the actor's bc_weight on the encoder, False -> off; that
    bc_weight 2.5 is TD3+BC's alpha 0.4 today."""
    import shutil

    for flag, want in ((True, 2.5), (False, 0.0)):
        old = tmp_path / f"old_{flag}"
        shutil.copytree(run[0], old)
        data = json.loads((old / "config.json").read_text())
        data["learner"].pop("bc_encoder_weight", None)
        data["learner"].update(bc_weight=2.5, bc_trains_encoder=flag)
        (old / "config.json").write_text(json.dumps(data))
        _, cfg = read_run_config(old)
        assert cfg.learner.bc_encoder_weight == want and cfg.learner.td3bc_alpha == 0.4


def test_initial_state_calibration_worked_by_hand() -> None:
    """Q(s0, pi(s0)) and the realised discounted return under the run's reward transform,
    over all episodes and split into successes and failures."""
    from calql_robot.config import RewardConfig
    from calql_robot.rollouts import initial_state_calibration

    def episode(first: float, rewards: list[float], success: bool) -> dict:
        return {"observations": np.array([[first], [9.0]], np.float32), "rewards": np.array(rewards, np.float32),
                "success": success}

    eps = [episode(1.0, [0.0, 1.0], True), episode(2.0, [0.0, 0.0, 0.0], False)]
    reward = RewardConfig(discount=0.5, scale=10.0, bias=-5.0, failure_reward=0.0)
    out = initial_state_calibration(eps, lambda obs: 10.0 * obs[:, 0], reward)
    # success: -5 + 0.5 * 5 = -2.5; failure: -5 - 2.5 - 1.25 = -8.75
    assert out["eval/return0_success"] == pytest.approx(-2.5) and out["eval/return0_failure"] == pytest.approx(-8.75)
    assert out["eval/q0_success"] == pytest.approx(10.0) and out["eval/q0_failure"] == pytest.approx(20.0)
    assert out["eval/q0"] == pytest.approx(15.0) and out["eval/return0"] == pytest.approx((-2.5 - 8.75) / 2)
    only_fail = initial_state_calibration(eps[1:], lambda obs: obs[:, 0], reward)
    assert "eval/q0_success" not in only_fail and only_fail["eval/q0"] == pytest.approx(2.0)
