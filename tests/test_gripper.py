"""The critic-greedy binary gripper and the TD3+BC actor term against NumPy (float64).

The reference re-draws the noise of `compute_losses` in its order (actor sample, n current,
n next, k backup samples over the arm dims, then n uniform full actions) and computes the
SPEC formulas with the gripper enumerated by hand: g* = argmax_g min_i Q_i, the max backup
over k and g, the CQL logsumexp over random actions and both gripper values of every policy
sample, the Cal-QL bound on the g* columns only.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from calql_robot.agents import gripper
from calql_robot.agents.calql_learner import batch_to_torch
from calql_robot.agents.calql import compute_losses
from tests.test_learner import OWNERS
from tests.test_losses import (ACT, B, logsumexp, make_batch, make_learner, np_critics, np_mlp, np_q,
                               small_cfg)

ARM = ACT - 1


def np_arm_policy(learner, s: np.ndarray, eps: np.ndarray):
    layers = [(w.detach().double().numpy()[0], b.detach().double().numpy()[0, 0])
              for w, b in zip(learner.actor.mlp.weights, learner.actor.mlp.biases)]
    out = np_mlp(s, layers)
    mean, log_std = out[:, :ARM], out[:, ARM:]
    log_std = np.clip(learner.actor.log_std_multiplier.item() * log_std + learner.actor.log_std_offset.item(),
                      -20.0, 2.0)
    pre = mean + np.exp(log_std) * eps
    gauss = -0.5 * eps ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    return np.tanh(pre), (gauss - np.log(1.0 - np.tanh(pre) ** 2)).sum(-1), np.tanh(mean)


def with_g(arm: np.ndarray, g: float) -> np.ndarray:
    return np.concatenate([arm, np.full((*arm.shape[:-1], 1), g)], axis=-1)


def np_min_q(critics, s, arm, g):
    return np.minimum(*[np_q(c, s, with_g(arm, g)) for c in critics])


def np_greedy(critics, s, arm) -> np.ndarray:
    """+1 where min-critic Q is strictly higher open than closed (ties close)."""
    return np.where(np_min_q(critics, s, arm, 1.0) > np_min_q(critics, s, arm, -1.0), 1.0, -1.0)


def reference(learner, batch: dict, seed: int, weight: float, td3bc_alpha: float | None = None,
              bc_rows: int | None = None) -> dict[str, float]:
    cfg, n, k = learner.cfg, learner.cfg.cql_n_actions, learner.cfg.backup_k
    torch.manual_seed(seed)
    draws = {"new": torch.randn(B, ARM), "cur": torch.randn(n, B, ARM), "nxt": torch.randn(n, B, ARM),
             "backup": torch.randn(k, B, ARM), "rand": torch.empty(n, B, ACT).uniform_(-1.0, 1.0)}
    noise = {key: v.double().numpy() for key, v in draws.items()}
    s, s2 = batch["observations"].astype(np.float64), batch["next_observations"].astype(np.float64)
    a = np.clip(batch["actions"].astype(np.float64), -cfg.action_clip, cfg.action_clip)
    a[:, -1] = np.where(a[:, -1] >= 0, 1.0, -1.0)
    r, d, g_mc = (batch[key].astype(np.float64) for key in ("rewards", "dones", "mc_returns"))
    critics, targets = np_critics(learner), np_critics(learner, target=True)
    alpha = math.exp(learner.log_alpha.item())
    out = {}

    arm_new, logp_new, mean_act = np_arm_policy(learner, s, noise["new"])
    q_new = np.maximum(np_min_q(critics, s, arm_new, -1.0), np_min_q(critics, s, arm_new, 1.0))
    actor = np.mean(alpha * logp_new - q_new)
    if td3bc_alpha is not None:  # TD3+BC: (alpha / mean|Q|) * policy loss + MSE
        rows = slice(None) if bc_rows is None else slice(0, bc_rows)  # `--learner.bc-offline-only`
        actor = td3bc_alpha / np.mean(np.abs(q_new)) * actor + np.mean((mean_act[rows] - a[rows, :ARM]) ** 2)
    out["actor"] = float(actor)
    out["alpha"] = float(-learner.log_alpha.item() * np.mean(logp_new - ARM))

    v = np.max([np.maximum(np_min_q(targets, s2, arm, -1.0), np_min_q(targets, s2, arm, 1.0))
                for arm in (np_arm_policy(learner, s2, noise["backup"][j])[0] for j in range(k))], axis=0)
    y = r + (1 - d) * learner.discount * v

    rand = noise["rand"].copy()
    rand[..., -1] = np.where(rand[..., -1] >= 0, 1.0, -1.0)
    cur = [np_arm_policy(learner, s, noise["cur"][j])[:2] for j in range(n)]
    nxt = [np_arm_policy(learner, s2, noise["nxt"][j])[:2] for j in range(n)]
    diffs, bellmans = [], []
    for c in critics:
        q_data = np_q(c, s, a)
        cols = [np_q(c, s, ar) - ACT * math.log(0.5) for ar in rand]
        for samples in (nxt, cur):
            for arm, logp in samples:
                best = np_greedy(critics, s, arm)
                for g in (-1.0, 1.0):
                    q = np_q(c, s, with_g(arm, g))
                    q = np.where(best == g, np.maximum(q, g_mc), q)  # the bound on the policy's own g*
                    cols.append(q - logp)
        ood = logsumexp(np.stack(cols), axis=0)
        diffs.append(np.mean(ood - q_data))
        bellmans.append(np.mean((q_data - y) ** 2))
    out["critic"] = float(sum(bl + weight * dv for bl, dv in zip(bellmans, diffs)))
    return out


def torch_losses(learner, batch: dict, seed: int) -> dict[str, float]:
    torch.manual_seed(seed)
    losses, _ = compute_losses(batch_to_torch(batch, learner.device), learner.nets(), learner.cfg,
                               learner.settings())
    return {key: float(v.detach()) for key, v in losses.items()}


def discrete_learner(**kw):
    learner = make_learner(small_cfg(discrete_gripper=True, **kw))
    assert learner.actor.action_dim == ARM
    return learner


def gripper_batch() -> dict[str, np.ndarray]:
    batch = make_batch()
    batch["actions"][:, -1] = np.where(batch["actions"][:, -1] >= 0, 1.0, -1.0)
    return batch


@pytest.mark.parametrize("case", ["calql", "cql", "calql_bc"])
def test_discrete_gripper_losses_match_numpy(case: str) -> None:
    kw = {"calql": {}, "cql": {"calql_bound": False}, "calql_bc": {"td3bc_alpha": 2.5}}[case]
    learner = discrete_learner(**kw)
    batch = gripper_batch()
    # returns that lie inside the range of the policy values, so the bound bites on some columns
    batch["mc_returns"] = np.linspace(-0.5, 0.5, B).astype(np.float32)
    got = torch_losses(learner, batch, seed=321)
    want = reference(learner, batch, 321, weight=2.0, td3bc_alpha=kw.get("td3bc_alpha")) \
        if learner.cfg.calql_bound else None
    if want is None:  # CQL: the reference with returns so low that no bound can bite
        low = dict(batch, mc_returns=np.full(B, -1e9, np.float32))
        want, got = reference(learner, low, 321, weight=2.0), torch_losses(learner, low, 321)
    for name in ("actor", "alpha", "critic"):
        assert got[name] == pytest.approx(want[name], rel=1e-4, abs=1e-5), name


def test_bc_on_the_offline_rows_imitates_only_them() -> None:
    """`--learner.bc-offline-only`: TD3+BC's MSE over the batch's first `n_offline` rows (the
    dataset's, `data/mixing.py`), every other term unchanged, against NumPy; with every row
    offline it is the all-rows loss, and a batch without offline rows imitates nothing."""
    batch = dict(gripper_batch(), mc_returns=np.linspace(-0.5, 0.5, B).astype(np.float32), n_offline=4)
    learner = discrete_learner(td3bc_alpha=2.5, bc_offline_only=True)
    got = torch_losses(learner, batch, seed=321)
    want = reference(learner, batch, 321, weight=2.0, td3bc_alpha=2.5, bc_rows=4)
    for name in ("actor", "alpha", "critic"):
        assert got[name] == pytest.approx(want[name], rel=1e-4, abs=1e-5), name
    everything = reference(learner, batch, 321, weight=2.0, td3bc_alpha=2.5)
    assert abs(everything["actor"] - want["actor"]) > 1e-3  # the restriction matters on this batch
    assert torch_losses(learner, dict(batch, n_offline=B), 321)["actor"] == pytest.approx(everything["actor"], rel=1e-5)
    data_arm = np.clip(batch["actions"][:4, :ARM].astype(np.float64), -1, 1)
    q_term = want["actor"] - np.mean((_mean_arm(learner, batch)[:4] - data_arm) ** 2)
    assert torch_losses(learner, dict(batch, n_offline=0), 321)["actor"] == pytest.approx(q_term, rel=1e-4, abs=1e-5)


def _mean_arm(learner, batch: dict) -> np.ndarray:
    """The actor's deterministic arm action tanh(mu(s)) on the batch, in NumPy."""
    obs = torch.as_tensor(batch["observations"])
    return learner.actor(obs).deterministic().detach().double().numpy()


def gripper_preferring_learner(prefer: float):
    """A discrete-gripper learner whose critics both score the gripper value `prefer` about 2
    above the other, over a small state- and arm-dependent rest: hidden unit 0 of each critic
    is relu(prefer * g + 1) (2 at g = prefer, 0 otherwise), carried alone to the head with
    weight 1, and the other head weights are shrunk. So g* = prefer in every policy column."""
    learner = discrete_learner()
    with torch.no_grad():
        (w0, w1, w2), (b0, b1, _) = learner.critic.weights, learner.critic.biases
        w0[:, :, 0], b0[:, :, 0] = 0.0, 1.0
        w0[:, -1, 0] = prefer  # the gripper input
        w1[:, :, 0], w1[:, 0, :], b1[:, :, 0] = 0.0, 0.0, 0.0
        w1[:, 0, 0] = 1.0
        w2.mul_(0.1)
        w2[:, 0, 0] = 1.0
    return learner


def losses_at_return(learner, value: float, bound: bool | None = None, seed: int = 5):
    """compute_losses on the gripper batch with G = `value` in every row (`bound`: override
    the settings' Cal-QL bound)."""
    import dataclasses

    batch = batch_to_torch(dict(gripper_batch(), mc_returns=np.full(B, value, np.float32)), learner.device)
    settings = learner.settings() if bound is None else dataclasses.replace(learner.settings(), bound=bound)
    torch.manual_seed(seed)
    losses, metrics = compute_losses(batch, learner.nets(), learner.cfg, settings)
    return {k: float(v.detach()) for k, v in losses.items()}, {k: float(v) for k, v in metrics.items()}


@pytest.mark.parametrize("prefer", [gripper.OPEN, gripper.CLOSE])
def test_bound_applies_to_the_policy_gripper_only(prefer: float) -> None:
    """The bound lifts the g* columns only, and bound_rate counts only them. With G = 1
    between the g* columns (~2) and the other gripper value's (~0), Cal-QL must equal CQL
    exactly and report bound_rate 0: bounding the other column too would lift it to G and
    change the loss, an unmasked rate would read 1/2. With G = 3 above every column the g*
    columns are all lifted (rate 1), the others still not (the NumPy reference's loss)."""
    learner = gripper_preferring_learner(prefer)
    obs = torch.as_tensor(gripper_batch()["observations"])
    with torch.no_grad():  # the premise: G = 1 separates the two gripper values at any arm action
        arm = torch.rand(64, B, ARM, generator=torch.Generator().manual_seed(0)) * 2 - 1
        q = learner.critic(obs, gripper.both_grippers(arm))
    chosen, other = (q[:, 64:], q[:, :64]) if prefer == gripper.OPEN else (q[:, :64], q[:, 64:])
    assert float(chosen.min()) > 1.2 and float(other.max()) < 0.8 and float(chosen.max()) < 3.0

    between, metrics = losses_at_return(learner, 1.0)
    cql, _ = losses_at_return(learner, 1.0, bound=False)
    assert metrics["bound_rate"] == 0.0
    assert between["critic"] == pytest.approx(cql["critic"], rel=1e-6)
    above, metrics = losses_at_return(learner, 3.0)
    assert metrics["bound_rate"] == 1.0
    want = reference(learner, dict(gripper_batch(), mc_returns=np.full(B, 3.0, np.float32)), 5, weight=2.0)
    assert above["critic"] == pytest.approx(want["critic"], rel=1e-5)
    assert above["critic"] > cql["critic"] + 0.5  # the g* columns were lifted


def test_td3bc_term_matches_numpy_for_continuous_actions() -> None:
    """TD3+BC (Fujimoto & Gu 2021): -(alpha / mean|Q|) * Q + MSE, here with the SAC policy
    loss in place of -Q, alpha = 2.5 (TD3+BC's own), written out in NumPy."""
    from tests.test_losses import reference_losses
    learner = make_learner(small_cfg(td3bc_alpha=2.5))
    batch = make_batch()
    got = torch_losses(learner, batch, 11)
    want_plain = reference_losses(make_learner(small_cfg()), batch, 11, bound=True, weight=2.0)
    torch.manual_seed(11)
    eps = torch.randn(B, ACT).double().numpy()
    from tests.test_losses import np_policy
    layers = [(w.detach().double().numpy()[0], b.detach().double().numpy()[0, 0])
              for w, b in zip(learner.actor.mlp.weights, learner.actor.mlp.biases)]
    mean = np.tanh(np_mlp(batch["observations"].astype(np.float64), layers)[:, :ACT])
    a_new, _ = np_policy(learner, batch["observations"].astype(np.float64), eps)
    q_new = np.minimum(*[np_q(c, batch["observations"].astype(np.float64), a_new) for c in np_critics(learner)])
    a = np.clip(batch["actions"].astype(np.float64), -0.99999, 0.99999)
    want = 2.5 / np.mean(np.abs(q_new)) * want_plain["actor"] + np.mean((mean - a) ** 2)
    assert got["actor"] == pytest.approx(want, rel=1e-4)
    assert got["critic"] == pytest.approx(want_plain["critic"], rel=1e-5)  # BC touches the actor only


@pytest.mark.parametrize("loss_name", sorted(OWNERS))
def test_discrete_gripper_losses_reach_only_their_own_parameters(loss_name: str) -> None:
    from tests.test_learner import assert_loss_reaches_only_its_owners, learner_with_encoder
    learner = learner_with_encoder(discrete_gripper=True, td3bc_alpha=1.0)
    with torch.no_grad():
        learner.log_alpha.fill_(-0.5)
    assert_loss_reaches_only_its_owners(learner, gripper_batch(), loss_name)


def test_act_takes_the_critics_better_gripper() -> None:
    learner = discrete_learner()
    obs = make_batch()["observations"]
    actions = learner.act(obs, deterministic=True)
    assert actions.shape == (B, ACT) and set(np.unique(actions[:, -1])) <= {-1.0, 1.0}
    s = obs.astype(np.float64)
    arm = np_arm_policy(learner, s, np.zeros((B, ARM)))[2]
    np.testing.assert_allclose(actions[:, :ARM], arm, atol=1e-5)
    np.testing.assert_array_equal(actions[:, -1], np_greedy(np_critics(learner), s, arm))


def test_helpers_enumerate_and_select() -> None:
    arm = torch.tensor([[[0.5], [0.25]]])  # (M=1, B=2, 1)
    both = gripper.both_grippers(arm)
    assert both.tolist() == [[[0.5, -1.0], [0.25, -1.0]], [[0.5, 1.0], [0.25, 1.0]]]
    q = torch.tensor([[[1.0, 5.0], [2.0, 3.0]], [[4.0, 0.0], [0.5, 9.0]]])  # (E=2, 2M, B)
    # min over critics: close [1, 0], open [0.5, 3] -> open better for b=1 only
    assert gripper.open_is_better(q).tolist() == [[False, True]]
    assert gripper.greedy_values(q).tolist() == [[[1.0, 3.0]], [[4.0, 9.0]]]
    assert gripper.greedy_mask(q).tolist() == [[True, False], [False, True]]
    assert gripper.snap(torch.tensor([[0.5, -0.2], [0.25, 0.0]])).tolist() == [[0.5, -1.0], [0.25, 1.0]]


def test_binary_gripper_command_worked_by_hand() -> None:
    from sim.robot import binary_gripper_command
    commands = np.array([0.9, 0.2, -0.7, 0.0, 0.6, -0.5])
    open_before = np.array([True, True, True, False, False, True])
    # open: > 0.5; close: < -0.5; otherwise the hand stays as it was
    assert binary_gripper_command(commands, open_before).tolist() == [1.0, 1.0, -1.0, -1.0, 1.0, 1.0]


def test_binarized_actions_replay_to_the_same_episode() -> None:
    """Replaying a scripted episode with its +-1 gripper rewrite gives the same observations."""
    from sim import make_pickplace
    from sim.collect import collect_episodes
    from sim.pickplace_env import binary_gripper_actions
    ep = collect_episodes([(0, 1)], 1, noise=0.3, p_wrong=0.0, p_drop=0.0, seed=3, workers=1,
                          privileged=True, progress=False)[0]
    actions = binary_gripper_actions(ep["actions"], ep["observations"][:-1])
    assert set(np.unique(actions[:, -1])) <= {-1.0, 1.0}
    env = make_pickplace(0, 1, privileged=True)
    obs, _ = env.reset(seed=ep["seed"], options={"task": (0, 1)})
    rows = [obs]
    for act in actions:
        obs, *_ = env.step(act)
        rows.append(obs)
    env.close()
    np.testing.assert_array_equal(np.stack(rows), ep["observations"])
