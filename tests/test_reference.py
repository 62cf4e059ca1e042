"""The learned reference value of the Cal-QL bound (`--learner.reference learned`, the
paper's Appendix G; `calql_robot/agents/reference.py`): the regression reaches the returns,
the bound reads Q_mu(s, a_data) on offline rows and G on online rows (against NumPy), the
state round trip does not refit, the one-line errors, and a run of `train_state.py`."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from calql_robot.agents.base import AgentSpec, Preparing
from calql_robot.agents.calql import CalQLConfig
from calql_robot.agents.calql_learner import CalQLLearner
from calql_robot.agents.catalog import validate_agent_configs
from calql_robot.errors import ConfigError
from data.replay import EpisodeReplayBuffer
from tests.test_losses import ACT, DISCOUNT, OBS, B, make_batch, make_learner, np_q, reference_losses, small_cfg
from tests.test_sac import parsed

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny nets (conftest.py)


# ------------------------------------------------------------------ a small offline dataset
def smooth_return(s: np.ndarray, a: np.ndarray) -> np.ndarray:
    """G as a smooth function of (s, a), with a part that only the action explains."""
    return np.sin(s[:, 0]) + s[:, 1] * a[:, 0] + 0.5 * a[:, 1]


def smooth_buffer(episodes: int = 40, length: int = 10, seed: int = 0) -> EpisodeReplayBuffer:
    """400 offline transitions whose stored mc_returns are `smooth_return` of their (s, a)."""
    rng = np.random.default_rng(seed)
    buf = EpisodeReplayBuffer({"state": ((OBS,), np.float32)}, ACT, capacity=episodes * length)
    for _ in range(episodes):
        obs = rng.normal(size=(length + 1, OBS)).astype(np.float32)
        act = rng.uniform(-1, 1, size=(length, ACT)).astype(np.float32)
        flags = np.r_[np.zeros(length - 1, bool), True]
        buf.add_episode({"state": obs}, act, np.zeros(length, np.float32), flags, np.zeros(length, bool),
                        smooth_return(obs[:-1], act).astype(np.float32))
    return buf


class StateRows:
    """The buffer as a state learner's source: its dict observation's 'state' as the array."""

    def __init__(self, buf: EpisodeReplayBuffer) -> None:
        self.buf = buf

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict:
        batch = self.buf.sample(batch_size, rng)
        return {**batch, "observations": batch["observations"]["state"],
                "next_observations": batch["next_observations"]["state"]}


def learned_cfg(**kw) -> CalQLConfig:
    base = dict(reference="learned", reference_steps=400, reference_lr=1e-3, critic_hidden=(64, 64))
    return small_cfg(**{**base, **kw})


def fitted_learner(steps: int = 400) -> tuple[CalQLLearner, dict]:
    torch.manual_seed(0)
    learner = CalQLLearner(learned_cfg(reference_steps=steps), AgentSpec(OBS, ACT, DISCOUNT))
    metrics = learner.prepare(StateRows(smooth_buffer()), 64, np.random.default_rng(0))
    return learner, metrics


def q_mu(learner: CalQLLearner, s: np.ndarray, a: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return learner.reference(torch.as_tensor(s), torch.as_tensor(a)).numpy()


# ------------------------------------------------------------------ the regression
def test_regression_reaches_the_returns() -> None:
    """After 400 steps the MSE over all 400 rows is below 0.05, i.e. R^2 > 0.93 (Var G is
    0.75 here), and far below 0.42, the least MSE of any function of s alone (the variance
    that s1*a0 + 0.5*a1 keeps given s, E[s1^2]/3 + 0.25/3): Q_mu is a Q-function, it reads
    the action. Measured: 0.018."""
    learner, metrics = fitted_learner()
    assert isinstance(learner, Preparing) and learner.reference_fitted
    rows = smooth_buffer().sample_indices(np.arange(400))
    s, a = rows["observations"]["state"], rows["actions"]
    mse = float(np.mean((q_mu(learner, s, a) - rows["mc_returns"]) ** 2))
    assert mse < 0.05, mse
    assert metrics["reference/fit_loss_end"] < 0.2 * metrics["reference/fit_loss_start"]
    assert metrics["reference/fit_steps"] == 400
    assert learner.prepare(StateRows(smooth_buffer()), 64, np.random.default_rng(0)) == {}  # once


# ------------------------------------------------------------------ the bound reads Q_mu(s, a_data)
def perturbed_reference(learner: CalQLLearner) -> None:
    """Non-trivial Q_mu values around the critics' (so the bound bites on some columns only)."""
    with torch.no_grad():
        for p in learner.reference.q.parameters():
            p.add_(0.5 * torch.randn_like(p))
        learner.reference.g_mean.fill_(0.2)
    learner.reference_fitted = True


