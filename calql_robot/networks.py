"""Networks of the Cal-QL learner: a vectorised critic ensemble and a tanh-Gaussian actor.

Both follow the official JaxCQL / Cal-QL code (nakamotoo/Cal-QL, `model.py`): ReLU MLPs
without layer norm, orthogonal initialisation (hidden gain sqrt(2), output gain 1e-2, zero
biases), and an actor whose log-std is `m * log_std + b` with learnable scalars m and b.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from calql_robot.precision import fp32_region, full_precision

LOG_STD_MIN = -20.0
LOG_STD_MAX = 2.0


class AddReLU(torch.autograd.Function):
    """`relu(x + y)` written into x (a fresh matmul output), y broadcast over x.

    One memory pass instead of three (bias copy, gemm accumulate, relu) on the (E, rows,
    256) activations that dominate a CPU update; the backward is the usual relu mask plus
    a sum over the broadcast dimensions. `shape` views x inside the function (so y can
    broadcast over action sets) without exposing an in-place write on a view to autograd,
    which would add CopySlices copies. Exactly relu(x + y) (tests/test_networks.py).

    `owns_grad=True` promises that the output feeds exactly one op whose backward returns
    a fresh gradient tensor (a bmm or `EnsembleHead`, as inside `CriticEnsemble`); the relu
    mask is then applied in place on that gradient, which saves allocating and writing a
    second (E, rows, 256) buffer per layer (profiles in BENCHMARKS.md). Never set it when a caller may hold
    the gradient (e.g. `grad_outputs` passed to `torch.autograd.grad`).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor, shape: tuple[int, ...] | None = None,
                owns_grad: bool = False) -> torch.Tensor:
        ctx.mark_dirty(x)
        ctx.owns_grad = owns_grad
        target = x if shape is None else x.view(shape)
        y = y.to(x.dtype)  # an fp32 bias on a bf16 matmul output under autocast (precision.py)
        if x.is_cpu and x.dtype == torch.float32:  # the fused CPU kernel has no bf16 version
            torch.ops.aten._add_relu_(target, y)
        else:
            target.add_(y).relu_()
        ctx.save_for_backward(x)
        ctx.shape, ctx.y_shape = target.shape, y.shape
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (out,) = ctx.saved_tensors
        if ctx.owns_grad and grad.is_contiguous() and grad.shape == out.shape:
            grad_x = torch.ops.aten.threshold_backward.grad_input(grad, out, 0.0, grad_input=grad)
        else:
            grad_x = torch.ops.aten.threshold_backward(grad, out, 0.0)
        shaped = grad_x.view(ctx.shape)
        dims = [i for i, (gs, ys) in enumerate(zip(shaped.shape, ctx.y_shape)) if ys == 1 and gs != 1]
        grad_y = shaped.sum(dim=dims, keepdim=True) if dims else shaped
        return grad_x, grad_y, None, None


