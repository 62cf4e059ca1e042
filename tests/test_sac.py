"""SAC and the SAC family (`agents/sac.py`, `agents/catalog.py`): every loss against an
independent NumPy computation, gradient isolation, every trained parameter moves, the
ensemble options (subset min, LayerNorm, mean actor, G critic updates per actor update),
CQL + SAC's fine-tuning equal to SAC's update, and what each `--algo` name sets."""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from calql_robot.agents import calql as calql_losses
from calql_robot.agents import sac
from calql_robot.agents.base import AgentSpec, batch_to_torch
from calql_robot.agents.calql_learner import CalQLLearner
from calql_robot.agents.catalog import AGENTS, WSRL_WARMUP, agent_config, with_algo_defaults
from calql_robot.agents.sac import SACConfig
from calql_robot.agents.sac_learner import SACLearner
from calql_robot.cli import parse_state_cli, parse_visual_cli
from calql_robot.config import LoopConfig
from calql_robot.domains.pickplace_state import StateExperimentConfig
from calql_robot.errors import ConfigError
from calql_robot.experiment import validate_loop
from data.mixing import sample_mixed
from tests.test_losses import ACT, DISCOUNT, OBS, B, make_batch, np_policy, small_cfg

FEAT = 4


def sac_cfg(**kw) -> SACConfig:
    return SACConfig(**{"actor_hidden": (8,), "critic_hidden": (8, 8), **kw})


def perturbed(learner, seed: int = 0):
    """Non-trivial values so every term matters (as tests/test_losses.py's learners)."""
    torch.manual_seed(seed + 100)
    with torch.no_grad():
        for p in list(learner.critic.parameters()) + list(learner.actor.parameters()):
            p.add_(0.3 * torch.randn_like(p))
        for p, q in zip(learner.target_critic.parameters(), learner.critic.parameters()):
            p.copy_(q + 0.1 * torch.randn_like(q))
        learner.log_alpha.fill_(-0.7)
    return learner


def make_sac(cfg: SACConfig, seed: int = 0, encoder: nn.Module | None = None) -> SACLearner:
    torch.manual_seed(seed)
    feat = OBS if encoder is None else FEAT
    return perturbed(SACLearner(cfg, AgentSpec(feat, ACT, DISCOUNT, encoder=encoder)), seed)


# ------------------------------------------------------------------ NumPy reference
def np_critic_layers(net) -> list[list[tuple]]:
    """Per member: [(w, b, scale, offset) per layer] in float64 (scale None without LayerNorm)."""
    ws = [w.detach().double().numpy() for w in net.weights]
    bs = [b.detach().double().numpy() for b in net.biases]
    gs = [g.detach().double().numpy() for g in net.norm_scales] or [None] * (len(ws) - 1)
    os_ = [o.detach().double().numpy() for o in net.norm_offsets] or [None] * (len(ws) - 1)
    out = []
    for i in range(ws[0].shape[0]):
        layers = [(w[i], b[i, 0], None if g is None else g[i, 0], None if o is None else o[i, 0])
                  for w, b, g, o in zip(ws, bs, gs + [None], os_ + [None])]
        out.append(layers)
    return out


def np_q(layers, s: np.ndarray, a: np.ndarray) -> np.ndarray:
    x = np.concatenate([s, a], axis=-1)
    for j, (w, b, g, o) in enumerate(layers):
        x = x @ w + b
        if j < len(layers) - 1:
            if g is not None:  # LayerNorm, eps 1e-6, then the per-unit scale and offset
                x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6) * g + o
            x = np.maximum(x, 0.0)
    return x[..., 0]


