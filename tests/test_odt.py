"""Online decision transformer: the network and both losses against independent NumPy
computations (float64), causal masking, gradient isolation, every trained parameter moves,
LAMB against the official arithmetic, K-step windows with hindsight returns-to-go (worked
by hand), the acting context, state round trip, bad settings; and one tiny run through
train_state.py reaching updates in both phases, resumed and rolled out as rollout.py does."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from calql_robot.agents.base import AgentPolicy, AgentSpec, SequenceAgent, context_length
from calql_robot.agents.odt import ACTION_EPS, LOG_STD_MAX, LOG_STD_MIN, Lamb, ODTConfig, ODTLearner, compute_losses
from calql_robot.config import RewardConfig
from calql_robot.errors import ConfigError
from calql_robot.loop import insert_episode
from data.mixing import sample_mixed
from data.replay import EpisodeReplayBuffer

OBS, ACT, K = 3, 2, 4
ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny nets (conftest.py)


def tiny_cfg(**kw) -> ODTConfig:
    return ODTConfig(**{"context_length": K, "eval_context_length": 3, "embed_dim": 8, "n_layer": 2, "n_head": 2,
                        "warmup_steps": 1, "return_scale": 0.5, **kw})


def make_learner(seed: int = 0, **kw) -> ODTLearner:
    torch.manual_seed(seed)
    return ODTLearner(tiny_cfg(**kw), AgentSpec(OBS, ACT, reward_transform=(10.0, -5.0)))


def window_batch(seed: int = 0, b: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((b, K), np.float32)
    mask[0, 2:] = 0.0  # a window cut by its trajectory's end
    actions = rng.uniform(-0.95, 0.95, (b, K, ACT)).astype(np.float32)
    actions[1, 0, 0] = 1.0  # clamped to 1 - 1e-6, as the official action_range
    return {"observations": rng.normal(size=(b, K, OBS)).astype(np.float32), "actions": actions,
            "rewards": np.zeros((b, K), np.float32), "dones": np.zeros((b, K), np.float32),
            "returns_to_go": rng.uniform(0, 3, (b, K)).astype(np.float32), "mask": mask}


# ---------------------------------------------------------------- NumPy references
def np_linear(x, lin) -> np.ndarray:
    return x @ lin.weight.detach().double().numpy().T + lin.bias.detach().double().numpy()


def np_layernorm(x, ln) -> np.ndarray:
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + ln.eps) * ln.weight.detach().double().numpy() + ln.bias.detach().double().numpy()


def np_block(x, blk) -> np.ndarray:
    b, n, d = x.shape
    h, dh = blk.heads, d // blk.heads
    qkv = np_linear(np_layernorm(x, blk.ln_1), blk.qkv).reshape(b, n, 3, h, dh).transpose(2, 0, 3, 1, 4)
    q, k, v = qkv
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(dh)
    scores = np.where(np.tril(np.ones((n, n), bool)), scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    x = x + np_linear((weights @ v).transpose(0, 2, 1, 3).reshape(b, n, d), blk.proj)
    return x + np_linear(np.maximum(np_linear(np_layernorm(x, blk.ln_2), blk.fc), 0.0), blk.fc_out)


def np_policy(model, rtg, states, actions) -> tuple[np.ndarray, np.ndarray]:
    """The (R_1, s_1, a_1, ...) token sequence through the blocks, read at each s_t."""
    b, n = rtg.shape
    tokens = np.stack([np_linear(rtg[..., None], model.embed_return), np_linear(states, model.embed_state),
                       np_linear(actions, model.embed_action)], axis=2).reshape(b, 3 * n, -1)
    x = np_layernorm(tokens, model.embed_ln)
    for blk in model.blocks:
        x = np_block(x, blk)
    h = np_layernorm(x, model.ln_f)[:, 1::3]
    log_std = np.tanh(np_linear(h, model.log_std))
    return np_linear(h, model.mu), LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1)


def np_squashed_log_prob(x, mean, log_std) -> np.ndarray:
    """log N(x; mean, std) - log |d tanh(x)/dx|, written with log(1 - tanh(x)^2)."""
    normal = -0.5 * ((x - mean) / np.exp(log_std)) ** 2 - log_std - 0.5 * np.log(2 * np.pi)
    return (normal - np.log(1.0 - np.tanh(x) ** 2)).sum(-1)


# ---------------------------------------------------------------- network and losses
def test_the_transformer_matches_numpy() -> None:
    learner = make_learner()
    model = learner.model.double().eval()
    batch = window_batch()
    rtg = batch["returns_to_go"].astype(np.float64)
    s, a = batch["observations"].astype(np.float64), batch["actions"].astype(np.float64)
    mean, log_std = model(*(torch.from_numpy(v) for v in (rtg, s, a)))
    ref_mean, ref_log_std = np_policy(model, rtg, s, a)
    np.testing.assert_allclose(mean.detach().numpy(), ref_mean, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(log_std.detach().numpy(), ref_log_std, rtol=1e-9, atol=1e-10)


def test_the_losses_match_numpy() -> None:
    rng = np.random.default_rng(1)
    b = 3
    mean, log_std = rng.normal(size=(b, K, ACT)), rng.uniform(-2, 0.5, (b, K, ACT))
    noise, batch = rng.normal(size=(b, K, ACT)), window_batch()
    actions, mask = batch["actions"].astype(np.float64), batch["mask"].astype(np.float64)
    log_t = math.log(0.3)
    losses, metrics = compute_losses(*(torch.from_numpy(v) for v in (mean, log_std, actions, mask, noise)),
                                     torch.tensor(log_t, dtype=torch.float64, requires_grad=True), -float(ACT))
    data = np.clip(actions, -1 + ACTION_EPS, 1 - ACTION_EPS)
    nll = -(np_squashed_log_prob(np.arctanh(data), mean, log_std) * mask).sum() / mask.sum()
    sample = mean + np.exp(log_std) * noise
    entropy = -(np_squashed_log_prob(sample, mean, log_std) * mask).sum() / mask.sum()
    assert float(metrics["nll"]) == pytest.approx(nll, rel=1e-6)  # atanh(1 - 1e-6) loses digits in log(1 - tanh^2)
    assert float(metrics["entropy"]) == pytest.approx(entropy, rel=1e-9)
    assert float(losses["policy"]) == pytest.approx(nll - 0.3 * entropy, rel=1e-6)
    assert float(losses["temperature"].detach()) == pytest.approx(0.3 * (entropy + ACT), rel=1e-9)


def test_the_action_at_t_reads_no_later_token() -> None:
    model = make_learner().model.eval()
    batch = {k: torch.from_numpy(v) for k, v in window_batch().items()}
    rtg, s, a = batch["returns_to_go"], batch["observations"], batch["actions"]
    mean, _ = model(rtg, s, a)
    t = 1
    rtg2, s2, a2 = rtg.clone(), s.clone(), a.clone()
    rtg2[:, t + 1:] += 5.0
    s2[:, t + 1:] += 5.0
    a2[:, t:] = -a2[:, t:]  # a_t itself comes after s_t
    changed, _ = model(rtg2, s2, a2)
    torch.testing.assert_close(changed[:, :t + 1], mean[:, :t + 1])
    assert not torch.allclose(changed[:, t + 1:], mean[:, t + 1:])
    a3 = a.clone()
    a3[:, t - 1] += 1.0  # a_{t-1} is read at t
    assert not torch.allclose(model(rtg, s, a3)[0][:, t], mean[:, t])


def grads_of(learner: ODTLearner, loss_name: str) -> dict[str, bool]:
    batch = {k: torch.from_numpy(v) for k, v in window_batch().items()}
    mean, log_std = learner.policy_outputs(batch)
    losses, _ = compute_losses(mean, log_std, batch["actions"], batch["mask"], torch.randn_like(mean),
                               learner.log_temperature, learner.target_entropy)
    for opt in learner.optimizers.values():
        opt.zero_grad(set_to_none=True)
    losses[loss_name].backward()
    out = {f"model.{n}": p.grad is not None and bool(p.grad.abs().sum() > 0) for n, p in learner.model.named_parameters()}
    out["log_temperature"] = learner.log_temperature.grad is not None and bool(learner.log_temperature.grad != 0)
    return out


def test_each_loss_reaches_only_its_own_parameters() -> None:
    learner = make_learner(dropout=0.0)
    policy = grads_of(learner, "policy")
    assert not policy.pop("log_temperature") and all(policy.values()), policy
    temperature = grads_of(learner, "temperature")
    assert temperature.pop("log_temperature") and not any(temperature.values())


def test_an_update_moves_every_trained_parameter() -> None:
    learner = make_learner()
    before = {n: p.detach().clone() for n, p in learner.model.named_parameters()}
    t_before = float(learner.log_temperature.detach())
    metrics = learner.update(window_batch())
    assert all(np.isfinite(v) for v in metrics.values()) and metrics["lr"] == pytest.approx(1e-4)
    still = [n for n, p in learner.model.named_parameters() if torch.equal(p, before[n])]
    assert not still, still
    assert float(learner.log_temperature.detach()) != t_before and learner.num_updates == 1


def test_the_learning_rate_warms_up_linearly_and_resumes_where_it_was() -> None:
    learner = make_learner(warmup_steps=4)
    rates = [learner.update(window_batch(i))["lr"] for i in range(5)]
    np.testing.assert_allclose(rates, [2.5e-5, 5e-5, 7.5e-5, 1e-4, 1e-4], rtol=1e-6)
    fresh = make_learner(seed=1, warmup_steps=4)
    fresh.load_state_dict(learner.state_dict())
    for name, p in fresh.model.state_dict().items():
        torch.testing.assert_close(p, learner.model.state_dict()[name])
    assert fresh.num_updates == 5 and float(fresh.log_temperature.detach()) == float(learner.log_temperature.detach())
    assert fresh.optimizers["policy"].param_groups[0]["step"] == 5


def test_lamb_follows_the_official_arithmetic() -> None:
    """One parameter, two steps, against the official `lamb.py` written out in NumPy
    (global-norm clip, bias-corrected Adam update plus weight decay, trust ratio)."""
    torch.manual_seed(0)
    w0 = torch.randn(5, dtype=torch.float64)
    p = torch.nn.Parameter(w0.clone())
    opt = Lamb([p], lr=0.1, weight_decay=0.01, max_grad_norm=0.25)
    grads = [np.array([3.0, -1.0, 0.5, 0.0, 2.0]), np.array([0.01, 0.02, -0.01, 0.0, 0.03])]
    w, m, v = w0.numpy().copy(), np.zeros(5), np.zeros(5)
    for step, g in enumerate(grads, start=1):
        p.grad = torch.from_numpy(g.copy())
        opt.step()
        g = g / max(np.linalg.norm(g) / 0.25, 1.0)
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        update = (m / (1 - 0.9 ** step)) / (np.sqrt(v) / np.sqrt(1 - 0.999 ** step) + 1e-8) + 0.01 * w
        w = w - 0.1 * update * np.linalg.norm(w) / np.linalg.norm(update)
        np.testing.assert_allclose(p.detach().numpy(), w, rtol=1e-12)


# ---------------------------------------------------------------- windows and relabelling
def two_episode_buffer() -> EpisodeReplayBuffer:
    buf = EpisodeReplayBuffer(((OBS,), np.float32), ACT, 20)
    obs = np.arange(6 * OBS, dtype=np.float32).reshape(6, OBS)
    actions = np.full((5, ACT), 0.1, np.float32)
    # episode 0: 5 steps ending in a terminal; episode 1: 2 steps ending in a timeout
    buf.add_episode(obs, actions, np.array([1, 2, 3, 4, 5], np.float32), np.array([0, 0, 0, 0, 1], bool),
                    np.zeros(5, bool), np.zeros(5, np.float32))
    buf.add_episode(obs[:3] + 100, actions[:2], np.array([10, 20], np.float32), np.zeros(2, bool),
                    np.array([0, 1], bool), np.zeros(2, np.float32))
    return buf


def test_windows_stop_at_the_trajectory_end_with_undiscounted_returns_to_go() -> None:
    buf = two_episode_buffer()
    w = buf.sample_windows(np.array([0, 3, 5, 6]), K)
    np.testing.assert_array_equal(w["returns_to_go"], [[15, 14, 12, 9], [9, 5, 5, 5], [30, 20, 20, 20],
                                                       [20, 20, 20, 20]])
    np.testing.assert_array_equal(w["mask"], [[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0]])
    np.testing.assert_array_equal(w["observations"][1, :, 0], [9, 12, 12, 12])  # rows 3, 4, then padding
    np.testing.assert_array_equal(w["observations"][2, :2, 0], [100, 103])  # episode 1 starts at its own row
    np.testing.assert_array_equal(w["dones"][1], [0, 1, 1, 1])
    assert w["actions"].shape == (4, K, ACT)


def test_context_one_is_the_transition_batch_and_windows_mix() -> None:
    buf = two_episode_buffer()
    a, b = buf.sample(5, np.random.default_rng(3)), buf.sample(5, np.random.default_rng(3), 1)
    assert set(a) == set(b) == {"observations", "next_observations", "actions", "rewards", "dones", "mc_returns"}
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    mixed = sample_mixed(buf, two_episode_buffer(), 6, 0.5, np.random.default_rng(0), context=K)
    assert mixed["observations"].shape == (6, K, OBS) and mixed["n_offline"] == 3
    assert context_length(make_learner()) == K


def test_online_episodes_train_on_the_return_they_achieved() -> None:
    """Hindsight relabelling, worked by hand: collected while conditioned on online_rtg 2
    (return_scale 1, raw rewards), the episode paid [0, 0, 1]; the policy saw targets
    [2, 2, 2] while acting, and trains on the achieved returns-to-go [1, 1, 1]."""
    torch.manual_seed(0)
    learner = ODTLearner(tiny_cfg(return_scale=1.0, online_rtg=2.0), AgentSpec(OBS, ACT))
    policy = AgentPolicy(learner, deterministic=False)
    policy.reset()
    seen = []
    for reward in (0.0, 0.0, 1.0):
        policy(np.zeros(OBS, np.float32))
        seen.append(learner._rtg[-1])
        policy.observe(reward)
    assert seen == [2.0, 2.0, 2.0]
    online = EpisodeReplayBuffer(((OBS,), np.float32), ACT, 10)
    episode = {"observations": np.zeros((4, OBS), np.float32), "actions": np.zeros((3, ACT), np.float32),
               "rewards": np.array([0, 0, 1], np.float32), "terminals": np.array([0, 0, 1], bool),
               "timeouts": np.zeros(3, bool)}
    insert_episode(online, episode, RewardConfig(scale=1.0, bias=0.0, failure_reward=0.0), learner.needs_returns)
    np.testing.assert_array_equal(online.sample_windows(np.array([0]), K)["returns_to_go"][0, :3], [1, 1, 1])


def test_the_acting_context_counts_rewards_down_and_restarts_each_episode() -> None:
    learner = make_learner()  # reward 10r - 5, return_scale 0.5, eval_rtg 1
    assert isinstance(learner, SequenceAgent)
    policy = AgentPolicy(learner, deterministic=True)
    policy.reset()
    first = policy(np.ones(OBS, np.float32))
    assert learner._rtg == [0.5] and np.all(np.abs(first) < 1)
    for reward in (0.0, 1.0, 0.0):
        policy.observe(reward)
        policy(np.ones(OBS, np.float32))
    # 0.5 - 0.5 * (-5) = 3.0; 3.0 - 0.5 * 5 = 0.5; 0.5 + 2.5 = 3.0; the oldest step left the context of 3
    assert learner._rtg == [3.0, 0.5, 3.0] and len(learner._obs) == 3
    action = policy(np.ones(OBS, np.float32))
    np.testing.assert_array_equal(learner._actions[-1].numpy()[0], action)  # a_t joins the context for t + 1
    policy.reset()
    assert learner._rtg == [] and policy(np.ones(OBS, np.float32)).shape == (ACT,)
    assert policy(np.ones((4, OBS), np.float32)).shape == (4, ACT) and len(learner._rtg) == 1  # a batch leaves it alone


# ---------------------------------------------------------------- settings
@pytest.mark.parametrize("kw,needle", [
    ({"eval_context_length": 30}, "--odt.eval-context-length"), ({"n_head": 3}, "--odt.n-head"),
    ({"context_length": 0}, "--odt.context-length"), ({"dropout": 1.0}, "--odt.dropout"),
    ({"return_scale": 0.0}, "--odt.return-scale"), ({"eval_rtg": float("nan")}, "--odt.eval-rtg"),
    ({"weight_decay": -1.0}, "--odt.weight-decay")])
def test_a_setting_that_cannot_work_is_one_line(kw: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        ODTConfig(**kw).validate()
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_presets_and_the_reward_it_starts_from() -> None:
    from calql_robot.cli import parse_state_cli

    ant = parse_state_cli(["--task", "antmaze-umaze", "--algo", "odt"])
    assert (ant.reward.scale, ant.reward.bias) == (1.0, 0.0) and ant.loop.mixing_ratio == -1.0
    assert (ant.odt.eval_rtg, ant.odt.online_rtg, ant.odt.return_scale, ant.odt.context_length) == (1.0, 2.0, 1.0, 20)
    assert (ant.odt.embed_dim, ant.odt.n_layer, ant.odt.n_head, ant.odt.lr, ant.odt.weight_decay) == (512, 4, 4, 1e-4, 5e-4)
    door = parse_state_cli(["--task", "door", "--algo", "odt"])
    assert (door.reward.scale, door.reward.bias, door.odt.eval_rtg) == (1.0, 0.0, 0.0)
    state = parse_state_cli(["--algo", "odt"])
    assert (state.reward.scale, state.reward.bias, state.loop.mixing_ratio) == (1.0, 0.0, -1.0)


# ---------------------------------------------------------------- the real entry point
TINY = ["--run.no-progress", "--run.threads", "1", "--data.episodes", "6", "--loop.offline-steps", "20",
        "--loop.batch-size", "8", "--loop.eval-episodes", "1", "--loop.eval-every-offline", "10",
        "--loop.eval-every", "40", "--loop.log-every", "10", "--loop.checkpoint-every", "20",
        "--odt.embed-dim", "16", "--odt.n-layer", "1", "--odt.n-head", "2", "--odt.context-length", "4",
        "--odt.eval-context-length", "2", "--odt.warmup-steps", "5"]


def train(args: list[str]) -> None:
    from tests.test_user_errors import ENV

    proc = subprocess.run([sys.executable, "train_state.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=ENV)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def test_train_state_runs_resumes_and_rolls_out(tmp_path: Path) -> None:
    from calql_robot.policy_io import load_policy, policy_fn
    from calql_robot.rollouts import run_episode
    from tests.test_user_errors import cli, user_error

    run_dir = tmp_path / "run"
    user_error(cli("train_state.py", "--algo", "odt", "--odt.n-head", "3", "--run.run-dir", str(run_dir)),
               "--odt.n-head")
    assert not run_dir.exists()
    train(["--algo", "odt", *TINY, "--loop.online-env-steps", "40", "--run.run-dir", str(run_dir)])
    config = json.loads((run_dir / "config.json").read_text())
    assert config["algo"] == "odt" and config["odt"]["context_length"] == 4 and config["loop"]["mixing_ratio"] == -1
    train(["--run.resume", "--run.run-dir", str(run_dir), "--loop.online-env-steps", "80"])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["offline_updates"] == 20 and summary["env_steps"] >= 80
    assert summary["online_updates"] == summary["env_steps"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "train/nll" in r]
    assert {r["phase"] for r in train_rows} == {"offline", "online"}
    assert all(np.isfinite(r[f"train/{k}"]) for r in train_rows for k in ("policy_loss", "entropy", "temperature"))
    assert any("online/episode_return" in r for r in rows)
    loaded = load_policy(run_dir)
    assert isinstance(loaded.learner, ODTLearner) and loaded.learner.online
    assert loaded.learner.num_updates == 20 + summary["env_steps"]
    env = loaded.make_env()
    try:
        episode = run_episode(env, policy_fn(loaded.learner, True), seed=0)
    finally:
        env.close()
    assert episode["length"] >= 1 and np.all(np.abs(episode["actions"]) < 1)