class EnsembleHead(torch.autograd.Function):
    """The scalar output layer `h @ w + b` of an ensemble, (E, R, H) -> (E, R, 1).

    Same values as `torch.baddbmm(b, h, w)`; only the backward is arranged for CPU speed.
    With one output unit autograd's generic matmul backward runs two degenerate GEMMs,
    `h^T @ g` (a strided matrix-vector product) and `g @ w^T` (an outer product). `g^T @ h`
    takes about a third of the time of the first; the broadcast multiply costs about what
    the outer product did (both write one (E, R, H) buffer). Profiles in BENCHMARKS.md.
    The gradient for h it returns is a fresh tensor, which is what lets
    the AddReLU feeding this head mask it in place (`owns_grad`).
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if w.shape[-1] != 1:
            raise ValueError(f"EnsembleHead computes one output unit; got a weight of shape {tuple(w.shape)}")
        ctx.save_for_backward(h, w)
        return torch.baddbmm(b, h, w)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        h, w = ctx.saved_tensors
        grad_h = grad * w.transpose(1, 2) if ctx.needs_input_grad[0] else None
        grad_w = torch.bmm(grad.transpose(1, 2), h).transpose(1, 2) if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(dim=1, keepdim=True) if ctx.needs_input_grad[2] else None
        return grad_h, grad_w, grad_b


def _orthogonal_stack(num: int, fan_in: int, fan_out: int, gain: float) -> torch.Tensor:
    """`num` independent orthogonal matrices of shape (fan_in, fan_out)."""
    weight = torch.empty(num, fan_out, fan_in)
    for member in weight:  # num is the ensemble size (2): a loop over members, not samples
        nn.init.orthogonal_(member, gain=gain)
    return weight.transpose(1, 2).contiguous()


class EnsembleMLP(nn.Module):
    """`num` independent MLPs evaluated as one batched matmul per layer.

    Weights are stacked to (num, fan_in, fan_out), so a layer is one `baddbmm` over all
    members (rlpd / jaxrl_m's vmapped ensembles). With `orthogonal_init` the hidden layers
    use gain sqrt(2) and the output layer gain 1e-2 (JaxCQL `FullyConnectedNetwork`);
    otherwise PyTorch's default `nn.Linear` initialisation is reproduced per member.
    """

    def __init__(self, num: int, in_dim: int, hidden: tuple[int, ...], out_dim: int,
                 orthogonal_init: bool = True) -> None:
        super().__init__()
        sizes = [in_dim, *hidden, out_dim]
        self.num = num
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            is_output = i == len(sizes) - 2
            weight, bias = _init_layer(num, fan_in, fan_out, is_output, orthogonal_init)
            self.weights.append(nn.Parameter(weight))
            self.biases.append(nn.Parameter(bias))

    def parameters_list(self, detach: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(weight, bias) per layer; detached copies share storage but carry no gradient."""
        pairs = list(zip(self.weights, self.biases))
        if detach:
            return [(w.detach(), b.detach()) for w, b in pairs]
        return pairs


def _init_layer(num: int, fan_in: int, fan_out: int, is_output: bool,
                orthogonal_init: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if orthogonal_init:
        gain = 1e-2 if is_output else math.sqrt(2.0)
        return _orthogonal_stack(num, fan_in, fan_out, gain), torch.zeros(num, 1, fan_out)
    bound = 1.0 / math.sqrt(fan_in)
    weight = torch.empty(num, fan_in, fan_out).uniform_(-bound, bound)
    return weight, torch.empty(num, 1, fan_out).uniform_(-bound, bound)


class CriticEnsemble(EnsembleMLP):
    """Q_1..Q_E(s, a) on concat[s, a], all members and all action sets in one pass.

    `forward(obs (B, F), actions (M, B, A)) -> (E, M, B)`: the first layer is split into its
    state and action blocks, `concat[s, a] @ W = s @ W_s + a @ W_a`, so the state block is
    computed once per state instead of once per (state, action) row. This is exact; it only
    avoids repeating s for the 1 + 3n action sets of the CQL regulariser.
    """

    def __init__(self, num: int, obs_dim: int, action_dim: int, hidden: tuple[int, ...],
                 orthogonal_init: bool = True, layer_norm: bool = False) -> None:
        super().__init__(num, obs_dim + action_dim, hidden, 1, orthogonal_init)
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.layer_norm = layer_norm
        # LayerNorm after every hidden Linear, before its ReLU (rlpd's `MLP(use_layer_norm=True)`),
        # with a scale and offset per member and unit (flax's LayerNorm: init 1 and 0, eps 1e-6)
        self.norm_scales = nn.ParameterList([nn.Parameter(torch.ones(num, 1, h)) for h in hidden] if layer_norm else [])
        self.norm_offsets = nn.ParameterList([nn.Parameter(torch.zeros(num, 1, h)) for h in hidden] if layer_norm else [])

    def forward(self, obs: torch.Tensor, actions: torch.Tensor,
                detach_params: bool = False) -> torch.Tensor:
        params = self.parameters_list(detach=detach_params)
        m, b, _ = actions.shape
        w0, b0 = params[0]
        h_obs = torch.matmul(obs, w0[:, : self.obs_dim])  # (E, B, H)
        h_act = torch.matmul(actions.reshape(m * b, -1), w0[:, self.obs_dim:])  # (E, M*B, H)
        if self.layer_norm:
            return self._forward_normed(params, h_obs, h_act, m, b, detach_params)
        # Each activation feeds only the next bmm / the head, so its gradient is owned.
        h = AddReLU.apply(h_act, (h_obs + b0).unsqueeze(1), (self.num, m, b, h_act.shape[-1]), True)
        for w, bias in params[1:-1]:
            h = AddReLU.apply(torch.bmm(h, w), bias, None, True)  # bmm's backward needs inputs, not output
        w, bias = params[-1]
        with fp32_region(h):  # under bf16 autocast the Q-values are made in fp32 (precision.py)
            return EnsembleHead.apply(full_precision(h), w, bias).view(self.num, m, b)

    def _forward_normed(self, params: list[tuple[torch.Tensor, torch.Tensor]], h_obs: torch.Tensor,
                        h_act: torch.Tensor, m: int, b: int, detach_params: bool) -> torch.Tensor:
        """The LayerNorm critic: Linear -> LayerNorm -> ReLU per hidden layer, plain autograd
        ops (the fused AddReLU path above has no place for the normalisation)."""
        norms = list(zip(self.norm_scales, self.norm_offsets))
        if detach_params:
            norms = [(g.detach(), o.detach()) for g, o in norms]
        width = h_act.shape[-1]
        h = (h_act.view(self.num, m, b, width) + (h_obs + params[0][1]).unsqueeze(1)).view(self.num, m * b, width)
        h = F.relu(F.layer_norm(h, (width,), eps=1e-6) * norms[0][0] + norms[0][1])
        for (w, bias), (scale, offset) in zip(params[1:-1], norms[1:]):
            h = torch.baddbmm(bias, h, w)
            h = F.relu(F.layer_norm(h, (h.shape[-1],), eps=1e-6) * scale + offset)
        w, bias = params[-1]
        return torch.baddbmm(bias, h, w).view(self.num, m, b)


@dataclass
class PolicyOutput:
    """Parameters of the tanh-squashed diagonal Gaussian pi(.|s)."""

    mean: torch.Tensor  # (B, A) pre-tanh mean
    log_std: torch.Tensor  # (B, A) after the affine transform and the clip

    def sample(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised samples and their log-densities (tanh correction included).

        `n=None` gives (B, A) and (B,); otherwise (n, B, A) and (n, B).
        """
        shape = self.mean.shape if n is None else (n, *self.mean.shape)
        eps = torch.randn(shape, device=self.mean.device, dtype=self.mean.dtype)
        std = self.log_std.exp()
        pre_tanh = self.mean + std * eps
        log_prob = gaussian_log_prob(eps, self.log_std) - tanh_log_det(pre_tanh)
        return torch.tanh(pre_tanh), log_prob.sum(-1)

    def detached(self) -> "PolicyOutput":
        """The same distribution cut from the actor's graph (for the regulariser's samples)."""
        return PolicyOutput(self.mean.detach(), self.log_std.detach())

    def deterministic(self) -> torch.Tensor:
        """Evaluation action tanh(mean) (JaxCQL `TanhGaussianPolicy(deterministic=True)`)."""
        return torch.tanh(self.mean)


def gaussian_log_prob(eps: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(x; mu, sigma) written in terms of eps = (x - mu) / sigma."""
    return -0.5 * eps.pow(2) - log_std - 0.5 * math.log(2.0 * math.pi)


def tanh_log_det(pre_tanh: torch.Tensor) -> torch.Tensor:
    """log |d tanh(x)/dx| = log(1 - tanh(x)^2), in the stable form distrax/TFP use:
    2 * (log 2 - x - softplus(-2x))."""
    return 2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))


