"""collect_data.py and calql_robot/domains/pickplace_data.py: the task split, --help, a tiny real collection."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from calql_robot.domains.pickplace_data import (PickPlaceDataConfig, _mismatch, check_data_config, collection_config,
                                  format_success_table, pretraining_tasks)
from data.episodes_hdf5 import read_episodes, validate

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "collect_data.py", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_default_split_holds_out_one_task() -> None:
    tasks = pretraining_tasks(PickPlaceDataConfig())
    assert len(tasks) == 24 and (0, 1) not in tasks and len(set(tasks)) == 24
    assert (0, 0) in tasks and (4, 4) in tasks


def test_split_options() -> None:
    no_target = pretraining_tasks(PickPlaceDataConfig(held_out_task=(2, 3),
                                                      exclude_held_out_target=True))
    assert len(no_target) == 20 and all(t != 2 for t, _ in no_target)
    assert pretraining_tasks(PickPlaceDataConfig(num_tasks=3)) == [(0, 0), (0, 2), (0, 3)]
    with pytest.raises(ValueError, match="outside 0..4"):
        pretraining_tasks(PickPlaceDataConfig(held_out_task=(5, 0)))
    with pytest.raises(ValueError, match="--num-tasks must be >= 1"):
        check_data_config(PickPlaceDataConfig(num_tasks=0), prefix="--")
    with pytest.raises(ValueError, match="--data.held-out-task must be two object indices"):
        check_data_config(PickPlaceDataConfig(held_out_task=(5, 0)))


def test_related_split_shares_exactly_one_object_with_the_held_out_task() -> None:
    # worked by hand for held-out (2, 3): (2, d) for d != 3, then (t, 3) for t != 2
    related = pretraining_tasks(PickPlaceDataConfig(held_out_task=(2, 3), split="related"))
    assert related == [(0, 3), (1, 3), (2, 0), (2, 1), (2, 2), (2, 4), (3, 3), (4, 3)]
    only_distractor = pretraining_tasks(PickPlaceDataConfig(held_out_task=(2, 3), split="related",
                                                            exclude_held_out_target=True))
    assert only_distractor == [(0, 3), (1, 3), (3, 3), (4, 3)]
    # the default split is not written into the recorded settings (older files still match)
    assert "split" not in collection_config(PickPlaceDataConfig())
    assert collection_config(PickPlaceDataConfig(split="related"))["split"] == "related"


def test_collection_config_ignores_output_and_workers() -> None:
    a = collection_config(PickPlaceDataConfig(output="a.hdf5", workers=1))
    b = collection_config(PickPlaceDataConfig(output="b.hdf5", workers=2, force=True))
    assert a == b and "output" not in a and a["tasks"][0] == [0, 0]
    assert collection_config(PickPlaceDataConfig(noise=0.2)) != a


def test_target_episodes_are_recorded_only_when_asked_for() -> None:
    # 0 (the default) stays out of the recorded settings, so older cache files still match;
    # any other count is part of them (and of the cache file's hash)
    assert "target_episodes" not in collection_config(PickPlaceDataConfig())
    assert collection_config(PickPlaceDataConfig(target_episodes=5))["target_episodes"] == 5
    with pytest.raises(ValueError, match="--data.target-episodes must be >= 0, got -1"):
        check_data_config(PickPlaceDataConfig(target_episodes=-1))


@pytest.mark.smoke
def test_target_episodes_add_the_held_out_task_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "target.hdf5"
    out = run_cli("--num-tasks", "1", "--episodes-per-task", "1", "--target-episodes", "2",
                  "--image-size", "32", "--workers", "1", "--output", str(path))
    assert out.returncode == 0, out.stderr
    data = read_episodes(path)
    assert [tuple(t) for t in data.task] == [(0, 0), (0, 1), (0, 1)]
    attrs = validate(path)
    assert attrs["split"]["target_episodes"] == 2 and attrs["split"]["pretraining_tasks"] == [[0, 0]]
    assert "2 target episodes" in out.stdout
    assert [tuple(t) for t in read_episodes(path, exclude_tasks=[(0, 1)]).task] == [(0, 0)]


def test_success_table() -> None:
    stats = {"episodes": 4, "success_rate": 0.75, "mean_length": 30.0, "per_task": [
        {"task": [0, 0], "episodes": 2, "success_rate": 0.5, "mean_length": 35.0},
        {"task": [1, 2], "episodes": 2, "success_rate": 1.0, "mean_length": 25.0}]}
    lines = format_success_table(stats).splitlines()
    assert len(lines) == 4 and "(1, 2)" in lines[2] and "100.0%" in lines[2]
    assert lines[3].split()[:3] == ["all", "4", "75.0%"]


def test_help_documents_every_option() -> None:
    out = run_cli("--help")
    assert out.returncode == 0, out.stderr
    for field in dataclasses.fields(PickPlaceDataConfig):
        assert f"--{field.name.replace('_', '-')}" in out.stdout, field.name
    assert "fine-tuning task" in out.stdout


@pytest.mark.smoke
def test_tiny_collection_writes_valid_file_and_is_reused(tmp_path: Path) -> None:
    path = tmp_path / "tiny.hdf5"
    args = ("--num-tasks", "2", "--episodes-per-task", "2", "--image-size", "32",
            "--workers", "1", "--seed", "3", "--output", str(path))
    out = run_cli(*args)
    assert out.returncode == 0, out.stderr
    attrs = validate(path)
    data = read_episodes(path)
    assert data.num_episodes == 4
    assert [tuple(t) for t in data.task] == [(0, 0), (0, 0), (0, 2), (0, 2)]
    assert data.observations["image"].shape[1:] == (32, 32, 3)
    assert data.observations["image"].dtype == np.uint8
    assert data.observations["state"].shape[1:] == (10,)
    assert np.all(data.length <= 40) and np.all(data.terminals | data.timeouts
                                                 == np.isin(np.arange(data.num_steps),
                                                            data.step_start + data.length - 1))
    assert attrs["env_config"]["env_id"] == "PickPlace-v0"
    assert attrs["env_config"]["image_size"] == 32
    assert attrs["collection_config"]["tasks"] == [[0, 0], [0, 2]]
    assert attrs["split"]["held_out_task"] == [0, 1]
    assert "(0, 2)" in out.stdout and "all" in out.stdout
    mtime = path.stat().st_mtime_ns
    again = run_cli(*args)
    assert again.returncode == 0 and "Reusing" in again.stdout, again.stdout + again.stderr
    assert path.stat().st_mtime_ns == mtime
    same = PickPlaceDataConfig(num_tasks=2, episodes_per_task=2, image_size=32, seed=3,
                               output=str(path))
    assert _mismatch(path, same) is None
    assert "['noise']" in _mismatch(path, dataclasses.replace(same, noise=0.3))
    assert "episodes_per_task" in _mismatch(path, dataclasses.replace(same, episodes_per_task=3))
