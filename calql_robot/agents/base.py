"""The agent contract: what the loop, the experiment, checkpoints and rollouts may ask of
any method, and the helpers every agent shares.

The loop never asks which class it holds (d3rlpy's agents declare `need_returns_to_go`;
rlpd's `agents/agent.py` is the small shared base): an agent says whether it learns
online and whether its online rows need Monte-Carlo returns, and it is driven only through
`update`, `act`, `set_online` and its state dict (and `prepare`, for an agent that has
work to do on the offline data before its first update). `apply_losses` is the one place where
gradients are taken and optimizers stepped, so a precision or compile option added later
reaches every agent at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from calql_robot.precision import autocast

Obs = torch.Tensor | dict[str, torch.Tensor]
Batch = dict[str, Any]


@dataclass
class AgentSpec:
    """What a run gives every agent besides its own config: sizes, the domain's encoder
    slot (an observation normaliser, an image encoder, or None for raw features), the
    batch augmentation, the discount of `--reward.discount`, and the device."""

    feature_dim: int
    action_dim: int
    discount: float = 0.99
    encoder: nn.Module | None = None
    augment: nn.Module | None = None
    device: str | torch.device = "cpu"
    failure_return: float | None = None
    """G of a failure-rule row (`RewardConfig.failure_return`), for metrics that tell those
    rows apart; None without the rule."""
    precision: str = "fp32"
    """The update's arithmetic, as `precision.resolve_precision` settled it for `device`:
    'fp32', or 'bf16' (autocast around the loss computation, `forward_precision`)."""
    reward_transform: tuple[float, float] = (1.0, 0.0)
    """(scale, bias) of the run's reward transform (`RewardConfig`), for an agent that reads
    the env's raw rewards while acting (`SequenceAgent.observe`) in the units its batches hold."""


@runtime_checkable
class Agent(Protocol):
    """What every method implements (`agents/catalog.py` lists them)."""

    learns_online: bool
    """False: the loop skips the online phase (behaviour cloning is a reference, not a
    fine-tuning method)."""
    online: bool
    """The phase: False while pre-training, True after `set_online(True)`."""
    device: torch.device
    encoder: nn.Module
    """The observation encoder slot (Identity for raw features); rollouts put it in eval mode."""

    @property
    def needs_returns(self) -> bool:
        """Whether `update` reads `batch["mc_returns"]` in the current phase; online
        episodes are stored with their Monte-Carlo returns only then (else G = 0)."""

    def update(self, batch: Batch) -> dict[str, float]:
        """One gradient step on a batch (numpy or torch arrays); float metrics."""

    def act(self, obs: np.ndarray | dict[str, np.ndarray], deterministic: bool) -> np.ndarray:
        """Action(s) for one observation or a batch of them."""

    def set_online(self, online: bool) -> None:
        """Switch to the fine-tuning phase's settings."""

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values only, so checkpoints load with `weights_only=True`."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`; the config's learning rates win over the saved ones."""


class BatchSource(Protocol):
    """Where an agent may draw offline batches from (`data.replay.EpisodeReplayBuffer`)."""

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        """Uniform batch with replacement (the keys of `EpisodeReplayBuffer.sample`)."""


@runtime_checkable
class Preparing(Protocol):
    """An agent with work to do on the offline data before its first update (optional; the
    loop asks `isinstance(agent, Preparing)`): Cal-QL's learned reference value is fitted
    here (`agents/reference.py`, the paper's Appendix G). The loop calls `prepare` at the
    start of every run, a resumed or forked one too; the agent keeps in its state dict
    whether the work is done, and then does nothing and draws nothing from `rng`."""

    def prepare(self, offline: BatchSource, batch_size: int, rng: np.random.Generator) -> dict[str, float]:
        """Do the work once (batches of `batch_size` drawn with the loop's `rng`); return
        its metrics, logged in one row (empty when there was nothing to do)."""