class TanhGaussianActor(nn.Module):
    """MLP -> (mean, log_std); `log_std = m * log_std + b`, clipped to [-20, 2].

    The learnable scalars m (init `log_std_multiplier`, 1.0) and b (init `log_std_offset`,
    -1.0) are JaxCQL's `Scalar` modules in `TanhGaussianPolicy`.
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden: tuple[int, ...],
                 orthogonal_init: bool = True, log_std_multiplier: float = 1.0,
                 log_std_offset: float = -1.0) -> None:
        super().__init__()
        self.mlp = EnsembleMLP(1, obs_dim, hidden, 2 * action_dim, orthogonal_init)
        self.log_std_multiplier = nn.Parameter(torch.tensor(float(log_std_multiplier)))
        self.log_std_offset = nn.Parameter(torch.tensor(float(log_std_offset)))
        self.action_dim = action_dim

    def forward(self, obs: torch.Tensor) -> PolicyOutput:
        h = obs
        params = self.mlp.parameters_list()
        for i, (w, b) in enumerate(params):
            h = torch.addmm(b[0], h, w[0])
            if i < len(params) - 1:
                h = F.relu(h)
        mean, log_std = full_precision(h).split(self.action_dim, dim=-1)  # log-probs in fp32 under bf16
        log_std = self.log_std_multiplier * log_std + self.log_std_offset
        return PolicyOutput(mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX))


# ---------------------------------------------------------------- IQL / AWAC
def single_mlp(x: torch.Tensor, net: EnsembleMLP, dropout: float = 0.0, training: bool = False) -> torch.Tensor:
    """Forward of a one-member `EnsembleMLP` on (B, in) rows: ReLU hidden layers, linear
    output; `dropout` after each hidden activation while `training` (IQL's kitchen actor).
    The output layer runs in fp32 under bf16 autocast (values and means are read as numbers;
    `calql_robot/precision.py`)."""
    params = net.parameters_list()
    for w, b in params[:-1]:
        x = torch.addmm(b[0], x, w[0])
        x = F.dropout(F.relu(x), dropout, training) if dropout > 0 else F.relu(x)
    w, b = params[-1]
    with fp32_region(x):
        return torch.addmm(b[0], full_precision(x), w[0])


class ValueNetwork(nn.Module):
    """V(s): one MLP, features -> scalar (IQL's `ValueCritic`), (B, F) -> (B,)."""

    def __init__(self, obs_dim: int, hidden: tuple[int, ...], orthogonal_init: bool = True) -> None:
        super().__init__()
        self.mlp = EnsembleMLP(1, obs_dim, hidden, 1, orthogonal_init)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return single_mlp(obs, self.mlp)[:, 0]


@dataclass
class GaussianPolicyOutput:
    """A diagonal Gaussian with a tanh-bounded mean and no squashing of the samples."""

    mean: torch.Tensor  # (B, A), already in (-1, 1)
    log_std: torch.Tensor  # (A,) or (B, A), clipped

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        """(B, A) actions -> (B,) log-densities (finite at a = +-1: no tanh correction)."""
        eps = (actions - self.mean) / self.log_std.exp()
        return gaussian_log_prob(eps, self.log_std.expand_as(self.mean)).sum(-1)

    def sample(self, n: int | None = None) -> torch.Tensor:
        """Samples (no gradient path is needed by IQL or AWAC): (B, A), or (n, B, A)."""
        shape = self.mean.shape if n is None else (n, *self.mean.shape)
        eps = torch.randn(shape, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.log_std.exp() * eps

    def deterministic(self) -> torch.Tensor:
        """Evaluation action: the mean (IQL / jaxrl sample with temperature 0)."""
        return self.mean


class GaussianActor(nn.Module):
    """IQL's and jaxrl AWAC's policy: `NormalTanhPolicy(state_dependent_std=False,
    tanh_squash_distribution=False)` - mean `tanh(MLP(s))`, a learnable state-independent
    log-std vector (init 0) clipped to [log_std_min, 2], and the plain Gaussian density.

    Why not `TanhGaussianActor`: advantage-weighted regression maximises log pi(a_data|s).
    Under a tanh-squashed Gaussian a data action at +-1 has no finite density; clipped to
    +-(1 - 1e-5) it sits at a pre-tanh value of +-6.1, where its log-density and gradient
    are large, so the few saturated rows (pick-and-place gripper commands, AntMaze's
    saturated joints) dominate the loss. The official codes use this distribution; so do we.
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden: tuple[int, ...], log_std_min: float,
                 dropout: float = 0.0, orthogonal_init: bool = True) -> None:
        super().__init__()
        self.mlp = EnsembleMLP(1, obs_dim, hidden, action_dim, orthogonal_init)
        self.log_std = nn.Parameter(torch.zeros(action_dim))
        self.log_std_min, self.dropout, self.action_dim = log_std_min, dropout, action_dim

    def forward(self, obs: torch.Tensor, training: bool = False) -> GaussianPolicyOutput:
        """`training` turns dropout on (the actor loss); acting and targets run without it."""
        mean = torch.tanh(single_mlp(obs, self.mlp, self.dropout, training))
        return GaussianPolicyOutput(mean, self.log_std.clamp(self.log_std_min, LOG_STD_MAX))