@pytest.mark.parametrize("n_offline", [None, 4, 0])
def test_bound_uses_q_mu_at_the_data_action_on_offline_rows(n_offline: int | None) -> None:
    """One update's critic loss equals the NumPy Cal-QL loss with G replaced by
    Q_mu(s, clip(a_data)) on offline rows (NumPy's own MLP on Q_mu's weights) and kept on
    online rows (the first `n_offline` rows of a mixed batch are offline; an offline batch has
    no key); the batch's G is -1e6 on offline rows, so a bound that read it would do nothing."""
    learner = make_learner(learned_cfg(critic_hidden=(8, 8)))
    perturbed_reference(learner)
    batch = make_batch()
    offline = np.arange(B) < (B if n_offline is None else n_offline)
    g_online = np.random.default_rng(3).normal(size=B).astype(np.float32)
    batch["mc_returns"] = np.where(offline, -1e6, g_online).astype(np.float32)
    if n_offline is not None:
        batch["n_offline"] = n_offline
    ref = learner.reference
    layers = [(w.detach().double().numpy()[0], b.detach().double().numpy()[0, 0])
              for w, b in zip(ref.q.weights, ref.q.biases)]
    s = batch["observations"].astype(np.float64)
    a = np.clip(batch["actions"].astype(np.float64), -learner.cfg.action_clip, learner.cfg.action_clip)
    q_mu_np = float(ref.g_mean) + float(ref.g_std) * np_q(layers, s, a)
    bound = np.where(offline, q_mu_np, batch["mc_returns"])
    want = reference_losses(learner, dict(batch, mc_returns=bound), 11, bound=True, weight=2.0)["critic"]
    cql = reference_losses(learner, batch, 11, bound=False, weight=2.0)["critic"]
    torch.manual_seed(11)
    metrics = learner.update(batch)
    assert metrics["critic_loss"] * 2 == pytest.approx(want, rel=1e-4)  # metric: the mean over 2 critics
    if offline.any():
        assert abs(want - cql) > 1e-3  # Q_mu bites where G (-1e6) would not
        assert metrics["reference_minus_g"] == pytest.approx(float(np.mean((q_mu_np - batch["mc_returns"])[offline])),
                                                             rel=1e-4)
    else:
        assert "reference_minus_g" not in metrics


def test_update_before_the_fit_is_refused() -> None:
    learner = make_learner(learned_cfg())
    with pytest.raises(RuntimeError, match="not fitted"):
        learner.update(make_batch())


def test_no_q_mu_pass_in_a_phase_without_the_bound() -> None:
    """Online with `--learner.no-calibrate-online` the bound is off: nothing reads Q_mu (an
    unfitted one is not refused) and no reference metric is logged."""
    learner = make_learner(learned_cfg(calibrate_online=False))
    learner.set_online(True)
    assert "reference_minus_g" not in learner.update(make_batch())


