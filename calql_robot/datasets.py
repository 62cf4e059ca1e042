"""The PTR-style pick-and-place pre-training dataset: task split, collection, caching.

PTR / Cal-QL's visual domain (SIM.md): pre-train offline on scripted, noisy data from many
(target, distractor) tasks, then fine-tune online on one task that was held out of the data.
This module composes `sim.collect.collect_episodes` (the data) with
`data.episodes_hdf5.write_episodes` (the file); `data/` itself never imports `sim/`.

Default split: all 5 x 5 (target, distractor) pairs except the held-out task (0, 1), i.e.
24 pre-training tasks. With `exclude_held_out_target` every task whose target is the held-out
target object is dropped too (20 tasks), so fine-tuning meets a target never picked in the
data - a harder transfer than PTR's, where only the pair is new.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data.episodes_hdf5 import DatasetFormatError, validate, write_episodes

ENV_ID = "PickPlace-v0"
TASKS_PER_CALL = 4
"""Tasks per collect_episodes call: ~180 MB of 64 px frames at 100 episodes per task, and
few enough calls that the workers' start-up (spawned processes) stays negligible."""


@dataclass
class PickPlaceDataConfig:
    """Collect scripted pick-and-place episodes for offline pre-training (PTR-style split)."""

    output: str = "datasets/pickplace_64px.hdf5"
    """HDF5 file to write; reused if it holds data collected with the same settings."""
    episodes_per_task: int = 100
    """Episodes collected for each pre-training (target, distractor) task."""
    held_out_task: tuple[int, int] = (0, 1)
    """(target, distractor) task left out of the data: the online fine-tuning task."""
    exclude_held_out_target: bool = False
    """Also leave out every task whose target is the held-out target object."""
    num_tasks: int | None = None
    """Keep only the first N pre-training tasks of the split (None: all); for small runs."""
    noise: float = 0.1
    """Std of the Gaussian noise on every scripted action dim (SIM.md: PTR used 0.1)."""
    p_wrong: float = 0.1
    """Probability that an episode grasps and bins the distractor instead (a failure)."""
    p_drop: float = 0.1
    """Probability that the gripper opens at a random point of the carry (a failure)."""
    image_size: int = 64
    """Side of the square RGB observation in pixels (COG 48, PTR 128)."""
    seed: int = 0
    """Base seed; episode k of task (i, j) uses a seed derived from (seed, i, j, k)."""
    workers: int = 2
    """Worker processes for collection (does not change the data)."""
    force: bool = False
    """Collect and overwrite even if a matching dataset already exists at --output."""

    def __post_init__(self) -> None:
        if self.episodes_per_task < 1 or self.workers < 1 or self.image_size < 8:
            raise ValueError(f"need episodes_per_task >= 1, workers >= 1, image_size >= 8; "
                             f"got {self}")
        if self.num_tasks is not None and self.num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1 or None, got {self.num_tasks}")


def pretraining_tasks(cfg: PickPlaceDataConfig, num_objects: int = 5) -> list[tuple[int, int]]:
    """The (target, distractor) tasks of the pre-training data, in collection order."""
    held_target, held_distractor = cfg.held_out_task
    if not (0 <= held_target < num_objects and 0 <= held_distractor < num_objects):
        raise ValueError(f"held_out_task {cfg.held_out_task} outside 0..{num_objects - 1}")
    tasks = [(t, d) for t in range(num_objects) for d in range(num_objects)
             if (t, d) != cfg.held_out_task
             and not (cfg.exclude_held_out_target and t == held_target)]
    return tasks[:cfg.num_tasks] if cfg.num_tasks is not None else tasks


def collection_config(cfg: PickPlaceDataConfig) -> dict[str, Any]:
    """What decides the data (stored as the file's ``collection_config`` and compared when a
    cached file is reused); output path, workers and force do not change the episodes."""
    skip = {"output", "workers", "force"}
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in skip}
    fields["tasks"] = [list(t) for t in pretraining_tasks(cfg)]
    fields["policy"] = "sim.scripted.ScriptedPolicy"
    return json.loads(json.dumps(fields))  # tuples -> lists, as read back from the file


