"""The shared image encoder inside CalQLLearner: the stated gradient rule, augmentation,
and the image buffer's memory (frames once) as the visual domain fills it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from calql_robot.agents.base import AgentSpec, batch_to_torch
from calql_robot.agents.calql import PRESETS, compute_losses
from calql_robot.agents.calql_learner import CalQLLearner
from calql_robot.config import replace
from calql_robot.domains.pickplace_visual import EncoderConfig, VisualExperimentConfig, make_visual_modules
from bench.visual import _space, filled_buffer

PX, ACT = 32, 7


def visual_learner(seed: int = 0) -> CalQLLearner:
    torch.manual_seed(seed)
    cfg = VisualExperimentConfig(learner=replace(PRESETS["visual_paper"](), actor_hidden=(16,),
                                                 critic_hidden=(16, 16), cql_n_actions=3),
                                 encoder=EncoderConfig(latent_dim=8))
    encoder, augment, feature_dim = make_visual_modules(cfg, _space(PX))
    return CalQLLearner(cfg.learner, AgentSpec(feature_dim, ACT, 0.99, encoder, augment, "cpu"))


def image_batch(seed: int = 0, size: int = 8) -> dict:
    buf = filled_buffer(PX, 3, np.random.default_rng(seed))
    batch = buf.sample(size, np.random.default_rng(seed + 1))
    batch["rewards"][:] = np.arange(size) % 2
    return batch


def grads_of(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor | None]:
    return list(torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True))


def moved(grads: list[torch.Tensor | None]) -> bool:
    return any(g is not None and bool(g.abs().sum() > 0) for g in grads)


def test_critic_loss_trains_the_encoder_actor_loss_does_not():
    learner = visual_learner()
    assert learner.encoder.__class__.__name__ == "ImageStateEncoder"
    batch = batch_to_torch(image_batch(), learner.device)
    losses, _ = compute_losses(batch, learner.nets(), learner.cfg, learner.settings(), learner.augment)
    enc = [p for p in learner.encoder.parameters() if p.requires_grad]
    assert len(enc) > 4  # conv trunk + bottleneck, all trainable
    assert moved(grads_of(losses["critic"], enc))
    assert not moved(grads_of(losses["actor"], enc))
    assert not moved(grads_of(losses["alpha"], enc))
    # and the actor loss does reach the actor: the rule detaches features, not the policy
    assert moved(grads_of(losses["actor"], list(learner.actor.parameters())))


def test_next_observations_are_encoded_by_the_online_encoder_without_grad():
    """DrQ-v2's choice (learner.py docstring): s' goes through the same encoder, no_grad."""
    learner = visual_learner()
    calls = []
    learner.encoder.register_forward_hook(
        lambda mod, args, out: calls.append((args[0]["image"], torch.is_grad_enabled(), out.requires_grad)))
    batch = batch_to_torch(image_batch(), learner.device)
    compute_losses(batch, learner.nets(), learner.cfg, learner.settings(), None)
    assert len(calls) == 2
    (img0, grad0, req0), (img1, grad1, req1) = calls
    assert torch.equal(img0, batch["observations"]["image"]) and grad0 and req0
    assert torch.equal(img1, batch["next_observations"]["image"]) and not grad1 and not req1


def test_update_moves_encoder_and_actor_but_eval_act_is_deterministic():
    learner = visual_learner()
    before = [p.detach().clone() for p in learner.encoder.parameters()]
    learner.update(image_batch())
    after = list(learner.encoder.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    obs = {k: v[0] for k, v in image_batch(3, 2)["observations"].items()}
    a1, a2 = learner.act(obs, deterministic=True), learner.act(obs, deterministic=True)
    assert a1.shape == (ACT,) and np.array_equal(a1, a2) and np.all(np.abs(a1) <= 1)


@pytest.mark.parametrize("px", [32, 48])
def test_image_buffer_bytes_per_transition_within_10_percent_of_one_frame(px):
    buf = filled_buffer(px, 4, np.random.default_rng(0))
    frame = px * px * 3
    vectors = 4 * (10 + 10) + 8 + 4 * ACT + 4 + 4 + 1 + 1
    assert buf.num_obs_rows == 4 * 41 and len(buf) == 4 * 40  # T+1 rows per episode, not 2T
    assert frame < buf.bytes_per_transition <= 1.1 * (frame + vectors)
    batch = buf.sample_indices(np.arange(len(buf)))
    # next observation of transition t is observation of t+1 inside an episode: one copy
    same = batch["next_observations"]["image"][:-1] == batch["observations"]["image"][1:]
    inside = np.ones(len(buf) - 1, bool)
    inside[39::40] = False
    assert same.reshape(len(buf) - 1, -1).all(axis=1)[inside].all()
