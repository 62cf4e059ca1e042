"""The training loop end to end on the state pick-and-place task: real scripted data, real
gradient updates, real online episodes; resume equivalence; stopping on a non-finite loss."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from calql_robot.run.checkpoint import load_checkpoint
from calql_robot.agents.calql import CalQLConfig
from calql_robot.config import LoopConfig, RunConfig
from calql_robot.experiment import run_experiment
from calql_robot.agents.base import NonFiniteLossError
from calql_robot.agents.calql_learner import CalQLLearner
from calql_robot.loop import Trainer, TrainingStopped
from calql_robot.run.runlog import read_metrics
from calql_robot.domains.pickplace_state import ScriptedDataConfig, StateExperimentConfig

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(run_dir: Path, **loop_changes) -> StateExperimentConfig:
    loop = dict(offline_steps=30, online_env_steps=100, utd=1, batch_size=32, mixing_ratio=0.5,
                eval_episodes=1, eval_every_offline=15, eval_every=40, checkpoint_every=10, log_every=5)
    loop.update(loop_changes)
    return StateExperimentConfig(
        learner=CalQLConfig(actor_hidden=(32, 32), critic_hidden=(32, 32), cql_n_actions=3, backup_k=2,
                            cql_weight_online=0.5),
        loop=LoopConfig(**loop),
        run=RunConfig(seed=3, run_dir=str(run_dir), progress=False, threads=1),
        data=ScriptedDataConfig(episodes=6, noise=0.2))


def run(cfg: StateExperimentConfig) -> dict:
    return run_experiment(cfg)


def strip_times(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("time", "progress/wall_s")} for r in rows]


def test_train_state_entry_point_end_to_end(tmp_path: Path) -> None:
    """The real script: offline updates, online episodes, evaluations, files a user reads."""
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "train_state.py", "--run.run-dir", str(run_dir), "--run.no-progress",
           "--data.episodes", "6", "--loop.offline-steps", "40", "--loop.online-env-steps", "80",
           "--loop.batch-size", "32", "--loop.eval-episodes", "2", "--loop.eval-every-offline", "20",
           "--loop.eval-every", "40", "--loop.log-every", "10", "--loop.checkpoint-every", "20",
           "--learner.actor-hidden", "32", "32", "--learner.critic-hidden", "32", "32"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = read_metrics(run_dir / "metrics.jsonl")
    train = [r for r in rows if "train/critic_loss" in r]
    offline_train = [r for r in train if r["phase"] == "offline"]
    online_train = [r for r in train if r["phase"] == "online"]
    assert len(offline_train) == 4 and online_train, "offline and online updates were logged"
    assert all(np.isfinite(r["train/critic_loss"]) and np.isfinite(r["train/q_data"]) for r in train)
    episodes = [r for r in rows if "online/episode_return" in r]
    assert episodes and sum(r["online/episode_length"] for r in episodes) >= 80
    evals = [r for r in rows if "eval/success_rate" in r]
    assert len(evals) >= 4  # start, during pre-training, switch, online, final
    steps = [r["step"] for r in rows]
    assert steps == sorted(steps), "one increasing x-axis across phases"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["offline_updates"] == 40
    assert summary["online_updates"] == summary["env_steps"] >= 80  # utd 1
    assert 0.0 <= summary["cumulative_regret"] <= 1.0
    sessions = json.loads((run_dir / "run_info.json").read_text())["sessions"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert len(sessions) == 1 and sessions[0]["git_commit"] == (head or None) and sessions[0]["cpu"]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["loop"]["offline_steps"] == 40
    state = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert state["learner"]["num_updates"] == 40 + summary["online_updates"]
    assert (run_dir / "learning_curves.png").stat().st_size > 1000
    assert (run_dir / "calibration.png").stat().st_size > 1000
    assert all("train/q_pi" in r and "train/mc_return" in r for r in train)  # calibration, both phases
    assert all("train/q_pi_minus_g_fail" in r and "train/bound_rate_fail" in r for r in train)
    assert all("eval/q0" in r and "eval/return0" in r for r in evals)
    # the final evaluation's Q(s0, pi(s0)), recomputed from the final checkpoint at the same
    # initial states, and its realised return: 2 failed 40-step episodes at reward 10r - 5
    from calql_robot.loop import eval_seed_base
    from calql_robot.policy_io import load_policy
    loaded = load_policy(run_dir)
    env = loaded.make_env()
    obs0 = np.stack([env.reset(seed=eval_seed_base(0) + i)[0] for i in range(2)])
    env.close()
    final = evals[-1]
    assert final["eval/q0"] == pytest.approx(float(np.mean(loaded.learner.value(obs0))), rel=1e-5, abs=1e-5)
    if final["eval/success_rate"] == 0.0 and final["eval/length"] == 40:
        assert final["eval/return0"] == pytest.approx(-5.0 * (1 - 0.99 ** 40) / 0.01, rel=1e-6)
    norm = config["obs_normalization"]  # the fixed statistics the networks saw, in the user's config
    assert len(norm["mean"]) == len(norm["std"]) == 29 and min(norm["std"]) > 0
    np.testing.assert_allclose(state["learner"]["encoder"]["mean"].numpy(), norm["mean"], atol=1e-5)


def test_killed_and_resumed_run_equals_uninterrupted(tmp_path: Path, monkeypatch) -> None:
    straight = tiny_config(tmp_path / "a")
    summary_a = run(straight)

    killed = tiny_config(tmp_path / "b")
    original = Trainer._online_episode
    calls = {"n": 0}

    def dying_episode(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill in the second online episode")
        original(self)

    monkeypatch.setattr(Trainer, "_online_episode", dying_episode)
    with pytest.raises(KeyboardInterrupt):
        run(killed)
    monkeypatch.setattr(Trainer, "_online_episode", original)
    resumed = dataclasses.replace(killed, run=dataclasses.replace(killed.run, resume=True))
    summary_b = run(resumed)

    assert_same_runs(tmp_path / "a", tmp_path / "b", summary_a, summary_b)
    sessions = json.loads((tmp_path / "b" / "run_info.json").read_text())["sessions"]
    assert len(sessions) == 2, "a resume appends its own entry to run_info.json"
    # the run's own clock goes on from the checkpoint instead of starting again at 0
    walls = [r["progress/wall_s"] for r in read_metrics(tmp_path / "b" / "metrics.jsonl") if "progress/wall_s" in r]
    assert walls == sorted(walls), walls


def assert_same_runs(dir_a: Path, dir_b: Path, summary_a: dict, summary_b: dict) -> None:
    """Two runs ended alike: summary, every network tensor, every metrics row but times."""
    for key in ("offline_success", "final_success", "cumulative_regret", "env_steps", "online_updates",
                "offline_updates", "final_return"):
        assert summary_a[key] == summary_b[key], key
    a = load_checkpoint(dir_a / "checkpoints" / "latest.pt")["learner"]
    b = load_checkpoint(dir_b / "checkpoints" / "latest.pt")["learner"]
    for part in ("encoder", "actor", "critic", "target_critic"):
        for name, tensor in a[part].items():
            assert torch.equal(tensor, b[part][name]), f"{part}.{name}"
    assert strip_times(read_metrics(dir_a / "metrics.jsonl")) == strip_times(read_metrics(dir_b / "metrics.jsonl"))


def _with_run(cfg: StateExperimentConfig, **run_changes) -> StateExperimentConfig:
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, **run_changes))


def test_finetune_from_switch_repeats_the_source_and_takes_new_online_settings(tmp_path: Path) -> None:
    source = tiny_config(tmp_path / "a")
    summary_a = run(source)
    # same settings (even a wrong --loop.offline-steps, which the source's count replaces)
    fork = _with_run(tiny_config(tmp_path / "b", offline_steps=999), finetune_from=str(tmp_path / "a"))
    summary_b = run(fork)
    assert_same_runs(tmp_path / "a", tmp_path / "b", summary_a, summary_b)  # offline rows copied, online repeated
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "latest.pt")["learner"]
    assert json.loads((tmp_path / "b" / "config.json").read_text())["loop"]["offline_steps"] == 30

    # other online settings on the same pre-training: the switch is shared, the online phase is not
    other = _with_run(tiny_config(tmp_path / "c", online_env_steps=60, mixing_ratio=0.25),
                      finetune_from=str(tmp_path / "a"))
    summary_c = run(other)
    assert summary_c["offline_success"] == summary_a["offline_success"]
    assert 60 <= summary_c["env_steps"] < 100 and summary_c["online_updates"] == summary_c["env_steps"]
    c = load_checkpoint(tmp_path / "c" / "checkpoints" / "latest.pt")["learner"]
    assert any(not torch.equal(t, a["actor"][n]) for n, t in c["actor"].items()), "another online phase"
    switch = load_checkpoint(tmp_path / "a" / "checkpoints" / "switch.pt")["learner"]
    assert c["num_updates"] == switch["num_updates"] + summary_c["online_updates"]


def test_finetune_from_a_run_without_switch_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text("{}")
    out = subprocess.run([sys.executable, "train_state.py", "--run.finetune-from", str(tmp_path / "src"),
                          "--run.run-dir", str(tmp_path / "new")], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"--run.finetune-from {tmp_path / 'src'}: no checkpoints/switch.pt" in out.stderr
    assert not (tmp_path / "new").exists(), "nothing written for a run that cannot start"
    (tmp_path / "src" / "checkpoints").mkdir()
    torch.save({"weights": torch.zeros(2)}, tmp_path / "src" / "checkpoints" / "switch.pt")  # not a run's
    out = subprocess.run([sys.executable, "train_state.py", "--run.finetune-from", str(tmp_path / "src"),
                          "--run.run-dir", str(tmp_path / "new")], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "missing keys" in out.stderr
    assert not (tmp_path / "new").exists()


def test_warmup_collects_before_the_first_online_update(tmp_path: Path) -> None:
    """--loop.warmup-env-steps 60: the episodes that end at or before 60 env steps bring no
    update; every later one brings len(episode) * utd."""
    summary = run(tiny_config(tmp_path / "run", warmup_env_steps=60, log_every=1))
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    episodes = [r for r in rows if "online/episode_length" in r]
    ends = np.cumsum([r["online/episode_length"] for r in episodes])
    expected = int(sum(r["online/episode_length"] for r, end in zip(episodes, ends) if end > 60))
    assert 0 < expected < summary["env_steps"] and summary["online_updates"] == expected
    first_online_update = min(r["step"] for r in rows if r["phase"] == "online" and "train/critic_loss" in r)
    assert first_online_update - 30 > 60, "no update logged before the warm-up's env steps were in"
    with pytest.raises(ValueError, match="warmup-env-steps"):
        run(tiny_config(tmp_path / "bad", warmup_env_steps=-1))


def test_non_finite_loss_stops_run_and_keeps_last_checkpoint(tmp_path: Path, monkeypatch) -> None:
    cfg = tiny_config(tmp_path / "run", checkpoint_every=10)
    original = CalQLLearner.update

    def update(self, batch):
        if self.num_updates == 23:
            raise NonFiniteLossError("non-finite loss at update 23 (injected)")
        return original(self, batch)

    monkeypatch.setattr(CalQLLearner, "update", update)
    with pytest.raises(TrainingStopped, match="run stopped at step 24, last good checkpoint kept") as info:
        run(cfg)
    assert info.value.exit_code == 3 and "--run.resume" in info.value.hint
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert state["learner"]["num_updates"] == 20
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert rows[-1]["error/non_finite_loss"] == 1.0 and rows[-1]["step"] == 24, "the bad update's row, at its step"
    assert rows[-2]["step"] == 23 and "train/critic_loss" in rows[-2], "the good updates before it are logged"
    assert (tmp_path / "run" / "learning_curves.png").is_file()


@pytest.mark.parametrize("change,match", [
    (dict(mixing_ratio=1.5), "mixing-ratio"), (dict(mixing_ratio=-0.5), "mixing-ratio"),
    (dict(batch_size=0), "batch-size"),
])
def test_bad_loop_config_is_named(tmp_path: Path, change: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        run(tiny_config(tmp_path / "run", **change))


def test_unknown_flag_is_rejected() -> None:
    out = subprocess.run([sys.executable, "train_state.py", "--loop.no-such-flag", "1"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "no-such-flag" in (out.stderr + out.stdout)


def test_resume_without_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "missing")
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, resume=True))
    with pytest.raises(FileNotFoundError, match="run-dir|checkpoint"):
        run(cfg)


def test_paper_preset_is_the_papers_update() -> None:
    """`train_state.py --preset paper`: no BC term of any kind and no Lagrange multiplier;
    the paper's fixed CQL weights (5 offline, 0.5 online at unit reward) carried by the
    reward's scale, so that weight / reward scale is the paper's at whatever scale the
    preset runs; the default preset's loop and reward, so the two compare on one footing."""
    from calql_robot.cli import parse_state_cli

    paper, default = parse_state_cli(["--preset", "paper", "--run.seed", "3"]), parse_state_cli([])
    lr = paper.learner
    assert lr.td3bc_alpha is None and lr.bc_encoder_weight == 0.0 and not lr.lagrange
    assert (lr.cql_weight / paper.reward.scale, lr.cql_weight_online / paper.reward.scale) == (5.0, 0.5)
    assert lr.calql_bound and lr.calibrate_online and lr.discrete_gripper and lr.max_target_backup
    assert paper.reward == default.reward and paper.loop == default.loop and paper.run.seed == 3
    assert default.learner.td3bc_alpha is not None and default.learner.lagrange


