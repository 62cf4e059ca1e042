"""The one array layout every dataset reader returns, and the one path from it to a buffer.

D4RL HDF5 files, Minari datasets and AWAC pickles all become a :class:`Transitions`: flat
per-transition arrays (``observations``, ``actions``, raw ``rewards``, ``next_observations``,
``terminals``, ``timeouts``) plus ``ends``, the last step of every trajectory. Monte-Carlo
returns then come from exactly one place, :func:`data.returns.mc_returns` after
:func:`data.returns.transform_rewards` (SPEC section 2 and the section 7 pitfall "one reward
transform used in one place and not another"), whatever format the data came in.

Conventions (SPEC sections 2, 3 and 5):

- ``terminals`` are true MDP terminations (the TD target does not bootstrap), ``timeouts``
  are time-limit or data-end cuts (it does); never both on one step.
- ``ends[t]`` is True where a trajectory closes: every terminal, every timeout, every
  observation discontinuity ``observations[t+1] != next_observations[t]`` and the last step
  (:func:`data.returns.trajectory_ends`).
- rewards are the file's raw rewards; the per-domain transform is applied once, later.

Errors in a file are :class:`data.schema.DatasetFormatError`, which names the file and the
key, in one line.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from data.returns import mc_returns, trajectory_ends, transform_rewards
from data.schema import DatasetFormatError
from data.suspicious import check_not_constant

if TYPE_CHECKING:
    from data.replay import EpisodeReplayBuffer

__all__ = ["DatasetFormatError", "Transitions", "binary_success_cut", "buffer_from_transitions",
           "check_dims", "dataset_summary", "make_transitions", "returns_of"]


@dataclass(frozen=True)
class Transitions:
    """Flat transitions of a dataset, split into trajectories by ``ends``.

    ``success`` (optional, (N,) bool) marks steps where the task's goal was reached, when the
    format records it (AWAC ``rewards == 0``, D4RL ``infos/goal_achieved``); ``notes`` lists
    every mapping the reader applied (shown by ``inspect_dataset.py``).
    """

    source: str
    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    ends: np.ndarray
    success: np.ndarray | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])

    @property
    def num_trajectories(self) -> int:
        return int(self.ends.sum())

    def trajectory_bounds(self) -> np.ndarray:
        """(K, 2) ``[start, stop)`` step ranges of the trajectories, in order."""
        stop = np.flatnonzero(self.ends) + 1
        return np.stack([np.concatenate(([0], stop[:-1])), stop], axis=1)


def make_transitions(source: str, observations: np.ndarray, actions: np.ndarray,
                     rewards: np.ndarray, next_observations: np.ndarray, terminals: np.ndarray,
                     timeouts: np.ndarray, success: np.ndarray | None = None,
                     notes: tuple[str, ...] = (), atol: float = 1e-6) -> Transitions:
    """Check the arrays (naming ``source`` and the key on failure) and compute ``ends``.

    Observations and actions become float32, flags bool; a step flagged both terminal and
    timeout is an error (SPEC section 7: terminal vs timeout mixed up), and so are
    observations constant in every dimension (data/suspicious.py).
    """
    n = int(np.asarray(rewards).shape[0]) if np.ndim(rewards) >= 1 else -1
    arrays = {"observations": observations, "actions": actions, "rewards": rewards,
              "next_observations": next_observations, "terminals": terminals,
              "timeouts": timeouts}
    ndims = {"observations": 2, "actions": 2, "rewards": 1, "next_observations": 2,
             "terminals": 1, "timeouts": 1}
    out: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        arr = np.asarray(value)
        if arr.ndim != ndims[key] or arr.shape[0] != n:
            raise DatasetFormatError(source, key, f"expected {ndims[key]}-d with {n} rows "
                                     f"(one per transition), got shape {arr.shape}")
        out[key] = arr
    if n < 1:
        raise DatasetFormatError(source, "rewards", "no transitions")
    if out["next_observations"].shape != out["observations"].shape:
        raise DatasetFormatError(source, "next_observations", f"shape "
                                 f"{out['next_observations'].shape} != observations "
                                 f"{out['observations'].shape}")
    for key in ("observations", "actions", "rewards", "next_observations"):
        out[key] = _finite_float32(out[key], source, key)
    for key in ("terminals", "timeouts"):
        out[key] = _flags(out[key], source, key)
    check_not_constant(out["observations"], source)
    both = np.flatnonzero(out["terminals"] & out["timeouts"])
    if both.size:
        raise DatasetFormatError(source, "timeouts", f"{both.size} steps are both terminal "
                                 f"and timeout, first at step {both[0]}")
    flag = None if success is None else _flags(np.asarray(success), source, "success")
    ends = trajectory_ends(out["terminals"], out["timeouts"], out["observations"],
                           out["next_observations"], atol)
    return Transitions(source, out["observations"], out["actions"], out["rewards"],
                       out["next_observations"], out["terminals"], out["timeouts"], ends,
                       flag, tuple(notes))


def check_dims(t: Transitions, obs_dim: int | None, action_dim: int | None,
               what: str = "the task") -> None:
    """Refuse data whose observation or action size does not match the env (one line)."""
    if obs_dim is not None and t.obs_dim != obs_dim:
        raise DatasetFormatError(t.source, "observations", f"{t.obs_dim}-d observations, but "
                                 f"{what} expects {obs_dim}-d")
    if action_dim is not None and t.action_dim != action_dim:
        raise DatasetFormatError(t.source, "actions", f"{t.action_dim}-d actions, but {what} "
                                 f"expects {action_dim}-d")


def returns_of(t: Transitions, gamma: float, scale: float, bias: float,
               failure_reward: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(transformed rewards, MC returns G): the one transform, then SPEC section 2's G.

    ``failure_reward`` is raw (SPEC section 4's r_neg), transformed here the same way.
    """
    rewards = transform_rewards(t.rewards, scale, bias)
    fail = (None if failure_reward is None
            else float(transform_rewards(np.array([failure_reward]), scale, bias)[0]))
    return rewards, mc_returns(rewards, t.ends, gamma, fail)


