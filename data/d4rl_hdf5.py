"""Reader of D4RL HDF5 files (antmaze v2, kitchen, adroit v1) without importing d4rl.

d4rl cannot be imported on a modern machine (it needs mujoco-py and MuJoCo 2.1), but its
files are plain HDF5 (SPEC section 5): ``observations (N, obs)``, ``actions (N, A)``,
``rewards (N,)``, ``terminals (N,)``, ``timeouts (N,)``, optional ``infos/*``.

Semantics follow ``d4rl.qlearning_dataset`` (the function every reference uses):

- ``next_observations[i] = observations[i+1]``. Where the file has its own
  ``next_observations`` they are used instead: they equal the following row inside an
  episode and are the true next state at a boundary the file forgot to flag, which is then
  found as a discontinuity (CORL PR #63). Without that key an unflagged boundary cannot be
  seen (the next row *is* the next observation by construction);
- a row with ``timeouts[i]`` is dropped (its "next" row belongs to the next episode), and so
  is the last row (it has no next row);
- terminal rows are kept (the TD target does not bootstrap through them).

On top of qlearning_dataset, which forgets episode structure, trajectories are recovered for
the Monte-Carlo returns (SPEC section 2): the kept row just before a dropped timeout row, and
the last kept row, are marked ``timeouts`` (a cut, which bootstraps); every terminal closes a
trajectory; and so does every observation discontinuity ``obs[i+1] != next_obs[i]``, which
catches files with missing flags (CORL PR #63).
"""
from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from data.schema import DatasetFormatError
from data.suspicious import ActionFix, checked_actions
from data.transitions import Transitions, make_transitions

__all__ = ["from_d4rl_arrays", "load_with_d4rl", "read_d4rl_hdf5"]

REQUIRED = {"observations": 2, "actions": 2, "rewards": 1, "terminals": 1}
"""Keys every D4RL file has, with their rank (``rewards``/flags may be stored (N, 1))."""


def read_d4rl_hdf5(path: str | os.PathLike, actions: ActionFix = "error") -> Transitions:
    """Read a D4RL HDF5 file into :class:`Transitions` (qlearning_dataset semantics).

    ``success`` is filled from ``infos/goal_achieved`` when the file has it (Adroit).
    Raises :class:`DatasetFormatError` naming the file and the key for a missing key,
    mismatched row counts or non-finite values, and (unless ``actions`` is "clip" or
    "rescale", data/suspicious.py) for actions outside [-1, 1], naming the file's row.
    """
    arrays, notes = _read_arrays(Path(path))
    return from_d4rl_arrays(str(path), arrays, notes, actions)


def from_d4rl_arrays(src: str, arrays: dict[str, np.ndarray], notes: list[str],
                     actions: ActionFix = "error") -> Transitions:
    """qlearning_dataset semantics on already-read D4RL arrays (a file, or ``get_dataset()``)."""
    arrays["actions"], fitted = checked_actions(arrays["actions"], actions, src, "actions")  # the file's rows
    notes = notes + ([fitted] if fitted else [])
    n = arrays["rewards"].shape[0]
    if n < 2:
        raise DatasetFormatError(src, "rewards", f"{n} rows; need >= 2 (next obs is the next row)")
    timeouts = arrays["timeouts"]
    keep = ~timeouts
    keep[-1] = False
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        raise DatasetFormatError(src, "timeouts", "every row is a timeout: no transitions left")
    obs = arrays["observations"]
    terminals = arrays["terminals"][idx]
    cut = (timeouts[idx + 1] | (idx + 1 == n - 1)) & ~terminals
    success = arrays.get("infos/goal_achieved")
    if "next_observations" in arrays:
        nxt = arrays["next_observations"][idx]
        how = "the file's next_observations (boundaries also where they jump)"
    else:
        nxt = obs[idx + 1]
        how = "the following row"
    notes.append(f"qlearning_dataset: {int(timeouts.sum())} timeout rows and the last row "
                 f"dropped; next_observations = {how}")
    return make_transitions(src, obs[idx], arrays["actions"][idx], arrays["rewards"][idx],
                            nxt, terminals, cut,
                            None if success is None else success[idx], tuple(notes))


