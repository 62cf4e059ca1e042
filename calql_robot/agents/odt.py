"""Online decision transformer (Zheng, Zhang & Grover 2022): its config, per-domain presets,
network, pure losses and learner (`--algo odt`, flags `--odt.*`). A baseline of the Cal-QL
paper's Table 1; its Appendix E.5 ran the authors' code (facebookresearch/online-dt) with
their AntMaze settings, which are this module's defaults.

On a CPU: one update at the authors' size takes ~14 s on the project's 2-core machine
(BENCHMARKS.md). RESULTS.md (session 14) ran the state task at the original Decision
Transformer's Gym size (`--odt.embed-dim 128 --odt.n-layer 3 --odt.n-head 1 --loop.batch-size
64 --odt.warmup-steps 400`, ~0.3 s per update at one thread): no episode succeeded in 7,000
updates, the policy still far from the data's actions (arm MSE 0.12 against behaviour
cloning's 0.05).

Where each setting comes from: the repository's `main.py` defaults (K 20, evaluation context
5, embedding 512, 4 layers, 4 heads, dropout 0.1, LAMB lr 1e-4, weight decay 5e-4, warm-up
10^4, alpha_0 0.1, batch 256, 300 updates per online trajectory) and its AntMaze branch
(`reward_scale = 1.0 if "antmaze" in env`); the repository holds no per-dataset config. The
AntMaze return targets 1 (evaluation) and 2 (online) are the ODT paper's appendix table as
remembered, not checked against its text here; they follow the repository's own ratio
(online = 2 x evaluation, `--eval_rtg 3600 --online_rtg 7200`). Whether the paper changed K
or the evaluation context for AntMaze was not checked either.

What it is, read against the official code (`main.py`, `trainer.py`, `data.py`,
`evaluation.py`, `decision_transformer/models/decision_transformer.py`, `lamb.py`):

- A causal transformer over the tokens (R_1, s_1, a_1, R_2, s_2, a_2, ...) of a window of K
  steps, R_t the return-to-go; the action at t is read from the output at s_t's token, so
  it sees R_1..R_t, s_1..s_t and a_1..a_{t-1} only. GPT-2 blocks (pre-LayerNorm, scaled
  causal attention, 4x MLP with ReLU, dropout 0.1 on embeddings, attention and residuals,
  a final LayerNorm) without a positional embedding (`--ordering 0`, the default: the
  official forward adds no timestep embedding). Embedding 512, 4 layers, 4 heads.
- A stochastic policy: tanh-squashed diagonal Gaussian, log-std = tanh(.) mapped onto
  [-5, 2] (`DiagGaussianActor`).
- Policy loss: `-(mean log pi(a_t | ...) + alpha.detach() * H)`, the mean over the window's
  steps, H a one-sample (reparameterised) estimate of the policy's entropy per step, summed
  over action dimensions and averaged (`main.py: loss_fn`, `SquashedNormal.entropy`).
  Temperature loss: `alpha * (H - target).detach()`, alpha = exp(log alpha), alpha_0 = 0.1,
  target entropy -|A| (`main.py`, `trainer.py`). The two reach disjoint parameters.
- Returns-to-go are undiscounted sums of the rewards to the end of the trajectory, times
  `return_scale` (official: 1 on AntMaze, 1e-3 elsewhere). The buffer computes them from the
  rewards it stores (`EpisodeReplayBuffer.sample_windows`); online episodes are stored with
  the rewards they achieved, so the return-to-go the policy trains on is the achieved one,
  not the target it was conditioned on while collecting (hindsight return relabelling).
- Acting: the target return `eval_rtg` (evaluation, the mean action tanh(mu)) or
  `online_rtg` (exploration, a sample), times `return_scale`, decreased by each step's
  reward; the last `eval_context_length` steps form the context (`evaluation.py`).
- Optimiser: LAMB (lr 1e-4, weight decay 5e-4, eps 1e-8) with a linear warm-up over 10^4
  updates and the gradient norm clipped at 0.25; Adam 1e-4 for log alpha (`main.py`).

Where this differs from the official code, and why:
- Windows are padded after a trajectory's end, not before its start (the official code
  left-pads and masks the padding in attention). With a causal mask and no positional
  embedding the outputs at a window's real steps are the same either way, and no attention
  mask is needed; the padding is left out of every mean.
- The entropy is averaged over the window's real steps; the official `loss_fn` averages it
  over the padding too (its log-likelihood excludes the padding). It changes the temperature
  only where windows are cut by a trajectory's end.
- Data: offline and online rows form one pool sampled uniformly (`--loop.mixing-ratio -1`,
  the catalog sets it), the nearest the loop has to the official single replay of whole
  trajectories, which keeps the best `replay_size` offline trajectories by return and then
  overwrites them one by one with online ones (not done here: the buffers never overwrite).
- Online updates: `len(trajectory) * --loop.utd` after each episode (the loop's schedule for
  every agent); the official code does 300 per trajectory, whatever its length (~0.3 per
  step on AntMaze's 1000-step episodes).
- Gradient clipping happens inside the LAMB step (global norm, then the step), the same
  arithmetic as `clip_grad_norm_(0.25)` before it, without its 1e-6 in the denominator.
- The unused state and return prediction heads of the official model are left out (no loss
  reads them). Actions are clamped to [-1 + 1e-6, 1 - 1e-6] as the official
  `action_range` does, so a data action of +-1 has a finite log-likelihood.
- Rewards: `--algo odt` starts from the env's raw reward on every domain (AntMaze 0/1 as
  the official `download_d4rl_antmaze_datasets.py` keeps it; pick-and-place +1/0; Adroit's
  raw {-1, 0}), the scale the return targets are written in (`registry.BASELINE_REWARDS`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from calql_robot.agents.base import (AgentSpec, Batch, Obs, apply_losses, batch_to_torch, forward_precision,
                                     metrics_to_floats, obs_to_tensor)
from calql_robot.config import flag
from calql_robot.errors import ConfigError
from calql_robot.precision import full_precision

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
"""The official `DiagGaussianActor`'s `log_std_bounds`."""
ACTION_EPS = 1e-6
"""Actions are clamped to [-1 + eps, 1 - eps] (official `action_range`, from the env's bounds)."""
GRAD_CLIP = 0.25
"""Global gradient norm clip of the transformer's update (official `trainer.py`)."""
TEMPERATURE_LR = 1e-4
"""Adam learning rate of log alpha (official `main.py`, a constant there)."""
INIT_STD = 0.02
"""GPT-2's weight init inside the transformer blocks (`initializer_range`)."""
BATCH_KEYS = ("observations", "actions", "returns_to_go", "mask")


