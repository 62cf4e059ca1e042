"""Reader of the AWAC Adroit binary demo files (``*2_sparse.npy``, ``*_bc_sparse4.npy``).

These are numpy object arrays of per-trajectory dicts, i.e. **pickles**: loading one runs
whatever code its author put in it, so :func:`read_awac` refuses unless the caller passes
``trust_pickle=True`` (``--trust-pickle`` on the command line). SPEC section 5.

Each dict holds ``observations``, ``next_observations`` (arrays (T, obs), or lists of dicts
with a ``state_observation`` entry, as in the expert files), ``actions (T, A)``,
``rewards`` ((T,) or (T, 1); the expert files may hold more rewards than observations, and
the official loader truncates them to T), and ``terminals``. Raw rewards are binary:
0 where the goal is achieved, -1 elsewhere.

As in the official ``get_hand_dataset_with_mc_calculation`` (SPEC section 4): trajectories
without a success are dropped, the rest are cut after their last success, and every success
step is terminal (:func:`data.transitions.binary_success_cut`).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from data.schema import DatasetFormatError
from data.suspicious import ActionFix, check_action_range, fit_actions
from data.transitions import Transitions, binary_success_cut, make_transitions

__all__ = ["UntrustedPickleError", "read_awac"]

KEYS = ("observations", "next_observations", "actions", "rewards")


class UntrustedPickleError(DatasetFormatError):
    """An AWAC pickle was about to be loaded without ``trust_pickle``."""


def read_awac(path: str | os.PathLike, trust_pickle: bool = False,
              actions: ActionFix = "error") -> Transitions:
    """Load an AWAC demo file, keep successful trajectories cut after their last success.
    Actions outside [-1, 1] are refused naming the trajectory's key and row, unless
    ``actions`` is "clip" or "rescale" (data/suspicious.py)."""
    src = str(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if not trust_pickle:
        raise UntrustedPickleError(src, "<pickle>", "AWAC .npy files are pickled Python "
                                   "objects and loading one can run arbitrary code; pass "
                                   "--trust-pickle (trust_pickle=True) only for a file from a "
                                   "source you trust")
    try:
        raw = np.load(path, allow_pickle=True)
    except (OSError, ValueError, EOFError) as err:
        raise DatasetFormatError(src, "<pickle>", f"not a readable .npy pickle: {err}") from err
    trajs = list(raw) if isinstance(raw, np.ndarray) and raw.dtype == object else None
    if not trajs:
        raise DatasetFormatError(src, "<pickle>", "expected a non-empty object array of "
                                 "per-trajectory dicts")
    parts = [_trajectory(tr, src, i) for i, tr in enumerate(trajs)]
    if actions == "error":
        for i, part in enumerate(parts):
            check_action_range(part["actions"], src, f"[{i}]/actions")
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    cat["actions"], fitted = fit_actions(cat["actions"], actions)
    n = cat["rewards"].shape[0]
    ends = np.zeros(n, dtype=bool)
    ends[np.cumsum([p["rewards"].shape[0] for p in parts]) - 1] = True
    # Trajectory ends are explicit in the pickle; flag them as cuts so they survive the
    # continuity check even when two trajectories happen to join up.
    whole = make_transitions(src, cat["observations"], cat["actions"], cat["rewards"],
                             cat["next_observations"], np.zeros(n, dtype=bool), ends)
    success = cat["rewards"] == 0.0
    note = f"AWAC pickle: {len(trajs)} trajectories" + (f"; {fitted}" if fitted else "")
    return binary_success_cut(whole, success, note)


def _trajectory(tr: Any, src: str, i: int) -> dict[str, np.ndarray]:
    """One trajectory dict as arrays; rewards truncated to T (official loader)."""
    where = f"[{i}]"
    if not isinstance(tr, Mapping):
        raise DatasetFormatError(src, where, f"expected a dict, got {type(tr).__name__}")
    missing = [k for k in KEYS if k not in tr]
    if missing:
        raise DatasetFormatError(src, f"{where}/{missing[0]}", "missing key")
    obs = _obs_array(tr["observations"], src, f"{where}/observations")
    nxt = _obs_array(tr["next_observations"], src, f"{where}/next_observations")
    actions = np.asarray(tr["actions"], dtype=np.float64)
    rewards = np.asarray(tr["rewards"], dtype=np.float64).reshape(-1)
    t = obs.shape[0]
    if rewards.shape[0] > t:
        rewards = rewards[:t]
    for key, arr in (("next_observations", nxt), ("actions", actions), ("rewards", rewards)):
        if arr.shape[0] != t:
            raise DatasetFormatError(src, f"{where}/{key}", f"{arr.shape[0]} rows, but "
                                     f"'{where}/observations' has {t}")
    if nxt.shape != obs.shape or actions.ndim != 2:
        raise DatasetFormatError(src, f"{where}/next_observations", f"shape {nxt.shape} vs "
                                 f"observations {obs.shape}, actions {actions.shape}")
    bad = ~np.isin(rewards, (-1.0, 0.0))
    if bad.any():
        raise DatasetFormatError(src, f"{where}/rewards", f"binary rewards must be -1 or 0, got "
                                 f"{rewards[bad][0]} at step {int(np.flatnonzero(bad)[0])}")
    return {"observations": obs, "next_observations": nxt, "actions": actions,
            "rewards": rewards.astype(np.float32)}


def _obs_array(value: Any, src: str, key: str) -> np.ndarray:
    """(T, obs) float array from an array or a list of ``{'state_observation': ...}`` dicts."""
    if isinstance(value, (list, tuple, np.ndarray)) and len(value) and \
            isinstance(value[0], Mapping):
        try:
            value = [row["state_observation"] for row in value]
        except KeyError as err:
            raise DatasetFormatError(src, f"{key}/state_observation", "missing key") from err
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DatasetFormatError(src, key, f"not a numeric (T, obs) array: {err}") from err
    if arr.ndim != 2 or arr.shape[0] < 1:
        raise DatasetFormatError(src, key, f"expected (T, obs) with T >= 1, got {arr.shape}")
    return arr
