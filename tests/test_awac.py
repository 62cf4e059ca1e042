"""AWAC: every loss against an independent NumPy computation (float64, the same noise drawn
in the same order), gradient isolation, every trained parameter moves, the target update,
state round trip, bad settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from calql_robot.agents.awac import PRESETS, AWACConfig, AWACLearner, compute_losses
from calql_robot.agents.base import AgentSpec, batch_to_torch
from calql_robot.errors import ConfigError
from tests.test_iql import FEAT, np_gaussian_log_prob, np_layers
from tests.test_losses import ACT, DISCOUNT, OBS, B, make_batch, np_critics, np_mlp, np_q

K = 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny nets (conftest.py)


def make_learner(cfg: AWACConfig, encoder: nn.Module | None = None, seed: int = 0) -> AWACLearner:
    torch.manual_seed(seed)
    learner = AWACLearner(cfg, AgentSpec(OBS if encoder is None else FEAT, ACT, DISCOUNT, encoder=encoder))
    with torch.no_grad():  # non-trivial values so every term matters
        for p in [*learner.critic.parameters(), *learner.actor.parameters()]:
            p.add_(0.3 * torch.randn_like(p))
        for p, q in zip(learner.target_critic.parameters(), learner.critic.parameters()):
            p.copy_(q + 0.1 * torch.randn_like(q))
    return learner


def small_cfg(**kw) -> AWACConfig:
    return AWACConfig(**{"actor_hidden": (8, 8), "critic_hidden": (8, 8), "lam": 0.3, "value_samples": K, **kw})


def reference_losses(learner: AWACLearner, batch: dict, seed: int) -> dict[str, float]:
    """The SPEC-style formulas written out; noise replayed in compute_losses' order."""
    torch.manual_seed(seed)
    eps_next, eps_v = torch.randn(1, B, ACT).double().numpy()[0], torch.randn(K, B, ACT).double().numpy()
    s, s2 = batch["observations"].astype(np.float64), batch["next_observations"].astype(np.float64)
    a = batch["actions"].astype(np.float64)
    r, d = batch["rewards"].astype(np.float64), batch["dones"].astype(np.float64)
    actor = learner.actor
    std = np.exp(np.clip(actor.log_std.detach().double().numpy(), actor.log_std_min, 2.0))

    def policy_sample(obs, eps):
        return np.clip(np.tanh(np_mlp(obs, np_layers(actor.mlp))) + std * eps, -1.0, 1.0)

    critics, targets = np_critics(learner), np_critics(learner, target=True)
    a2 = policy_sample(s2, eps_next)
    y = r + DISCOUNT * (1 - d) * np.minimum(*[np_q(c, s2, a2) for c in targets])
    critic_loss = sum(np.mean((np_q(c, s, a) - y) ** 2) for c in critics)
    v = np.minimum(*[np.mean([np_q(c, s, policy_sample(s, e)) for e in eps_v], axis=0) for c in critics])
    adv = np.minimum(*[np_q(c, s, a) for c in critics]) - v
    w = np.exp(adv / learner.cfg.lam - np.max(adv / learner.cfg.lam))
    w /= w.sum()
    actor_loss = -np.sum(w * np_gaussian_log_prob(actor, s, a))
    return {"critic": critic_loss, "actor": actor_loss, "clipped_next": np.mean(np.abs(a2) == 1.0)}


def test_losses_match_numpy_reference() -> None:
    learner = make_learner(small_cfg())
    batch = make_batch()
    want = reference_losses(learner, batch, seed=5)
    assert 0 < want["clipped_next"] < 1, "the backup's samples must meet the [-1, 1] clip"
    torch.manual_seed(5)
    losses, metrics = compute_losses(batch_to_torch(batch, learner.device), learner.nets(), learner.cfg, DISCOUNT)
    for name in ("critic", "actor"):
        assert float(losses[name].detach()) == pytest.approx(want[name], rel=1e-4, abs=1e-5), name
    assert 1.0 <= float(metrics["weight_max"]) <= B  # max of a softmax times B


def with_encoder(**kw) -> AWACLearner:
    torch.manual_seed(0)
    return make_learner(small_cfg(**kw), nn.Sequential(nn.Linear(OBS, FEAT), nn.Tanh()))


