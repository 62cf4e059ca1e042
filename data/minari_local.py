"""Reader of Minari datasets from a local root, through ``minari`` if installed, else h5py.

Minari (the successor of D4RL, paired with gymnasium-robotics) stores a dataset id such as
``D4RL/antmaze/medium-diverse-v1`` as ``<root>/<id>/data/main_data.hdf5`` plus
``<root>/<id>/data/metadata.json`` (SPEC section 5). The root is ``--minari-root`` if given,
else ``$MINARI_DATASETS_PATH``, else Minari's default ``~/.minari/datasets``. Each episode is
a group ``episode_<i>`` with ``observations`` (T+1 rows; a dict space is a group, nested dicts
nested groups), ``actions`` (T), ``rewards`` (T), ``terminations`` (T) and ``truncations`` (T).

Dict observations are flattened into one float32 vector by concatenating the leaf arrays in
the order of ``obs_keys``: '/'-joined paths such as ``("achieved_goal", "observation")`` for
AntMaze or ``("observation",)`` for Kitchen. With ``obs_keys=None`` every leaf is used, in
sorted path order (e.g. ``achieved_goal, desired_goal, observation``).

Transition t of an episode goes from row t to row t+1; ``terminals = terminations``,
``timeouts = truncations`` (and the last step of an episode that is neither is a timeout: the
data stop there, which bootstraps like a time-limit cut).
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from data.schema import DatasetFormatError
from data.suspicious import ActionFix, check_action_range, fit_actions
from data.transitions import Transitions, make_transitions

__all__ = ["flatten_obs", "minari_dataset_dir", "read_minari", "read_minari_metadata"]

DEFAULT_ROOT = Path("~/.minari/datasets")
MAIN_FILE = "main_data.hdf5"
METADATA_FILE = "metadata.json"


def minari_dataset_dir(dataset: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """The ``<root>/<id>/data`` directory of a dataset id (or a directory given directly)."""
    direct = Path(dataset)
    for cand in (direct / "data", direct):
        if (cand / MAIN_FILE).is_file():
            return cand
    base = Path(root or os.environ.get("MINARI_DATASETS_PATH") or DEFAULT_ROOT).expanduser()
    path = base / str(dataset) / "data"
    if not (path / MAIN_FILE).is_file():
        raise FileNotFoundError(f"Minari dataset '{dataset}' not found: no {path / MAIN_FILE} "
                                f"(set --minari-root or MINARI_DATASETS_PATH to the root that "
                                f"holds <namespace>/<name>/data/)")
    return path


def read_minari_metadata(data_dir: Path) -> dict[str, Any]:
    """metadata.json of a dataset (env spec, spaces, counts); {} when absent."""
    path = data_dir / METADATA_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise DatasetFormatError(str(path), METADATA_FILE, f"not JSON: {err}") from err


def read_minari(dataset: str | os.PathLike, root: str | os.PathLike | None = None,
                obs_keys: Sequence[str] | None = None, use_minari: bool | None = None,
                actions: ActionFix = "error") -> Transitions:
    """Read a local Minari dataset into :class:`Transitions`.

    ``use_minari=None`` uses the ``minari`` package when it imports, else h5py directly;
    True/False force one path (both give identical arrays; the tests check that). Actions
    outside [-1, 1] are refused naming the episode's key and row, unless ``actions`` is
    "clip" or "rescale" (data/suspicious.py).
    """
    data_dir = minari_dataset_dir(dataset, root)
    src = str(data_dir / MAIN_FILE)
    if use_minari is None:
        try:
            import minari  # noqa: F401
            use_minari = True
        except ImportError:
            use_minari = False
    if use_minari:
        try:
            return _collect(list(_episodes_minari(data_dir)), obs_keys, src, "via minari", actions)
        except Exception as err:  # noqa: BLE001 - re-read with h5py for a precise message
            _collect(_episodes_h5py(Path(src)), obs_keys, src, "via h5py", actions)
            raise DatasetFormatError(src, "/", f"minari could not read it: "
                                     f"{type(err).__name__}: {err}") from err
    return _collect(_episodes_h5py(Path(src)), obs_keys, src, "via h5py", actions)


def _collect(episodes: Any, obs_keys: Sequence[str] | None, src: str,
             how: str, actions: ActionFix = "error") -> Transitions:
    """Concatenate the episodes' transitions (each checked) into one Transitions."""
    parts = {k: [] for k in ("obs", "next", "actions", "rewards", "terms", "touts")}
    keys_used: list[str] | None = None
    for name, ep in episodes:
        obs, keys_used = flatten_obs(ep["observations"], obs_keys, src, f"{name}/observations")
        _append_episode(parts, ep, obs, src, name)
        if actions == "error":
            check_action_range(parts["actions"][-1], src, f"{name}/actions")
    if keys_used is None:
        raise DatasetFormatError(src, "episode_0", "the dataset holds no episodes")
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    cat["actions"], fitted = fit_actions(cat["actions"], actions)
    note = (f"Minari {how}; observations = "
            + (" ++ ".join(keys_used) if keys_used != [""] else "the array as stored"))
    return make_transitions(src, cat["obs"], cat["actions"], cat["rewards"], cat["next"],
                            cat["terms"], cat["touts"], notes=(note, *([fitted] if fitted else [])))


