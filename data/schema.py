"""The episode contract (docs/ARCHITECTURE.md) as checks, shared by the HDF5 writer and reader.

An episode of length T is a dict: ``observations`` ((T+1, ...) array or dict of such arrays),
``actions (T, A) float32``, ``rewards (T,) float32``, ``terminals (T,) bool``,
``timeouts (T,) bool``, plus the per-episode metadata the stored format keeps:
``task (2,) int64`` (target, distractor), ``seed`` (int) and ``success`` (bool).

The checks are written once here so that a bad episode is refused by the writer with the same
words a bad file is refused by the reader: "terminal vs timeout mixed up" and "next obs taken
across an episode boundary" are the first two pitfalls listed in SPEC.md section 7.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

FORMAT_NAME = "calql-robot/episodes"
"""Value of the root attribute ``format_name``: files of other layouts are refused by name."""

FORMAT_VERSION = 1
"""Newest layout this code writes and reads. Bump it when the layout changes; the reader
refuses files from a newer writer instead of misreading them."""

STEP_DTYPES: dict[str, np.dtype] = {
    "actions": np.dtype(np.float32),
    "rewards": np.dtype(np.float32),
    "terminals": np.dtype(np.bool_),
    "timeouts": np.dtype(np.bool_),
}
"""Per-transition arrays (T rows per episode) and their exact dtypes."""

STEP_NDIM: dict[str, int] = {"actions": 2, "rewards": 1, "terminals": 1, "timeouts": 1}

EPISODE_KEYS = ("observations", *STEP_DTYPES, "task", "seed", "success")
"""Every key an episode dict must carry to be stored; nothing else is stored."""


class DatasetFormatError(ValueError):
    """A dataset file (or an episode about to be written) breaks the format.

    ``path`` is the file (None for in-memory episodes) and ``key`` the offending dataset or
    attribute, so a user can open the file and look at exactly that entry.
    """

    def __init__(self, path: str | None, key: str, message: str) -> None:
        where = f"{path}: " if path is not None else ""
        super().__init__(f"{where}'{key}': {message}")
        self.path = path
        self.key = key


def check_episode(ep: Mapping[str, Any], index: int) -> int:
    """Check one in-memory episode against the contract; return its length T.

    Raises DatasetFormatError naming the episode index and key, before anything is written.
    """
    where = f"episode {index}"
    missing = [k for k in EPISODE_KEYS if k not in ep]
    extra = sorted(set(ep) - set(EPISODE_KEYS))
    if missing or extra:
        raise DatasetFormatError(
            None, where, f"missing keys {missing}, unexpected keys {extra} "
            f"(an episode carries exactly {list(EPISODE_KEYS)})")
    length = _check_step_arrays(ep, where)
    _check_observations(ep["observations"], length + 1, where)
    task = np.asarray(ep["task"])
    if task.shape != (2,) or not np.issubdtype(task.dtype, np.integer):
        raise DatasetFormatError(None, f"{where}/task",
                                 f"expected 2 integers (target, distractor), got {task!r}")
    if not isinstance(ep["seed"], (int, np.integer)) or isinstance(ep["seed"], bool):
        raise DatasetFormatError(None, f"{where}/seed", f"expected an int, got {ep['seed']!r}")
    if not isinstance(ep["success"], (bool, np.bool_)):
        raise DatasetFormatError(None, f"{where}/success",
                                 f"expected a bool, got {ep['success']!r}")
    check_step_values(ep["rewards"], ep["actions"], ep["terminals"], ep["timeouts"],
                      np.array([length]), None, where)
    bad = np.flatnonzero(np.abs(ep["actions"]).max(axis=1) > 1.0 + 1e-6)  # data/suspicious.py's bound
    if bad.size:
        raise DatasetFormatError(None, f"{where}/actions", f"row {bad[0]} holds "
                                 f"{ep['actions'][bad[0]].tolist()}, outside the action space [-1, 1]")
    return length


def _check_step_arrays(ep: Mapping[str, Any], where: str) -> int:
    """Exact dtype and ndim of the per-step arrays, and one length T shared by all of them."""
    lengths = set()
    for key, dtype in STEP_DTYPES.items():
        arr = ep[key]
        if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.ndim != STEP_NDIM[key]:
            got = (arr.dtype, arr.ndim) if isinstance(arr, np.ndarray) else type(arr).__name__
            raise DatasetFormatError(None, f"{where}/{key}",
                                     f"expected {dtype} array with ndim {STEP_NDIM[key]}, "
                                     f"got {got}")
        lengths.add(arr.shape[0])
    if len(lengths) != 1 or min(lengths) < 1:
        raise DatasetFormatError(None, where, f"per-step arrays disagree on T or T < 1: "
                                 f"{ {k: ep[k].shape for k in STEP_DTYPES} }")
    return lengths.pop()


def _check_observations(obs: Any, rows: int, where: str) -> None:
    """Observations hold every frame once: T+1 rows, the last one after the last action."""
    items = obs.items() if isinstance(obs, Mapping) else [("", obs)]
    if isinstance(obs, Mapping) and not obs:
        raise DatasetFormatError(None, f"{where}/observations", "empty observation dict")
    for key, arr in items:
        name = f"{where}/observations" + (f"/{key}" if key else "")
        if not isinstance(arr, np.ndarray) or arr.ndim < 1 or arr.shape[0] != rows:
            shape = arr.shape if isinstance(arr, np.ndarray) else type(arr).__name__
            raise DatasetFormatError(None, name, f"expected an array with T+1={rows} rows, "
                                     f"got {shape}")


def check_step_values(rewards: np.ndarray, actions: np.ndarray, terminals: np.ndarray,
                      timeouts: np.ndarray, lengths: np.ndarray, path: str | None,
                      where: str = "") -> None:
    """Value checks on flat per-step arrays of consecutive episodes with the given lengths.

    - rewards and actions finite (a NaN reward silently poisons every MC return of its episode);
    - no step both terminal and timeout (a time-limit cut is not an MDP termination, SPEC 3);
    - terminal/timeout only on an episode's last step: a flag mid-episode means the
      episode boundaries are wrong, and next observations would cross episodes (SPEC 7).
    """
    prefix = f"{where}/" if where else ""
    for key, arr in (("rewards", rewards), ("actions", actions)):
        bad = np.flatnonzero(~np.isfinite(arr).reshape(len(arr), -1).all(axis=1))
        if bad.size:
            raise DatasetFormatError(path, prefix + key, f"{bad.size} non-finite rows, "
                                     f"first at step {bad[0]}: {arr[bad[0]]}")
    both = np.flatnonzero(terminals & timeouts)
    if both.size:
        raise DatasetFormatError(path, prefix + "terminals", f"{both.size} steps are both "
                                 f"terminal and timeout, first at step {both[0]}")
    last = np.zeros(len(rewards), dtype=bool)
    last[np.cumsum(lengths) - 1] = True
    for key, flags in (("terminals", terminals), ("timeouts", timeouts)):
        inner = np.flatnonzero(flags & ~last)
        if inner.size:
            raise DatasetFormatError(path, prefix + key, f"flag set before the end of its "
                                     f"episode at step {inner[0]}: episode boundaries are wrong")