def test_eval_schedule_adds_early_marks_to_the_period() -> None:
    """`--loop.eval-at 100 250 500` with `--loop.eval-every 1000`: after the switch the loop
    evaluates at the first episode reaching 100, 250, 500, then 1000, 2000, ...; a mark an
    episode jumped over is not repeated, and without marks the period alone decides."""
    from calql_robot.schedule import next_eval_step

    at = (500, 100, 250)  # order as typed does not matter
    nxt, marks = next_eval_step(0, 1000, at), []
    for episode_end in (40, 120, 180, 260, 600, 1010, 1500, 2003):  # the loop's own rule
        if episode_end >= nxt:
            marks.append(episode_end)
            nxt = next_eval_step(episode_end, 1000, at)
    assert marks == [120, 260, 600, 1010, 2003]
    assert [next_eval_step(s, 500, ()) for s in (0, 499, 500, 1203)] == [500, 500, 1000, 1500]
    assert next_eval_step(0, 1000, (1000,)) == 1000 and nxt == 3000


def test_the_analysis_reads_back_the_mark_the_loop_evaluated_at() -> None:
    """`last_eval_mark` (analysis) inverts `next_eval_step` (loop): an evaluation logged at any
    step between a mark and the next one is traced to that mark, and a mark maps to itself."""
    from calql_robot.schedule import last_eval_mark, next_eval_step

    for every, at in ((500, ()), (1000, (100, 250, 500)), (300, (450,))):
        mark = 0
        while mark < 3000:
            nxt = next_eval_step(mark, every, at)
            assert all(last_eval_mark(s, every, at) == mark for s in range(mark, nxt)), (every, at, mark)
            assert last_eval_mark(nxt, every, at) == nxt
            mark = nxt
    assert last_eval_mark(99, 0, (100,)) == 0 and last_eval_mark(120, 0, (100,)) == 100  # eval-every 0: marks only