def reference(learner: SACLearner, batch: dict, seed: int) -> dict[str, float]:
    cfg, k = learner.cfg, learner.cfg.backup_k
    torch.manual_seed(seed)  # the draws of sac.compute_losses, in its order
    new, backup = torch.randn(B, ACT).double().numpy(), torch.randn(k, B, ACT).double().numpy()
    members = list(range(cfg.num_critics))
    if cfg.num_min is not None and cfg.num_min < cfg.num_critics:
        members = torch.randperm(cfg.num_critics)[:cfg.num_min].tolist()
    s, s2 = batch["observations"].astype(np.float64), batch["next_observations"].astype(np.float64)
    a = np.clip(batch["actions"].astype(np.float64), -0.99999, 0.99999)
    r, d = batch["rewards"].astype(np.float64), batch["dones"].astype(np.float64)
    critics, targets = np_critic_layers(learner.critic), np_critic_layers(learner.target_critic)
    alpha = math.exp(learner.log_alpha.item())
    a_new, logp = np_policy(learner, s, new)
    q_new = np.stack([np_q(c, s, a_new) for c in critics])
    agg = q_new.min(0) if cfg.actor_q == "min" else q_new.mean(0)
    out = {"actor": float(np.mean(alpha * logp - agg)), "alpha": float(-learner.log_alpha.item() * np.mean(logp - ACT))}
    samples = [np_policy(learner, s2, backup[j]) for j in range(k)]
    v = np.stack([np.min([np_q(targets[i], s2, an) for i in members], axis=0) for an, _ in samples])  # (k, B)
    best = v.argmax(0)
    v_next = v[best, np.arange(B)]
    if cfg.backup_entropy:
        v_next = v_next - alpha * np.stack([lp for _, lp in samples])[best, np.arange(B)]
    y = r + (1 - d) * DISCOUNT * v_next
    out["critic"] = float(sum(np.mean((np_q(c, s, a) - y) ** 2) for c in critics))
    return out


