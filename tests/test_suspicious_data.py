"""Issue 22, suspicious data named: actions outside the action space [-1, 1] stop every
reader (D4RL, Minari, AWAC, the project's HDF5) naming the file, key, row and value, unless
the caller asks to clip or rescale them; observations constant in every dimension are
refused; through the real entry point a hostile file ends in one line whose hint names
the flag."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from data.awac import read_awac
from data.d4rl_hdf5 import read_d4rl_hdf5
from data.episodes_hdf5 import read_episodes, write_episodes
from data.minari_local import read_minari
from data.schema import DatasetFormatError, check_episode
from data.suspicious import ActionRangeError, ConstantObservationsError
from data.writers import write_awac_npy, write_d4rl_hdf5, write_minari
from tests.test_dataset_readers import AWAC_EPISODES, EPISODES
from tests.test_episodes_hdf5 import make_episode

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
ENV.pop("CALQL_DEBUG", None)


def with_action(episodes: list[dict], episode: int, row: int, dim: int, value: float) -> list[dict]:
    """The episodes with one action entry replaced (copies; the shared lists stay as they are)."""
    out = [{**ep, "actions": np.array(ep["actions"], copy=True)} for ep in episodes]
    out[episode]["actions"][row, dim] = value
    return out


# ---------------------------------------------------------------- each reader names the row
def test_d4rl_names_the_files_row(tmp_path: Path) -> None:
    path = tmp_path / "a.hdf5"
    write_d4rl_hdf5(path, with_action(EPISODES, 1, 2, 1, 3.0))  # file row 3 + 2 (episode 0 has 3 rows)
    with pytest.raises(ActionRangeError) as info:
        read_d4rl_hdf5(path)
    assert str(info.value).startswith(f"{path}: 'actions': row 5 holds 3 (dimension 1), outside the action "
                                      "space [-1, 1]; 1 of 9 rows lie outside")


@pytest.mark.parametrize("use_minari", [True, False])
def test_minari_names_the_episode_and_row(tmp_path: Path, use_minari: bool) -> None:
    eps = [{**ep, "observations": {"observation": ep["observations"].astype(np.float64)}}
           for ep in with_action(EPISODES, 2, 1, 0, -2.5)]
    space = gym.spaces.Dict({"observation": gym.spaces.Box(-np.inf, np.inf, (3,), np.float64)})
    write_minari(tmp_path, "test/maze/bad-v0", eps, space, gym.spaces.Box(-1, 1, (2,), np.float32))
    with pytest.raises(ActionRangeError, match=r"main_data\.hdf5: 'episode_2/actions': row 1 holds -2\.5 "):
        read_minari("test/maze/bad-v0", root=tmp_path, use_minari=use_minari)


def test_awac_names_the_trajectory_and_row(tmp_path: Path) -> None:
    path = tmp_path / "pen2_sparse.npy"
    write_awac_npy(path, with_action(AWAC_EPISODES, 2, 4, 1, 1.5), "expert")
    with pytest.raises(ActionRangeError, match=r"pen2_sparse\.npy: '\[2\]/actions': row 4 holds 1\.5 "):
        read_awac(path, trust_pickle=True)


def test_project_hdf5_names_the_row_and_its_writer_refuses(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    eps = [make_episode(rng, 5, (0, 1), i, bool(i % 2)) for i in range(3)]
    bad = {**eps[1], "actions": eps[1]["actions"].copy()}
    bad["actions"][3, 6] = 1.25
    with pytest.raises(DatasetFormatError, match=r"'episode 1/actions': row 3 holds .*outside the action space"):
        check_episode(bad, 1)
    path = tmp_path / "eps.hdf5"
    write_episodes(path, eps, {})
    import h5py

    with h5py.File(path, "a") as f:  # a file written elsewhere, not by this writer
        f["actions"][8, 6] = 1.25
    with pytest.raises(ActionRangeError, match=r"eps\.hdf5: 'actions': row 8 holds 1\.25 \(dimension 6\)"):
        read_episodes(path)
    clipped = read_episodes(path, actions="clip")
    assert clipped.actions[8, 6] == 1.0 and np.abs(clipped.actions).max() == 1.0


# ------------------------------------------------------------------ clip and rescale, by request
@pytest.mark.parametrize("fix", ["clip", "rescale"])
def test_clip_and_rescale_only_when_asked_and_noted(tmp_path: Path, fix: str) -> None:
    path = tmp_path / "a.hdf5"
    write_d4rl_hdf5(path, with_action(EPISODES, 1, 2, 1, 4.0))
    t = read_d4rl_hdf5(path, actions=fix)
    original = read_d4rl_hdf5(tmp_path / "a.hdf5", actions="rescale").actions * 4.0
    row = np.flatnonzero(np.isclose(original[:, 1], 4.0))[0]
    if fix == "clip":
        assert t.actions[row, 1] == 1.0 and any("1 of 9 rows outside [-1, 1] clipped" in n for n in t.notes)
        np.testing.assert_array_equal(np.delete(t.actions, row, 0), np.delete(original, row, 0))
    else:
        assert t.actions[row, 1] == 1.0 and any("divided by 4" in n for n in t.notes)
        np.testing.assert_allclose(t.actions * 4.0, original, rtol=1e-6)
    good = tmp_path / "good.hdf5"
    write_d4rl_hdf5(good, EPISODES)
    assert not any("actions:" in n for n in read_d4rl_hdf5(good, actions=fix).notes), "nothing to fit: no change"


def test_a_recorded_one_passes(tmp_path: Path) -> None:
    path = tmp_path / "a.hdf5"
    write_d4rl_hdf5(path, with_action(EPISODES, 0, 0, 0, np.float32(1.0) + np.float32(1e-7)))
    read_d4rl_hdf5(path)


# ---------------------------------------------------------------------- constant observations
def test_constant_observations_are_refused(tmp_path: Path) -> None:
    eps = [{**ep, "observations": np.full_like(ep["observations"], 0.5)} for ep in EPISODES]
    path = tmp_path / "flat.hdf5"
    write_d4rl_hdf5(path, eps)
    with pytest.raises(ConstantObservationsError, match=r"flat\.hdf5: 'observations': all 7 rows equal row 0 "
                                                        r"\(\[0\.5, 0\.5, 0\.5\]\): constant in every dimension"):
        read_d4rl_hdf5(path)
    rng = np.random.default_rng(1)
    frozen = []
    for i in range(2):
        ep = make_episode(rng, 4, (0, 1), i, False)
        ep["observations"] = {k: np.broadcast_to(v[:1], v.shape).copy() for k, v in ep["observations"].items()}
        frozen.append(ep)
    frozen[1]["observations"] = frozen[0]["observations"]
    write_episodes(tmp_path / "frozen.hdf5", frozen, {})
    with pytest.raises(ConstantObservationsError, match="'observations': all 10 rows equal row 0"):
        read_episodes(tmp_path / "frozen.hdf5")


# ---------------------------------------------------------------------- the real entry point
def antmaze_file(path: Path, bad: float | None) -> int:
    """A D4RL-layout AntMaze file (29-d observations, 8-d actions); `bad` goes into file row
    13, whose number is returned."""
    rng = np.random.default_rng(0)
    eps = []
    for i in range(2):
        ep = {"observations": rng.standard_normal((11, 29)).astype(np.float32),
              "actions": rng.uniform(-1, 1, (10, 8)).astype(np.float32), "rewards": np.zeros(10, np.float32),
              "terminals": np.zeros(10, bool), "timeouts": np.zeros(10, bool)}
        ep["timeouts"][-1] = True
        eps.append(ep)
    if bad is not None:
        eps[1]["actions"][3, 2] = bad
    write_d4rl_hdf5(path, eps)
    return 13


def test_unnormalised_actions_stop_the_run_in_one_line_naming_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "antmaze-umaze-v2.hdf5"
    row = antmaze_file(path, 3.0)
    proc = subprocess.run([sys.executable, "train_state.py", "--task", "antmaze-umaze", "--dataset", str(path),
                           "--run.no-progress", "--run.run-dir", str(tmp_path / "run")], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {path}: 'actions': row {row} holds 3 (dimension 2), outside the action space "
                      "[-1, 1]; 1 of 20 rows lie outside, |a| up to 3: unnormalised actions?"], proc.stderr
    assert "hint: if that is how the data are meant, pass --out-of-range-actions clip" in proc.stderr
    assert "--out-of-range-actions rescale" in proc.stderr


def test_the_flag_reaches_the_reader() -> None:
    from calql_robot.cli import parse_state_cli, parse_visual_cli

    cfg = parse_state_cli(["--task", "antmaze-umaze", "--out-of-range-actions", "rescale"])
    assert cfg.out_of_range_actions == "rescale" and parse_state_cli(["--task", "pen"]).out_of_range_actions == "error"
    assert parse_visual_cli(["--out-of-range-actions", "clip"]).out_of_range_actions == "clip"


def test_a_clipped_file_loads_for_its_task(tmp_path: Path) -> None:
    from calql_robot.domains.registry import load_task_dataset

    path = tmp_path / "antmaze-umaze-v2.hdf5"
    antmaze_file(path, -3.0)
    data, _ = load_task_dataset("antmaze-umaze", str(path), actions="clip")
    assert data.actions.min() == -1.0 and any("clipped" in n for n in data.notes)


def test_inspect_dataset_takes_the_same_option(tmp_path: Path) -> None:
    from calql_robot.dataset_info import inspect

    path = tmp_path / "a.hdf5"
    write_d4rl_hdf5(path, with_action(EPISODES, 1, 2, 1, 4.0))
    with pytest.raises(ActionRangeError, match="row 5 holds 4"):
        inspect(str(path))
    assert any("divided by 4" in n for n in inspect(str(path), actions="rescale")["notes"])
