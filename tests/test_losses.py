"""Every Cal-QL loss term against an independent NumPy computation (float64).

The torch code draws its noise in a fixed order (actor sample, n current-state samples,
n next-state samples, k backup samples, n uniform actions); the reference replays the
same draws from the same seed and computes everything else on its own: plain per-critic
MLPs on concat[s, a], the naive tanh log-det, the SPEC formulas written out.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from calql_robot.agents.base import AgentSpec
from calql_robot.agents.calql import CalQLConfig
from calql_robot.agents.calql_learner import CalQLLearner

OBS, ACT, B, N_CQL, K = 5, 3, 6, 3, 2
DISCOUNT = 0.9


def small_cfg(**kw) -> CalQLConfig:
    base = dict(actor_hidden=(8,), critic_hidden=(8, 8), cql_n_actions=N_CQL, backup_k=K, cql_weight=2.0)
    base.update(kw)
    return CalQLConfig(**base)


def make_batch(seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "observations": rng.normal(size=(B, OBS)).astype(np.float32),
        "next_observations": rng.normal(size=(B, OBS)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(B, ACT)).astype(np.float32),
        "rewards": rng.normal(size=B).astype(np.float32),
        "dones": np.array([0, 1, 0, 0, 1, 0], np.float32),
        "mc_returns": rng.normal(scale=0.3, size=B).astype(np.float32),
    }


def make_learner(cfg: CalQLConfig, seed: int = 0) -> CalQLLearner:
    torch.manual_seed(seed)
    learner = CalQLLearner(cfg, AgentSpec(OBS, ACT, DISCOUNT))
    with torch.no_grad():  # non-trivial values so every term matters
        for p in list(learner.critic.parameters()) + list(learner.actor.parameters()):
            p.add_(0.3 * torch.randn_like(p))
        for p, q in zip(learner.target_critic.parameters(), learner.critic.parameters()):
            p.copy_(q + 0.1 * torch.randn_like(q))
        learner.log_alpha.fill_(-0.7)
        learner.log_alpha_prime.fill_(0.4)
    return learner


# ------------------------------------------------------------------ NumPy reference
def np_mlp(x: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    for i, (w, b) in enumerate(layers):
        x = x @ w + b
        if i < len(layers) - 1:
            x = np.maximum(x, 0.0)
    return x


def np_critics(learner: CalQLLearner, target: bool = False) -> list:
    net = learner.target_critic if target else learner.critic
    ws = [w.detach().double().numpy() for w in net.weights]
    bs = [b.detach().double().numpy() for b in net.biases]
    return [[(w[i], b[i, 0]) for w, b in zip(ws, bs)] for i in range(ws[0].shape[0])]


def np_q(critic_layers, s: np.ndarray, a: np.ndarray) -> np.ndarray:
    return np_mlp(np.concatenate([s, a], axis=-1), critic_layers)[..., 0]


def np_policy(learner: CalQLLearner, s: np.ndarray, eps: np.ndarray):
    layers = [(w.detach().double().numpy()[0], b.detach().double().numpy()[0, 0])
              for w, b in zip(learner.actor.mlp.weights, learner.actor.mlp.biases)]
    out = np_mlp(s, layers)
    mean, log_std = out[:, :ACT], out[:, ACT:]
    m = learner.actor.log_std_multiplier.item()
    b = learner.actor.log_std_offset.item()
    log_std = np.clip(m * log_std + b, -20.0, 2.0)
    pre = mean + np.exp(log_std) * eps
    act = np.tanh(pre)
    gauss = -0.5 * eps ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    logp = (gauss - np.log(1.0 - np.tanh(pre) ** 2)).sum(-1)
    return act, logp


def draw_noise(seed: int, n: int, k: int) -> dict[str, np.ndarray]:
    """The draws of `compute_losses`, in its order."""
    torch.manual_seed(seed)
    out = {"new": torch.randn(B, ACT), "cur": torch.randn(n, B, ACT),
           "nxt": torch.randn(n, B, ACT), "backup": torch.randn(k, B, ACT),
           "rand": torch.empty(n, B, ACT).uniform_(-1.0, 1.0)}
    return {key: v.double().numpy() for key, v in out.items()}


def logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    top = x.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(x - top).sum(axis=axis, keepdims=True))).squeeze(axis)


def reference_losses(learner: CalQLLearner, batch: dict, seed: int, bound: bool,
                     weight: float, lagrange: bool | None = None) -> dict[str, float]:
    cfg = learner.cfg
    lagrange = cfg.lagrange if lagrange is None else lagrange
    k = cfg.backup_k if cfg.max_target_backup else 1
    noise = draw_noise(seed, cfg.cql_n_actions, k)
    s = batch["observations"].astype(np.float64)
    s2 = batch["next_observations"].astype(np.float64)
    a = np.clip(batch["actions"].astype(np.float64), -cfg.action_clip, cfg.action_clip)
    r, d, g = (batch[key].astype(np.float64) for key in ("rewards", "dones", "mc_returns"))
    critics, targets = np_critics(learner), np_critics(learner, target=True)
    alpha = math.exp(learner.log_alpha.item())
    out = {}

    # actor and temperature
    a_new, logp_new = np_policy(learner, s, noise["new"])
    q_new = np.minimum(*[np_q(c, s, a_new) for c in critics])
    out["actor"] = float(np.mean(alpha * logp_new - q_new))
    out["alpha"] = float(-learner.log_alpha.item() * np.mean(logp_new - ACT))

    # TD target with the max backup
    backups = [np_policy(learner, s2, noise["backup"][j])[0] for j in range(k)]
    v = np.stack([np.minimum(*[np_q(c, s2, ab) for c in targets]) for ab in backups])
    v = v.max(0) if cfg.max_target_backup else v[0]
    y = r + (1 - d) * learner.discount * v

    # CQL sets, all at s
    cur = [np_policy(learner, s, noise["cur"][j]) for j in range(cfg.cql_n_actions)]
    nxt = [np_policy(learner, s2, noise["nxt"][j]) for j in range(cfg.cql_n_actions)]
    diffs, bellmans = [], []
    for c in critics:
        q_data = np_q(c, s, a)
        q_rand = np.stack([np_q(c, s, ar) for ar in noise["rand"]])
        q_cur = np.stack([np_q(c, s, ac) for ac, _ in cur])
        q_nxt = np.stack([np_q(c, s, an) for an, _ in nxt])
        if bound:
            q_cur, q_nxt = np.maximum(q_cur, g), np.maximum(q_nxt, g)
        if cfg.importance_sample:
            cat = np.concatenate([q_rand - ACT * math.log(0.5),
                                  q_nxt - np.stack([lp for _, lp in nxt]),
                                  q_cur - np.stack([lp for _, lp in cur])])
        else:
            cat = np.concatenate([q_rand, q_data[None], q_nxt, q_cur])
        ood = cfg.cql_temp * logsumexp(cat / cfg.cql_temp, axis=0)
        diffs.append(np.mean(np.clip(ood - q_data, cfg.cql_clip_min, cfg.cql_clip_max)))
        bellmans.append(np.mean((q_data - y) ** 2))
    if lagrange:
        ap = min(max(math.exp(learner.log_alpha_prime.item()), 0.0), 1e6)
        cql = [ap * weight * (dv - cfg.target_action_gap) for dv in diffs]
        out["alpha_prime"] = -float(np.mean(cql))
    else:
        cql = [weight * dv for dv in diffs]
        out["alpha_prime"] = 0.0
    out["critic"] = float(sum(bl + cq for bl, cq in zip(bellmans, cql)))
    return out


def torch_losses(learner: CalQLLearner, batch: dict, seed: int) -> dict[str, float]:
    from calql_robot.agents.calql_learner import batch_to_torch
    from calql_robot.agents.calql import compute_losses
    torch.manual_seed(seed)
    losses, _ = compute_losses(batch_to_torch(batch, learner.device), learner.nets(),
                               learner.cfg, learner.settings())
    return {k: float(v.detach()) for k, v in losses.items()}


CASES = {
    "calql_is_fixed": dict(),
    "calql_lagrange_clip": dict(lagrange=True, target_action_gap=0.8, cql_clip_min=-0.5, cql_clip_max=2.0),
    "calql_no_is": dict(importance_sample=False),
    "cql_bound_off": dict(calql_bound=False),
    "no_max_backup_temp": dict(max_target_backup=False, cql_temp=0.5),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_losses_match_numpy_reference(case: str) -> None:
    learner = make_learner(small_cfg(**CASES[case]))
    batch = make_batch()
    got = torch_losses(learner, batch, seed=123)
    want = reference_losses(learner, batch, 123, bound=learner.cfg.calql_bound, weight=2.0)
    for name in ("actor", "alpha", "critic", "alpha_prime"):
        assert got[name] == pytest.approx(want[name], rel=1e-4, abs=1e-5), name


def test_bound_changes_loss_and_is_inert_below_q() -> None:
    """With G far below every Q the bound does nothing (Cal-QL == CQL); with G high it bites."""
    batch = make_batch()
    cal = make_learner(small_cfg())
    cql = make_learner(small_cfg(calql_bound=False))
    low = dict(batch, mc_returns=np.full(B, -1e6, np.float32))
    assert torch_losses(cal, low, 7)["critic"] == pytest.approx(torch_losses(cql, low, 7)["critic"], rel=1e-6)
    high = dict(batch, mc_returns=np.full(B, 50.0, np.float32))
    assert torch_losses(cal, high, 7)["critic"] > torch_losses(cql, high, 7)["critic"] + 1.0


def test_online_settings_switch_weight_and_bound() -> None:
    learner = make_learner(small_cfg(cql_weight_online=0.5, calibrate_online=False))
    assert (learner.settings().cql_weight, learner.settings().bound) == (2.0, True)
    learner.set_online(True)
    assert (learner.settings().cql_weight, learner.settings().bound) == (0.5, False)
    batch = make_batch()
    want = reference_losses(learner, batch, 5, bound=False, weight=0.5)
    assert torch_losses(learner, batch, 5)["critic"] == pytest.approx(want["critic"], rel=1e-4)


def test_lagrange_online_off_fixes_the_weight_after_the_switch() -> None:
    """`lagrange_online=False`: alpha' scales the CQL term offline only; online the critic
    loss is the fixed weight's (NumPy), and alpha' has no loss and is not stepped."""
    learner = make_learner(small_cfg(lagrange=True, lagrange_online=False, cql_weight_online=0.5))
    batch = make_batch()
    assert learner.settings().lagrange
    want = reference_losses(learner, batch, 9, bound=True, weight=2.0, lagrange=True)
    assert torch_losses(learner, batch, 9)["critic"] == pytest.approx(want["critic"], rel=1e-4)
    learner.set_online(True)
    assert not learner.settings().lagrange and learner.settings().cql_weight == 0.5
    want = reference_losses(learner, batch, 9, bound=True, weight=0.5, lagrange=False)
    got = torch_losses(learner, batch, 9)
    assert got["critic"] == pytest.approx(want["critic"], rel=1e-4) and got["alpha_prime"] == 0.0
    before = learner.log_alpha_prime.detach().clone()
    for _ in range(3):
        learner.update(batch)
    assert torch.equal(learner.log_alpha_prime.detach(), before)
    kept = make_learner(small_cfg(lagrange=True, cql_weight_online=0.5))
    kept.set_online(True)
    assert kept.settings().lagrange  # the default keeps the multiplier online


def test_bound_rate_counts_policy_values_below_return() -> None:
    learner = make_learner(small_cfg())
    batch = make_batch()
    from calql_robot.agents.calql_learner import batch_to_torch
    from calql_robot.agents.calql import compute_losses
    for value, expected in ((-1e6, 0.0), (1e6, 1.0)):
        b = batch_to_torch(dict(batch, mc_returns=np.full(B, value, np.float32)), learner.device)
        _, metrics = compute_losses(b, learner.nets(), learner.cfg, learner.settings())
        assert float(metrics["bound_rate"]) == expected


def test_td3bc_normaliser_is_detached() -> None:
    """TD3+BC's lambda = alpha / mean|Q| is a constant of the step ("not differentiated"):
    the gradient equals that of (alpha / s) * policy loss + MSE with s computed beforehand."""
    from calql_robot.agents.calql import mean_squared_error, policy_loss, td3bc_policy_loss

    torch.manual_seed(0)
    q = (3.0 * torch.randn(2, 6)).requires_grad_()
    log_pi, mean = torch.randn(6, requires_grad=True), torch.rand(6, 2).mul(2).sub(1).requires_grad_()
    data, alpha = torch.rand(6, 2) * 2 - 1, torch.tensor(0.3)
    loss, mse = td3bc_policy_loss(log_pi, q, alpha, mean, data, 2.5)
    scale = float(q.detach().min(dim=0).values.abs().mean())
    want = (2.5 / scale) * policy_loss(log_pi, q, alpha) + mean_squared_error(mean, data)
    assert float(loss) == pytest.approx(float(want), rel=1e-6)
    for got, ref in zip(torch.autograd.grad(loss, [q, log_pi, mean]), torch.autograd.grad(want, [q, log_pi, mean])):
        torch.testing.assert_close(got, ref)
    assert float(mse) == pytest.approx(float(((mean - data) ** 2).mean()), rel=1e-6)


def test_calibration_split_by_failure_rule_rows_against_numpy() -> None:
    """`split_calibration`: Q(s, pi) - G and the bound rate over the failure-rule rows and
    over the others, by hand; a group absent from the batch is not logged."""
    from calql_robot.agents.calql import split_calibration

    q_pi = torch.tensor([1.0, -2.0, 3.0, -400.0])
    below = torch.tensor([0.5, 0.0, 1.0, 0.25])
    mc = torch.tensor([-500.0, 2.0, -500.0, 1.0])
    out = {k: float(v) for k, v in split_calibration(q_pi, below, mc, -500.0).items()}
    assert out["q_pi_minus_g_fail"] == pytest.approx(((1 + 500) + (3 + 500)) / 2)
    assert out["q_pi_minus_g_succ"] == pytest.approx(((-2 - 2) + (-400 - 1)) / 2)
    assert out["bound_rate_fail"] == pytest.approx(0.75) and out["bound_rate_succ"] == pytest.approx(0.125)
    assert set(split_calibration(q_pi, below, mc, -123.0)) == {"q_pi_minus_g_succ", "bound_rate_succ"}
    assert split_calibration(q_pi, below, mc, None) == {}


def test_policy_below_rows_counts_each_rows_policy_columns() -> None:
    """The per-row bound rate: columns of both policy sets and every critic below the row's
    G; with a gripper mask only the masked (g*) columns count."""
    from calql_robot.agents.calql import policy_below_rows

    q_cur = torch.tensor([[[0.0, 5.0]], [[2.0, 5.0]]])  # (E=2, n=1, B=2)
    q_nxt = torch.tensor([[[0.0, 0.0]], [[0.0, 9.0]]])
    g = torch.tensor([1.0, 6.0])
    rows = policy_below_rows(q_cur, q_nxt, g, None, None)
    # row 0: cur (0<1, 2>1), nxt (0<1, 0<1) -> 3/4; row 1: cur (5<6, 5<6), nxt (0<6, 9>6) -> 3/4
    torch.testing.assert_close(rows, torch.tensor([0.75, 0.75]))
    mask = torch.tensor([[True, False]])  # row 0's columns count, row 1's do not
    masked = policy_below_rows(q_cur, q_nxt, g, mask, mask)
    torch.testing.assert_close(masked, torch.tensor([0.75, 0.0]))
