"""`--run.precision`: the bf16 fallback on CPUs without native bf16, which values stay fp32
under bf16 autocast, and how far bf16 losses stray from fp32 on a fixed batch.

bf16 runs emulated on a CPU without avx512_bf16 (slowly, but correctly), so these tests
run everywhere; the exactness tests of the losses run in fp32 (tests/test_losses.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from calql_robot import precision
from calql_robot.agents.base import AgentSpec, batch_to_torch
from calql_robot.agents.calql import PRESETS, compute_losses
from calql_robot.agents.calql_learner import CalQLLearner
from calql_robot.networks import CriticEnsemble
from calql_robot.precision import autocast, resolve_precision

OBS, ACT, B = 37, 7, 32


def state_batch(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"observations": rng.normal(size=(B, OBS)).astype(np.float32),
            "next_observations": rng.normal(size=(B, OBS)).astype(np.float32),
            "actions": rng.uniform(-1, 1, (B, ACT)).astype(np.float32),
            "rewards": rng.choice([-5.0, 5.0], B).astype(np.float32),
            "dones": (rng.random(B) < 0.1).astype(np.float32),
            "mc_returns": rng.normal(-200, 100, B).astype(np.float32)}


@pytest.fixture
def no_bf16_units(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_units", lambda: ())


@pytest.fixture
def bf16_units(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_units", lambda: ("avx512_bf16",))


def test_bf16_without_native_units_says_so_and_runs_fp32(no_bf16_units) -> None:
    used, note = resolve_precision("bf16", torch.device("cpu"))
    assert used == "fp32"
    assert note.startswith("--run.precision bf16:") and "avx512_bf16" in note and "\n" not in note


def test_bf16_with_native_units_is_kept(bf16_units) -> None:
    assert resolve_precision("bf16", torch.device("cpu")) == ("bf16", None)
    assert resolve_precision("fp32", torch.device("cpu")) == ("fp32", None)


def test_unknown_precision_is_named() -> None:
    with pytest.raises(ValueError, match="--run.precision must be one of fp32, bf16, got 'fp16'"):
        resolve_precision("fp16", torch.device("cpu"))


def test_q_values_are_fp32_under_bf16_autocast() -> None:
    """The output layer runs in fp32: Q-values near -500 are not rounded to bf16's step of 2."""
    torch.manual_seed(0)
    critic = CriticEnsemble(2, OBS, ACT, (64, 64))
    with torch.no_grad():
        critic.biases[-1].fill_(-500.0)
        critic.weights[-1].mul_(100.0)  # spread the values around -500
    obs, actions = torch.randn(B, OBS), torch.rand(3, B, ACT) * 2 - 1
    with autocast("bf16", torch.device("cpu")):
        q = critic(obs, actions)
    assert q.dtype == torch.float32
    assert (q.detach().remainder(2.0) != 0).float().mean() > 0.9  # bf16 would leave only even numbers here
    with torch.no_grad():
        q32 = critic(obs, actions)
    assert (q - q32).abs().max() < 0.05 * (q32 + 500).abs().max()  # only the hidden layers' rounding


def test_bf16_losses_stay_within_one_percent_of_fp32() -> None:
    """Same parameters, same batch, same noise: each loss and the Q-values in bf16 within
    1% of fp32 (measured: <= 0.12% on this preset after 30 fp32 updates)."""
    for seed in range(2):
        torch.manual_seed(seed)
        learner = CalQLLearner(PRESETS["pickplace_state"](), AgentSpec(OBS, ACT, 0.99))
        batch = state_batch(seed)
        for _ in range(5):
            learner.update(batch)
        tb = batch_to_torch(batch, learner.device)
        out = {}
        for prec in ("fp32", "bf16"):
            torch.manual_seed(123)
            with autocast(prec, learner.device):
                losses, metrics = compute_losses(tb, learner.nets(), learner.cfg, learner.settings())
            assert all(v.dtype == torch.float32 for v in losses.values())
            out[prec] = {**{k: float(v.detach()) for k, v in losses.items()},
                         **{k: float(metrics[k]) for k in ("q_data", "target_q", "cql_diff")}}
        for key, value in out["fp32"].items():
            assert abs(out["bf16"][key] - value) <= 0.01 * max(abs(value), 1.0), (key, value, out["bf16"][key])


def test_bf16_update_keeps_fp32_weights_and_optimizer_state() -> None:
    torch.manual_seed(0)
    learner = CalQLLearner(PRESETS["pickplace_state"](), AgentSpec(OBS, ACT, 0.99, precision="bf16"))
    before = [p.detach().clone() for p in learner.critic.parameters()]
    metrics = learner.update(state_batch(0))
    assert all(np.isfinite(v) for v in metrics.values())
    params = [*learner.critic.parameters(), *learner.actor.parameters()]
    assert all(p.dtype == torch.float32 for p in params)
    assert any(not torch.equal(a, b) for a, b in zip(before, learner.critic.parameters()))
    for opt in learner.optimizers.values():
        for state in opt.state.values():
            assert all(v.dtype == torch.float32 for k, v in state.items() if k != "step")