def env_config(image_size: int) -> dict[str, Any]:
    """The env the data came from: id, sizes, action meaning, camera and object names."""
    import sim
    from sim import objects

    env = sim.make_pickplace(0, 0, image_size=image_size)
    try:
        base = env.unwrapped
        return json.loads(json.dumps({
            "env_id": ENV_ID, "image_size": image_size,
            "max_episode_steps": sim.MAX_EPISODE_STEPS,
            "observation_space": {k: [list(s.shape), str(s.dtype)]
                                  for k, s in env.observation_space.spaces.items()},
            "action_dim": int(env.action_space.shape[0]),
            "substeps": base.substeps, "action_scale_m": base.action_scale,
            "yaw_scale_rad": base.yaw_scale,
            "camera": {"view_matrix": list(getattr(base, "_view", [])),
                       "projection_matrix": list(getattr(base, "_proj", [])),
                       "renderer": "ER_TINY_RENDERER"},
            "targets": [o.name for o in objects.TARGETS],
            "distractors": [o.name for o in objects.DISTRACTORS],
        }, default=float))
    finally:
        env.close()


def provenance() -> dict[str, Any]:
    """Git commit of the code that collected the data (None outside a git checkout)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "sim", "data",
                                "calql_robot"], cwd=root, capture_output=True, text=True,
                               check=True).stdout.strip() != ""
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit, "git_dirty": dirty}


def _episodes(cfg: PickPlaceDataConfig, tasks: list[tuple[int, int]]) -> Iterator[dict]:
    """Collect a few tasks per call and hand the episodes on as they come: the writer streams
    them to disk, so at most TASKS_PER_CALL tasks' images are in memory. sim.collect derives
    each episode's seed from (seed, task, index), so grouping does not change the data."""
    from sim.collect import collect_episodes

    for first in range(0, len(tasks), TASKS_PER_CALL):
        group = tasks[first:first + TASKS_PER_CALL]
        start = time.perf_counter()
        episodes = collect_episodes(group, cfg.episodes_per_task, noise=cfg.noise,
                                    p_wrong=cfg.p_wrong, p_drop=cfg.p_drop,
                                    image_size=cfg.image_size, seed=cfg.seed,
                                    workers=cfg.workers)
        success = np.array([ep["success"] for ep in episodes]).reshape(len(group), -1)
        print(f"[{first + len(group)}/{len(tasks)} tasks, {time.perf_counter() - start:.1f} s] "
              + ", ".join(f"{task}: {rate:.0%}" for task, rate in zip(group, success.mean(1))),
              flush=True)
        yield from episodes
        del episodes


def collect_pickplace_dataset(cfg: PickPlaceDataConfig) -> Path:
    """Collect the split described by ``cfg`` and write it (atomically) to ``cfg.output``."""
    tasks = pretraining_tasks(cfg)
    attrs = {"env_config": env_config(cfg.image_size), "collection_config": collection_config(cfg),
             "split": {"held_out_task": list(cfg.held_out_task), "pretraining_tasks": tasks},
             "provenance": provenance()}
    path = Path(cfg.output)
    write_episodes(path, _episodes(cfg, tasks), attrs)
    return path


def find_or_create_dataset(cfg: PickPlaceDataConfig) -> Path:
    """Return ``cfg.output`` if it is a valid file collected with the same settings (the
    stored collection and env configs match), else collect it, replacing any old file."""
    path = Path(cfg.output)
    if path.exists() and not cfg.force:
        reason = _mismatch(path, cfg)
        if reason is None:
            print(f"Reusing {path}: it was collected with the same settings.")
            return path
        print(f"Recollecting {path}: {reason}.")
    return collect_pickplace_dataset(cfg)


def _mismatch(path: Path, cfg: PickPlaceDataConfig) -> str | None:
    """Why the file at ``path`` cannot stand for ``cfg`` (None if it can)."""
    try:
        attrs = validate(path)
    except DatasetFormatError as err:
        return f"the existing file is not valid ({err})"
    want = collection_config(cfg)
    have = attrs.get("collection_config", {})
    diff = sorted(k for k in want.keys() | have.keys() if want.get(k) != have.get(k))
    if diff:
        return f"collection settings differ in {diff}"
    if attrs.get("env_config") != env_config(cfg.image_size):
        return "the environment's configuration changed"
    return None


def format_success_table(stats: dict[str, Any]) -> str:
    """Per-task success rates and episode lengths, as stored in the file's success_stats."""
    lines = [f"{'task':>8} {'episodes':>9} {'success':>8} {'mean T':>7}"]
    lines += [f"{str(tuple(row['task'])):>8} {row['episodes']:>9} {row['success_rate']:>8.1%} "
              f"{row['mean_length']:>7.1f}" for row in stats["per_task"]]
    lines.append(f"{'all':>8} {stats['episodes']:>9} {stats['success_rate']:>8.1%} "
                 f"{stats['mean_length']:>7.1f}")
    return "\n".join(lines)
