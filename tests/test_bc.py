"""The behaviour-cloning reference: its loss against NumPy, learning a fixed map, state round
trip, and the visual flat-array gripper rewrite it shares the data path with."""

from __future__ import annotations

import numpy as np
import torch

from calql_robot.agents.base import AgentSpec
from calql_robot.agents.bc import BCConfig, BCLearner
from calql_robot.agents.calql import CalQLConfig
from calql_robot.agents.calql_learner import CalQLLearner
from calql_robot.agents.catalog import build_agent
from calql_robot.domains.pickplace_state import StateExperimentConfig


def make_learner(algo: str, bc: BCConfig):
    """An agent of `--algo` built as the entry points build it (the catalog, a config)."""
    return build_agent(StateExperimentConfig(algo=algo, bc=bc, learner=CalQLConfig()), AgentSpec(5, 3))


def batch(rng: np.random.Generator, n: int = 64) -> dict[str, np.ndarray]:
    obs = rng.normal(size=(n, 5)).astype(np.float32)
    return {"observations": obs, "actions": np.tanh(obs[:, :3] * 0.8).astype(np.float32)}


def test_bc_loss_matches_numpy_and_learns_a_map() -> None:
    torch.manual_seed(0)
    learner = BCLearner(BCConfig(hidden=(32,), lr=3e-3), AgentSpec(5, 3))
    rng = np.random.default_rng(0)
    b = batch(rng)
    layers = [m for m in learner.policy.net if isinstance(m, torch.nn.Linear)]
    h = np.maximum(b["observations"] @ layers[0].weight.detach().numpy().T + layers[0].bias.detach().numpy(), 0)
    pred = np.tanh(h @ layers[1].weight.detach().numpy().T + layers[1].bias.detach().numpy())
    want = np.mean((pred - b["actions"]) ** 2)
    got = learner.update(b)["bc_loss"]  # the loss of the pre-update parameters
    assert abs(got - want) < 1e-5 * max(1.0, want)
    first = float(want)
    for _ in range(300):
        last = learner.update(batch(rng))["bc_loss"]
    assert last < 0.1 * first


def test_bc_state_round_trip_and_act() -> None:
    torch.manual_seed(1)
    a = make_learner("bc", BCConfig(hidden=(16,)))
    a.update(batch(np.random.default_rng(2)))
    b = make_learner("bc", BCConfig(hidden=(16,)))
    b.load_state_dict(a.state_dict())
    obs = np.random.default_rng(3).normal(size=(4, 5)).astype(np.float32)
    np.testing.assert_array_equal(a.act(obs, True), b.act(obs, False))
    assert a.act(obs[0], True).shape == (3,) and np.all(np.abs(a.act(obs, True)) <= 1)
    assert isinstance(make_learner("calql", BCConfig()), CalQLLearner)


def test_bc_resumed_with_another_lr_trains_at_it() -> None:
    a = make_learner("bc", BCConfig(hidden=(16,), lr=1e-3))
    a.update(batch(np.random.default_rng(2)))
    b = make_learner("bc", BCConfig(hidden=(16,), lr=1e-5))
    b.load_state_dict(a.state_dict())
    assert [g["lr"] for g in b.optimizer.param_groups] == [1e-5]


def test_flat_gripper_rewrite_uses_each_steps_own_observation() -> None:
    from calql_robot.domains.pickplace_visual import binarize_gripper_flat
    lengths = np.array([2, 3])
    states = np.zeros((7, 10), np.float32)  # rows: ep0 t0 t1 t2(final), ep1 t0 t1 t2 t3(final)
    states[[0, 1], 9] = [1, 0]  # ep0: open, then closed
    states[[3, 4, 5], 9] = [0, 0, 1]  # ep1: closed, closed, open
    actions = np.zeros((5, 7), np.float32)
    actions[:, 6] = [0.1, 0.2, -0.1, 0.9, 0.0]  # hold, hold, hold, open, hold
    out = binarize_gripper_flat(actions, states, lengths)
    # each hold keeps the state of its own row: ep0 rows 0, 1; ep1 rows 3, 4, 5
    assert out[:, 6].tolist() == [1.0, -1.0, -1.0, 1.0, 1.0]
    np.testing.assert_array_equal(out[:, :6], actions[:, :6])
