"""What ``inspect_dataset.py`` reports: a dataset read exactly as a run would read it.

With ``--task`` the file goes through the task's reader, size checks, mapping and reward
transform (calql_robot/domains/registry.py), so the MC-return range printed is the one the
Cal-QL bound will use. Without it the layout's reader is used with the identity transform
and no failure rule. The summary is printed for a person, then as one JSON line.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from data.suspicious import ActionFix
from data.transitions import Transitions, dataset_summary, make_transitions

GAMMA = 0.99


def load_for_inspection(dataset: str, fmt: str = "auto", task: str | None = None,
                        minari_root: str | None = None, trust_pickle: bool = False,
                        actions: ActionFix = "error") -> tuple[Transitions, tuple[float, float, float | None]]:
    """(transitions, (scale, bias, raw failure reward)) for the summary; `actions` as a run's
    `--out-of-range-actions` (data/suspicious.py)."""
    if task is not None and task != "pickplace":
        from calql_robot.domains.registry import TASKS, load_task_dataset
        data, _ = load_task_dataset(task, dataset, fmt, minari_root, trust_pickle, actions)
        r = TASKS[task].reward
        return data, (r.scale, r.bias, r.failure_reward)
    from calql_robot.domains.registry import resolve_format
    kind = "pickplace" if task == "pickplace" else resolve_format(dataset, fmt)
    if kind == "pickplace":
        return read_pickplace(dataset, actions), (1.0, 0.0, 0.0)
    if kind == "d4rl":
        from data.d4rl_hdf5 import load_with_d4rl, read_d4rl_hdf5
        data = (load_with_d4rl(dataset[5:], actions) if dataset.lower().startswith("d4rl:")
                else read_d4rl_hdf5(Path(dataset).expanduser(), actions))
    elif kind == "minari":
        from data.minari_local import read_minari
        data = read_minari(dataset, minari_root, actions=actions)
    elif kind == "awac":
        from data.awac import read_awac
        data = read_awac(Path(dataset).expanduser(), trust_pickle=trust_pickle, actions=actions)
    else:
        raise ValueError(f"unknown --format {fmt!r}")
    return data, (1.0, 0.0, None)


def read_pickplace(path: str, actions: ActionFix = "error") -> Transitions:
    """The project's own episode HDF5 (pick-and-place), images left out (state ++ task)."""
    import h5py

    from data.episodes_hdf5 import read_episodes

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such dataset file")
    with h5py.File(path, "r") as f:
        obs = f.get("observations")
        keys = None if isinstance(obs, h5py.Dataset) else [k for k in obs if k != "image"]
    ds = read_episodes(path, observation_keys=keys, actions=actions)
    rows = (ds.observations if not isinstance(ds.observations, dict)
            else np.concatenate([ds.observations[k].reshape(len(ds.observations[k]), -1)
                                 for k in sorted(ds.observations)], axis=1))
    step_of = np.repeat(ds.obs_start - ds.step_start, ds.length) + np.arange(ds.num_steps)
    success = np.zeros(ds.num_steps, dtype=bool)
    success[(ds.step_start + ds.length - 1)[ds.success]] = True
    note = ("pick-and-place episodes; observations = " + " ++ ".join(sorted(keys))
            + " (images not loaded)") if keys else "pick-and-place episodes"
    return make_transitions(path, rows[step_of], ds.actions, ds.rewards, rows[step_of + 1],
                            ds.terminals, ds.timeouts, success, (note,))


def summary_lines(s: dict[str, Any]) -> list[str]:
    """The human-readable part of the report."""
    rate = "n/a" if s["success_rate"] is None else f"{s['success_rate']:.3f}"
    lines = [f"dataset      {s['source']}",
             f"transitions  {s['transitions']}   trajectories {s['trajectories']} "
             f"(length {s['length_min']}-{s['length_max']})",
             f"terminals    {s['terminals']}   timeouts {s['timeouts']}   unflagged boundaries "
             f"(observation jumps) {s['discontinuities']}",
             f"obs / action {s['obs_dim']} / {s['action_dim']}",
             f"raw reward   [{s['reward_min']:g}, {s['reward_max']:g}]   transform "
             f"{s['reward_transform'][0]:g}*r{s['reward_transform'][1]:+g}",
             f"MC return    [{s['mc_return_min']:.4f}, {s['mc_return_max']:.4f}] (gamma {GAMMA})",
             f"success rate {rate} (trajectories reaching the goal)"]
    lines += [f"mapping      {n}" for n in s["notes"]]
    return lines


def inspect(dataset: str, fmt: str = "auto", task: str | None = None,
            minari_root: str | None = None, trust_pickle: bool = False,
            actions: ActionFix = "error") -> dict[str, Any]:
    data, (scale, bias, fail) = load_for_inspection(dataset, fmt, task, minari_root, trust_pickle, actions)
    s = dataset_summary(data, GAMMA, scale, bias, fail)
    s["task"] = task
    return s


def report(summary: dict[str, Any]) -> str:
    return "\n".join(summary_lines(summary) + [json.dumps(summary, sort_keys=True)])
