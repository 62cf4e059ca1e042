"""The PTR-style pick-and-place pre-training dataset: task split, collection, caching.

PTR / Cal-QL's visual domain (SIM.md): pre-train offline on scripted, noisy data from many
(target, distractor) tasks, then fine-tune online on one task that was held out of the data.
This module composes `sim.collect.collect_episodes` (the data) with
`data.episodes_hdf5.write_episodes` (the file); `data/` itself never imports `sim/`.

Default split: all 5 x 5 (target, distractor) pairs except the held-out task (0, 1), i.e.
24 pre-training tasks. With `exclude_held_out_target` every task whose target is the held-out
target object is dropped too (20 tasks), so fine-tuning meets a target never picked in the
data - a harder transfer than PTR's, where only the pair is new.

With `target_episodes` N > 0 the data also hold N scripted episodes of the held-out task
itself, PTR's setting (Kumar et al. 2022, "Offline RL Enables Learning New Tasks from a
Handful of Trials": multi-task prior data plus a handful of trials of the new task); the
fine-tuning task is then new online but not absent offline.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from calql_robot.run.diskspace import require_free_space
from calql_robot.run.provenance import provenance
from calql_robot.errors import ConfigError, DatasetError, is_no_space, no_space
from data.episodes_hdf5 import DatasetFormatError, validate, write_episodes

ENV_ID = "PickPlace-v0"
CACHE_DIR = Path("datasets")
"""Where generated datasets are cached, each under a name derived from its settings."""
HASH_CHARS = 10
COMPRESSED_FRAME_FRACTION = 8
"""A gzip-1 frame takes ~1/35 of its raw bytes (measured, data/episodes_hdf5.py); the free
space check assumes 1/8, an upper bound for busier scenes."""
NOT_A_DATASET = "the existing file is not a valid dataset"
TASKS_PER_CALL = 4
"""Tasks per collect_episodes call: ~180 MB of 64 px frames at 100 episodes per task, and
few enough calls that the workers' start-up (spawned processes) stays negligible."""


@dataclass
class PickPlaceDataConfig:
    """Collect scripted pick-and-place episodes for offline pre-training (PTR-style split)."""

    output: str | None = None
    """HDF5 file to read or write. None: the cache file datasets/pickplace_<size>px_<hash>.hdf5,
    named by a hash of the collection and env settings, so other settings never replace it.
    A named file is used when it was collected with these settings; otherwise the run stops
    and says what differs (pass --force / --data.force to recollect into it)."""
    episodes_per_task: int = 100
    """Episodes collected for each pre-training (target, distractor) task."""
    held_out_task: tuple[int, int] = (0, 1)
    """(target, distractor) task left out of the pre-training tasks: the online
    fine-tuning task (absent from the data unless `target_episodes` > 0)."""
    target_episodes: int = 0
    """Scripted episodes of the held-out task itself added to the data (PTR's "handful of
    trials" of the new task, collected with the same noise and failure settings); 0: the
    task is absent from the data and fine-tuning starts from zero-shot transfer."""
    exclude_held_out_target: bool = False
    """Also leave out every task whose target is the held-out target object."""
    split: Literal["all", "related"] = "all"
    """'all': every other (target, distractor) pair; 'related': only the pairs that share
    exactly one object with the held-out task (its target with another distractor, another
    target with its distractor), so fine-tuning meets a new combination of seen objects."""
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
    """Collect into the output file even if a file is there, replacing it."""