def buffer_from_transitions(t: Transitions, gamma: float, scale: float, bias: float,
                            failure_reward: float | None) -> "EpisodeReplayBuffer":
    """An offline replay buffer holding ``t`` (rows stored once) with rewards and returns.

    data.replay (which needs torch for checkpoints) is imported here, so the readers
    themselves stay importable with numpy and h5py only.
    """
    from data.replay import EpisodeReplayBuffer

    rewards, g = returns_of(t, gamma, scale, bias, failure_reward)
    buf = EpisodeReplayBuffer(((t.obs_dim,), np.float32), t.action_dim, len(t),
                              obs_capacity=len(t) + t.num_trajectories)
    buf.add_flat(t.observations, t.actions, rewards, t.next_observations, t.terminals,
                 t.timeouts, g, t.ends)
    return buf


def binary_success_cut(t: Transitions, success: np.ndarray, note: str) -> Transitions:
    """Adroit binary data (SPEC section 4, official ``get_hand_dataset_with_mc_calculation``).

    Per trajectory: dropped if the goal is never reached, else cut after its *last* success
    (official ``pos_ind=-1``); raw reward ``goal_achieved - 1`` in {-1, 0}; every success step
    is terminal (official ``dones = rewards == 0``), so a success in the middle closes a
    trajectory as the official return computation does.
    """
    ok = np.asarray(success, dtype=bool)
    keep = np.zeros(len(t), dtype=bool)
    for start, stop in t.trajectory_bounds():
        hits = np.flatnonzero(ok[start:stop])
        if hits.size:
            keep[start:start + hits[-1] + 1] = True
    if not keep.any():
        raise DatasetFormatError(t.source, "rewards", "no trajectory reaches the goal; "
                                 "binary Adroit data keeps only successful trajectories")
    traj_of = np.cumsum(t.ends) - t.ends
    dropped = t.num_trajectories - int(np.unique(traj_of[keep]).size)
    rewards = ok[keep].astype(np.float32) - 1.0
    cut = make_transitions(t.source, t.observations[keep], t.actions[keep], rewards,
                           t.next_observations[keep], ok[keep],
                           np.zeros(int(keep.sum()), dtype=bool), ok[keep])
    notes = (*t.notes, note, f"binary: {dropped} of {t.num_trajectories} trajectories without "
             f"success dropped, the rest cut after their last success, success steps terminal")
    return replace(cut, notes=notes)


def dataset_summary(t: Transitions, gamma: float, scale: float, bias: float,
                    failure_reward: float | None) -> dict[str, Any]:
    """Counts, sizes, success rate and the range of the MC returns, for inspect_dataset.py."""
    rewards, g = returns_of(t, gamma, scale, bias, failure_reward)
    bounds = t.trajectory_bounds()
    lengths = bounds[:, 1] - bounds[:, 0]
    cuts = t.ends & ~t.terminals & ~t.timeouts
    cuts[-1] = False
    out: dict[str, Any] = {
        "source": t.source, "transitions": len(t), "trajectories": t.num_trajectories,
        "terminals": int(t.terminals.sum()), "timeouts": int(t.timeouts.sum()),
        "discontinuities": int(cuts.sum()), "obs_dim": t.obs_dim, "action_dim": t.action_dim,
        "length_min": int(lengths.min()), "length_max": int(lengths.max()),
        "reward_min": float(t.rewards.min()), "reward_max": float(t.rewards.max()),
        "reward_transform": [float(scale), float(bias)],
        "mc_return_min": float(g.min()), "mc_return_max": float(g.max()),
        "success_rate": None, "notes": list(t.notes),
    }
    if t.success is not None:
        traj_of = np.cumsum(t.ends) - t.ends
        hit = np.zeros(t.num_trajectories, dtype=bool)
        hit[traj_of[t.success]] = True
        out["success_rate"] = float(hit.mean())
    return out


def _finite_float32(arr: np.ndarray, source: str, key: str) -> np.ndarray:
    if not np.issubdtype(arr.dtype, np.number):
        raise DatasetFormatError(source, key, f"expected numbers, got dtype {arr.dtype}")
    out = arr.astype(np.float32, copy=False)
    bad = ~np.isfinite(out)
    if bad.any():
        row = int(np.flatnonzero(bad.reshape(len(out), -1).any(axis=1))[0])
        raise DatasetFormatError(source, key, f"NaN or inf, first at row {row}")
    return out


def _flags(arr: np.ndarray, source: str, key: str) -> np.ndarray:
    if arr.dtype != np.bool_ and not (np.issubdtype(arr.dtype, np.number)
                                      and np.all((arr == 0) | (arr == 1))):
        raise DatasetFormatError(source, key, f"expected bool or 0/1 flags, got dtype "
                                 f"{arr.dtype}")
    return arr.astype(bool, copy=False)