def param_groups(learner: AWACLearner) -> dict[str, list[torch.Tensor]]:
    return {"actor": list(learner.actor.parameters()), "critic": list(learner.critic.parameters()),
            "encoder": list(learner.encoder.parameters()), "target_critic": list(learner.target_critic.parameters())}


OWNERS = {"critic": {"critic", "encoder"}, "actor": {"actor"}}


@pytest.mark.parametrize("loss_name", sorted(OWNERS))
def test_each_loss_reaches_only_its_own_parameters(loss_name: str) -> None:
    learner = with_encoder()
    losses, _ = compute_losses(batch_to_torch(make_batch(), learner.device), learner.nets(), learner.cfg, DISCOUNT)
    groups = param_groups(learner)
    every = [p for ps in groups.values() for p in ps if p.requires_grad]
    grads = dict(zip(map(id, every), torch.autograd.grad(losses[loss_name], every, allow_unused=True)))
    for group, params in groups.items():
        touched = any(grads.get(id(p)) is not None and grads[id(p)].abs().sum() > 0 for p in params)
        assert touched == (group in OWNERS[loss_name]), (loss_name, group)


def test_every_parameter_changes_and_target_is_polyak() -> None:
    learner = with_encoder()
    before = {name: [p.detach().clone() for p in ps] for name, ps in param_groups(learner).items()}
    metrics = learner.update(make_batch())
    assert {"critic_loss", "actor_loss", "v_pi", "advantage", "weight_max"} <= set(metrics)
    for name, params in param_groups(learner).items():
        for i, (old, new) in enumerate(zip(before[name], params)):
            assert not torch.equal(old, new.detach()), f"{name}[{i}] did not change"
    tau = learner.cfg.tau
    for t0, t1, online in zip(before["target_critic"], learner.target_critic.parameters(), learner.critic.parameters()):
        torch.testing.assert_close(t1, tau * online.detach() + (1 - tau) * t0)


def test_state_round_trip_act_value_and_resumed_settings() -> None:
    a = with_encoder()
    a.update(make_batch())
    a.set_online(True)
    b = make_learner(small_cfg(lr=1e-5, actor_weight_decay=0.0), nn.Sequential(nn.Linear(OBS, FEAT), nn.Tanh()), 3)
    b.load_state_dict(a.state_dict())
    obs = make_batch(2)["observations"]
    np.testing.assert_array_equal(a.act(obs, True), b.act(obs, True))
    np.testing.assert_array_equal(a.value(obs), b.value(obs))
    assert b.online and b.num_updates == 1 and not b.needs_returns and b.learns_online
    assert all(g["lr"] == 1e-5 for opt in b.optimizers.values() for g in opt.param_groups)
    assert b.optimizers["actor"].param_groups[0]["weight_decay"] == 0.0
    assert np.all(np.abs(a.act(obs * 50, False)) <= 1) and a.act(obs[0], True).shape == (ACT,)


def test_presets_are_the_papers_lambdas() -> None:
    assert {k: p().lam for k, p in PRESETS.items()} == {"adroit": 0.3, "kitchen": 1.0, "antmaze": 1.0,
                                                         "manipulation": 1.0}


@pytest.mark.parametrize("change, needle", [({"lam": 0.0}, "--awac.lam"), ({"value_samples": 0}, "--awac.value-samples"),
                                            ({"actor_weight_decay": -1.0}, "--awac.actor-weight-decay"),
                                            ({"critic_hidden": (0,)}, "--awac.critic-hidden"), ({"tau": 2.0}, "--awac.tau")])
def test_settings_that_cannot_work_are_named(change: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        AWACConfig(**change).validate()


def test_prefers_the_rewarded_action_where_cloning_would_not() -> None:
    """The softmax weights' sign end to end (tests/test_iql.py's bandit; measured 0.84)."""
    from tests.test_iql import mean_action_after

    torch.manual_seed(0)
    cfg = AWACConfig(actor_hidden=(32, 32), critic_hidden=(32, 32), lam=0.1, lr=1e-3)
    assert mean_action_after(AWACLearner(cfg, AgentSpec(3, 1))) > 0.5
