"""Data that parse but are almost surely a mistake, named before a run trains on them.

Actions outside the action space. Every agent here acts through a tanh in [-1, 1] (the
episode contract, docs/ARCHITECTURE.md), and Cal-QL clips data actions to +-0.99999 for
their log-probabilities. A file whose actions reach 3.0 holds unnormalised actions (the
env's own units, or a controller's raw targets): clipping them silently would train on
actions that were never taken. So every reader (D4RL, Minari, AWAC, the project's HDF5)
refuses them, naming the file, the key, the first row outside and its value, unless the
caller asks for one of `ACTION_FIXES`:

- ``"clip"``: clip to [-1, 1] (what the official Cal-QL code does with every dataset);
  right when a few rows overshoot a little (a noisy policy recorded before the env's own
  clip);
- ``"rescale"``: divide every action by the largest ``|a|`` in the file, one factor for
  all dimensions, so the data fill [-1, 1] and keep their shape; right when the data are
  a scaled copy of the env's [-1, 1] range (the env's actions are not rescaled, so it is
  wrong for any other unit).

A tolerance of 1e-6 lets float32 rounding of a recorded 1.0 through.

Observations constant in every dimension (all rows one vector) cannot tell one state from
another: a wrong observation key, or a recorder that saved the first frame only. Where the
rows are at hand (at least two) that is refused too; there is no option to accept it.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

from data.schema import DatasetFormatError

__all__ = ["ACTION_FIXES", "ActionFix", "ActionRangeError", "ConstantObservationsError",
           "check_action_range", "check_not_constant", "checked_actions", "fit_actions"]

ActionFix = Literal["error", "clip", "rescale"]
ACTION_FIXES = ("clip", "rescale")
ACTION_BOUND = 1.0
TOLERANCE = 1e-6


class ActionRangeError(DatasetFormatError):
    """Actions outside [-1, 1] and no fix asked for; the caller's hint names its option."""


class ConstantObservationsError(DatasetFormatError):
    """Every observation row is one and the same vector."""


def _outside(actions: np.ndarray) -> np.ndarray:
    """(N,) bool: rows with any entry beyond the bound (NaN rows are the finite check's)."""
    a = np.asarray(actions)
    return (np.abs(a) > ACTION_BOUND + TOLERANCE).reshape(len(a), -1).any(axis=1)


def check_action_range(actions: np.ndarray, source: str, key: str, first_row: int = 0) -> None:
    """Raise ActionRangeError naming `source`, `key`, the first row outside [-1, 1] (counted
    from `first_row`, the row of `actions[0]` in the file) and its value."""
    a = np.asarray(actions)
    rows = np.flatnonzero(_outside(a))
    if rows.size == 0:
        return
    row = a[rows[0]].reshape(-1)
    col = int(np.argmax(np.abs(row)))
    raise ActionRangeError(source, key, f"row {first_row + int(rows[0])} holds {float(row[col]):g} (dimension "
                           f"{col}), outside the action space [-1, 1]; {rows.size} of {len(a)} rows lie "
                           f"outside, |a| up to {float(np.max(np.abs(a))):g}: unnormalised actions?")


def fit_actions(actions: np.ndarray, how: ActionFix) -> tuple[np.ndarray, str | None]:
    """`actions` brought into [-1, 1] as `how` says, and a note of what was done (None when
    nothing was outside). ``"error"`` changes nothing: check first with `check_action_range`."""
    a = np.asarray(actions)
    outside = int(_outside(a).sum())
    if outside == 0 or how == "error":
        return a, None
    peak = float(np.max(np.abs(a)))
    if how == "clip":
        return np.clip(a, -ACTION_BOUND, ACTION_BOUND).astype(a.dtype, copy=False), (
            f"actions: {outside} of {len(a)} rows outside [-1, 1] clipped (|a| up to {peak:g})")
    if how == "rescale":
        return (a / peak).astype(a.dtype, copy=False), (
            f"actions: divided by {peak:g}, their largest |a|, into [-1, 1] ({outside} of {len(a)} rows were outside)")
    raise ValueError(f"unknown action fix {how!r}; choose from error, {', '.join(ACTION_FIXES)}")


def checked_actions(actions: np.ndarray, how: ActionFix, source: str, key: str) -> tuple[np.ndarray, str | None]:
    """The readers' one step: refuse (``"error"``) or fit the actions of a whole file."""
    if how == "error":
        check_action_range(actions, source, key)
    return fit_actions(actions, how)


def check_not_constant(observations: np.ndarray | dict[str, np.ndarray], source: str,
                       key: str = "observations") -> None:
    """Raise ConstantObservationsError when all rows (at least two) are one vector; a dict
    of arrays counts as one observation (constant only when every entry is)."""
    arrays = observations.values() if isinstance(observations, dict) else [observations]
    arrays = [np.asarray(a) for a in arrays]
    if not arrays or len(arrays[0]) < 2:
        return
    if all(np.array_equal(a, np.broadcast_to(a[:1], a.shape)) for a in arrays):
        first = np.concatenate([a[0].reshape(-1) for a in arrays])
        shown = ", ".join(f"{v:g}" for v in first[:6].tolist()) + (", ..." if first.size > 6 else "")
        raise ConstantObservationsError(source, key, f"all {len(arrays[0])} rows equal row 0 ([{shown}]): "
                                        f"constant in every dimension, so no state can be told from another; "
                                        f"a wrong observation key, or a recording of the first frame only?")