@runtime_checkable
class ValueEstimator(Protocol):
    """An agent with a critic: the loop logs `value(s0)` of its evaluation episodes beside
    their realised discounted return (calibration, Nakamoto et al. 2023, Section 4)."""

    def value(self, obs: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        """The agent's estimate of V(s) = Q(s, pi(s)) at its deterministic action, per obs."""


@runtime_checkable
class SequenceAgent(Protocol):
    """An agent whose action depends on the episode so far (the online decision transformer).

    The loop samples it windows of `context_length` consecutive steps instead of transitions
    (`EpisodeReplayBuffer.sample_windows`), and rollouts tell it where an episode starts and
    what each step paid (`AgentPolicy`, `rollouts.run_episode`). Every other agent has none
    of this: context 1, transition batches, no hooks."""

    context_length: int
    """K: steps per training window."""

    def reset(self) -> None:
        """A new episode starts: forget the previous one's context."""

    def observe(self, reward: float) -> None:
        """The env's raw reward for the action `act` returned last."""


def context_length(agent: Agent) -> int:
    """Steps per training sample: an agent's `context_length` if it is a SequenceAgent, else 1."""
    return int(agent.context_length) if isinstance(agent, SequenceAgent) else 1


class AgentPolicy:
    """An agent as the `obs -> action` policy of `rollouts.run_episode` (training episodes,
    evaluations, rollout.py): `reset` and `observe` reach a SequenceAgent and do nothing for
    any other agent."""

    def __init__(self, agent: Agent, deterministic: bool) -> None:
        self.agent, self.deterministic = agent, deterministic
        self._sequence = isinstance(agent, SequenceAgent)

    def __call__(self, obs: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        return self.agent.act(obs, deterministic=self.deterministic)

    def reset(self) -> None:
        if self._sequence:
            self.agent.reset()

    def observe(self, reward: float) -> None:
        if self._sequence:
            self.agent.observe(reward)


class NonFiniteLossError(RuntimeError):
    """Raised before any parameter changes when a loss is NaN or infinite; `losses` holds
    every loss's value of that update (the loop logs them in the row of the bad update)."""

    def __init__(self, message: str, losses: Mapping[str, float] | None = None) -> None:
        super().__init__(message)
        self.losses = dict(losses or {})


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def batch_to_torch(batch: Batch, device: torch.device) -> dict[str, Obs]:
    """numpy batch -> tensors on device; uint8 images stay uint8 (the encoder divides)."""
    def convert(value):
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, np.ndarray):
            return torch.from_numpy(value).to(device, non_blocking=True)
        return value
    return {k: convert(v) for k, v in batch.items()}


def obs_to_tensor(obs: np.ndarray | dict[str, np.ndarray], device: torch.device) -> tuple[Obs, bool]:
    """One observation or a batch -> (batched float32/uint8 tensor(s) on device, was it single)."""
    single = _is_single(obs)
    tensor = batch_to_torch({"o": _add_batch_dim(obs) if single else obs}, device)["o"]
    if isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float64:
        tensor = tensor.float()
    return tensor, single


def _is_single(obs: np.ndarray | dict[str, np.ndarray]) -> bool:
    if isinstance(obs, dict):
        return "state" in obs and np.asarray(obs["state"]).ndim == 1
    return np.asarray(obs).ndim == 1


def _add_batch_dim(obs):
    if isinstance(obs, dict):
        return {k: np.asarray(v)[None] for k, v in obs.items()}
    return np.asarray(obs, dtype=np.float32)[None]


def forward_precision(spec_precision: str, device: torch.device):
    """The context every agent computes its losses in (not the backward, not acting):
    bf16 autocast under `--run.precision bf16`, else nothing (`calql_robot/precision.py`
    says which ops stay fp32)."""
    return autocast(spec_precision, device)


def apply_losses(losses: Mapping[str, torch.Tensor], optimizers: Iterable[torch.optim.Optimizer],
                 update: int) -> None:
    """Sum the losses, refuse a non-finite one before any parameter changes, then one
    backward pass and one step of every optimizer.

    Summing is exact when the losses reach disjoint parameters (each agent's tests check
    its isolation), and it is one backward instead of one per loss."""
    total = sum(losses.values())
    if not torch.isfinite(total):
        bad = {k: float(v.detach()) for k, v in losses.items()}
        raise NonFiniteLossError(f"non-finite loss at update {update}: {bad}", bad)
    optimizers = list(optimizers)
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    total.backward()
    for opt in optimizers:
        opt.step()


def metrics_to_floats(metrics: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """An update's metric tensors as floats, in one host transfer (one stack, one `tolist`)
    instead of one sync per metric."""
    names = list(metrics)
    return dict(zip(names, torch.stack([metrics[k].float().cpu() for k in names]).tolist()))


def load_optimizers(optimizers: Mapping[str, torch.optim.Optimizer], states: Mapping[str, Any],
                    learning_rates: Mapping[str, float]) -> None:
    """Restore each optimizer's state, then set the config's learning rate: Adam's state
    restores the saved lr, so a flag given on `--run.resume` (e.g. `--learner.actor-lr`)
    would otherwise be silently ignored."""
    for name, opt in optimizers.items():
        opt.load_state_dict(states[name])
        for group in opt.param_groups:
            group["lr"] = learning_rates[name]


def check_batch(batch: Mapping[str, Any], action_dim: int, keys: tuple[str, ...]) -> None:
    """Fail with a message naming the key on a malformed batch (shapes, dtypes, NaNs).
    `keys` are the batch keys the agent reads (observations and actions among them)."""
    missing = [k for k in keys if k not in batch]
    if missing:
        raise KeyError(f"batch is missing keys {missing}; expected {list(keys)}")
    actions = batch["actions"]
    if actions.ndim != 2 or actions.shape[1] != action_dim:
        raise ValueError(f"batch['actions'] has shape {tuple(actions.shape)}, expected (B, {action_dim})")
    size = actions.shape[0]
    scalars = [k for k in ("rewards", "dones", "mc_returns") if k in keys]
    for key in scalars:
        if tuple(batch[key].shape) != (size,):
            raise ValueError(f"batch['{key}'] has shape {tuple(batch[key].shape)}, expected ({size},)")
        if not batch[key].is_floating_point():
            raise ValueError(f"batch['{key}'] must be floating point, got {batch[key].dtype}")
    checked = ["actions"] + [k for k in ("rewards", "mc_returns") if k in keys]
    finite = torch.stack([torch.isfinite(batch[k]).all() for k in checked])
    if not bool(finite.all()):
        names = [k for k, ok in zip(checked, finite.tolist()) if not ok]
        raise ValueError(f"batch has non-finite values in {names}")
