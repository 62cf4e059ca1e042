"""Reward transform, trajectory boundaries and Monte-Carlo returns-to-go (SPEC.md section 2).

Cal-QL bounds the policy-action Q-values from below by the Monte-Carlo return-to-go G of the
data transition, so G must follow the reference exactly:

- ``r' = scale * r + bias`` is applied once, by :func:`transform_rewards`, everywhere (offline
  data, online data, returns, logs): SPEC section 7 lists a transform used in one place and
  not in another as a known pitfall.
- ``G[t] = r'[t] + gamma * G[t+1]`` inside a trajectory, with no bootstrap tail: a trajectory
  closed by a time-limit cut gets the same G as one closed by a terminal (the official
  ``calc_return_to_go`` of nakamotoo/Cal-QL and CORL's ``discounted_cumsum`` both stop at the
  last stored reward).
- Sparse tasks: a trajectory whose every reward equals the failure reward gets
  ``r_neg' / (1 - gamma)`` at every step, "the value of failing forever".
- Boundaries: every terminal and every timeout closes a trajectory, and so does a
  discontinuity ``observations[t+1] != next_observations[t]`` in flat D4RL-style arrays
  (CORL PR #63 fixed a bug where returns ran across such unflagged boundaries).

:func:`mc_returns` is vectorised: a blocked backward scan with float64 accumulation
(see :func:`_segmented_discounted_sum`), so 1M transitions take tens of milliseconds whether
they form one trajectory or a million.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

_MAX_BLOCK = 1024
"""Upper bound on the block length of the blocked scan (the recursion depth is log_L(N))."""

_MAX_SCALE_LOG = float(np.log(1e100))
"""Natural log of the largest rescaling factor gamma**-k used inside a block. 1e100 keeps
float64 far from overflow (1e308) even for rewards of float32 magnitude (3e38)."""

_DISCONTINUITY_CHUNK_ELEMS = 1 << 22
"""Elements compared per chunk in :func:`observation_discontinuities` (32 MB of float64
temporaries), so image arrays never need a full-size float copy."""

ObsArrays = np.ndarray | Mapping[str, np.ndarray]


def transform_rewards(rewards: np.ndarray, scale: float, bias: float) -> np.ndarray:
    """Return ``scale * rewards + bias`` as float32 (SPEC section 2: ``r' = scale*r + bias``).

    The one reward transform of the project: offline data, online data, MC returns and logged
    returns all go through it so they cannot disagree (SPEC section 7). E.g. AntMaze uses
    ``10r - 5`` (scale=10, bias=-5), Adroit binary ``10r + 5``.
    """
    if not (np.isfinite(scale) and np.isfinite(bias)):
        raise ValueError(f"transform_rewards: scale and bias must be finite, got "
                         f"scale={scale!r}, bias={bias!r}")
    r = np.asarray(rewards)
    if not (np.issubdtype(r.dtype, np.number) or r.dtype == np.bool_):
        raise ValueError(f"transform_rewards: 'rewards' must be numeric, got dtype {r.dtype}")
    out = r.astype(np.float64) * float(scale) + float(bias)
    return out.astype(np.float32)


def trajectory_ends(terminals: np.ndarray, timeouts: np.ndarray,
                    observations: ObsArrays | None = None,
                    next_observations: ObsArrays | None = None,
                    atol: float = 1e-6) -> np.ndarray:
    """Boolean (N,) mask: True where step t is the last step of its trajectory.

    For flat D4RL-style arrays. A step closes a trajectory if it is terminal or a timeout, if
    ``max|observations[t+1] - next_observations[t]| > atol`` (when both arrays are given;
    dicts of arrays are compared key by key), and the last step always closes. The
    discontinuity test catches D4RL files whose flags are missing at some boundaries
    (SPEC section 2, CORL PR #63). A NaN difference counts as a discontinuity, so returns
    never run across garbage.
    """
    term = _as_flag(terminals, "terminals")
    tout = _as_flag(timeouts, "timeouts")
    if term.shape != tout.shape:
        raise ValueError(f"trajectory_ends: 'terminals' {term.shape} and 'timeouts' "
                         f"{tout.shape} must have the same shape (N,)")
    ends = term | tout
    if ends.size == 0:
        return ends
    if (observations is None) != (next_observations is None):
        raise ValueError("trajectory_ends: give both 'observations' and 'next_observations' "
                         "or neither")
    if observations is not None:
        ends[:-1] |= observation_discontinuities(observations, next_observations, atol)
    ends[-1] = True
    return ends


def observation_discontinuities(observations: ObsArrays, next_observations: ObsArrays,
                                atol: float = 1e-6) -> np.ndarray:
    """Boolean (N-1,) mask: True where ``observations[t+1]`` differs from ``next_observations[t]``.

    Compared in chunks of rows so that image arrays do not need a full-size temporary.
    """
    obs_d = _as_obs_dict(observations, "observations")
    nxt_d = _as_obs_dict(next_observations, "next_observations")
    if not obs_d:
        raise ValueError("'observations' is an empty dict")
    if set(obs_d) != set(nxt_d):
        raise ValueError(f"observation keys {sorted(obs_d)} != next_observation keys "
                         f"{sorted(nxt_d)}")
    n = None
    for key in obs_d:
        o, x = obs_d[key], nxt_d[key]
        if o.shape != x.shape or o.ndim == 0:
            raise ValueError(f"'observations{key}' {o.shape} and 'next_observations{key}' "
                             f"{x.shape} must have the same shape (N, ...)")
        if n is not None and o.shape[0] != n:
            raise ValueError(f"'observations{key}' has {o.shape[0]} rows, expected {n}")
        n = o.shape[0]
    split = np.zeros(max(n - 1, 0), dtype=bool)
    for key in obs_d:
        o, x = obs_d[key], nxt_d[key]
        chunk = max(1, _DISCONTINUITY_CHUNK_ELEMS // max(1, int(np.prod(o.shape[1:]))))
        for lo in range(0, n - 1, chunk):
            hi = min(lo + chunk, n - 1)
            diff = np.abs(o[lo + 1:hi + 1].astype(np.float64) - x[lo:hi].astype(np.float64))
            close = (diff <= atol).reshape(hi - lo, -1).all(axis=1)
            split[lo:hi] |= ~close
    return split


def mc_returns(rewards: np.ndarray, ends: np.ndarray, gamma: float,
               failure_reward: float | None = None) -> np.ndarray:
    """Monte-Carlo return-to-go per transition, float32 (N,). SPEC section 2.

    ``rewards`` are already transformed (:func:`transform_rewards`); ``ends[t]`` marks the last
    step of a trajectory (:func:`trajectory_ends`). ``G[t] = r[t] + gamma * G[t+1]`` inside a
    trajectory, ``G[end] = r[end]``: neither a terminal nor a timeout bootstraps, as in the
    official code. If ``failure_reward`` is given (in transformed units, ``scale*r_neg+bias``)
    every trajectory whose rewards all equal it (``np.isclose``) gets
    ``failure_reward / (1 - gamma)`` at every step; other trajectories are untouched.

    Worked example (gamma=0.99): rewards [-5, -5, 5], ends [0, 0, 1] ->
    G = [-5.0495, -0.05, 5]; all rewards -5 with failure_reward=-5 -> G = -500 everywhere.
    """
    r = np.asarray(rewards)
    e = np.asarray(ends)
    if r.ndim != 1 or e.shape != r.shape:
        raise ValueError(f"mc_returns: 'rewards' {r.shape} and 'ends' {e.shape} must both "
                         f"have shape (N,)")
    if not np.issubdtype(r.dtype, np.number) or not np.all(np.isfinite(r)):
        raise ValueError("mc_returns: 'rewards' must be finite numbers")
    e = _as_flag(e, "ends")
    gamma = float(gamma)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"mc_returns: gamma must be in [0, 1], got {gamma}")
    if r.size == 0:
        return np.zeros(0, dtype=np.float32)
    if not e[-1]:
        raise ValueError("mc_returns: 'ends[-1]' must be True: the last trajectory is not "
                         "closed (use trajectory_ends, which always closes the last step)")
    g = _segmented_discounted_sum(r.astype(np.float64), ~e, gamma)
    if failure_reward is not None:
        _apply_failure_rule(g, r, e, gamma, float(failure_reward))
    return g.astype(np.float32)


def _apply_failure_rule(g: np.ndarray, r: np.ndarray, ends: np.ndarray, gamma: float,
                        failure_reward: float) -> None:
    """Overwrite G in place with ``failure_reward/(1-gamma)`` on all-failure trajectories."""
    if gamma >= 1.0:
        raise ValueError("mc_returns: the failure rule needs gamma < 1 "
                         "(failure_reward / (1 - gamma) is infinite at gamma = 1)")
    starts = np.flatnonzero(np.concatenate(([True], ends[:-1])))
    is_fail = np.isclose(r, failure_reward).astype(np.uint8)
    all_fail = np.minimum.reduceat(is_fail, starts).astype(bool)
    lengths = np.diff(np.append(starts, r.size))
    g[np.repeat(all_fail, lengths)] = failure_reward / (1.0 - gamma)


def _segmented_discounted_sum(x: np.ndarray, cont: np.ndarray, gamma: float) -> np.ndarray:
    """Solve ``y[t] = x[t] + gamma * cont[t] * y[t+1]`` (``y[N] = 0``) without a per-step loop.

    Blocked scan: the array is cut into blocks of L steps. Inside a block, with local index k,
    ``y[k] = gamma**-k * sum_{j=k..e} gamma**j x[j]`` (e = end of k's segment in the block),
    a reversed cumulative sum; L is chosen so that gamma**-L <= 1e100, so nothing overflows.
    The terms of the sum shrink geometrically away from k, so the rescaling loses only
    O(eps / (1-gamma)^2) relative accuracy (float64). The value carried into each block from
    the next one obeys the same recurrence over block heads with gamma**L; it is solved by
    recursion, so a single 1M-step trajectory costs a few vectorised passes.
    """
    n = x.size
    if gamma == 0.0 or n == 1:
        return x.copy()
    if gamma == 1.0:
        block = _MAX_BLOCK
    else:
        block = int(min(_MAX_BLOCK, _MAX_SCALE_LOG // -np.log(gamma)))
    if block < 2:
        # gamma < 1e-50: every term beyond one step is below gamma**2 * max|x| < 1e-100 *
        # max|x|, invisible in the float32 result; keep the exact first-order term.
        nxt = np.append(x[1:], 0.0)
        return x + gamma * cont * nxt
    n_blocks = -(-n // block)
    pad = n_blocks * block - n
    xb = np.pad(x, (0, pad)).reshape(n_blocks, block)
    cb = np.pad(cont, (0, pad), constant_values=False).reshape(n_blocks, block)

    k = np.arange(block)
    # Segment end inside the block: the first j >= k with cont[j] False, else the last column.
    seg_end = np.minimum.accumulate(np.where(~cb, k, block - 1)[:, ::-1], axis=1)[:, ::-1]
    pw = gamma ** k.astype(np.float64)
    weighted = xb * pw
    suffix = np.cumsum(weighted[:, ::-1], axis=1)[:, ::-1]
    suffix = np.concatenate([suffix, np.zeros((n_blocks, 1))], axis=1)
    seg_sum = suffix[:, :block] - np.take_along_axis(suffix, seg_end + 1, axis=1)
    local = seg_sum / pw

    # Positions whose segment runs to the end of the block receive the next block's head.
    reaches = cb[np.arange(n_blocks)[:, None], seg_end]
    heads_cont = reaches[:, 0]
    heads = _segmented_discounted_sum(local[:, 0], heads_cont, gamma ** block)
    carry_in = np.append(heads[1:], 0.0)
    carry = np.where(reaches, gamma ** (block - k.astype(np.float64)), 0.0) * carry_in[:, None]
    return (local + carry).reshape(-1)[:n]


def _as_flag(a: np.ndarray, name: str) -> np.ndarray:
    """Return a 1-D bool copy of a 0/1 flag array, or raise naming the key."""
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise ValueError(f"'{name}' must have shape (N,), got {arr.shape}")
    if arr.dtype != np.bool_:
        if not np.issubdtype(arr.dtype, np.number) or not np.all((arr == 0) | (arr == 1)):
            raise ValueError(f"'{name}' must be bool or 0/1, got dtype {arr.dtype}")
    return arr.astype(bool)


def _as_obs_dict(obs: ObsArrays, name: str) -> dict[str, np.ndarray]:
    """View array or dict observations as ``{'/key' or '': array}`` for uniform handling."""
    if isinstance(obs, Mapping):
        return {f"/{k}": np.asarray(v) for k, v in obs.items()}
    if obs is None:
        raise ValueError(f"'{name}' is None")
    return {"": np.asarray(obs)}
