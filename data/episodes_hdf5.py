"""The project's versioned HDF5 episode format: a streaming atomic writer and a validating reader.

Layout (format ``calql-robot/episodes``, version 1; E episodes, N = sum T_i steps)::

    observations/<key>   (N+E, ...)  every frame once: T_i+1 rows per episode, episode after
                                     episode (a plain ``observations`` dataset for array obs)
    actions              (N, A) float32
    rewards              (N,)   float32    raw env reward, no transform applied
    terminals            (N,)   bool       MDP termination (success)
    timeouts             (N,)   bool       time-limit cut; never both
    episodes/length      (E,)   int64      T_i >= 1
    episodes/obs_start   (E,)   int64      first observation row of episode i
    episodes/step_start  (E,)   int64      first step row of episode i
    episodes/task        (E, 2) int64      (target, distractor)
    episodes/seed        (E,)   int64      env seed the episode was collected with
    episodes/success     (E,)   bool
    root attrs: format_name, format_version (int); every other attribute is a JSON string:
    num_episodes, num_steps, num_frames, observation_keys, image_compression, success_stats,
    created_utc, software, and the caller's attrs (env config, collection config, ...).

Transition t of an episode goes from observation row t to t+1 (ARCHITECTURE.md), so frames
are stored once, as in rlpd's memory-efficient buffer and unlike D4RL's separate
``next_observations``. Episode boundaries are explicit instead of being inferred from flags,
which is how next observations stop crossing episodes (SPEC.md section 7).

Images (uint8 arrays of rank 4) are chunked ``(64, H, W, C)`` and compressed with **gzip
level 1**. Measured on 1,025 rendered 64 px frames of this project's sim (random actions, 2
cores): gzip-1 35x smaller and read at ~410-450 MB/s; lzf 16x smaller and read at only
~160-250 MB/s; gzip-4 52x at ~340-410 MB/s; raw 1.4 GB/s but 35x the disk. The frames are
mostly flat colour, which zlib's inflate decodes fast. Readers load whole datasets with one
slice per run of kept episodes, never one small read per episode. Everything else is stored
uncompressed. Versioned files follow d3rlpy's practice; a reader refuses files from a newer
writer rather than guessing.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .schema import (FORMAT_NAME, FORMAT_VERSION, STEP_DTYPES, STEP_NDIM, DatasetFormatError,
                     check_episode, check_step_values)
from .suspicious import ActionFix, check_not_constant, checked_actions

__all__ = ["DatasetFormatError", "EpisodeDataset", "FORMAT_NAME", "FORMAT_VERSION",
           "read_episodes", "success_statistics", "validate", "write_episodes"]

IMAGE_CHUNK_ROWS = 64
"""Frames per image chunk: ~0.8 MB raw at 64x64, large enough for gzip to work well, small
enough that the writer's buffer stays a few MB."""
IMAGE_COMPRESSION = "gzip"
IMAGE_COMPRESSION_LEVEL = 1
OTHER_CHUNK_BYTES = 1 << 16
"""Chunk size of the (uncompressed, resizable) non-image datasets."""

EPISODE_DTYPES: dict[str, tuple[np.dtype, int]] = {
    "length": (np.dtype(np.int64), 1), "obs_start": (np.dtype(np.int64), 1),
    "step_start": (np.dtype(np.int64), 1), "task": (np.dtype(np.int64), 2),
    "seed": (np.dtype(np.int64), 1), "success": (np.dtype(np.bool_), 1),
}
RESERVED_ATTRS = ("format_name", "format_version", "num_episodes", "num_steps", "num_frames",
                  "observation_keys", "image_compression", "success_stats", "created_utc",
                  "software")

TaskList = Sequence[Sequence[int]]


# ----------------------------------------------------------------------------- writing