def _tiny_run(tmp_path, precision_flag: str):
    from dataclasses import replace

    from calql_robot.run.runlog import read_config_json, read_metrics
    from tests.test_loop import run, tiny_config

    cfg = tiny_config(tmp_path / "run", offline_steps=20, online_env_steps=40, eval_every_offline=20, eval_every=40)
    cfg = replace(cfg, run=replace(cfg.run, precision=precision_flag))
    summary = run(cfg)
    return summary, read_config_json(tmp_path / "run" / "config.json"), read_metrics(tmp_path / "run" / "metrics.jsonl")


def test_run_on_a_cpu_without_bf16_says_so_and_records_fp32(tmp_path, capsys, no_bf16_units) -> None:
    _, config, rows = _tiny_run(tmp_path, "bf16")
    assert "--run.precision bf16: this CPU has no avx512_bf16 or AMX" in capsys.readouterr().out
    assert config["run"]["precision"] == "fp32"  # config.json says what ran
    assert any("train/critic_loss" in r for r in rows)


def test_bf16_run_through_the_entry_point(tmp_path, capsys, bf16_units) -> None:
    """With the CPU said to have bf16 units the run trains in bf16 (emulated here, tiny nets):
    offline updates, online episodes and evaluations happen and every logged loss is finite."""
    summary, config, rows = _tiny_run(tmp_path, "bf16")
    assert "--run.precision" not in capsys.readouterr().out
    assert config["run"]["precision"] == "bf16"
    losses = [r["train/critic_loss"] for r in rows if "train/critic_loss" in r]
    assert losses and all(np.isfinite(losses))
    online = [r for r in rows if r["phase"] == "online"]
    assert any("train/critic_loss" in r for r in online) and online[-1]["progress/env_steps"] == 40


def test_visual_update_in_bf16_keeps_features_and_losses_fp32() -> None:
    """The conv encoder runs under bf16 autocast; its features, the Q-values and the losses
    come out fp32 and within 1% of fp32's on the same batch and parameters."""
    from bench.visual import _space, filled_buffer, make_learner
    from calql_robot.domains.pickplace_visual import PRESETS as VISUAL

    cfg = VISUAL["cpu"]
    px = cfg.data.image_size
    rng = np.random.default_rng(0)
    batch = batch_to_torch(filled_buffer(px, 4, rng).sample(8, rng), torch.device("cpu"))
    learner = make_learner(cfg, px, torch.device("cpu"))
    out = {}
    for prec in ("fp32", "bf16"):
        torch.manual_seed(5)
        with autocast(prec, learner.device):
            features = learner.encoder(batch["observations"])
            losses, _ = compute_losses(batch, learner.nets(), learner.cfg, learner.settings(), learner.augment)
        assert features.dtype == torch.float32 and all(v.dtype == torch.float32 for v in losses.values())
        out[prec] = {k: float(v.detach()) for k, v in losses.items()}
    for key, value in out["fp32"].items():
        assert abs(out["bf16"][key] - value) <= 0.01 * max(abs(value), 1.0), (key, value, out["bf16"][key])
    assert _space(px)["image"].shape == (px, px, 3)


@pytest.mark.parametrize("algo", ["sac", "iql", "awac", "bc"])
def test_every_agent_updates_in_bf16_with_fp32_weights(algo: str) -> None:
    """Every agent computes its losses under `--run.precision bf16` (the contract's
    `forward_precision`): finite metrics, fp32 parameters, and losses within 1% of fp32's."""
    from calql_robot.agents.catalog import build_agent, with_algo_defaults
    from calql_robot.domains.pickplace_state import PRESETS as STATE

    config = with_algo_defaults(STATE["default"](), algo)
    batch = state_batch(3)
    batch["observations"], batch["next_observations"] = batch["observations"][:, :29], batch["next_observations"][:, :29]
    batch["actions"] = batch["actions"][:, :7]
    out = {}
    for prec in ("fp32", "bf16"):
        torch.manual_seed(0)
        agent = build_agent(config, AgentSpec(29, 7, 0.99, precision=prec))
        torch.manual_seed(1)
        out[prec] = agent.update(batch)
        assert all(np.isfinite(v) for v in out[prec].values())
        assert all(p.dtype == torch.float32 for p in agent.encoder.parameters())
    for key, value in out["fp32"].items():
        if "loss" in key:
            assert abs(out["bf16"][key] - value) <= 0.02 * max(abs(value), 1.0), (key, value, out["bf16"][key])
