"""Learner behaviour: gradient isolation, every parameter moves, targets, resume, bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

from calql_robot.agents.base import AgentSpec, NonFiniteLossError, batch_to_torch
from calql_robot.agents.calql import CalQLConfig, compute_losses
from calql_robot.agents.calql_learner import CalQLLearner
from calql_robot.config import RewardConfig
from tests.test_losses import ACT, B, DISCOUNT, OBS, make_batch, small_cfg

FEAT = 4


def learner_with_encoder(**kw) -> CalQLLearner:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(OBS, FEAT), nn.Tanh())
    return CalQLLearner(small_cfg(lagrange=True, **kw), AgentSpec(FEAT, ACT, DISCOUNT, encoder=encoder))


def param_groups(learner: CalQLLearner) -> dict[str, list[torch.Tensor]]:
    return {"actor": list(learner.actor.parameters()), "critic": list(learner.critic.parameters()),
            "encoder": list(learner.encoder.parameters()), "log_alpha": [learner.log_alpha],
            "log_alpha_prime": [learner.log_alpha_prime],
            "target_critic": list(learner.target_critic.parameters())}


OWNERS = {"actor": {"actor"}, "critic": {"critic", "encoder"}, "alpha": {"log_alpha"},
          "alpha_prime": {"log_alpha_prime"}}


@pytest.mark.parametrize("loss_name", sorted(OWNERS))
def test_each_loss_reaches_only_its_own_parameters(loss_name: str) -> None:
    learner = learner_with_encoder()
    with torch.no_grad():
        learner.log_alpha.fill_(-0.5)  # so the alpha loss has a non-zero gradient
    assert_loss_reaches_only_its_owners(learner, make_batch(), loss_name)


def assert_loss_reaches_only_its_owners(learner: CalQLLearner, batch: dict, loss_name: str,
                                        owners: dict[str, set[str]] | None = None) -> None:
    """Backpropagate one loss alone; exactly the parameter groups of OWNERS[loss_name] get gradient."""
    owners = OWNERS if owners is None else owners
    batch = batch_to_torch(batch, learner.device)
    losses, _ = compute_losses(batch, learner.nets(), learner.cfg, learner.settings())
    groups = param_groups(learner)
    every = [p for ps in groups.values() for p in ps if p.requires_grad]
    grads = torch.autograd.grad(losses[loss_name], every, allow_unused=True)
    by_id = {id(p): g for p, g in zip(every, grads)}
    for group, params in groups.items():
        touched = any(by_id.get(id(p)) is not None and by_id[id(p)].abs().sum() > 0 for p in params)
        assert touched == (group in owners[loss_name]), (loss_name, group)


def test_every_parameter_changes_after_one_update() -> None:
    learner = learner_with_encoder()
    before = {name: [p.detach().clone() for p in ps] for name, ps in param_groups(learner).items()}
    learner.update(make_batch())
    for name, params in param_groups(learner).items():
        for i, (old, new) in enumerate(zip(before[name], params)):
            assert not torch.equal(old, new.detach()), f"{name}[{i}] did not change"


def test_target_is_polyak_average_after_update() -> None:
    learner = learner_with_encoder()
    target0 = [p.detach().clone() for p in learner.target_critic.parameters()]
    learner.update(make_batch())
    tau = learner.cfg.tau
    for t0, t1, online in zip(target0, learner.target_critic.parameters(), learner.critic.parameters()):
        torch.testing.assert_close(t1, tau * online.detach() + (1 - tau) * t0)


def test_update_equals_separate_per_loss_steps() -> None:
    """One summed backward == the official per-loss gradients (same pre-update params)."""
    fused = learner_with_encoder()
    ref = learner_with_encoder()
    ref.load_state_dict(fused.state_dict())
    batch = make_batch()
    torch.manual_seed(11)
    fused.update(batch)
    torch.manual_seed(11)
    tb = batch_to_torch(batch, ref.device)
    losses, _ = compute_losses(tb, ref.nets(), ref.cfg, ref.settings())
    params = {"actor": list(ref.actor.parameters()),
              "critic": list(ref.critic.parameters()) + list(ref.encoder.parameters()),
              "alpha": [ref.log_alpha], "alpha_prime": [ref.log_alpha_prime]}
    grads = {k: torch.autograd.grad(losses[k], params[k], retain_graph=True, allow_unused=True)
             for k in params}
    for k, opt in ref.optimizers.items():
        for p, g in zip(params[k], grads[k]):
            p.grad = torch.zeros_like(p) if g is None else g
        opt.step()
    for a, b in zip(fused.actor.parameters(), ref.actor.parameters()):
        torch.testing.assert_close(a, b)
    for a, b in zip(list(fused.critic.parameters()) + list(fused.encoder.parameters()),
                    list(ref.critic.parameters()) + list(ref.encoder.parameters())):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(fused.log_alpha, ref.log_alpha)
    torch.testing.assert_close(fused.log_alpha_prime, ref.log_alpha_prime)


def test_loaded_state_takes_the_configs_learning_rates() -> None:
    """Adam's state dict carries the lr it was saved with; a run resumed with another
    --learner.actor-lr / --learner.critic-lr must train at the new one, not silently the old."""
    saved = learner_with_encoder(actor_lr=1e-3, critic_lr=3e-4)
    saved.update(make_batch(0))
    resumed = learner_with_encoder(actor_lr=1e-5, critic_lr=2e-5)
    resumed.load_state_dict(saved.state_dict())
    got = {name: [g["lr"] for g in opt.param_groups] for name, opt in resumed.optimizers.items()}
    assert got == {"actor": [1e-5], "critic": [2e-5], "alpha": [1e-5], "alpha_prime": [2e-5]}
    assert resumed.optimizers["actor"].state, "Adam's moments still come from the checkpoint"


def test_resume_equivalence_through_weights_only_checkpoint() -> None:
    """K updates + save + load (weights_only) + K updates == 2K updates, bit for bit."""
    batches = [make_batch(seed) for seed in range(6)]
    straight = learner_with_encoder()
    torch.manual_seed(3)
    for b in batches:
        straight.update(b)

    first = learner_with_encoder()
    torch.manual_seed(3)
    for b in batches[:3]:
        first.update(b)
    buf = io.BytesIO()
    torch.save({"learner": first.state_dict(), "rng": torch.get_rng_state()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    resumed = learner_with_encoder()
    torch.manual_seed(999)  # a different RNG state, restored from the checkpoint below
    resumed.load_state_dict(state["learner"])
    torch.set_rng_state(state["rng"])
    for b in batches[3:]:
        resumed.update(b)
    for a, b in zip(straight.state_dict()["critic"].values(), resumed.state_dict()["critic"].values()):
        assert torch.equal(a, b)
    for a, b in zip(straight.actor.parameters(), resumed.actor.parameters()):
        assert torch.equal(a, b)
    assert resumed.num_updates == straight.num_updates == 6


@pytest.mark.parametrize("key,value,match", [
    ("rewards", np.full(B, np.nan, np.float32), "non-finite"),
    ("actions", np.zeros((B, ACT + 1), np.float32), "actions"),
    ("dones", np.zeros((B, 2), np.float32), "dones"),
])
def test_malformed_batch_is_rejected_by_name(key: str, value: np.ndarray, match: str) -> None:
    learner = learner_with_encoder()
    with pytest.raises(ValueError, match=match):
        learner.update(dict(make_batch(), **{key: value}))


def test_missing_key_is_named() -> None:
    learner = learner_with_encoder()
    batch = make_batch()
    del batch["mc_returns"]
    with pytest.raises(KeyError, match="mc_returns"):
        learner.update(batch)


def test_non_finite_loss_stops_before_any_parameter_changes() -> None:
    learner = learner_with_encoder()
    with torch.no_grad():
        learner.critic.weights[-1].fill_(float("inf"))
    before = [p.detach().clone() for p in learner.actor.parameters()]
    with pytest.raises(NonFiniteLossError):
        learner.update(make_batch())
    for old, new in zip(before, learner.actor.parameters()):
        assert torch.equal(old, new)


@pytest.mark.parametrize("field,value", [("tau", 0.0), ("cql_n_actions", 0)])
def test_bad_config_is_rejected_by_name(field: str, value) -> None:
    with pytest.raises(ValueError, match=f"--learner.{field.replace('_', '-')}"):  # the flag as typed
        CalQLLearner(CalQLConfig(**{field: value}), AgentSpec(OBS, ACT))


def test_bad_discount_is_rejected_by_name() -> None:
    with pytest.raises(ValueError, match="--reward.discount"):
        RewardConfig(discount=1.5).validate()


def test_act_shapes_and_bounds() -> None:
    learner = CalQLLearner(small_cfg(), AgentSpec(OBS, ACT, DISCOUNT))
    obs = make_batch()["observations"]
    single = learner.act(obs[0], deterministic=True)
    many = learner.act(obs, deterministic=False)
    assert single.shape == (ACT,) and many.shape == (B, ACT)
    assert np.all(np.abs(many) <= 1.0)
    np.testing.assert_allclose(learner.act(obs[0], True), single)


ENCODER_BC_OWNERS = {**OWNERS, "encoder_bc": {"encoder"}}


@pytest.mark.parametrize("loss_name", sorted(ENCODER_BC_OWNERS))
def test_encoder_bc_reaches_only_the_encoder(loss_name: str) -> None:
    """`bc_encoder_weight`: a fifth loss that moves the encoder alone; the other four keep
    their owners (the actor loss still sees detached features)."""
    learner = learner_with_encoder(td3bc_alpha=0.4, bc_encoder_weight=50.0)
    with torch.no_grad():
        learner.log_alpha.fill_(-0.5)
    assert_loss_reaches_only_its_owners(learner, make_batch(), loss_name, ENCODER_BC_OWNERS)


def _snapshot(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def test_encoder_bc_is_the_weighted_mse_and_leaves_the_other_losses_alone() -> None:
    """The encoder_bc loss is bc_encoder_weight * mean((tanh(mu(enc(s))) - a_clipped)^2),
    checked against NumPy; the actor and critic losses equal those of a run without it."""
    batch = batch_to_torch(make_batch(), "cpu")
    out = {}
    for weight in (0.0, 50.0):
        learner = learner_with_encoder(td3bc_alpha=0.4, bc_encoder_weight=weight)
        torch.manual_seed(7)
        out[weight] = compute_losses(batch, learner.nets(), learner.cfg, learner.settings())[0]
    assert "encoder_bc" not in out[0.0]
    for name in ("actor", "critic", "alpha", "alpha_prime"):
        torch.testing.assert_close(out[0.0][name], out[50.0][name])
    # reference: the encoder (Linear -> tanh) in NumPy, the actor's tanh(mean) on its output
    enc = learner.encoder[0]
    x = batch["observations"].numpy().astype(np.float64)
    h = np.tanh(x @ enc.weight.detach().numpy().T.astype(np.float64) + enc.bias.detach().numpy())
    mean = learner.actor(torch.as_tensor(h, dtype=torch.float32)).deterministic().detach().numpy()
    data = np.clip(batch["actions"].numpy(), -learner.cfg.action_clip, learner.cfg.action_clip)
    want = 50.0 * np.mean((mean - data) ** 2)
    np.testing.assert_allclose(float(out[50.0]["encoder_bc"].detach()), want, rtol=1e-5)


def test_encoder_bc_gradient_on_the_encoder() -> None:
    """Its encoder gradient is bc_encoder_weight * d/d(encoder) of the BC MSE written out."""
    batch = batch_to_torch(make_batch(), "cpu")
    learner = learner_with_encoder(td3bc_alpha=0.4, bc_encoder_weight=50.0)
    losses, _ = compute_losses(batch, learner.nets(), learner.cfg, learner.settings())
    enc = list(learner.encoder.parameters())
    got = torch.autograd.grad(losses["encoder_bc"], enc)
    mean = learner.actor(learner.encoder(batch["observations"])).deterministic()
    data = batch["actions"].clamp(-learner.cfg.action_clip, learner.cfg.action_clip)
    ref = torch.autograd.grad(50.0 * (mean - data).pow(2).mean(), enc)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r)




def test_encoder_bc_on_the_offline_rows_reads_only_them() -> None:
    """With `--learner.bc-offline-only` the encoder BC is the weighted MSE over the batch's
    first `n_offline` rows, and its encoder gradient comes from those rows alone."""
    rows = 3
    batch = dict(batch_to_torch(make_batch(), "cpu"), n_offline=rows)
    learner = learner_with_encoder(td3bc_alpha=0.4, bc_encoder_weight=50.0, bc_offline_only=True)
    losses, _ = compute_losses(batch, learner.nets(), learner.cfg, learner.settings())
    mean = learner.actor(learner.encoder(batch["observations"][:rows])).deterministic()
    data = batch["actions"][:rows].clamp(-learner.cfg.action_clip, learner.cfg.action_clip)
    want = 50.0 * (mean - data).pow(2).mean()
    torch.testing.assert_close(losses["encoder_bc"], want)
    enc = list(learner.encoder.parameters())
    for g, r in zip(torch.autograd.grad(losses["encoder_bc"], enc), torch.autograd.grad(want, enc)):
        torch.testing.assert_close(g, r)