def test_images_q_mu_has_its_own_encoder() -> None:
    """Visual runs: Q_mu reads images through its own copy of the encoder slot, trained by
    the regression alone; the shared encoder (the critic's) is not touched by the fit."""
    from bench.visual import _space, filled_buffer
    from calql_robot.agents.calql import PRESETS
    from calql_robot.config import replace
    from calql_robot.domains.pickplace_visual import (
        EncoderConfig,
        VisualExperimentConfig,
        make_visual_modules,
    )

    torch.manual_seed(0)
    cfg = VisualExperimentConfig(learner=replace(PRESETS["visual_paper"](), actor_hidden=(16,), critic_hidden=(16,),
                                                 cql_n_actions=2, backup_k=2, reference="learned",
                                                 reference_steps=3),
                                 encoder=EncoderConfig(latent_dim=8))
    encoder, augment, feature_dim = make_visual_modules(cfg, _space(32))
    learner = CalQLLearner(cfg.learner, AgentSpec(feature_dim, 7, 0.99, encoder, augment, "cpu"))
    shared = [p.detach().clone() for p in learner.encoder.parameters()]
    own = [p.detach().clone() for p in learner.reference.encoder.parameters()]
    buf = filled_buffer(32, 2, np.random.default_rng(0))
    metrics = learner.prepare(buf, 8, np.random.default_rng(1))
    assert metrics["reference/fit_steps"] == 3
    assert all(torch.equal(a, b) for a, b in zip(shared, learner.encoder.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(own, learner.reference.encoder.parameters()))
    assert "reference_minus_g" in learner.update(buf.sample(8, np.random.default_rng(2)))


# ------------------------------------------------------------------ state
def test_state_round_trip_does_not_refit() -> None:
    learner, _ = fitted_learner(steps=50)
    buffer = io.BytesIO()
    torch.save(learner.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    torch.manual_seed(5)
    fresh = CalQLLearner(learned_cfg(reference_steps=50), AgentSpec(OBS, ACT, DISCOUNT))
    fresh.load_state_dict(state)
    assert fresh.reference_fitted
    for name, value in learner.reference.state_dict().items():
        torch.testing.assert_close(fresh.reference.state_dict()[name], value)
    rng = np.random.default_rng(9)
    before = rng.bit_generator.state
    assert fresh.prepare(StateRows(smooth_buffer()), 64, rng) == {} and rng.bit_generator.state == before
    mc = CalQLLearner(learned_cfg(reference="mc"), AgentSpec(OBS, ACT, DISCOUNT))
    assert "reference" not in mc.state_dict() and mc.prepare(StateRows(smooth_buffer()), 64, rng) == {}
    mc.load_state_dict(state)  # an mc run reads a learned run's state and ignores Q_mu
    fork = CalQLLearner(learned_cfg(), AgentSpec(OBS, ACT, DISCOUNT))
    fork.load_state_dict(mc.state_dict())  # a learned fork of an mc run's switch.pt fits its own
    assert not fork.reference_fitted


def test_resumed_and_forked_runs_do_not_refit(tmp_path: Path, monkeypatch) -> None:
    """In the loop: a run killed in its first online episode and resumed ends as an
    uninterrupted one (every row, every tensor, Q_mu's too) with one fit row; a run forked
    from its switch.pt (`--run.finetune-from`) takes its Q_mu and fits none of its own."""
    import dataclasses

    from calql_robot.loop import Trainer
    from tests.test_loop import _with_run, assert_same_runs, run, tiny_config

    def learned(run_dir: Path):
        cfg = tiny_config(run_dir, offline_steps=20, online_env_steps=40, eval_every_offline=0, eval_every=40)
        return dataclasses.replace(cfg, learner=dataclasses.replace(cfg.learner, reference="learned",
                                                                    reference_steps=50, reference_lr=1e-3))

    monkeypatch.setattr(Trainer, "_plot", lambda self, quiet=False: None)  # figures: tests/test_plots.py
    summary_a = run(learned(tmp_path / "a"))
    original, calls = Trainer._online_episode, {"n": 0}

    def dying_episode(self):
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt("simulated kill in the first online episode")
        original(self)

    monkeypatch.setattr(Trainer, "_online_episode", dying_episode)
    with pytest.raises(KeyboardInterrupt):
        run(learned(tmp_path / "b"))
    monkeypatch.setattr(Trainer, "_online_episode", original)
    summary_b = run(_with_run(learned(tmp_path / "b"), resume=True))
    assert_same_runs(tmp_path / "a", tmp_path / "b", summary_a, summary_b)
    run(_with_run(learned(tmp_path / "c"), finetune_from=str(tmp_path / "a")))
    source = torch.load(tmp_path / "a" / "checkpoints" / "latest.pt", weights_only=True)["learner"]["reference"]
    for name in ("b", "c"):
        assert sum("reference/fit_loss_end" in r for r in rows_of(tmp_path / name)) == 1, name
        state = torch.load(tmp_path / name / "checkpoints" / "latest.pt", weights_only=True)["learner"]
        assert all(torch.equal(t, state["reference"][k]) for k, t in source.items()), name


# ------------------------------------------------------------------ user errors
@pytest.mark.parametrize("change,needles", [
    (dict(calql_bound=False), ("--learner.reference learned", "--learner.no-calql-bound")),
    (dict(reference="td"), ("--learner.reference", "'td'")),
    (dict(reference_steps=0), ("--learner.reference-steps", "0")),
    (dict(reference_lr=0.0), ("--learner.reference-lr", "0.0")),
])
def test_settings_that_cannot_work_are_one_line_errors(change: dict, needles: tuple[str, ...]) -> None:
    cfg = CalQLConfig(**{"reference": "learned", **change})
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    assert all(n in str(err.value) for n in needles) and "\n" not in str(err.value)


def test_cql_sac_with_a_learned_reference_is_refused_on_the_command_line() -> None:
    """`--algo cql-sac` switches the bound off: a learned reference would bound nothing."""
    cfg = parsed(["--algo", "cql-sac", "--learner.reference", "learned"])
    with pytest.raises(ConfigError, match="--learner.reference learned needs the Cal-QL bound"):
        validate_agent_configs(cfg)
    assert parsed(["--learner.reference", "learned"]).learner.reference == "learned"


# ------------------------------------------------------------------ the entry point
def rows_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.smoke
def test_train_state_with_a_learned_reference(tmp_path: Path) -> None:
    """`train_state.py --learner.reference learned`: Q_mu is fitted once before pre-training
    (its fit loss fell: R^2 > 0.9 on the scripted data's returns, -500 to ~+40, in 200 steps),
    updates happen offline and online with `reference_minus_g` logged, and the checkpoint
    holds the fitted Q_mu."""
    from tests.test_user_errors import TINY

    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    args = [*TINY, "--learner.reference", "learned", "--learner.reference-steps", "200",
            "--learner.reference-lr", "1e-3", "--run.run-dir", str(run_dir)]
    proc = subprocess.run([sys.executable, "train_state.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = rows_of(run_dir)
    fits = [r for r in rows if "reference/fit_loss_end" in r]
    assert len(fits) == 1 and fits[0]["step"] == 0 and fits[0]["reference/fit_steps"] == 200
    assert fits[0]["reference/fit_loss_end"] < 0.1 * fits[0]["reference/fit_loss_start"]
    assert fits[0]["reference/fit_loss_end"] < 0.1 * fits[0]["reference/return_var"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["offline_updates"] == 40 and summary["online_updates"] > 0
    for phase in ("offline", "online"):
        assert any("train/reference_minus_g" in r for r in rows if r["phase"] == phase), phase
    state = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)["learner"]
    assert state["reference_fitted"] and "q.weights.0" in state["reference"]
