"""Episode replay buffer that stores every observation row once (state vectors or uint8 images).

Why episodes: a transition t goes from observation row t to row t+1 of its episode
(docs/ARCHITECTURE.md), so an episode of T transitions needs T+1 rows, not 2T. Storing
``next_observations`` separately would store every frame twice (SPEC section 7 pitfall; rlpd's
memory-efficient buffer and DrQ-v2 do the same trick). Per transition the buffer keeps
``obs_idx`` (``next_idx = obs_idx + 1`` by construction, exposed as a property, so the two can
never disagree), actions, transformed rewards, terminals, timeouts and the MC return G.

The buffer is append-only and refuses to overwrite: Cal-QL's offline buffer holds a fixed
dataset and its online buffer all online data (SPEC section 3), so a full buffer is a
configuration error, reported as :class:`BufferFullError`.

``dones`` in a batch are terminals only: a time-limit cut is not an MDP termination and must
bootstrap in the TD target (SPEC section 3; SPEC section 7 "terminal vs timeout mixed up").

Sequence models (the online decision transformer) read windows of ``context`` consecutive
steps instead of transitions: :meth:`sample_windows` gathers them by transition index from
the same contiguous storage (``sample(..., context=K)``), with each step's undiscounted
return-to-go. ``context=1``, the default, is the transition batch above, unchanged.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from data.returns import mc_returns, observation_discontinuities, transform_rewards

ObsSpec = tuple[Sequence[int], Any] | Mapping[str, tuple[Sequence[int], Any]]
"""``(shape, dtype)`` for array observations or ``{name: (shape, dtype)}`` for dict ones."""

Obs = np.ndarray | dict[str, np.ndarray]

STATE_DICT_VERSION = 1
"""Layout version of :meth:`EpisodeReplayBuffer.state_dict`; bumped when keys change."""

_ARRAY_KEY = ""
"""Internal key of the single array when observations are not a dict."""


class BufferFullError(RuntimeError):
    """Adding data would exceed the transition or observation-row capacity.

    The buffer never overwrites silently; enlarge ``capacity``/``obs_capacity`` instead.
    """


class EpisodeReplayBuffer:
    """Append-only replay buffer of whole episodes with observation rows stored once.

    Args:
        obs_spec: ``(shape, dtype)`` or ``{name: (shape, dtype)}``, e.g.
            ``{"image": ((64, 64, 3), np.uint8), "state": ((10,), np.float32)}``.
        action_dim: size A of the action vector.
        capacity: maximum number of transitions.
        obs_capacity: maximum number of observation rows. Default
            ``capacity + ceil(capacity / 2)``, enough for any mix of episodes of length >= 2
            (T+1 rows per T transitions); length-1 episodes need 2 rows per transition. When the shortest episode length is
            known, :meth:`obs_rows_needed` gives a tighter bound (for the 40-step pick-place
            horizon about ``1.025 * capacity``), which matters for image buffers.

    Memory is preallocated with ``np.empty`` after checking that it fits in the available
    memory (as Stable-Baselines3 buffers do), so a too-large buffer fails at construction
    with a clear message instead of swapping or being OOM-killed mid-training.
    """

    def __init__(self, obs_spec: ObsSpec, action_dim: int, capacity: int,
                 obs_capacity: int | None = None) -> None:
        self._is_dict, self._spec = _parse_obs_spec(obs_spec)
        if int(action_dim) < 1 or int(capacity) < 1:
            raise ValueError(f"EpisodeReplayBuffer: action_dim ({action_dim}) and capacity "
                             f"({capacity}) must be >= 1")
        self.action_dim = int(action_dim)
        self.capacity = int(capacity)
        self.obs_capacity = (self.capacity + (self.capacity + 1) // 2 if obs_capacity is None
                             else int(obs_capacity))
        if self.obs_capacity < 2:
            raise ValueError(f"EpisodeReplayBuffer: obs_capacity must be >= 2, got "
                             f"{self.obs_capacity}")
        _check_memory(self.obs_capacity * self._row_bytes()
                      + self.capacity * self._transition_bytes())
        self._obs = {k: np.empty((self.obs_capacity, *shape), dtype=dtype)
                     for k, (shape, dtype) in self._spec.items()}
        self._obs_idx = np.empty(self.capacity, dtype=np.int64)
        self._actions = np.empty((self.capacity, self.action_dim), dtype=np.float32)
        self._rewards = np.empty(self.capacity, dtype=np.float32)
        self._terminals = np.empty(self.capacity, dtype=bool)
        self._timeouts = np.empty(self.capacity, dtype=bool)
        self._mc_returns = np.empty(self.capacity, dtype=np.float32)
        self._size = 0
        self._rows = 0
        self._episodes = 0
        self._windows: _WindowIndex | None = None

    # ----------------------------------------------------------------------- sizes
    @staticmethod
    def obs_rows_needed(capacity: int, min_episode_length: int) -> int:
        """Observation rows that suffice for ``capacity`` transitions in episodes of length
        >= ``min_episode_length`` (each episode adds one row more than its transitions)."""
        if min_episode_length < 1:
            raise ValueError(f"min_episode_length must be >= 1, got {min_episode_length}")
        return int(capacity) + -(-int(capacity) // int(min_episode_length))

    def __len__(self) -> int:
        """Number of stored transitions."""
        return self._size

    @property
    def num_episodes(self) -> int:
        """Number of stored episodes (trajectories, after splitting flat data at its ends)."""
        return self._episodes

    @property
    def num_obs_rows(self) -> int:
        """Number of stored observation rows (T+1 per episode)."""
        return self._rows

    @property
    def obs_spec(self) -> ObsSpec:
        """The observation spec in the form given to the constructor."""
        if self._is_dict:
            return {k: (shape, dtype) for k, (shape, dtype) in self._spec.items()}
        return self._spec[_ARRAY_KEY]

    @property
    def nbytes(self) -> int:
        """Bytes of data actually stored (filled rows and transitions, not the reserve)."""
        return self._rows * self._row_bytes() + self._size * self._transition_bytes()

    @property
    def bytes_per_transition(self) -> float:
        """``nbytes / len``: about one observation row plus the per-transition vectors."""
        return self.nbytes / self._size if self._size else 0.0

    @property
    def obs_idx(self) -> np.ndarray:
        """Read-only view: observation row of each stored transition."""
        return _readonly(self._obs_idx[:self._size])

    @property
    def next_idx(self) -> np.ndarray:
        """Observation row after each stored transition (always ``obs_idx + 1``)."""
        return self.obs_idx + 1

    def _row_bytes(self) -> int:
        return sum(int(np.prod(s, dtype=np.int64)) * d.itemsize for s, d in self._spec.values())

    def _transition_bytes(self) -> int:
        # obs_idx int64, actions float32, reward, mc_return float32, terminal, timeout bool.
        return 8 + 4 * self.action_dim + 4 + 4 + 1 + 1

    # ----------------------------------------------------------------------- adding
    def add_episode(self, observations: Obs, actions: np.ndarray, rewards: np.ndarray,
                    terminals: np.ndarray, timeouts: np.ndarray,
                    mc_returns: np.ndarray) -> None:
        """Append one episode: T+1 observation rows and T transitions.

        ``rewards`` are already transformed (``data.returns.transform_rewards``) and
        ``mc_returns`` computed from them. Raises ValueError naming the offending key on a bad
        shape, dtype or non-finite value, and :class:`BufferFullError` when it does not fit;
        nothing is written in either case.
        """
        steps = _check_steps(actions, rewards, terminals, timeouts, mc_returns,
                             self.action_dim, "episode")
        t = steps["rewards"].shape[0]
        if t < 1:
            raise ValueError("episode: 'rewards' is empty; an episode has T >= 1 transitions")
        obs = self._check_obs(observations, t + 1, "observations")
        r0, s0 = self._reserve(t, t + 1)
        for k, arr in obs.items():
            self._obs[k][r0:r0 + t + 1] = arr
        self._write_steps(s0, np.arange(r0, r0 + t, dtype=np.int64), steps)
        self._commit(t, t + 1, 1)

    def add_episodes(self, episodes: Sequence[Mapping[str, Any]], gamma: float,
                     failure_reward: float | None = None, reward_scale: float = 1.0,
                     reward_bias: float = 0.0) -> None:
        """Append episode dicts (docs/ARCHITECTURE.md layout), computing their MC returns.

        The dicts carry raw env rewards; they are transformed here with
        ``transform_rewards(r, reward_scale, reward_bias)``, and ``failure_reward`` is the raw
        failure reward r_neg of SPEC section 4's table (transformed the same way). With the
        defaults (1, 0) rewards and failure_reward are used as given. Trajectory ends are
        terminals | timeouts | the last step of each episode (SPEC section 2). Keys other than
        the five episode arrays (e.g. ``task``, ``seed``) are ignored. Each episode's data is
        copied once, straight into the buffer (``np.concatenate(..., out=...)``).
        """
        if len(episodes) == 0:
            return
        steps_list, obs_list, lengths = [], [], []
        for i, ep in enumerate(episodes):
            where = f"episodes[{i}]"
            missing = [k for k in ("observations", "actions", "rewards", "terminals",
                                   "timeouts") if k not in ep]
            if missing:
                raise ValueError(f"{where}: missing keys {missing}")
            raw = np.asarray(ep["rewards"])
            steps = _check_steps(ep["actions"], raw, ep["terminals"], ep["timeouts"],
                                 np.zeros(raw.shape, np.float32), self.action_dim, where)
            if steps["rewards"].shape[0] < 1:
                raise ValueError(f"{where}: 'rewards' is empty; an episode has T >= 1 steps")
            obs_list.append(self._check_obs(ep["observations"], steps["rewards"].shape[0] + 1,
                                            f"{where}/observations"))
            steps_list.append(steps)
            lengths.append(steps["rewards"].shape[0])
        lengths_arr = np.asarray(lengths, dtype=np.int64)
        n, rows = int(lengths_arr.sum()), int(lengths_arr.sum() + len(lengths))
        cat = {k: np.concatenate([s[k] for s in steps_list]) for k in steps_list[0]}
        rewards = transform_rewards(cat["rewards"], reward_scale, reward_bias)
        ends = cat["terminals"] | cat["timeouts"]
        ends[np.cumsum(lengths_arr) - 1] = True
        fail = (None if failure_reward is None
                else float(transform_rewards(np.array([failure_reward]), reward_scale,
                                             reward_bias)[0]))
        cat["rewards"] = rewards
        cat["mc_returns"] = mc_returns(rewards, ends, gamma, fail)
        r0, s0 = self._reserve(n, rows)
        for k in self._spec:
            parts = [obs[k] for obs in obs_list]
            np.concatenate(parts, axis=0, out=self._obs[k][r0:r0 + rows], casting="same_kind")
        # Transition j of episode i sits at row r0 + j + i (one extra row per earlier episode).
        episode_of = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths_arr)
        self._write_steps(s0, r0 + np.arange(n, dtype=np.int64) + episode_of, cat)
        self._commit(n, rows, len(lengths))

    def add_episode_arrays(self, observations: Obs, actions: np.ndarray, rewards: np.ndarray,
                           terminals: np.ndarray, timeouts: np.ndarray, lengths: np.ndarray,
                           gamma: float, failure_reward: float | None = None,
                           reward_scale: float = 1.0, reward_bias: float = 0.0) -> None:
        """Append E episodes given as flat, concatenated arrays (``EpisodeDataset`` layout).

        ``observations`` holds ``sum(lengths) + E`` rows (T_i + 1 per episode, episode after
        episode, as the HDF5 file and ``data.episodes_hdf5.read_episodes`` keep them); the
        step arrays hold ``sum(lengths)`` rows of raw rewards. Same semantics as
        :meth:`add_episodes` (one reward transform here, MC returns with ends = terminals |
        timeouts | each episode's last step) but without per-episode views or checks: one
        copy per array into the buffer, so loading a large image dataset costs one pass
        over its frames.
        """
        length = np.asarray(lengths)
        if length.ndim != 1 or not np.issubdtype(length.dtype, np.integer) or length.size == 0:
            raise ValueError(f"episode arrays: 'lengths' must be a non-empty 1-D integer array, "
                             f"got {length.dtype} {length.shape}")
        if length.min() < 1:
            raise ValueError(f"episode arrays: 'lengths' must be >= 1, got min {length.min()}")
        length = length.astype(np.int64)
        n, e = int(length.sum()), int(length.size)
        raw = np.asarray(rewards)
        if raw.shape != (n,):
            raise ValueError(f"episode arrays: 'rewards' must have shape ({n},) = (sum(lengths),),"
                             f" got {raw.shape}")
        steps = _check_steps(actions, raw, terminals, timeouts, np.zeros(n, np.float32),
                             self.action_dim, "episode arrays")
        obs = self._check_obs(observations, n + e, "observations")
        step_end = np.cumsum(length) - 1
        flagged = np.flatnonzero(steps["terminals"] | steps["timeouts"])
        inside = flagged[~np.isin(flagged, step_end)]
        if inside.size:
            raise ValueError(f"episode arrays: step {int(inside[0])} is terminal/timeout but not "
                             f"the last step of its episode; 'lengths' do not match the flags")
        scaled = transform_rewards(steps["rewards"], reward_scale, reward_bias)
        ends = np.zeros(n, dtype=bool)
        ends[step_end] = True
        fail = (None if failure_reward is None
                else float(transform_rewards(np.array([failure_reward]), reward_scale,
                                             reward_bias)[0]))
        steps["rewards"] = scaled
        steps["mc_returns"] = mc_returns(scaled, ends, gamma, fail)
        r0, s0 = self._reserve(n, n + e)
        for k, arr in obs.items():
            self._obs[k][r0:r0 + n + e] = arr
        episode_of = np.repeat(np.arange(e, dtype=np.int64), length)
        self._write_steps(s0, r0 + np.arange(n, dtype=np.int64) + episode_of, steps)
        self._commit(n, n + e, e)

    def add_flat(self, observations: Obs, actions: np.ndarray, rewards: np.ndarray,
                 next_observations: Obs, terminals: np.ndarray, timeouts: np.ndarray,
                 mc_returns: np.ndarray, ends: np.ndarray, atol: float = 1e-6) -> None:
        """Append D4RL-style flat arrays split into trajectories by ``ends``.

        ``ends`` comes from ``data.returns.trajectory_ends`` and must close the last step.
        Trajectory [s..e] stores rows ``observations[s..e]`` plus ``next_observations[e]``.
        Inside a trajectory ``next_observations[t]`` must equal ``observations[t+1]`` (within
        ``atol``), otherwise the stored next observation would differ from the data, so a
        mismatch not marked in ``ends`` is an error (SPEC section 7: next obs taken across an
        episode boundary). Vectorised: one scatter per observation array.
        """
        steps = _check_steps(actions, rewards, terminals, timeouts, mc_returns,
                             self.action_dim, "flat")
        n = steps["rewards"].shape[0]
        if n < 1:
            return
        end = np.asarray(ends)
        if end.shape != (n,) or end.dtype != np.bool_:
            raise ValueError(f"flat: 'ends' must be a bool array of shape ({n},), got "
                             f"{end.dtype} {end.shape}")
        if not end[-1]:
            raise ValueError("flat: 'ends[-1]' must be True (the last trajectory is not closed)")
        obs = self._check_obs(observations, n, "observations")
        nxt = self._check_obs(next_observations, n, "next_observations")
        broken = observation_discontinuities(obs, nxt, atol) & ~end[:-1]
        if broken.any():
            t = int(np.flatnonzero(broken)[0])
            raise ValueError(f"flat: 'next_observations[{t}]' differs from "
                             f"'observations[{t + 1}]' but ends[{t}] is False; split there "
                             f"(data.returns.trajectory_ends does)")
        end_idx = np.flatnonzero(end)
        k = end_idx.size
        traj_id = np.concatenate(([0], np.cumsum(end[:-1]))).astype(np.int64)
        r0, s0 = self._reserve(n, n + k)
        obs_rows = r0 + np.arange(n, dtype=np.int64) + traj_id
        last_rows = r0 + end_idx + np.arange(k, dtype=np.int64) + 1
        for key in self._spec:
            self._obs[key][obs_rows] = obs[key]
            self._obs[key][last_rows] = nxt[key][end_idx]
        self._write_steps(s0, obs_rows, steps)
        self._commit(n, n + k, k)

    def _check_obs(self, observations: Obs, rows: int, where: str) -> dict[str, np.ndarray]:
        """Return ``{key: array}`` after checking keys, rows, shapes, dtypes and finiteness."""
        if self._is_dict:
            if not isinstance(observations, Mapping):
                raise ValueError(f"'{where}' must be a dict with keys {sorted(self._spec)}, "
                                 f"got {type(observations).__name__}")
            if set(observations) != set(self._spec):
                raise ValueError(f"'{where}' keys {sorted(observations)} != spec keys "
                                 f"{sorted(self._spec)}")
            items = {k: (f"{where}/{k}", observations[k]) for k in self._spec}
        else:
            if isinstance(observations, Mapping):
                raise ValueError(f"'{where}' must be an array (the spec is not a dict)")
            items = {_ARRAY_KEY: (where, observations)}
        out = {}
        for k, (name, value) in items.items():
            arr = np.asarray(value)
            shape, dtype = self._spec[k]
            if arr.shape != (rows, *shape):
                raise ValueError(f"'{name}' must have shape {(rows, *shape)}, got {arr.shape}")
            if not _dtype_ok(arr.dtype, dtype):
                raise ValueError(f"'{name}' has dtype {arr.dtype}, expected {dtype}")
            if np.issubdtype(arr.dtype, np.floating):
                _check_finite(arr, name)
            out[k] = arr
        return out

    def _reserve(self, transitions: int, rows: int) -> tuple[int, int]:
        """Return (first free row, first free transition) or raise BufferFullError."""
        if self._size + transitions > self.capacity or self._rows + rows > self.obs_capacity:
            raise BufferFullError(
                f"EpisodeReplayBuffer is full: adding {transitions} transitions / {rows} "
                f"observation rows to {self._size}/{self.capacity} transitions and "
                f"{self._rows}/{self.obs_capacity} rows; the buffer never overwrites, so "
                f"raise capacity or obs_capacity")
        return self._rows, self._size

    def _write_steps(self, s0: int, obs_rows: np.ndarray, steps: Mapping[str, np.ndarray]) -> None:
        s1 = s0 + obs_rows.shape[0]
        self._obs_idx[s0:s1] = obs_rows
        self._actions[s0:s1] = steps["actions"]
        self._rewards[s0:s1] = steps["rewards"]
        self._terminals[s0:s1] = steps["terminals"]
        self._timeouts[s0:s1] = steps["timeouts"]
        self._mc_returns[s0:s1] = steps["mc_returns"]

    def _commit(self, transitions: int, rows: int, episodes: int) -> None:
        self._windows = None
        self._size += transitions
        self._rows += rows
        self._episodes += episodes

    # ----------------------------------------------------------------------- sampling
    def sample(self, batch_size: int, rng: np.random.Generator, context: int = 1) -> dict[str, Any]:
        """Uniform batch with replacement over stored transitions (SPEC section 3).

        Returns numpy arrays: ``observations``, ``next_observations`` (array or dict, images
        stay uint8), ``actions (B,A) f32``, ``rewards (B,) f32``, ``dones (B,) f32``
        (terminals only; timeouts are not dones), ``mc_returns (B,) f32``.
        ``context=K > 1``: windows of K steps starting at the drawn transitions instead
        (:meth:`sample_windows`); the same draw from ``rng``.
        """
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"sample: rng must be a numpy Generator, got {type(rng).__name__}")
        if self._size == 0:
            raise ValueError("sample: the buffer is empty")
        if int(batch_size) < 1:
            raise ValueError(f"sample: batch_size must be >= 1, got {batch_size}")
        idx = rng.integers(0, self._size, size=int(batch_size))
        return self.sample_indices(idx) if context == 1 else self.sample_windows(idx, context)

    def sample_indices(self, idx: np.ndarray) -> dict[str, Any]:
        """The batch of the given transition indices (same layout as :meth:`sample`)."""
        idx = np.asarray(idx)
        if idx.ndim != 1 or not (np.issubdtype(idx.dtype, np.integer) or idx.size == 0):
            raise ValueError(f"sample_indices: 'idx' must be a 1-D integer array, got "
                             f"{idx.dtype} {idx.shape}")
        idx = idx.astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self._size):
            raise IndexError(f"sample_indices: indices must be in [0, {self._size}), got "
                             f"[{idx.min()}, {idx.max()}]")
        rows = self._obs_idx[idx]
        return {
            "observations": self._gather(rows),
            "next_observations": self._gather(rows + 1),
            "actions": self._actions[idx],
            "rewards": self._rewards[idx],
            "dones": self._terminals[idx].astype(np.float32),
            "mc_returns": self._mc_returns[idx],
        }

    def sample_windows(self, idx: np.ndarray, context: int) -> dict[str, Any]:
        """Windows of ``context`` consecutive steps of one trajectory, starting at the given
        transition indices: what a decision transformer trains on.

        A window stops at the end of its trajectory (a terminal, a timeout or the episode's
        last step) and is padded after it: ``mask (B,K) f32`` is 1 on the window's steps and
        0 on the padding, whose entries repeat the window's last step. Online DT samples the
        same way (facebookresearch/online-dt ``data.py``: a trajectory drawn with probability
        proportional to its length, a uniform start in it, ``K`` steps cut at its end), i.e.
        a uniform start over all transitions. Arrays have a leading ``(B, K)``:
        ``observations``, ``actions``, ``rewards``, ``dones`` and ``returns_to_go``, the
        undiscounted sum of this buffer's (transformed) rewards from the step to the end of
        its trajectory (``mc_returns`` at gamma = 1, ``data.returns``' one return function).
        Online episodes are stored with the rewards they achieved, so their returns-to-go are
        the achieved ones whatever return the policy was conditioned on while collecting them
        (Online DT's hindsight return relabelling).
        """
        idx = np.asarray(idx, dtype=np.int64)
        if int(context) < 1:
            raise ValueError(f"sample_windows: context must be >= 1, got {context}")
        if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= self._size)):
            raise IndexError(f"sample_windows: 'idx' must be 1-D indices in [0, {self._size})")
        windows = self._window_index()
        last = windows.ends[np.searchsorted(windows.ends, idx)]  # each start's trajectory end
        offset = np.arange(int(context), dtype=np.int64)
        steps = idx[:, None] + np.minimum(offset[None, :], (last - idx)[:, None])  # (B, K)
        mask = (offset[None, :] <= (last - idx)[:, None]).astype(np.float32)
        return {
            "observations": self._gather(self._obs_idx[steps]),
            "actions": self._actions[steps],
            "rewards": self._rewards[steps],
            "dones": self._terminals[steps].astype(np.float32),
            "returns_to_go": windows.returns_to_go[steps],
            "mask": mask,
        }

    def _window_index(self) -> _WindowIndex:
        """Trajectory ends and undiscounted returns-to-go of the stored transitions, built
        on first use and again after data are added (offline: once; online: once per
        episode, a cumulative sum over the online data)."""
        if self._windows is None:
            n = self._size
            rows = self._obs_idx[:n]
            ends = self._terminals[:n] | self._timeouts[:n]
            ends[:-1] |= rows[1:] != rows[:-1] + 1  # the next transition starts another episode
            ends[-1] = True
            self._windows = _WindowIndex(np.flatnonzero(ends), mc_returns(self._rewards[:n], ends, 1.0))
        return self._windows

    def _gather(self, rows: np.ndarray) -> Obs:
        out = {k: np.take(v, rows, axis=0) for k, v in self._obs.items()}
        return out if self._is_dict else out[_ARRAY_KEY]

    # ----------------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, torch.Tensor | int | float | str]:
        """Filled part of the buffer as torch tensors and plain scalars/strings.

        Loadable with ``torch.load(weights_only=True)``. The tensors share memory with the
        buffer (no copy of a large image store); this is safe because stored data is never
        modified (append-only), so save them whenever convenient.
        """
        sd: dict[str, torch.Tensor | int | float | str] = {
            "version": STATE_DICT_VERSION,
            "obs_spec": self._spec_json(),
            "action_dim": self.action_dim,
            "capacity": self.capacity,
            "obs_capacity": self.obs_capacity,
            "size": self._size,
            "num_obs_rows": self._rows,
            "num_episodes": self._episodes,
        }
        for k, arr in self._obs.items():
            sd[f"obs/{k}" if self._is_dict else "obs"] = torch.from_numpy(arr[:self._rows])
        for name, arr in self._step_arrays().items():
            sd[name] = torch.from_numpy(arr[:self._size])
        return sd

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        """Restore the contents saved by :meth:`state_dict` exactly (specs must match)."""
        if sd.get("version") != STATE_DICT_VERSION:
            raise ValueError(f"load_state_dict: 'version' {sd.get('version')!r} is not "
                             f"{STATE_DICT_VERSION}")
        if sd.get("obs_spec") != self._spec_json() or sd.get("action_dim") != self.action_dim:
            raise ValueError(f"load_state_dict: 'obs_spec'/'action_dim' {sd.get('obs_spec')}, "
                             f"{sd.get('action_dim')} do not match this buffer's "
                             f"{self._spec_json()}, {self.action_dim}")
        size, rows, eps = int(sd["size"]), int(sd["num_obs_rows"]), int(sd["num_episodes"])
        if size > self.capacity or rows > self.obs_capacity:
            raise BufferFullError(f"load_state_dict: {size} transitions / {rows} rows do not "
                                  f"fit capacity {self.capacity} / {self.obs_capacity}")
        arrays = {f"obs/{k}" if self._is_dict else "obs": (self._obs[k], rows)
                  for k in self._spec}
        arrays.update({name: (arr, size) for name, arr in self._step_arrays().items()})
        for name, (dst, n) in arrays.items():
            src = sd[name].numpy() if isinstance(sd.get(name), torch.Tensor) else None
            if src is None or src.shape != (n, *dst.shape[1:]) or src.dtype != dst.dtype:
                raise ValueError(f"load_state_dict: '{name}' must be a {dst.dtype} tensor of "
                                 f"shape {(n, *dst.shape[1:])}")
        idx = sd["obs_idx"].numpy()
        if size and (idx.min() < 0 or idx.max() + 1 >= rows):
            raise ValueError("load_state_dict: 'obs_idx' (or obs_idx + 1) points outside the "
                             f"{rows} stored rows")
        for name, (dst, n) in arrays.items():
            dst[:n] = sd[name].numpy()
        self._size, self._rows, self._episodes = size, rows, eps
        self._windows = None

    def _step_arrays(self) -> dict[str, np.ndarray]:
        return {"obs_idx": self._obs_idx, "actions": self._actions, "rewards": self._rewards,
                "terminals": self._terminals, "timeouts": self._timeouts,
                "mc_returns": self._mc_returns}

    def _spec_json(self) -> str:
        return json.dumps({"dict": self._is_dict,
                           "spec": {k: [list(s), d.str] for k, (s, d) in self._spec.items()}},
                          sort_keys=True)


class _WindowIndex(NamedTuple):
    """What :meth:`EpisodeReplayBuffer.sample_windows` reads besides the stored arrays."""

    ends: np.ndarray
    """Sorted indices of the transitions that close a trajectory."""
    returns_to_go: np.ndarray
    """Undiscounted return-to-go of every stored transition (f32)."""


def _parse_obs_spec(obs_spec: ObsSpec) -> tuple[bool, dict[str, tuple[tuple[int, ...], np.dtype]]]:
    """Normalise an obs spec to ``(is_dict, {key: (shape, dtype)})`` or raise naming the key."""
    is_dict = isinstance(obs_spec, Mapping)
    items = obs_spec.items() if is_dict else [(_ARRAY_KEY, obs_spec)]
    spec = {}
    for k, entry in items:
        name = f"obs_spec[{k!r}]" if is_dict else "obs_spec"
        if not isinstance(k, str) or "/" in k:
            raise ValueError(f"{name}: keys must be strings without '/'")
        try:
            shape, dtype = entry
            shape = tuple(int(s) for s in shape)
            dtype = np.dtype(dtype)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name} must be (shape, dtype), got {entry!r}") from err
        if any(s < 1 for s in shape) or not (np.issubdtype(dtype, np.number)
                                             or dtype == np.bool_):
            raise ValueError(f"{name}: need positive dims and a numeric dtype, got "
                             f"{shape}, {dtype}")
        spec[k] = (shape, dtype)
    if not spec:
        raise ValueError("obs_spec: the dict is empty")
    return is_dict, spec


def _check_steps(actions: np.ndarray, rewards: np.ndarray, terminals: np.ndarray,
                 timeouts: np.ndarray, mc_returns: np.ndarray, action_dim: int,
                 where: str) -> dict[str, np.ndarray]:
    """Check the per-transition arrays; return them with the buffer's dtypes."""
    r = np.asarray(rewards)
    if r.ndim != 1:
        raise ValueError(f"{where}: 'rewards' must have shape (T,), got {r.shape}")
    t = r.shape[0]
    out = {"rewards": r}
    for name, value in (("actions", actions), ("mc_returns", mc_returns)):
        out[name] = np.asarray(value)
    for name, value in (("terminals", terminals), ("timeouts", timeouts)):
        arr = np.asarray(value)
        if arr.shape != (t,):
            raise ValueError(f"{where}: '{name}' must have shape ({t},), got {arr.shape}")
        if arr.dtype != np.bool_ and not (np.issubdtype(arr.dtype, np.number)
                                          and np.all((arr == 0) | (arr == 1))):
            raise ValueError(f"{where}: '{name}' must be bool or 0/1, got dtype {arr.dtype}")
        out[name] = arr.astype(bool)
    if out["actions"].shape != (t, action_dim):
        raise ValueError(f"{where}: 'actions' must have shape ({t}, {action_dim}), got "
                         f"{out['actions'].shape}")
    if out["mc_returns"].shape != (t,):
        raise ValueError(f"{where}: 'mc_returns' must have shape ({t},), got "
                         f"{out['mc_returns'].shape}")
    for name in ("rewards", "actions", "mc_returns"):
        _check_finite(out[name], f"{where}/{name}")
        out[name] = out[name].astype(np.float32)
    return out


def _check_finite(arr: np.ndarray, name: str) -> None:
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"'{name}' must be numeric, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1))[0]) \
            if arr.ndim else 0
        raise ValueError(f"'{name}' contains NaN or inf (first at row {bad})")


def _dtype_ok(src: np.dtype, dst: np.dtype) -> bool:
    """Floats may narrow (float64 -> float32); anything else must match exactly, so a float
    image is never silently truncated into a uint8 store."""
    if np.issubdtype(dst, np.floating):
        return np.issubdtype(src, np.floating)
    return src == dst


def _readonly(arr: np.ndarray) -> np.ndarray:
    view = arr.view()
    view.flags.writeable = False
    return view


def _available_memory() -> int | None:
    """Available physical memory in bytes (MemAvailable, else free pages), None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _check_memory(nbytes: int) -> None:
    """Refuse a buffer larger than the available memory (Stable-Baselines3 checks too)."""
    avail = _available_memory()
    if avail is not None and nbytes > avail:
        raise MemoryError(f"EpisodeReplayBuffer needs {nbytes / 1e9:.2f} GB but only "
                          f"{avail / 1e9:.2f} GB of memory is available; lower capacity or "
                          f"obs_capacity (EpisodeReplayBuffer.obs_rows_needed gives a tight "
                          f"bound when the episode length is known)")