def _read_arrays(path: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """The per-row arrays, checked for presence, rank and a common row count."""
    src = str(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DatasetFormatError(src, "/", f"not a readable HDF5 file: {err}") from err
    notes: list[str] = []
    with f:
        out = {key: _read(f, key, src, ndim) for key, ndim in REQUIRED.items()}
        if "timeouts" in f:
            out["timeouts"] = _read(f, "timeouts", src, 1)
        else:
            out["timeouts"] = np.zeros(out["rewards"].shape[0], dtype=bool)
            notes.append("no 'timeouts' key: boundaries from terminals and observation "
                         "discontinuities only")
        if "next_observations" in f:
            out["next_observations"] = _read(f, "next_observations", src, 2)
        if "infos/goal_achieved" in f:
            out["infos/goal_achieved"] = _read(f, "infos/goal_achieved", src, 1)
    n = out["observations"].shape[0]
    for key, arr in out.items():
        if arr.shape[0] != n:
            raise DatasetFormatError(src, key, f"{arr.shape[0]} rows, but 'observations' has {n}")
    for key in ("terminals", "timeouts", "infos/goal_achieved"):
        if key in out:
            out[key] = _flag(out[key], src, key)
    return out, notes


def _read(f: h5py.File, key: str, src: str, ndim: int) -> np.ndarray:
    ds = f.get(key)
    if not isinstance(ds, h5py.Dataset):
        raise DatasetFormatError(src, key, "missing dataset" if ds is None else "not a dataset")
    try:
        arr = ds[...]
    except OSError as err:
        raise DatasetFormatError(src, key, f"unreadable data: {err}") from err
    if ndim == 1 and arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]  # some files store rewards / flags as (N, 1)
    if arr.ndim != ndim:
        raise DatasetFormatError(src, key, f"expected {ndim}-d rows, got shape {arr.shape}")
    return arr


def _flag(arr: np.ndarray, src: str, key: str) -> np.ndarray:
    if arr.dtype == np.bool_:
        return arr
    if np.issubdtype(arr.dtype, np.number) and np.all((arr == 0) | (arr == 1)):
        return arr.astype(bool)
    raise DatasetFormatError(src, key, f"expected bool or 0/1 flags, got dtype {arr.dtype}")


def load_with_d4rl(name: str, actions: ActionFix = "error") -> Transitions:
    """``--dataset d4rl:<name>``: the dataset through the d4rl package, when it imports.

    d4rl needs mujoco-py and the MuJoCo 2.1 binaries, so on most machines it does not; the
    error then says to pass the downloaded HDF5 file instead (same reader, same result).
    """
    try:
        import d4rl  # noqa: F401
        import gym  # d4rl registers its envs with the old gym package
    except Exception as err:  # noqa: BLE001 - any import failure means "not usable here"
        raise RuntimeError(
            f"d4rl:{name}: the d4rl package cannot be imported here ({type(err).__name__}: "
            f"{err}); it needs mujoco-py and MuJoCo 2.1. Pass the downloaded HDF5 file "
            f"instead: --dataset ~/.d4rl/datasets/<file>.hdf5") from err
    raw = gym.make(name).get_dataset()
    arrays = {k: np.asarray(raw[k]) for k in ("observations", "actions", "rewards", "terminals")}
    arrays["timeouts"] = np.asarray(raw.get("timeouts", np.zeros(len(arrays["rewards"]), bool)))
    for key in ("terminals", "timeouts"):
        arrays[key] = _flag(arrays[key], f"d4rl:{name}", key)
    if "infos/goal_achieved" in raw:
        arrays["infos/goal_achieved"] = _flag(np.asarray(raw["infos/goal_achieved"]),
                                              f"d4rl:{name}", "infos/goal_achieved")
    return from_d4rl_arrays(f"d4rl:{name}", arrays, ["via the d4rl package"], actions)