CASES = {
    "sac": {},
    "max_backup_no_entropy": {"backup_k": 3, "backup_entropy": False},
    "max_backup_entropy": {"backup_k": 3},
    "ensemble": {"num_critics": 5, "num_min": 2, "layer_norm": True, "actor_q": "mean"},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_losses_match_numpy_reference(case: str) -> None:
    learner = make_sac(sac_cfg(**CASES[case]))
    if learner.cfg.layer_norm:  # non-trivial LayerNorm scales and offsets
        with torch.no_grad():
            for p in list(learner.critic.norm_scales) + list(learner.critic.norm_offsets):
                p.add_(0.2 * torch.randn_like(p))
    batch = make_batch()
    want = reference(learner, batch, seed=5)
    torch.manual_seed(5)
    losses, _ = sac.compute_losses(batch_to_torch(batch, learner.device), learner.nets(), learner.cfg, DISCOUNT)
    for name, value in want.items():
        assert abs(float(losses[name].detach()) - value) < 1e-4 * max(1.0, abs(value)), name


def test_layer_norm_normalises_each_hidden_layer() -> None:
    """With LayerNorm a hidden layer's scale does not reach the output (rlpd's critic)."""
    torch.manual_seed(0)
    critic = sac.CriticEnsemble(3, OBS, ACT, (8, 8), True, True)
    obs, act = torch.randn(B, OBS), torch.rand(4, B, ACT) * 2 - 1
    with torch.no_grad():
        base = critic(obs, act)
        critic.weights[0].mul_(3.0)
        critic.biases[0].mul_(3.0)
        torch.testing.assert_close(critic(obs, act), base, rtol=1e-4, atol=1e-5)
    assert base.shape == (3, 4, B)


OWNERS = {"actor": {"actor"}, "alpha": {"log_alpha"}, "critic": {"critic", "encoder"}}


def groups(learner: SACLearner) -> dict[str, list[torch.Tensor]]:
    return {"actor": list(learner.actor.parameters()), "critic": list(learner.critic.parameters()),
            "encoder": list(learner.encoder.parameters()), "log_alpha": [learner.log_alpha],
            "target_critic": list(learner.target_critic.parameters())}


def with_encoder(**kw) -> SACLearner:
    torch.manual_seed(0)
    return make_sac(sac_cfg(num_critics=3, num_min=2, layer_norm=True, **kw),
                    encoder=nn.Sequential(nn.Linear(OBS, FEAT), nn.Tanh()))


@pytest.mark.parametrize("loss_name", sorted(OWNERS))
def test_each_loss_reaches_only_its_own_parameters(loss_name: str) -> None:
    learner = with_encoder()
    losses, _ = sac.compute_losses(batch_to_torch(make_batch(), learner.device), learner.nets(), learner.cfg, DISCOUNT)
    every = [p for ps in groups(learner).values() for p in ps if p.requires_grad]
    grads = dict(zip(map(id, every), torch.autograd.grad(losses[loss_name], every, allow_unused=True)))
    for group, params in groups(learner).items():
        touched = any(grads.get(id(p)) is not None and grads[id(p)].abs().sum() > 0 for p in params)
        assert touched == (group in OWNERS[loss_name]), (loss_name, group)


def test_every_parameter_changes_after_one_update() -> None:
    learner = with_encoder()
    before = {name: [p.detach().clone() for p in ps] for name, ps in groups(learner).items()}
    learner.update(make_batch())
    for name, params in groups(learner).items():
        for i, (old, new) in enumerate(zip(before[name], params)):
            assert not torch.equal(old, new.detach()), f"{name}[{i}] did not change"


def test_g_critic_updates_per_actor_update() -> None:
    """G = 3: updates 1 and 2 step the critics only, update 3 the actor and temperature too."""
    learner = with_encoder(critic_updates_per_actor=3)
    for step in range(1, 4):
        actor = [p.detach().clone() for p in learner.actor.parameters()] + [learner.log_alpha.detach().clone()]
        critic = [p.detach().clone() for p in learner.critic.parameters()]
        metrics = learner.update(make_batch(step))
        moved = [not torch.equal(a, b.detach()) for a, b in zip(actor, [*learner.actor.parameters(), learner.log_alpha])]
        assert all(moved) == (step == 3) and any(moved) == (step == 3), step
        assert ("actor_loss" in metrics) == (step == 3)
        assert all(not torch.equal(a, b.detach()) for a, b in zip(critic, learner.critic.parameters()))


def test_state_round_trip_and_resumed_learning_rates() -> None:
    a = with_encoder()
    a.update(make_batch())
    b = make_sac(sac_cfg(num_critics=3, num_min=2, layer_norm=True, actor_lr=1e-5),
                 encoder=nn.Sequential(nn.Linear(OBS, FEAT), nn.Tanh()))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b.load_state_dict(torch.load(buf, weights_only=True))
    obs = make_batch()["observations"]
    np.testing.assert_array_equal(a.act(obs, True), b.act(obs, True))
    assert b.act(obs[0], False).shape == (ACT,) and b.num_updates == 1
    assert [g["lr"] for g in b.optimizers["actor"].param_groups] == [1e-5]
    np.testing.assert_allclose(a.value(obs), b.value(obs))


@pytest.mark.parametrize("field,value,flag", [("num_min", 3, "--sac.num-min"), ("tau", 0.0, "--sac.tau"),
                                              ("critic_updates_per_actor", 0, "--sac.critic-updates-per-actor")])
def test_settings_that_cannot_work_name_the_flag(field: str, value, flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        SACConfig(**{field: value}).validate()


def test_warmup_longer_than_the_online_budget_is_refused() -> None:
    with pytest.raises(ConfigError, match="--loop.warmup-env-steps 300 >= --loop.online-env-steps 300"):
        validate_loop(LoopConfig(online_env_steps=300, warmup_env_steps=300))


# ------------------------------------------------------------------ CQL + SAC is a Cal-QL preset
@pytest.mark.parametrize("gripper", [False, True])
def test_cql_sac_fine_tuning_is_sacs_update(gripper: bool) -> None:
    """`--algo cql-sac` on a preset with Lagrange CQL, TD3+BC's actor term and the encoder BC
    loss: after the switch its losses equal SAC's (no entropy backup, Cal-QL's max backup k)
    on the same batch and parameters; before it the CQL term is there."""
    preset = StateExperimentConfig(learner=small_cfg(lagrange=True, td3bc_alpha=0.4, bc_encoder_weight=3.0,
                                                     discrete_gripper=gripper))
    cfg = agent_config(with_algo_defaults(preset, "cql-sac"))
    torch.manual_seed(0)
    learner = CalQLLearner(cfg, AgentSpec(FEAT, ACT, DISCOUNT, encoder=nn.Sequential(nn.Linear(OBS, FEAT), nn.Tanh())))
    batch = batch_to_torch(make_batch(), learner.device)
    offline, _ = calql_losses.compute_losses(batch, learner.nets(), cfg, learner.settings())
    assert "encoder_bc" in offline and float(offline["critic"].detach()) != 0 and learner.needs_returns is False
    learner.set_online(True)
    torch.manual_seed(7)
    got, metrics = calql_losses.compute_losses(batch, learner.nets(), cfg, learner.settings())
    twin = SACConfig(actor_hidden=cfg.actor_hidden, critic_hidden=cfg.critic_hidden, backup_entropy=False,
                     backup_k=cfg.backup_k, discrete_gripper=gripper)
    nets = sac.Nets(learner.encoder, learner.actor, learner.critic, learner.target_critic, learner.log_alpha)
    torch.manual_seed(7)
    want, _ = sac.compute_losses(batch, nets, twin, DISCOUNT)
    assert set(got) - {"alpha_prime"} == set(want) and "cql_diff" not in metrics
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-6, atol=1e-6)
    assert float(got["alpha_prime"]) == 0.0
    log_alpha_prime = learner.log_alpha_prime.detach().clone()
    learner.update(make_batch())  # alpha' stays where pre-training left it (Adam's moments do not move it)
    assert torch.equal(log_alpha_prime, learner.log_alpha_prime.detach())


# ------------------------------------------------------------------ the --algo names
def parsed(argv: list[str], visual: bool = False):
    with contextlib.redirect_stdout(io.StringIO()):
        return parse_visual_cli(argv) if visual else parse_state_cli(argv)


def test_each_algo_sets_what_it_says() -> None:
    base = parsed([])
    for algo in ("sac", "sac-offline", "hybrid"):
        cfg = parsed(["--algo", algo])
        assert cfg.loop.offline_steps == 0 and type(agent_config(cfg)) is SACConfig
    assert parsed(["--algo", "sac"]).loop.mixing_ratio == 0.0
    assert parsed(["--algo", "sac-offline"]).loop.mixing_ratio == -1.0
    assert parsed(["--algo", "hybrid"]).loop.mixing_ratio == base.loop.mixing_ratio == 0.5
    assert parsed(["--algo", "hybrid"], visual=True).loop.mixing_ratio == 0.9  # the visual cpu preset's
    cql_sac = parsed(["--algo", "cql-sac"])
    assert cql_sac.loop == base.loop and not cql_sac.learner.calql_bound
    assert cql_sac.learner.cql_weight_online == 0.0 and not cql_sac.learner.bc_online
    wsrl = parsed(["--algo", "wsrl-calql"])
    assert wsrl.learner.calql_bound and wsrl.learner.cql_weight_online == 0.0 and not wsrl.learner.bc_online
    assert wsrl.loop.mixing_ratio == 0.0 and wsrl.loop.offline_steps == base.loop.offline_steps
    assert wsrl.loop.warmup_env_steps == base.loop.online_env_steps // 10  # CPU budget: a tenth
    assert parsed(["--algo", "wsrl-calql", "--loop.online-env-steps", "80"]).loop.warmup_env_steps == 8
    paper = parsed(["--task", "antmaze-medium-diverse", "--preset", "paper", "--algo", "wsrl-calql"])
    assert paper.loop.warmup_env_steps == WSRL_WARMUP == 5000 and paper.sac.critic_hidden == (256,) * 4
    assert parsed(["--algo", "sac", "--loop.mixing-ratio", "0.25"]).loop.mixing_ratio == 0.25  # flags win
    assert parsed(["--algo", "calql"]) == base


def test_wsrl_online_batches_hold_online_rows_only() -> None:
    from tests.test_mixing import OFFLINE, ONLINE, filled

    ratio = parsed(["--algo", "wsrl-calql"]).loop.mixing_ratio
    batch = sample_mixed(filled(50, OFFLINE), filled(20, ONLINE), 64, ratio, np.random.default_rng(0))
    assert batch["n_offline"] == 0 and np.all(batch["observations"]["state"][:, 1] == ONLINE)


def test_help_lists_every_algo_with_one_line(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        parse_state_cli(["--help"])
    block = capsys.readouterr().out.split("Algorithms (--algo NAME):\n")[1].split("\n\n")[0].splitlines()
    assert [line.split()[0] for line in block] == list(AGENTS) and all(len(line.split()) > 3 for line in block)


def test_resume_keeps_the_saved_settings(tmp_path) -> None:
    """A resumed run reads its method's settings from config.json; they are not applied again."""
    import json

    from calql_robot.config import to_dict

    saved = with_algo_defaults(StateExperimentConfig(), "sac")
    saved.loop.mixing_ratio = 0.3  # as if the run was started with --algo sac --loop.mixing-ratio 0.3
    (tmp_path / "config.json").write_text(json.dumps(to_dict(saved)))
    cfg = parsed(["--run.resume", "--run.run-dir", str(tmp_path), "--algo", "sac"])
    assert cfg.algo == "sac" and cfg.loop.mixing_ratio == 0.3 and cfg.loop.offline_steps == 0


# ------------------------------------------------------------------ smoke runs, the real entry points
def run_script(script: str, args: list[str]) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, script, *args], cwd=Path(__file__).resolve().parents[1], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"


def online_train_rows(run_dir: Path) -> list[dict]:
    from calql_robot.run.runlog import read_metrics

    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r["phase"] == "online" and "train/critic_loss" in r]