def write_episodes(path: str | os.PathLike, episodes: Iterable[Mapping[str, Any]],
                   attrs: Mapping[str, Any]) -> None:
    """Write episodes (ARCHITECTURE.md dicts plus ``task``, ``seed``, ``success``) to ``path``.

    ``attrs`` values must be JSON-serialisable (tuples come back as lists); they are stored as
    JSON strings next to the writer's own attributes (names in RESERVED_ATTRS are refused).
    ``episodes`` may be a generator: each episode is checked, appended in chunk-sized blocks
    and can be dropped by the caller, so the writer never holds a second copy of the images.

    The file is built under a temporary name in the same directory and moved into place with
    ``os.replace``: a crash or a bad episode leaves any existing file at ``path`` untouched
    and no partial file behind.
    """
    path = Path(path)
    user_attrs = _encode_user_attrs(attrs)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            writer = _StreamWriter(f)
            for index, episode in enumerate(episodes):
                writer.add(episode, index)
            writer.finish()
            f.attrs.update(user_attrs)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a dataset is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _encode_user_attrs(attrs: Mapping[str, Any]) -> dict[str, str]:
    """JSON-encode the caller's attributes up front, so a bad value fails before any I/O."""
    clash = sorted(set(attrs) & set(RESERVED_ATTRS))
    if clash:
        raise ValueError(f"attrs {clash} are written by write_episodes itself; rename them")
    encoded = {}
    for key, value in attrs.items():
        try:
            encoded[key] = json.dumps(value, sort_keys=True, default=_json_default)
        except (TypeError, ValueError) as err:
            raise ValueError(f"attr '{key}' is not JSON-serialisable: {err}") from err
    return encoded


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays in configs become plain JSON numbers and lists."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} {value!r}")


class _Appender:
    """Appends rows to a resizable dataset in whole-chunk blocks, so each compressed chunk is
    written (and compressed) exactly once however episode lengths straddle chunk borders."""

    def __init__(self, ds: h5py.Dataset) -> None:
        self.ds = ds
        self.buf = np.empty((ds.chunks[0], *ds.shape[1:]), ds.dtype)
        self.fill = 0

    def append(self, rows: np.ndarray) -> None:
        done = 0
        while done < len(rows):
            n = min(len(rows) - done, len(self.buf) - self.fill)
            self.buf[self.fill:self.fill + n] = rows[done:done + n]
            self.fill, done = self.fill + n, done + n
            if self.fill == len(self.buf):
                self.flush()

    def flush(self) -> None:
        if self.fill:
            start = self.ds.shape[0]
            self.ds.resize(start + self.fill, axis=0)
            self.ds[start:] = self.buf[:self.fill]
            self.fill = 0