def check_data_config(cfg: PickPlaceDataConfig, prefix: str = "--data.") -> None:
    """Raise ConfigError naming the flag as typed: `prefix` is "--" for collect_data.py and
    "--data." where the data config is nested (train_visual.py)."""
    def flag(name: str) -> str:
        return prefix + name.replace("_", "-")

    for name, low in (("episodes_per_task", 1), ("target_episodes", 0), ("workers", 1), ("image_size", 8)):
        if getattr(cfg, name) < low:
            raise ConfigError(f"{flag(name)} must be >= {low}, got {getattr(cfg, name)}")
    if cfg.num_tasks is not None and cfg.num_tasks < 1:
        raise ConfigError(f"{flag('num_tasks')} must be >= 1 (or left out for all tasks), got {cfg.num_tasks}")
    if cfg.noise < 0:
        raise ConfigError(f"{flag('noise')} must be >= 0, got {cfg.noise}")
    for name in ("p_wrong", "p_drop"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise ConfigError(f"{flag(name)} must be a probability in [0, 1], got {getattr(cfg, name)}")
    if not all(0 <= int(t) < 5 for t in cfg.held_out_task):
        raise ConfigError(f"{flag('held_out_task')} must be two object indices in 0..4, got "
                          f"{' '.join(map(str, cfg.held_out_task))}")


def pretraining_tasks(cfg: PickPlaceDataConfig, num_objects: int = 5) -> list[tuple[int, int]]:
    """The (target, distractor) tasks of the pre-training data, in collection order."""
    held_target, held_distractor = cfg.held_out_task
    if not (0 <= held_target < num_objects and 0 <= held_distractor < num_objects):
        raise ValueError(f"held_out_task {cfg.held_out_task} outside 0..{num_objects - 1}")
    tasks = [(t, d) for t in range(num_objects) for d in range(num_objects)
             if (t, d) != cfg.held_out_task
             and not (cfg.exclude_held_out_target and t == held_target)
             and (cfg.split == "all" or (t == held_target) != (d == held_distractor))]
    return tasks[:cfg.num_tasks] if cfg.num_tasks is not None else tasks


def collection_config(cfg: PickPlaceDataConfig) -> dict[str, Any]:
    """What decides the data (stored as the file's ``collection_config`` and compared when a
    cached file is reused); output path, workers and force do not change the episodes."""
    skip = ({"output", "workers", "force"} | ({"split"} if cfg.split == "all" else set())
            | ({"target_episodes"} if cfg.target_episodes == 0 else set()))
    # (default split and no target episodes are left out, so files collected before those
    # fields existed still match; any other value changes the cache file's hash)
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


def _collect(cfg: PickPlaceDataConfig, tasks: list[tuple[int, int]], episodes_per_task: int) -> list[dict]:
    """`sim.collect.collect_episodes` with the config's scripted-policy and env settings."""
    from sim.collect import collect_episodes

    return collect_episodes(tasks, episodes_per_task, noise=cfg.noise, p_wrong=cfg.p_wrong, p_drop=cfg.p_drop,
                            image_size=cfg.image_size, seed=cfg.seed, workers=cfg.workers)


def _episodes(cfg: PickPlaceDataConfig, tasks: list[tuple[int, int]]) -> Iterator[dict]:
    """Collect a few tasks per call and hand the episodes on as they come: the writer streams
    them to disk, so at most TASKS_PER_CALL tasks' images are in memory. sim.collect derives
    each episode's seed from (seed, task, index), so grouping does not change the data.
    The held-out task's `target_episodes` come last."""
    for first in range(0, len(tasks), TASKS_PER_CALL):
        group = tasks[first:first + TASKS_PER_CALL]
        start = time.perf_counter()
        episodes = _collect(cfg, group, cfg.episodes_per_task)
        success = np.array([ep["success"] for ep in episodes]).reshape(len(group), -1)
        print(f"[{first + len(group)}/{len(tasks)} tasks, {time.perf_counter() - start:.1f} s] "
              + ", ".join(f"{task}: {rate:.0%}" for task, rate in zip(group, success.mean(1))),
              flush=True)
        yield from episodes
        del episodes
    if cfg.target_episodes > 0:
        task = (int(cfg.held_out_task[0]), int(cfg.held_out_task[1]))
        episodes = _collect(cfg, [task], cfg.target_episodes)
        rate = np.mean([ep["success"] for ep in episodes])
        print(f"[held-out task {task}: {cfg.target_episodes} target episodes] {rate:.0%}", flush=True)
        yield from episodes


def collect_pickplace_dataset(cfg: PickPlaceDataConfig) -> Path:
    """Collect the split described by ``cfg`` and write it (atomically) to its path."""
    tasks = pretraining_tasks(cfg)
    attrs = {"env_config": env_config(cfg.image_size), "collection_config": collection_config(cfg),
             "split": {"held_out_task": list(cfg.held_out_task), "pretraining_tasks": tasks,
                       "target_episodes": cfg.target_episodes},
             "provenance": provenance()}
    path = dataset_path(cfg)
    try:
        write_episodes(path, _episodes(cfg, tasks), attrs)
    except OSError as err:  # h5py reports a full disk as OSError errno 28 without the path
        if is_no_space(err):
            raise no_space(path, f"free some space or pass --data.output on a larger disk; "
                                 f"no partial file was left at {path}") from err
        raise
    return path


def settings_hash(cfg: PickPlaceDataConfig) -> str:
    """Short hash of what decides the data: the collection settings and the env config."""
    key = json.dumps({"collection": collection_config(cfg), "env": env_config(cfg.image_size)}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:HASH_CHARS]


def dataset_path(cfg: PickPlaceDataConfig) -> Path:
    """--output as given, or the cache file named by the settings (see the field's doc)."""
    if cfg.output is not None:
        return Path(cfg.output)
    return CACHE_DIR / f"pickplace_{cfg.image_size}px_{settings_hash(cfg)}.hdf5"


def estimated_bytes(cfg: PickPlaceDataConfig) -> int:
    """Upper bound of the file's size: every frame of full-length episodes, compressed."""
    from sim import MAX_EPISODE_STEPS

    episodes = len(pretraining_tasks(cfg)) * cfg.episodes_per_task + cfg.target_episodes
    frames = episodes * (MAX_EPISODE_STEPS + 1)
    frame = cfg.image_size * cfg.image_size * 3 // COMPRESSED_FRAME_FRACTION
    return frames * (frame + 128) + 2**16  # + state, task, action, reward rows; metadata


def reusable_dataset(cfg: PickPlaceDataConfig, prefix: str = "--data.") -> Path | None:
    """The existing file for ``cfg`` if it matches, None if there is none (or `force` is set);
    a DatasetError saying what differs if a file is there but does not match. Cheap enough
    to call before a run directory is made, so a mismatch leaves nothing behind."""
    path = dataset_path(cfg)
    if not path.exists() or cfg.force:
        return None
    reason = _mismatch(path, cfg)
    if reason is None:
        return path
    named = f"{prefix}output {cfg.output}" if cfg.output is not None else f"the cache file {path}"
    usable = not reason.startswith(NOT_A_DATASET)  # then --dataset could train on it as it is
    raise DatasetError(
        f"{named} does not match these data settings: {reason}",
        f"nothing was changed; pass {prefix}force to recollect into {path} (replacing it), "
        + (f"--dataset {path} to train on it as it is, " if prefix == "--data." and usable else "")
        + f"or another {prefix}output")


def find_or_create_dataset(cfg: PickPlaceDataConfig, prefix: str = "--data.") -> Path:
    """The dataset for ``cfg``: reuse the file if it was collected with the same settings
    (the stored collection and env configs match), else collect it.

    Nothing is replaced implicitly (issue 9): an existing file that does not match stops
    the run with what differs and the flag that would replace it, unless `force` is set.
    `prefix` spells the flags as the calling entry point takes them.
    """
    path = reusable_dataset(cfg, prefix)
    if path is not None:
        print(f"Reusing {path}: it was collected with the same settings.")
        return path
    path = dataset_path(cfg)
    require_free_space(path.parent, estimated_bytes(cfg), f"the dataset {path}",
                       f"free some space or pass {prefix}output on a larger disk")
    return collect_pickplace_dataset(dataclasses.replace(cfg, output=str(path)))


def _mismatch(path: Path, cfg: PickPlaceDataConfig) -> str | None:
    """What differs between the file at ``path`` and ``cfg`` (None if it can stand for it)."""
    try:
        attrs = validate(path)
    except DatasetFormatError as err:
        return f"{NOT_A_DATASET} ({err})"
    want = collection_config(cfg)
    have = attrs.get("collection_config", {})
    diff = sorted(k for k in want.keys() | have.keys() if want.get(k) != have.get(k))
    if diff:
        shown = [k for k in diff if k != "tasks"] or diff
        return (f"collection settings differ in {diff} (file: "
                + ", ".join(f"{k}={have.get(k)!r}" for k in shown) + "; now: "
                + ", ".join(f"{k}={want.get(k)!r}" for k in shown) + ")")
    if attrs.get("env_config") != env_config(cfg.image_size):
        env_have, env_want = attrs.get("env_config") or {}, env_config(cfg.image_size)
        keys = sorted(k for k in env_have.keys() | env_want.keys() if env_have.get(k) != env_want.get(k))
        return f"the environment's configuration changed since it was collected (in {keys})"
    return None


def recorded_settings(path: Path) -> tuple[dict[str, Any], PickPlaceDataConfig | None]:
    """(the file's attributes, the data config it records) of an existing dataset; the
    config is None for a file that does not record its collection settings."""
    try:
        attrs = validate(path)
    except FileNotFoundError as err:
        raise DatasetError(f"--dataset {path}: no such file") from err
    recorded = attrs.get("collection_config")
    if not isinstance(recorded, dict):
        return attrs, None
    names = {f.name for f in dataclasses.fields(PickPlaceDataConfig)}
    fields = {k: v for k, v in recorded.items() if k in names}
    if "held_out_task" in fields:
        fields["held_out_task"] = tuple(fields["held_out_task"])
    return attrs, PickPlaceDataConfig(**fields, output=str(path))


def format_success_table(stats: dict[str, Any]) -> str:
    """Per-task success rates and episode lengths, as stored in the file's success_stats."""
    lines = [f"{'task':>8} {'episodes':>9} {'success':>8} {'mean T':>7}"]
    lines += [f"{str(tuple(row['task'])):>8} {row['episodes']:>9} {row['success_rate']:>8.1%} "
              f"{row['mean_length']:>7.1f}" for row in stats["per_task"]]
    lines.append(f"{'all':>8} {stats['episodes']:>9} {stats['success_rate']:>8.1%} "
                 f"{stats['mean_length']:>7.1f}")
    return "\n".join(lines)