@dataclass
class ODTConfig:
    """Hyper-parameters of the online decision transformer (`--odt.*`). Defaults are the
    official code's (`main.py`) with its AntMaze return settings; `PRESETS` sets each domain's."""

    context_length: int = 20
    """K, steps per training window (official `--K` 20)."""
    eval_context_length: int = 5
    """Steps of history the policy acts on, <= K (official `--eval_context_length` 5)."""
    embed_dim: int = 512
    """Token embedding width (official `--embed_dim`)."""
    n_layer: int = 4
    """Transformer blocks (official `--n_layer`)."""
    n_head: int = 4
    """Attention heads; must divide the embedding width (official `--n_head`)."""
    dropout: float = 0.1
    """Dropout on embeddings, attention weights and residual branches (official `--dropout`)."""
    lr: float = 1e-4
    """LAMB learning rate after the warm-up (official `--learning_rate`)."""
    weight_decay: float = 5e-4
    """LAMB weight decay (official `--weight_decay`)."""
    warmup_steps: int = 10_000
    """Updates of the linear learning-rate warm-up, lr * min((n + 1) / warmup, 1) (official `--warmup_steps`)."""
    init_temperature: float = 0.1
    """alpha at the start (official `--init_temperature`)."""
    eval_rtg: float = 1.0
    """Target return of evaluation episodes, in the run's reward units (AntMaze: 1, a success)."""
    online_rtg: float = 2.0
    """Target return of online exploration episodes (official: twice eval_rtg in every setting)."""
    return_scale: float = 1.0
    """Returns-to-go are multiplied by this before embedding (official: 1 on AntMaze, 1e-3 on MuJoCo)."""

    def validate(self) -> None:
        """Raise ConfigError naming the flag when a value cannot work."""
        for name in ("context_length", "eval_context_length", "embed_dim", "n_layer", "n_head", "warmup_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{flag(name, 'odt')} must be >= 1, got {getattr(self, name)!r}")
        if self.eval_context_length > self.context_length:
            raise ConfigError(f"{flag('eval_context_length', 'odt')} {self.eval_context_length} must be <= "
                              f"{flag('context_length', 'odt')} {self.context_length}")
        if self.embed_dim % self.n_head:
            raise ConfigError(f"{flag('n_head', 'odt')} {self.n_head} must divide {flag('embed_dim', 'odt')} "
                              f"{self.embed_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{flag('dropout', 'odt')} must be in [0, 1), got {self.dropout!r}")
        for name in ("lr", "init_temperature", "return_scale"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{flag(name, 'odt')} must be > 0, got {getattr(self, name)!r}")
        if not self.weight_decay >= 0:
            raise ConfigError(f"{flag('weight_decay', 'odt')} must be >= 0, got {self.weight_decay!r}")
        for name in ("eval_rtg", "online_rtg"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"{flag(name, 'odt')} must be finite, got {getattr(self, name)!r}")


PRESETS: dict[str, Callable[[], ODTConfig]] = {
    "antmaze": ODTConfig,
    "manipulation": ODTConfig,
    "kitchen": lambda: ODTConfig(eval_rtg=4000.0, online_rtg=8000.0, return_scale=1e-3),
    "adroit": lambda: ODTConfig(eval_rtg=0.0, online_rtg=0.0, return_scale=1e-2),
}
"""ODT per domain: the network, optimiser and context settings are the official AntMaze ones
everywhere (the Cal-QL paper, Appendix E.5). The return targets are the best return the
task's raw reward allows, and online twice that (the official ratio: MuJoCo 3600 / 7200,
AntMaze 1 / 2):
- AntMaze: 1 / 2 at scale 1 (a success pays 1 and ends the episode; official scale 1).
- pick-and-place: the same; its reward has AntMaze's structure (+1 on success, terminal).
- Kitchen (not an ODT setting): 4 sub-tasks x 1000 steps = 4000 / 8000 at the official
  non-AntMaze scale 1e-3.
- Adroit (not an ODT setting): 0 (the raw reward is -1 per step before the success) for
  both, at scale 1e-2 (returns of -100..-200 become -1..-2)."""


# ---------------------------------------------------------------- network
class CausalBlock(nn.Module):
    """One GPT-2 block: pre-LayerNorm causal self-attention and a 4x ReLU MLP, residual
    connections, dropout on attention weights and on both residual branches."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln_1, self.ln_2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc, self.fc_out = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln_1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                              is_causal=True)
        x = x + self.drop(self.proj(attn.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.fc_out(F.relu(self.fc(self.ln_2(x)))))


class DecisionTransformer(nn.Module):
    """(R, s, a) tokens of L steps -> the policy's mean and log-std at each step, read at the
    state token. Embeddings keep PyTorch's default init, the blocks GPT-2's N(0, 0.02), the
    policy head orthogonal weights and zero biases (all as the official model)."""

    def __init__(self, feature_dim: int, action_dim: int, cfg: ODTConfig) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.embed_return, self.embed_state = nn.Linear(1, dim), nn.Linear(feature_dim, dim)
        self.embed_action = nn.Linear(action_dim, dim)
        self.embed_ln, self.drop = nn.LayerNorm(dim), nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(CausalBlock(dim, cfg.n_head, cfg.dropout) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(dim)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, INIT_STD)
                nn.init.zeros_(module.bias)
        self.mu, self.log_std = nn.Linear(dim, action_dim), nn.Linear(dim, action_dim)
        for head in (self.mu, self.log_std):
            nn.init.orthogonal_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, returns_to_go: torch.Tensor, states: torch.Tensor, actions: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """returns_to_go (B, L) scaled, states (B, L, F), actions (B, L, A) -> mean, log_std (B, L, A)."""
        b, n = returns_to_go.shape
        tokens = torch.stack([self.embed_return(returns_to_go.unsqueeze(-1)), self.embed_state(states),
                              self.embed_action(actions)], dim=2).reshape(b, 3 * n, -1)  # R_1, s_1, a_1, R_2, ...
        x = self.drop(self.embed_ln(tokens))
        for block in self.blocks:
            x = block(x)
        h = self.ln_f(x).reshape(b, n, 3, -1)[:, :, 1]  # the outputs at the state tokens
        log_std = torch.tanh(self.log_std(h))
        return self.mu(h), LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1.0)


# ---------------------------------------------------------------- losses
def squashed_log_prob(pre_tanh: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log density of tanh(x) under the tanh-squashed N(mean, exp(log_std)), at x = `pre_tanh`,
    summed over action dimensions; the Jacobian term is the official `TanhTransform`'s
    `2 * (log 2 - x - softplus(-2x))`."""
    normal = -0.5 * ((pre_tanh - mean) / log_std.exp()).pow(2) - log_std - 0.5 * math.log(2 * math.pi)
    jacobian = 2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))
    return (normal - jacobian).sum(-1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum()


def compute_losses(mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor,
                   noise: torch.Tensor, log_temperature: torch.Tensor, target_entropy: float
                   ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """ODT's two losses from the policy's outputs on a batch of windows (B, K, A), the data's
    actions, the window mask (B, K) and the standard-normal noise of the entropy sample:
    `policy` -> the transformer and the encoder, `temperature` -> log alpha."""
    data = actions.clamp(-1.0 + ACTION_EPS, 1.0 - ACTION_EPS)
    log_likelihood = masked_mean(squashed_log_prob(torch.atanh(data), mean, log_std), mask)
    sample = mean + log_std.exp() * noise  # reparameterised, as `SquashedNormal.rsample`
    entropy = masked_mean(-squashed_log_prob(sample, mean, log_std), mask)
    temperature = log_temperature.exp()
    losses = {"policy": -(log_likelihood + temperature.detach() * entropy),
              "temperature": temperature * (entropy - target_entropy).detach()}
    metrics = {"policy_loss": losses["policy"].detach(), "nll": -log_likelihood.detach(),
               "entropy": entropy.detach(), "temperature": temperature.detach(),
               "temperature_loss": losses["temperature"].detach()}
    return losses, metrics


# ---------------------------------------------------------------- optimiser
class Lamb(torch.optim.Optimizer):
    """LAMB (You et al. 2020) as the official `lamb.py` (NVIDIA's FusedLAMB variant): the
    global gradient norm clipped at `max_grad_norm`, Adam moments with bias correction, the
    weight decay added to the update, and the update scaled by ||w|| / ||update|| (1 where
    either is 0) on every parameter when weight decay is on."""

    def __init__(self, params, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, max_grad_norm: float = GRAD_CLIP) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "betas": betas, "eps": eps,
                                  "max_grad_norm": max_grad_norm})

    @torch.no_grad()
    def step(self, closure=None):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return None
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        for group in self.param_groups:
            clip = torch.clamp(norm / group["max_grad_norm"], min=1.0)
            group["step"] = group.get("step", 0) + 1
            beta1, beta2 = group["betas"]
            correction1, correction2 = 1 - beta1 ** group["step"], 1 - beta2 ** group["step"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad / clip
                state = self.state[p]
                if not state:
                    state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                update = (m / correction1) / (v.sqrt() / math.sqrt(correction2) + group["eps"])
                if group["weight_decay"]:
                    update.add_(p, alpha=group["weight_decay"])
                    w_norm, u_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
                    trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                    update.mul_(trust)
                p.add_(update, alpha=-group["lr"])
        return None


# ---------------------------------------------------------------- learner
def flatten_steps(obs: Obs, leading: int) -> Obs:
    """(B, K, ...) observations (a dict of them too) -> (B * K, ...)."""
    if isinstance(obs, dict):
        return {k: v.reshape(-1, *v.shape[leading:]) for k, v in obs.items()}
    return obs.reshape(-1, *obs.shape[leading:])


def check_windows(batch: dict, action_dim: int) -> None:
    """Name the key of a malformed batch of windows (a transition batch, e.g.)."""
    missing = [k for k in BATCH_KEYS if k not in batch]
    if missing:
        raise KeyError(f"batch is missing keys {missing}; --algo odt trains on windows "
                       f"(EpisodeReplayBuffer.sample_windows), expected {list(BATCH_KEYS)}")
    actions = batch["actions"]
    if actions.ndim != 3 or actions.shape[2] != action_dim:
        raise ValueError(f"batch['actions'] has shape {tuple(actions.shape)}, expected (B, K, {action_dim})")
    for key in ("returns_to_go", "mask"):
        if tuple(batch[key].shape) != tuple(actions.shape[:2]):
            raise ValueError(f"batch['{key}'] has shape {tuple(batch[key].shape)}, expected {tuple(actions.shape[:2])}")
    if not bool(torch.isfinite(actions).all() & torch.isfinite(batch["returns_to_go"]).all()):
        raise ValueError("batch has non-finite values in actions or returns_to_go")


class ODTLearner:
    """The online decision transformer under the agent contract (`agents/base.Agent`) and a
    `SequenceAgent`: it trains on windows of `context_length` steps and keeps the current
    episode's context while acting (`reset`, `observe`)."""

    learns_online = True
    needs_returns = False  # its returns-to-go come from the stored rewards (undiscounted), not from G

    def __init__(self, cfg: ODTConfig, spec: AgentSpec) -> None:
        cfg.validate()
        self.cfg = cfg
        self.context_length = cfg.context_length
        self.device = torch.device(spec.device)
        self.precision = spec.precision
        self.action_dim = spec.action_dim
        self.reward_scale, self.reward_bias = spec.reward_transform
        self.online, self.num_updates = False, 0
        self.augment = spec.augment
        self.encoder = (spec.encoder or nn.Identity()).to(self.device)
        self.model = DecisionTransformer(spec.feature_dim, spec.action_dim, cfg).to(self.device)
        self.log_temperature = torch.tensor(math.log(cfg.init_temperature), device=self.device, requires_grad=True)
        self.target_entropy = -float(spec.action_dim)  # official `main.py`: -act_dim
        params = list(self.model.parameters()) + list(self.encoder.parameters())
        self.optimizers = {"policy": Lamb(params, cfg.lr, cfg.weight_decay),
                           "temperature": torch.optim.Adam([self.log_temperature], lr=TEMPERATURE_LR)}
        self.reset()

    # ------------------------------------------------------------ training
    def scheduled_lr(self) -> float:
        """lr * min((n + 1) / warmup, 1) for update n (official `LambdaLR`, never restarted)."""
        return self.cfg.lr * min((self.num_updates + 1) / self.cfg.warmup_steps, 1.0)

    def set_online(self, online: bool) -> None:
        """Fine-tuning uses the same losses and settings (official `online_tuning`)."""
        self.online = online

    def policy_outputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The transformer on a batch of windows: mean, log-std (B, K, A), fp32."""
        obs = batch["observations"]
        b, k = batch["actions"].shape[:2]
        flat = flatten_steps(obs, 2)
        if self.augment is not None:
            flat = self.augment(flat)
        states = self.encoder(flat).reshape(b, k, -1)
        actions = batch["actions"].clamp(-1.0 + ACTION_EPS, 1.0 - ACTION_EPS)
        mean, log_std = self.model(batch["returns_to_go"] * self.cfg.return_scale, states, actions)
        return full_precision(mean), full_precision(log_std)

    def update(self, batch: Batch) -> dict[str, float]:
        batch = batch_to_torch(batch, self.device)
        check_windows(batch, self.action_dim)
        lr = self.scheduled_lr()
        for group in self.optimizers["policy"].param_groups:
            group["lr"] = lr
        self.model.train()
        with forward_precision(self.precision, self.device):
            mean, log_std = self.policy_outputs(batch)
        losses, metrics = compute_losses(mean, log_std, batch["actions"], batch["mask"], torch.randn_like(mean),
                                         self.log_temperature, self.target_entropy)
        apply_losses(losses, self.optimizers.values(), self.num_updates)
        self.num_updates += 1
        metrics.update(lr=torch.tensor(lr), window_fill=batch["mask"].mean(),
                       rtg_mean=masked_mean(batch["returns_to_go"], batch["mask"]))
        return metrics_to_floats(metrics)

    # ------------------------------------------------------------ acting
    def reset(self) -> None:
        """Forget the episode's context; the next `act` starts one at its target return."""
        self._obs: list[Obs] = []
        self._actions: list[torch.Tensor] = []
        self._rtg: list[float] = []
        self._next_rtg: float | None = None

    def observe(self, reward: float) -> None:
        """The target return of the next step: this one's less the reward, both scaled as
        the batches are (the run's reward transform, then `return_scale`)."""
        if self._rtg:
            reward = self.reward_scale * float(reward) + self.reward_bias
            self._next_rtg = self._rtg[-1] - self.cfg.return_scale * reward

    @torch.no_grad()
    def act(self, obs: np.ndarray | dict[str, np.ndarray], deterministic: bool) -> np.ndarray:
        """tanh(mean) (evaluation, target `eval_rtg`) or a squashed-Gaussian sample
        (exploration, target `online_rtg`), given the last `eval_context_length` steps of the
        episode so far. A batch of observations is acted on as first steps of separate
        episodes, without touching the context."""
        tensor, single = obs_to_tensor(obs, self.device)
        target = (self.cfg.eval_rtg if deterministic else self.cfg.online_rtg) * self.cfg.return_scale
        if not single:
            size = next(iter(tensor.values())).shape[0] if isinstance(tensor, dict) else tensor.shape[0]
            rtg = torch.full((size, 1), target, device=self.device)
            zeros = torch.zeros(size, 1, self.action_dim, device=self.device)
            return self._sample(flatten_steps(tensor, 1), rtg, zeros, deterministic, size).cpu().numpy()
        rtg = target if not self._rtg else (self._next_rtg if self._next_rtg is not None else self._rtg[-1])
        keep = self.cfg.eval_context_length - 1
        self._obs, self._rtg = self._obs[-keep:] if keep else [], self._rtg[-keep:] if keep else []
        self._actions = self._actions[-keep:] if keep else []
        self._obs.append(tensor)
        self._rtg.append(float(rtg))
        self._actions.append(torch.zeros(1, self.action_dim, device=self.device))  # not read: causal
        steps = len(self._obs)
        obs_seq = ({k: torch.cat([o[k] for o in self._obs]) for k in tensor} if isinstance(tensor, dict)
                   else torch.cat(self._obs))
        rtgs = torch.tensor([self._rtg], device=self.device, dtype=torch.float32)
        actions = torch.cat(self._actions).unsqueeze(0)
        action = self._sample(obs_seq, rtgs, actions, deterministic, 1, steps)[0]
        self._actions[-1] = action.unsqueeze(0)
        self._next_rtg = None
        return action.cpu().numpy()

    def _sample(self, obs: Obs, rtg: torch.Tensor, actions: torch.Tensor, deterministic: bool, batch: int,
                steps: int = 1) -> torch.Tensor:
        """The action at the last step of each sequence, clamped as the data's are."""
        self.model.eval()
        states = self.encoder(obs).reshape(batch, steps, -1)
        mean, log_std = self.model(rtg, states, actions)
        mean, log_std = mean[:, -1], log_std[:, -1]
        pre_tanh = mean if deterministic else mean + log_std.exp() * torch.randn_like(mean)
        return torch.tanh(pre_tanh).clamp(-1.0 + ACTION_EPS, 1.0 - ACTION_EPS)

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"encoder": self.encoder.state_dict(), "model": self.model.state_dict(),
                "log_temperature": self.log_temperature.detach().clone(),
                "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
                "online": self.online, "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.encoder.load_state_dict(state["encoder"])
        self.model.load_state_dict(state["model"])
        with torch.no_grad():
            self.log_temperature.copy_(state["log_temperature"])
        self.num_updates = int(state["num_updates"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        for group in self.optimizers["temperature"].param_groups:
            group["lr"] = TEMPERATURE_LR
        for group in self.optimizers["policy"].param_groups:  # the config's lr wins, at its warm-up point
            group["lr"] = self.scheduled_lr()
        self.set_online(bool(state["online"]))
        self.reset()
