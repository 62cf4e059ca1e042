"""Networks: the fused add+relu, the ensemble against per-member MLPs, initialisation, actor."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from calql_robot.networks import AddReLU, CriticEnsemble, EnsembleHead, TanhGaussianActor, tanh_log_det


@pytest.mark.parametrize("shape,y_shape,view", [
    ((2, 7, 5), (2, 1, 5), None),
    ((2, 12, 5), (2, 1, 4, 5), (2, 3, 4, 5)),
])
def test_add_relu_matches_autograd_reference(shape, y_shape, view) -> None:
    torch.manual_seed(0)
    x0 = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    y0 = torch.randn(y_shape, dtype=torch.float64, requires_grad=True)
    g = torch.randn(shape, dtype=torch.float64)
    ref = F.relu((x0 if view is None else x0.view(view)) + y0).reshape(shape)
    ref_gx, ref_gy = torch.autograd.grad(ref, (x0, y0), g)
    x1 = (x0 * 1.0)  # a non-leaf, like a matmul output
    out = AddReLU.apply(x1, y0, view)
    got_gx, got_gy = torch.autograd.grad(out, (x0, y0), g)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(got_gx, ref_gx)
    torch.testing.assert_close(got_gy, ref_gy)


def test_ensemble_equals_independent_mlps_on_concat() -> None:
    torch.manual_seed(1)
    critic = CriticEnsemble(3, obs_dim=4, action_dim=2, hidden=(16, 8))
    with torch.no_grad():
        for p in critic.parameters():
            p.add_(0.1 * torch.randn_like(p))
    obs, actions = torch.randn(5, 4), torch.randn(6, 5, 2)
    got = critic(obs, actions)
    assert got.shape == (3, 6, 5)
    for e in range(3):
        x = torch.cat([obs.expand(6, 5, 4), actions], dim=-1)
        for i, (w, b) in enumerate(zip(critic.weights, critic.biases)):
            x = x @ w[e] + b[e, 0]
            if i < len(critic.weights) - 1:
                x = F.relu(x)
        torch.testing.assert_close(got[e], x[..., 0])


def test_ensemble_gradients_equal_autograd_reference() -> None:
    """The hand-written backwards (in-place relu mask, EnsembleHead) against plain autograd,
    for every weight, bias and both inputs, with a loss that mixes all outputs."""
    torch.manual_seed(5)
    critic = CriticEnsemble(2, obs_dim=4, action_dim=3, hidden=(16, 16, 8)).double()
    with torch.no_grad():
        for p in critic.parameters():
            p.add_(0.2 * torch.randn_like(p))
    obs = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    actions = torch.randn(6, 5, 3, dtype=torch.float64, requires_grad=True)
    mix = torch.randn(2, 6, 5, dtype=torch.float64)
    inputs = (obs, actions, *critic.parameters())
    got = torch.autograd.grad((critic(obs, actions) * mix).sum(), inputs)
    x = torch.cat([obs.expand(6, 5, 4), actions], dim=-1).unsqueeze(0).expand(2, 6, 5, 7)
    for i, (w, b) in enumerate(zip(critic.weights, critic.biases)):
        x = x @ w.unsqueeze(1) + b.unsqueeze(1)
        if i < len(critic.weights) - 1:
            x = F.relu(x)
    ref = torch.autograd.grad((x[..., 0] * mix).sum(), inputs)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r)


def test_ensemble_head_values_and_gradients() -> None:
    h = torch.randn(2, 7, 4, requires_grad=True)
    w, b = torch.randn(2, 4, 1), torch.randn(2, 1, 1, requires_grad=True)
    out = EnsembleHead.apply(h, w, b)
    torch.testing.assert_close(out, torch.baddbmm(b, h, w))
    gh, gb = torch.autograd.grad(out.sum(), (h, b))
    torch.testing.assert_close(gh, w.transpose(1, 2).expand(2, 7, 4))
    torch.testing.assert_close(gb, torch.full((2, 1, 1), 7.0))


def test_orthogonal_init_gains_and_zero_bias() -> None:
    critic = CriticEnsemble(2, obs_dim=10, action_dim=3, hidden=(32, 32))
    for i, (w, b) in enumerate(zip(critic.weights, critic.biases)):
        gain = 1e-2 if i == len(critic.weights) - 1 else math.sqrt(2.0)
        for member in w:
            m = member.detach().numpy()  # (fan_in, fan_out): orthogonal columns or rows
            gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
            np.testing.assert_allclose(gram, gain ** 2 * np.eye(gram.shape[0]), atol=1e-5)
        assert torch.count_nonzero(b) == 0
    assert not torch.equal(critic.weights[0][0], critic.weights[0][1]), "members differ"


def test_actor_log_std_affine_clip_and_log_prob() -> None:
    torch.manual_seed(2)
    actor = TanhGaussianActor(4, 3, (8,), log_std_multiplier=1.0, log_std_offset=-1.0)
    out = actor(torch.randn(7, 4))
    assert out.mean.shape == (7, 3) and torch.all(out.log_std <= 2.0) and torch.all(out.log_std >= -20.0)
    with torch.no_grad():
        actor.log_std_offset.fill_(50.0)
    assert torch.all(actor(torch.randn(7, 4)).log_std == 2.0)
    # log-density of tanh(N(mu, sigma)) against a Monte-Carlo-free direct formula
    with torch.no_grad():
        actor.log_std_offset.fill_(-1.0)
    torch.manual_seed(3)
    policy = actor(torch.randn(7, 4)).detached()
    torch.manual_seed(4)
    a, logp = policy.sample()
    pre = torch.atanh(a.double().clamp(-1 + 1e-12, 1 - 1e-12))
    normal = torch.distributions.Normal(policy.mean.double(), policy.log_std.double().exp())
    ref = (normal.log_prob(pre) - torch.log1p(-torch.tanh(pre) ** 2)).sum(-1)
    torch.testing.assert_close(logp.double(), ref, rtol=1e-3, atol=1e-3)


def test_stable_tanh_log_det_matches_naive_where_naive_is_finite() -> None:
    x = torch.linspace(-8, 8, 101, dtype=torch.float64)
    torch.testing.assert_close(tanh_log_det(x), torch.log(1 - torch.tanh(x) ** 2))
    assert torch.isfinite(tanh_log_det(torch.tensor([40.0, -40.0]))).all()


def test_ensemble_head_rejects_more_than_one_output() -> None:
    with pytest.raises(ValueError, match="one output unit"):
        EnsembleHead.apply(torch.randn(2, 7, 4), torch.randn(2, 4, 3), torch.randn(2, 1, 3))
