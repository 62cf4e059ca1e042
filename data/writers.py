"""Writers of the three foreign layouts (D4RL HDF5, Minari, AWAC pickle) from episode dicts.

The real datasets cannot be downloaded here, so ``scripts/make_test_datasets.py`` rolls out
policies in the real environments and writes them in each real layout with these functions;
the readers are then tested on files laid out exactly as users' files are.

Input episodes are dicts with ``observations`` ((T+1, ...) array or dict of such arrays),
``actions (T, A)``, raw ``rewards (T,)``, ``terminals (T,)``, ``timeouts (T,)`` and optionally
``goal_achieved (T,)``. Every writer builds under a temporary name in the target directory
and renames into place, so a crash leaves no half-written dataset.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

__all__ = ["write_awac_npy", "write_d4rl_hdf5", "write_minari"]


def write_d4rl_hdf5(path: str | os.PathLike, episodes: Sequence[Mapping[str, Any]],
                    attrs: Mapping[str, Any] | None = None,
                    next_observations: bool = False) -> None:
    """D4RL layout: one row per step, the final observation of each episode not stored.

    ``observations`` must be arrays here (D4RL files are flat). ``terminals``/``timeouts``
    mark an episode's last row; ``goal_achieved`` becomes ``infos/goal_achieved``;
    ``next_observations=True`` also stores that key (some D4RL files have it).
    """
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("observations", "actions", "rewards",
                                                       "terminals", "timeouts")}
    if next_observations:
        cols["next_observations"] = [np.asarray(ep["observations"], np.float32)[1:]
                                     for ep in episodes]
    goals: list[np.ndarray] = []
    for ep in episodes:
        t = len(ep["rewards"])
        cols["observations"].append(np.asarray(ep["observations"], np.float32)[:t])
        cols["actions"].append(np.asarray(ep["actions"], np.float32))
        cols["rewards"].append(np.asarray(ep["rewards"], np.float32))
        cols["terminals"].append(np.asarray(ep["terminals"], bool))
        cols["timeouts"].append(np.asarray(ep["timeouts"], bool))
        if "goal_achieved" in ep:
            goals.append(np.asarray(ep["goal_achieved"], bool))

    def write(f: h5py.File) -> None:
        for key, parts in cols.items():
            f.create_dataset(key, data=np.concatenate(parts))
        if goals:
            f.create_dataset("infos/goal_achieved", data=np.concatenate(goals))
        for key, value in (attrs or {}).items():
            f.attrs[key] = json.dumps(value)

    _atomic_h5(Path(path), write)


def write_awac_npy(path: str | os.PathLike, episodes: Sequence[Mapping[str, Any]],
                   style: str = "bc") -> None:
    """AWAC demo layout: a pickled object array of per-trajectory dicts.

    ``style="expert"`` mimics ``*2_sparse.npy`` (observations as lists of
    ``{'state_observation': row}`` dicts, one reward more than steps); ``"bc"`` mimics
    ``*_bc_sparse4.npy`` (arrays, rewards and terminals shaped (T, 1)). Raw binary rewards
    ``goal_achieved - 1``.
    """
    trajs = np.empty(len(episodes), dtype=object)
    for i, ep in enumerate(episodes):
        obs = np.asarray(ep["observations"], np.float64)
        reward = np.asarray(ep["goal_achieved"], np.float64) - 1.0
        term = np.asarray(ep["terminals"], bool)
        if style == "expert":
            trajs[i] = {"observations": [{"state_observation": r} for r in obs[:-1]],
                        "next_observations": [{"state_observation": r} for r in obs[1:]],
                        "actions": np.asarray(ep["actions"], np.float64),
                        "rewards": np.append(reward, reward[-1]), "terminals": term,
                        "env_infos": {"goal_achieved": np.asarray(ep["goal_achieved"], bool)}}
        elif style == "bc":
            trajs[i] = {"observations": obs[:-1], "next_observations": obs[1:],
                        "actions": np.asarray(ep["actions"], np.float64),
                        "rewards": reward[:, None], "terminals": term[:, None].astype(np.float64)}
        else:
            raise ValueError(f"write_awac_npy: style must be 'expert' or 'bc', got {style!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, trajs, allow_pickle=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_minari(root: str | os.PathLike, dataset_id: str, episodes: Sequence[Mapping[str, Any]],
                 observation_space: Any, action_space: Any, env_spec: Any = None,
                 eval_env_spec: Any = None) -> Path:
    """Minari layout ``<root>/<id>/data/{main_data.hdf5,metadata.json}`` via minari's storage.

    Uses ``minari.dataset.minari_storage.MinariStorage`` (``minari[hdf5]``; no jax needed),
    so the file is what Minari itself writes. Returns the ``data`` directory.
    """
    from minari.data_collector import EpisodeBuffer
    from minari.dataset.minari_storage import MinariStorage

    final = Path(root).resolve() / dataset_id  # minari storage misjoins relative paths
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        storage = MinariStorage.new(tmp / "data", observation_space=observation_space,
                                    action_space=action_space, env_spec=env_spec,
                                    data_format="hdf5")
        buffers = [EpisodeBuffer(id=i, observations=ep["observations"],
                                 actions=np.asarray(ep["actions"], np.float32),
                                 rewards=np.asarray(ep["rewards"], np.float64),
                                 terminations=np.asarray(ep["terminals"], bool),
                                 truncations=np.asarray(ep["timeouts"], bool), infos={})
                   for i, ep in enumerate(episodes)]
        storage.update_episodes(buffers)
        meta: dict[str, Any] = {"dataset_id": dataset_id, "minari_version": _minari_version()}
        if eval_env_spec is not None:
            meta["eval_env_spec"] = eval_env_spec.to_json()
        storage.update_metadata(meta)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final / "data"


def _minari_version() -> str:
    import minari

    return str(minari.__version__)


def _atomic_h5(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