def _create_rows(f: h5py.File, name: str, sample: np.ndarray) -> _Appender:
    """A resizable dataset for rows shaped like ``sample[0]``; images chunked and gzip'd."""
    image = sample.dtype == np.uint8 and sample.ndim == 4
    row_bytes = max(1, sample[0].nbytes) if len(sample) else 1
    rows = IMAGE_CHUNK_ROWS if image else max(1, OTHER_CHUNK_BYTES // row_bytes)
    ds = f.create_dataset(name, shape=(0, *sample.shape[1:]), maxshape=(None, *sample.shape[1:]),
                          dtype=sample.dtype, chunks=(rows, *sample.shape[1:]),
                          compression=IMAGE_COMPRESSION if image else None,
                          compression_opts=IMAGE_COMPRESSION_LEVEL if image else None)
    return _Appender(ds)


def _obs_items(obs: Any) -> dict[str, np.ndarray]:
    """Dataset name -> array for dict observations (``observations/<key>``) or array ones."""
    if isinstance(obs, Mapping):
        return {f"observations/{key}": value for key, value in obs.items()}
    return {"observations": obs}


class _StreamWriter:
    """Checks each episode against the first one and appends it; metadata is kept in lists."""

    def __init__(self, f: h5py.File) -> None:
        self.f = f
        self.rows: dict[str, _Appender] = {}
        self.meta: dict[str, list] = {"length": [], "task": [], "seed": [], "success": []}

    def add(self, ep: Mapping[str, Any], index: int) -> None:
        length = check_episode(ep, index)
        arrays = {**_obs_items(ep["observations"]), **{k: ep[k] for k in STEP_DTYPES}}
        if not self.rows:
            self.rows = {name: _create_rows(self.f, name, arr) for name, arr in arrays.items()}
        self._check_like_first(arrays, index)
        for name, arr in arrays.items():
            self.rows[name].append(arr)
        for key, value in (("length", length), ("task", np.asarray(ep["task"])),
                           ("seed", int(ep["seed"])), ("success", bool(ep["success"]))):
            self.meta[key].append(value)

    def _check_like_first(self, arrays: dict[str, np.ndarray], index: int) -> None:
        """All episodes share observation keys, per-row shapes and dtypes."""
        if arrays.keys() != self.rows.keys():
            raise DatasetFormatError(None, f"episode {index}/observations",
                                     f"keys {sorted(arrays)} differ from episode 0's "
                                     f"{sorted(self.rows)}")
        for name, arr in arrays.items():
            ds = self.rows[name].ds
            if arr.dtype != ds.dtype or arr.shape[1:] != ds.shape[1:]:
                raise DatasetFormatError(None, f"episode {index}/{name}",
                                         f"rows {arr.shape[1:]} {arr.dtype} differ from "
                                         f"episode 0's {ds.shape[1:]} {ds.dtype}")

    def finish(self) -> None:
        """Flush the buffers; write episode boundaries, metadata and the writer's attrs."""
        if not self.meta["length"]:
            raise DatasetFormatError(None, "episodes", "no episodes to write")
        for appender in self.rows.values():
            appender.flush()
        length = np.asarray(self.meta["length"], dtype=np.int64)
        meta = {"length": length, "obs_start": _starts(length + 1), "step_start": _starts(length),
                "task": np.stack(self.meta["task"]).astype(np.int64),
                "seed": np.asarray(self.meta["seed"], dtype=np.int64),
                "success": np.asarray(self.meta["success"], dtype=bool)}
        for key, value in meta.items():
            self.f.create_dataset(f"episodes/{key}", data=value)
        obs_keys = [name.removeprefix("observations").lstrip("/") for name in self.rows
                    if name.startswith("observations")]
        self.f.attrs.update(_writer_attrs(meta, obs_keys))


def _starts(sizes: np.ndarray) -> np.ndarray:
    """Start offsets of consecutive blocks with the given sizes."""
    return (np.cumsum(sizes) - sizes).astype(np.int64)


def _writer_attrs(meta: dict[str, np.ndarray], obs_keys: list[str]) -> dict[str, Any]:
    """Attributes the writer owns: identity, sizes, provenance and success statistics."""
    info = {
        "num_episodes": len(meta["length"]), "num_steps": int(meta["length"].sum()),
        "num_frames": int(meta["length"].sum() + len(meta["length"])),
        "observation_keys": obs_keys,
        "image_compression": f"{IMAGE_COMPRESSION}-{IMAGE_COMPRESSION_LEVEL}",
        "success_stats": success_statistics(meta["task"], meta["success"], meta["length"]),
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "software": {"python": platform.python_version(), "numpy": np.__version__,
                     "h5py": h5py.__version__},
    }
    return {"format_name": FORMAT_NAME, "format_version": np.int64(FORMAT_VERSION),
            **{key: json.dumps(value, sort_keys=True) for key, value in info.items()}}


def success_statistics(task: np.ndarray, success: np.ndarray,
                       length: np.ndarray) -> dict[str, Any]:
    """Overall and per-task (target, distractor) success counts, rates and mean lengths."""
    pairs, inverse = np.unique(task, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    count = np.bincount(inverse, minlength=len(pairs))
    wins = np.bincount(inverse, weights=success.astype(np.float64), minlength=len(pairs))
    steps = np.bincount(inverse, weights=length.astype(np.float64), minlength=len(pairs))
    per_task = [{"task": [int(t), int(d)], "episodes": int(n), "successes": int(k),
                 "success_rate": float(k / n), "mean_length": float(s / n)}
                for (t, d), n, k, s in zip(pairs, count, wins, steps)]
    return {"episodes": int(len(task)), "successes": int(success.sum()),
            "success_rate": float(success.mean()), "mean_length": float(length.mean()),
            "per_task": per_task}


# ----------------------------------------------------------------------------- reading

@dataclass(frozen=True)
class EpisodeDataset:
    """Flat per-step arrays plus episode boundaries, as stored (possibly task-filtered).

    ``observations`` is a dict ``key -> (N+E, ...)`` (or one array for array observations);
    ``obs_start[i]``/``step_start[i]``/``length[i]`` locate episode i in the flat arrays.
    """

    path: str
    observations: dict[str, np.ndarray] | np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    length: np.ndarray
    obs_start: np.ndarray
    step_start: np.ndarray
    task: np.ndarray
    seed: np.ndarray
    success: np.ndarray
    attrs: dict[str, Any]

    @property
    def num_episodes(self) -> int:
        return len(self.length)

    @property
    def num_steps(self) -> int:
        return len(self.rewards)

    def __len__(self) -> int:
        return self.num_episodes

    def episode(self, i: int) -> dict[str, Any]:
        """Episode i as an ARCHITECTURE.md dict (plus task/seed/success); arrays are views."""
        o0, s0, n = int(self.obs_start[i]), int(self.step_start[i]), int(self.length[i])
        obs = self.observations
        return {
            "observations": ({k: v[o0:o0 + n + 1] for k, v in obs.items()}
                             if isinstance(obs, dict) else obs[o0:o0 + n + 1]),
            "actions": self.actions[s0:s0 + n], "rewards": self.rewards[s0:s0 + n],
            "terminals": self.terminals[s0:s0 + n], "timeouts": self.timeouts[s0:s0 + n],
            "task": self.task[i].copy(), "seed": int(self.seed[i]),
            "success": bool(self.success[i]),
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self.episode(i) for i in range(self.num_episodes))

    def to_episodes(self) -> list[dict[str, Any]]:
        return list(self)

    def transition_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(obs_idx, next_idx): observation rows of each step's s and s' (next = obs + 1;
        each earlier episode shifts rows by its one extra final frame)."""
        episode_of_step = np.repeat(np.arange(self.num_episodes), self.length)
        obs_idx = np.arange(self.num_steps, dtype=np.int64) + episode_of_step
        return obs_idx, obs_idx + 1


def validate(path: str | os.PathLike) -> dict[str, Any]:
    """Check a file completely except image pixels; return its decoded root attrs.

    Raises DatasetFormatError (naming the file and the key) for: not HDF5 or truncated,
    unknown format name, a version newer than FORMAT_VERSION, missing keys, wrong dtype or
    rank, lengths that do not add up, non-finite rewards/actions, a step both terminal and
    timeout, or a terminal/timeout flag before an episode's last step.
    """
    with _open(path) as f:
        return _check_file(f, str(path))["attrs"]


def read_episodes(path: str | os.PathLike, tasks: TaskList | None = None,
                  exclude_tasks: TaskList | None = None,
                  observation_keys: Sequence[str] | None = None,
                  actions: ActionFix = "error") -> EpisodeDataset:
    """Validate and load a file, keeping episodes whose (target, distractor) is in ``tasks``
    (all if None) and not in ``exclude_tasks`` (e.g. the held-out fine-tuning task).

    ``observation_keys`` loads only some observation datasets (e.g. skip images for a
    state-based run). Every observation dataset is read with one slice per run of
    consecutive kept episodes (one read in total when nothing is filtered). Actions outside
    [-1, 1] (the episode contract) are refused naming the file's row, unless ``actions`` is
    "clip" or "rescale"; observations constant in every loaded key are refused
    (data/suspicious.py).
    """
    with _open(path) as f:
        small = _check_file(f, str(path))
        small["actions"], _ = checked_actions(small["actions"], actions, str(path), "actions")
        keep = _task_mask(small["task"], tasks, exclude_tasks, str(path))
        names = _selected_obs(f, observation_keys, str(path))
        obs_runs = _row_runs(keep, small["obs_start"], small["length"] + 1)
        obs = {name: _read_runs(f[name], obs_runs, str(path)) for name in names}
    check_not_constant(obs, str(path))
    length = small["length"][keep]
    step_mask = np.repeat(keep, small["length"])
    return EpisodeDataset(
        path=str(path),
        observations=(obs["observations"] if "observations" in obs
                      else {n.removeprefix("observations/"): v for n, v in obs.items()}),
        **{key: small[key][step_mask] for key in STEP_DTYPES},
        length=length, obs_start=_starts(length + 1), step_start=_starts(length),
        task=small["task"][keep], seed=small["seed"][keep], success=small["success"][keep],
        attrs=small["attrs"])


def _open(path: str | os.PathLike) -> h5py.File:
    """Open read-only; h5py's OSError (not HDF5, truncated) becomes a DatasetFormatError."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such dataset file")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise DatasetFormatError(str(path), "/", f"not a readable HDF5 file "
                                 f"(truncated, or not HDF5): {err}") from err


def _read(ds: h5py.Dataset, path: str) -> np.ndarray:
    """Read a whole dataset in one call; a corrupt chunk names the file and the key."""
    try:
        return ds[...]
    except OSError as err:
        raise DatasetFormatError(path, ds.name.lstrip("/"), f"unreadable data: {err}") from err


def _check_file(f: h5py.File, path: str) -> dict[str, Any]:
    """Structure, sizes and values of everything except observations' contents; returns
    the small arrays (steps, episode metadata) and the decoded attrs."""
    attrs = _check_attrs(f, path)
    small = {key: _read(_dataset(f, key, path, dtype, STEP_NDIM[key]), path)
             for key, dtype in STEP_DTYPES.items()}
    small.update({key: _read(_dataset(f, f"episodes/{key}", path, dtype, ndim), path)
                  for key, (dtype, ndim) in EPISODE_DTYPES.items()})
    _check_sizes(f, small, path)
    check_step_values(small["rewards"], small["actions"], small["terminals"], small["timeouts"],
                      small["length"], path)
    return {**small, "attrs": attrs}


def _check_attrs(f: h5py.File, path: str) -> dict[str, Any]:
    """Format name and version first (so a foreign file fails by name), then JSON attrs."""
    name = f.attrs.get("format_name")
    if name != FORMAT_NAME:
        raise DatasetFormatError(path, "format_name", f"expected '{FORMAT_NAME}', got {name!r} "
                                 "(not a calql-robot episode file?)")
    version = f.attrs.get("format_version")
    if not isinstance(version, (int, np.integer)) or version < 1:
        raise DatasetFormatError(path, "format_version", f"expected a positive integer, "
                                 f"got {version!r}")
    if version > FORMAT_VERSION:
        raise DatasetFormatError(path, "format_version", f"file has version {version}, newer "
                                 f"than this reader supports ({FORMAT_VERSION}); update the code")
    attrs: dict[str, Any] = {"format_name": name, "format_version": int(version)}
    for key, value in f.attrs.items():
        if key in attrs:
            continue
        try:
            attrs[key] = json.loads(value)
        except (TypeError, ValueError) as err:
            raise DatasetFormatError(path, key, f"attribute is not a JSON string: {err}") from err
    return attrs


def _dataset(f: h5py.File, key: str, path: str, dtype: np.dtype, ndim: int) -> h5py.Dataset:
    """The dataset at ``key`` with exactly this dtype and rank, or a named error."""
    ds = f.get(key)
    if not isinstance(ds, h5py.Dataset):
        raise DatasetFormatError(path, key, "missing dataset" if ds is None else "not a dataset")
    if ds.dtype != dtype:
        raise DatasetFormatError(path, key, f"expected dtype {dtype}, got {ds.dtype}")
    if ds.ndim != ndim:
        raise DatasetFormatError(path, key, f"expected ndim {ndim}, got shape {ds.shape}")
    return ds


def _obs_datasets(f: h5py.File, path: str) -> dict[str, h5py.Dataset]:
    """``observations`` as one dataset, or a group of datasets (no nested groups)."""
    obs = f.get("observations")
    if obs is None:
        raise DatasetFormatError(path, "observations", "missing dataset or group")
    if isinstance(obs, h5py.Dataset):
        return {"observations": obs}
    items = {f"observations/{k}": v for k, v in obs.items()}
    bad = [k for k, v in items.items() if not isinstance(v, h5py.Dataset) or v.ndim < 1]
    if not items or bad:
        raise DatasetFormatError(path, bad[0] if bad else "observations",
                                 "expected datasets with one row per frame")
    return items


def _check_sizes(f: h5py.File, small: dict[str, np.ndarray], path: str) -> None:
    """Row counts agree with the episode lengths and the boundaries are the cumulative sums."""
    length = small["length"]
    if length.size == 0 or length.min() < 1:
        raise DatasetFormatError(path, "episodes/length", "expected >= 1 episode, each T >= 1")
    for key, dtype_ndim in EPISODE_DTYPES.items():
        shape = small[key].shape
        if shape[0] != len(length) or (key == "task" and shape[1:] != (2,)):
            raise DatasetFormatError(path, f"episodes/{key}", f"shape {shape} does not match "
                                     f"{len(length)} episodes")
    steps = int(length.sum())
    for key in STEP_DTYPES:
        if len(small[key]) != steps:
            raise DatasetFormatError(path, key, f"{len(small[key])} rows, but episodes/length "
                                     f"sums to {steps}")
    for name, ds in _obs_datasets(f, path).items():
        if ds.shape[0] != steps + len(length):
            raise DatasetFormatError(path, name, f"{ds.shape[0]} rows, but episodes need "
                                     f"sum(T+1) = {steps + len(length)}")
    for key, sizes in (("obs_start", length + 1), ("step_start", length)):
        if not np.array_equal(small[key], _starts(sizes)):
            raise DatasetFormatError(path, f"episodes/{key}", "not the cumulative sum of "
                                     "episodes/length: episodes must be stored back to back")


def _task_mask(task: np.ndarray, tasks: TaskList | None, exclude: TaskList | None,
               path: str) -> np.ndarray:
    """Episodes to keep; asking for a task the file does not hold is an error, not empty."""
    keep = np.ones(len(task), dtype=bool)
    if tasks is not None:
        wanted = np.asarray(tasks, dtype=np.int64).reshape(-1, 2)
        match = (task[:, None, :] == wanted[None]).all(-1)
        absent = wanted[~match.any(0)]
        if absent.size:
            raise ValueError(f"{path}: tasks {absent.tolist()} not in the file; it holds "
                             f"{np.unique(task, axis=0).tolist()}")
        keep &= match.any(1)
    if exclude is not None:
        unwanted = np.asarray(exclude, dtype=np.int64).reshape(-1, 2)
        keep &= ~(task[:, None, :] == unwanted[None]).all(-1).any(1)
    if not keep.any():
        raise ValueError(f"{path}: no episodes left after task filtering")
    return keep


def _selected_obs(f: h5py.File, keys: Sequence[str] | None, path: str) -> list[str]:
    names = list(_obs_datasets(f, path))
    if keys is None:
        return names
    if names == ["observations"]:
        raise ValueError(f"{path}: observations are one array; observation_keys must be None")
    chosen = [f"observations/{k}" for k in keys]
    unknown = [n for n in chosen if n not in names]
    if unknown:
        raise ValueError(f"{path}: unknown observation keys {unknown}; the file has {names}")
    return chosen


def _row_runs(keep: np.ndarray, start: np.ndarray, size: np.ndarray) -> np.ndarray:
    """(R, 2) row ranges [a, b) covering maximal runs of consecutive kept episodes."""
    edges = np.diff(np.concatenate([[0], keep.astype(np.int8), [0]]))
    first, stop = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return np.stack([start[first], start[stop - 1] + size[stop - 1]], axis=1)


def _read_runs(ds: h5py.Dataset, runs: np.ndarray, path: str) -> np.ndarray:
    """Read row ranges into one preallocated array with one ``read_direct`` per range."""
    out = np.empty((int((runs[:, 1] - runs[:, 0]).sum()), *ds.shape[1:]), dtype=ds.dtype)
    pos = 0
    try:
        for a, b in runs:
            ds.read_direct(out, np.s_[a:b], np.s_[pos:pos + b - a])
            pos += b - a
    except OSError as err:
        raise DatasetFormatError(path, ds.name.lstrip("/"), f"unreadable data: {err}") from err
    return out