def _append_episode(parts: dict[str, list], ep: Mapping[str, Any], obs: np.ndarray,
                    src: str, name: str) -> None:
    """Check one episode's lengths (T+1 observation rows) and append its transitions."""
    actions = np.asarray(ep["actions"])
    t = actions.shape[0] if actions.ndim else 0
    for key in ("rewards", "terminations", "truncations"):
        if np.asarray(ep[key]).shape[:1] != (t,):
            raise DatasetFormatError(src, f"{name}/{key}", f"{np.asarray(ep[key]).shape[:1]} rows, "
                                     f"but '{name}/actions' has {t}")
    if t < 1 or obs.shape[0] != t + 1:
        raise DatasetFormatError(src, f"{name}/observations", f"{obs.shape[0]} rows, expected "
                                 f"T+1 = {t + 1} (T = {t} actions)")
    if actions.ndim != 2:
        raise DatasetFormatError(src, f"{name}/actions", f"expected (T, A), got {actions.shape}")
    terms = np.asarray(ep["terminations"]).astype(bool)
    touts = np.asarray(ep["truncations"]).astype(bool) & ~terms
    if not (terms[-1] or touts[-1]):
        touts[-1] = True  # the data stop here: a cut, not a termination
    parts["obs"].append(obs[:-1])
    parts["next"].append(obs[1:])
    parts["actions"].append(actions)
    parts["rewards"].append(np.asarray(ep["rewards"]))
    parts["terms"].append(terms)
    parts["touts"].append(touts)


def flatten_obs(obs: Any, obs_keys: Sequence[str] | None, src: str,
                where: str) -> tuple[np.ndarray, list[str]]:
    """(T+1, D) float32 from an array or a nested dict of arrays; also the keys used, in order."""
    if not isinstance(obs, Mapping):
        arr = np.asarray(obs)
        if obs_keys:
            raise DatasetFormatError(src, where, f"observations are one array, but keys "
                                     f"{list(obs_keys)} were asked for")
        return arr.reshape(arr.shape[0], -1).astype(np.float32), [""]
    leaves = dict(_leaves(obs))
    keys = sorted(leaves) if obs_keys is None else list(obs_keys)
    missing = [k for k in keys if k not in leaves]
    if missing:
        raise DatasetFormatError(src, f"{where}/{missing[0]}", f"missing; the observation "
                                 f"dict has {sorted(leaves)}")
    cols = [np.asarray(leaves[k]).reshape(len(leaves[k]), -1) for k in keys]
    rows = {c.shape[0] for c in cols}
    if len(rows) != 1:
        raise DatasetFormatError(src, where, f"observation keys disagree on row counts {rows}")
    return np.concatenate(cols, axis=1).astype(np.float32), keys


def _leaves(obs: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in obs.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _leaves(value, path + "/")
        else:
            yield path, value


def _episodes_h5py(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Episodes straight from main_data.hdf5, in episode-id order."""
    src = str(path)
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DatasetFormatError(src, "/", f"not a readable HDF5 file: {err}") from err
    with f:
        names = [k for k in f if k.startswith("episode_")]
        try:
            names.sort(key=lambda k: int(k.split("_", 1)[1]))
        except ValueError as err:
            raise DatasetFormatError(src, "/", f"bad episode group name: {err}") from err
        for name in names:
            group = f[name]
            ep = {}
            for key in ("observations", "actions", "rewards", "terminations", "truncations"):
                if key not in group:
                    raise DatasetFormatError(src, f"{name}/{key}", "missing dataset")
                ep[key] = _load(group[key])
            yield name, ep


def _load(node: h5py.Dataset | h5py.Group) -> Any:
    if isinstance(node, h5py.Group):
        return {k: _load(v) for k, v in node.items()}
    return node[...]


def _episodes_minari(data_dir: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Episodes through ``minari.MinariDataset`` (the package's own decoding)."""
    import minari

    ds = minari.MinariDataset(data_dir)
    for ep in ds.iterate_episodes():
        yield f"episode_{ep.id}", {"observations": ep.observations, "actions": ep.actions,
                                   "rewards": ep.rewards, "terminations": ep.terminations,
                                   "truncations": ep.truncations}