@pytest.mark.smoke
def test_train_state_sac_from_scratch_then_rollout_and_resume(tmp_path: Path) -> None:
    """`train_state.py --algo sac`: no pre-training, online episodes, one update per env step;
    rollout.py's loader rebuilds the SAC agent from config.json; resume reads the settings back."""
    import json

    from calql_robot.policy_io import load_policy

    run_dir = tmp_path / "run"
    run_script("train_state.py", ["--algo", "sac", "--run.run-dir", str(run_dir), "--run.no-progress", "--run.threads",
                                  "1", "--data.episodes", "4", "--loop.online-env-steps", "80", "--loop.batch-size",
                                  "32", "--loop.eval-episodes", "1", "--loop.eval-every", "40", "--loop.log-every", "10",
                                  "--sac.actor-hidden", "32", "32", "--sac.critic-hidden", "32", "32"])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["offline_updates"] == 0 and summary["online_updates"] == summary["env_steps"] >= 80
    rows = online_train_rows(run_dir)
    assert rows and all("train/actor_loss" in r and "train/cql_diff" not in r for r in rows)
    loaded = load_policy(run_dir)
    assert isinstance(loaded.learner, SACLearner) and loaded.learner.num_updates == summary["online_updates"]
    assert loaded.config.loop.mixing_ratio == 0.0 and loaded.config.sac.actor_hidden == (32, 32)
    resumed = parsed(["--run.resume", "--run.run-dir", str(run_dir)])
    assert resumed.algo == "sac" and resumed.sac == loaded.config.sac


@pytest.mark.smoke
def test_train_visual_hybrid_trains_the_encoder_through_the_critic(tmp_path: Path) -> None:
    """`train_visual.py --algo hybrid`: SAC from pixels on batches mixed at the preset's 0.9."""
    import json

    from tests.visual_tiny_run import tiny_args

    args = tiny_args(tmp_path)
    at = args.index("--loop.offline-steps")
    del args[at:at + 2]  # hybrid's own: no pre-training
    run_script("train_visual.py", [*args, "--algo", "hybrid", "--sac.actor-hidden", "32", "32",
                                   "--sac.critic-hidden", "32", "32"])
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["algo"] == "hybrid" and config["loop"]["offline_steps"] == 0
    assert config["loop"]["mixing_ratio"] == 0.9 and config["sac"]["discrete_gripper"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["online_updates"] == summary["env_steps"] > 0 and online_train_rows(tmp_path / "run")
