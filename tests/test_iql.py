"""IQL: every loss against an independent NumPy computation (float64), gradient isolation,
every trained parameter moves, the target update, state round trip, bad settings; the
`wsrl-iql` catalog line (IQL with WSRL's data schedule)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from calql_robot.agents.base import AgentSpec, batch_to_torch
from calql_robot.agents.catalog import AGENTS, WSRL_WARMUP, agent_config
from calql_robot.agents.iql import EXP_ADV_MAX, PRESETS, IQLConfig, IQLLearner, compute_losses
from calql_robot.errors import ConfigError
from data.mixing import sample_mixed
from tests.test_losses import ACT, DISCOUNT, OBS, B, make_batch, np_critics, np_mlp, np_q
from tests.test_mixing import OFFLINE, ONLINE, filled
from tests.test_sac import parsed

FEAT = 4


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny nets (conftest.py)


def np_layers(mlp) -> list[tuple[np.ndarray, np.ndarray]]:
    """A one-member EnsembleMLP's layers as float64 (weight (in, out), bias (out,))."""
    return [(w.detach().double().numpy()[0], b.detach().double().numpy()[0, 0]) for w, b in zip(mlp.weights, mlp.biases)]


def np_gaussian_log_prob(actor, s: np.ndarray, a: np.ndarray) -> np.ndarray:
    """log N(a; tanh(MLP(s)), exp(clip(log_std))) summed over action dims, written out."""
    mean = np.tanh(np_mlp(s, np_layers(actor.mlp)))
    log_std = np.clip(actor.log_std.detach().double().numpy(), actor.log_std_min, 2.0)
    std = np.exp(log_std)
    return (-0.5 * ((a - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def make_learner(cfg: IQLConfig, encoder: nn.Module | None = None, seed: int = 0) -> IQLLearner:
    torch.manual_seed(seed)
    feature_dim = OBS if encoder is None else FEAT
    learner = IQLLearner(cfg, AgentSpec(feature_dim, ACT, DISCOUNT, encoder=encoder))
    with torch.no_grad():  # non-trivial values so every term matters
        for p in [*learner.critic.parameters(), *learner.actor.parameters(), *learner.value_net.parameters()]:
            p.add_(0.3 * torch.randn_like(p))
        for p, q in zip(learner.target_critic.parameters(), learner.critic.parameters()):
            p.copy_(q + 0.1 * torch.randn_like(q))
    return learner


def small_cfg(**kw) -> IQLConfig:
    return IQLConfig(**{"hidden": (8, 8), "expectile": 0.8, "temperature": 10.0, **kw})


def reference_losses(learner: IQLLearner, batch: dict) -> dict[str, float]:
    cfg = learner.cfg
    s, s2 = batch["observations"].astype(np.float64), batch["next_observations"].astype(np.float64)
    a = batch["actions"].astype(np.float64)
    r, d = batch["rewards"].astype(np.float64), batch["dones"].astype(np.float64)
    value = np_layers(learner.value_net.mlp)
    q_target = np.minimum(*[np_q(c, s, a) for c in np_critics(learner, target=True)])
    v = np_mlp(s, value)[:, 0]
    u = q_target - v
    value_loss = np.mean(np.where(u > 0, cfg.expectile, 1 - cfg.expectile) * u ** 2)
    y = r + DISCOUNT * (1 - d) * np_mlp(s2, value)[:, 0]
    critic_loss = sum(np.mean((np_q(c, s, a) - y) ** 2) for c in np_critics(learner))
    weights = np.minimum(np.exp(cfg.temperature * u), 100.0)
    actor_loss = -np.mean(weights * np_gaussian_log_prob(learner.actor, s, a))
    return {"value": value_loss, "critic": critic_loss, "actor": actor_loss, "clipped": np.mean(weights >= 100.0),
            "positive": np.mean(u > 0)}


def test_losses_match_numpy_reference() -> None:
    learner = make_learner(small_cfg())
    with torch.no_grad():  # V below Q on some rows: both expectile branches, some weights at the clip
        learner.value_net.mlp.biases[-1].sub_(0.8)
    batch = make_batch()
    want = reference_losses(learner, batch)
    assert 0 < want["clipped"] < 1 and 0 < want["positive"] < 1, "the batch must cover every branch"
    losses, metrics = compute_losses(batch_to_torch(batch, learner.device), learner.nets(), learner.cfg, DISCOUNT)
    for name in ("value", "critic", "actor"):
        assert float(losses[name].detach()) == pytest.approx(want[name], rel=1e-4, abs=1e-5), name
    assert float(metrics["weight_clipped"]) == pytest.approx(want["clipped"])
    assert EXP_ADV_MAX == 100.0


def test_expectile_half_is_half_the_mean_squared_error() -> None:
    from calql_robot.agents.iql import expectile_loss

    diff = torch.tensor([-2.0, -0.5, 0.0, 1.0, 3.0])
    assert float(expectile_loss(diff, 0.5)) == pytest.approx(0.5 * float(diff.pow(2).mean()))
    assert float(expectile_loss(diff, 0.9)) == pytest.approx(float(((diff > 0) * 0.9 + (diff <= 0) * 0.1)
                                                                   .mul(diff.pow(2)).mean()))


def with_encoder(**kw) -> IQLLearner:
    torch.manual_seed(0)
    return make_learner(small_cfg(**kw), nn.Sequential(nn.Linear(OBS, FEAT), nn.Tanh()))


def param_groups(learner: IQLLearner) -> dict[str, list[torch.Tensor]]:
    return {"actor": list(learner.actor.parameters()), "critic": list(learner.critic.parameters()),
            "encoder": list(learner.encoder.parameters()), "value": list(learner.value_net.parameters()),
            "target_critic": list(learner.target_critic.parameters())}


OWNERS = {"value": {"value"}, "critic": {"critic", "encoder"}, "actor": {"actor"}}


@pytest.mark.parametrize("loss_name", sorted(OWNERS))
def test_each_loss_reaches_only_its_own_parameters(loss_name: str) -> None:
    learner = with_encoder(actor_dropout=0.1)
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
    assert {"critic_loss", "value_loss", "actor_loss", "v", "advantage"} <= set(metrics)
    for name, params in param_groups(learner).items():
        for i, (old, new) in enumerate(zip(before[name], params)):
            assert not torch.equal(old, new.detach()), f"{name}[{i}] did not change"
    tau = learner.cfg.tau
    for t0, t1, online in zip(before["target_critic"], learner.target_critic.parameters(), learner.critic.parameters()):
        torch.testing.assert_close(t1, tau * online.detach() + (1 - tau) * t0)


def test_state_round_trip_act_value_and_resumed_lr() -> None:
    a = with_encoder()
    a.update(make_batch())
    a.set_online(True)
    b = make_learner(small_cfg(lr=1e-5), nn.Sequential(nn.Linear(OBS, FEAT), nn.Tanh()), seed=3)
    b.load_state_dict(a.state_dict())
    obs = make_batch(2)["observations"]
    np.testing.assert_array_equal(a.act(obs, True), b.act(obs, True))
    np.testing.assert_array_equal(a.value(obs), b.value(obs))
    assert b.online and b.num_updates == 1 and not b.needs_returns and b.learns_online
    assert all(g["lr"] == 1e-5 for opt in b.optimizers.values() for g in opt.param_groups)
    sample = a.act(obs * 50, False)
    assert sample.shape == (B, ACT) and np.all(np.abs(sample) <= 1) and a.act(obs[0], True).shape == (ACT,)


def test_presets_are_the_papers_table_4() -> None:
    table = {"adroit": (0.8, 3.0), "kitchen": (0.7, 0.5), "antmaze": (0.9, 10.0), "manipulation": (0.7, 10.0)}
    assert {k: (p().expectile, p().temperature) for k, p in PRESETS.items()} == table
    assert PRESETS["kitchen"]().actor_dropout == 0.1


@pytest.mark.parametrize("change, needle", [({"expectile": 1.0}, "--iql.expectile"),
                                            ({"temperature": -1.0}, "--iql.temperature"),
                                            ({"lr": 0.0}, "--iql.lr"), ({"hidden": ()}, "--iql.hidden"),
                                            ({"actor_dropout": 1.0}, "--iql.actor-dropout")])
def test_settings_that_cannot_work_are_named(change: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        IQLConfig(**change).validate()


def bandit_batch(rng: np.random.Generator, n: int = 64) -> dict[str, np.ndarray]:
    """A one-step task: the data take a = +0.8 (reward 1) 30% of the time, a = -0.8 (reward 0)
    otherwise, whatever the state; behaviour cloning's mean is -0.32."""
    obs = rng.normal(size=(n, 3)).astype(np.float32)
    good = rng.random(n) < 0.3
    return {"observations": obs, "next_observations": obs, "actions": np.where(good, 0.8, -0.8)[:, None].astype(np.float32),
            "rewards": good.astype(np.float32), "dones": np.ones(n, np.float32)}


def mean_action_after(learner, updates: int = 300) -> float:
    rng = np.random.default_rng(0)
    for _ in range(updates):
        learner.update(bandit_batch(rng))
    return float(learner.act(rng.normal(size=(100, 3)).astype(np.float32), True).mean())


def test_prefers_the_rewarded_action_where_cloning_would_not() -> None:
    """The weights' sign and scale end to end: IQL moves to the rewarded action (measured 0.80),
    with temperature 0 it is behaviour cloning (measured -0.27)."""
    torch.manual_seed(0)
    assert mean_action_after(IQLLearner(IQLConfig(hidden=(32, 32), expectile=0.9, temperature=10.0, lr=1e-3),
                                        AgentSpec(3, 1))) > 0.5
    torch.manual_seed(0)
    assert mean_action_after(IQLLearner(IQLConfig(hidden=(32, 32), expectile=0.9, temperature=0.0, lr=1e-3),
                                        AgentSpec(3, 1))) < -0.1


# ------------------------------------------------------------------ the wsrl-iql catalog line
def test_wsrl_iql_is_iql_with_wsrls_data_schedule() -> None:
    """`--algo wsrl-iql`: IQL's agent and config as `--algo iql`, pre-training kept, then
    online batches of online rows only (mixing 0) after the warm-up (a tenth of a CPU budget,
    WSRL's 5000 env steps from 50K up); IQL's reference reward (`BASELINE_REWARDS`); explicit
    flags win."""
    iql, wsrl = parsed(["--algo", "iql"]), parsed(["--algo", "wsrl-iql"])
    assert AGENTS["wsrl-iql"].learner is IQLLearner and type(agent_config(wsrl)) is IQLConfig
    assert agent_config(wsrl) == agent_config(iql) and wsrl.loop.offline_steps == iql.loop.offline_steps > 0
    assert wsrl.loop.mixing_ratio == 0.0 != iql.loop.mixing_ratio
    assert wsrl.loop.warmup_env_steps == iql.loop.online_env_steps // 10 and iql.loop.warmup_env_steps == 0
    assert parsed(["--algo", "wsrl-iql", "--loop.online-env-steps", "50000"]).loop.warmup_env_steps == WSRL_WARMUP
    assert parsed(["--algo", "wsrl-iql", "--loop.mixing-ratio", "0.25"]).loop.mixing_ratio == 0.25
    for argv, visual in (([], False), (["--task", "antmaze-umaze"], False), (["--task", "door"], False), ([], True)):
        assert parsed([*argv, "--algo", "wsrl-iql"], visual).reward == parsed([*argv, "--algo", "iql"], visual).reward
    assert parsed(["--task", "antmaze-umaze", "--algo", "wsrl-iql"]).reward.bias == -1.0  # IQL's r - 1
    batch = sample_mixed(filled(50, OFFLINE), filled(20, ONLINE), 64, wsrl.loop.mixing_ratio,
                         np.random.default_rng(0))
    assert batch["n_offline"] == 0 and np.all(batch["observations"]["state"][:, 1] == ONLINE)
