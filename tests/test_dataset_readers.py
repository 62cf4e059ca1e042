"""Data tier: the D4RL HDF5, Minari and AWAC readers on small files with hand-computed answers.

Each layout is written with ``data.writers`` (the Minari one through minari's own storage
code) from hand-made episodes whose observations encode (episode, step), so every boundary,
terminal, timeout and return below can be checked by hand (SPEC sections 2, 4, 5).
"""
from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest

from data.awac import UntrustedPickleError, read_awac
from data.d4rl_hdf5 import read_d4rl_hdf5
from data.minari_local import read_minari
from data.schema import DatasetFormatError
from data.transitions import (binary_success_cut, buffer_from_transitions, check_dims,
                              dataset_summary, returns_of)
from data.writers import write_awac_npy, write_d4rl_hdf5, write_minari

GAMMA = 0.99


def episode(index: int, length: int, end: str, goal: list[int] | None = None) -> dict:
    """Observation row t of episode i is (100 i + t, -t, i): unique and continuous in t."""
    t = np.arange(length + 1, dtype=np.float32)
    obs = np.stack([100 * index + t, -t, np.full_like(t, index)], axis=1)
    ep = {"observations": obs, "actions": np.full((length, 2), 0.1 * index, np.float32),
          "rewards": np.zeros(length, np.float32), "terminals": np.zeros(length, bool),
          "timeouts": np.zeros(length, bool)}
    if end == "terminal":
        ep["terminals"][-1] = True
        ep["rewards"][-1] = 1.0
    elif end == "timeout":
        ep["timeouts"][-1] = True
    if goal is not None:
        ep["goal_achieved"] = np.asarray(goal, bool)
    return ep


EPISODES = [episode(0, 3, "terminal"), episode(1, 4, "timeout"), episode(2, 2, "terminal")]


# ----------------------------------------------------------------------------- D4RL
def test_d4rl_qlearning_semantics_and_boundaries(tmp_path: Path) -> None:
    path = tmp_path / "antmaze-like.hdf5"
    write_d4rl_hdf5(path, EPISODES)
    t = read_d4rl_hdf5(path)
    # 9 rows; qlearning_dataset drops the timeout row (row 6) and the last row (row 8).
    assert len(t) == 7
    np.testing.assert_array_equal(t.observations[:, 0], [0, 1, 2, 100, 101, 102, 200])
    np.testing.assert_array_equal(t.next_observations[:, 0], [1, 2, 100, 101, 102, 103, 201])
    np.testing.assert_array_equal(t.terminals, [0, 0, 1, 0, 0, 0, 0])
    # Cut before the dropped timeout row and at the end of the data: timeouts (bootstrap).
    np.testing.assert_array_equal(t.timeouts, [0, 0, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(t.ends, [0, 0, 1, 0, 0, 1, 1])
    assert t.num_trajectories == 3
    # AntMaze transform 10r-5, failure reward 0 (raw): G by hand.
    rewards, g = returns_of(t, GAMMA, 10.0, -5.0, 0.0)
    np.testing.assert_allclose(rewards, [-5, -5, 5, -5, -5, -5, -5])
    expected = [-5 + GAMMA * (-5 + GAMMA * 5), -5 + GAMMA * 5, 5, -500, -500, -500, -500]
    np.testing.assert_allclose(g, expected, rtol=1e-6)


def test_d4rl_unflagged_boundary_is_split_by_discontinuity(tmp_path: Path) -> None:
    """A file that lost the timeout flag between two episodes (the CORL PR #63 case)."""
    eps = [episode(0, 3, "none"), episode(1, 3, "terminal")]
    path = tmp_path / "noflag.hdf5"
    write_d4rl_hdf5(path, eps, next_observations=True)
    t = read_d4rl_hdf5(path)
    assert len(t) == 5  # only the last row is dropped (qlearning_dataset), no timeout flags
    np.testing.assert_array_equal(t.next_observations[2], [3, -3, 0])  # the true next state
    # Row 2's next row is episode 1's first row: obs jump, so a boundary without a flag.
    np.testing.assert_array_equal(t.ends, [0, 0, 1, 0, 1])
    np.testing.assert_array_equal(t.timeouts, [0, 0, 0, 0, 1])
    assert t.terminals[2] == 0 and t.timeouts[2] == 0
    summary = dataset_summary(t, GAMMA, 1.0, 0.0, None)
    assert summary["discontinuities"] == 1 and summary["trajectories"] == 2
    _, g = returns_of(t, GAMMA, 1.0, 0.0, None)
    np.testing.assert_allclose(g[:3], 0.0)  # no return leaks across the unflagged boundary


def test_d4rl_into_buffer_applies_transform_once(tmp_path: Path) -> None:
    path = tmp_path / "a.hdf5"
    write_d4rl_hdf5(path, EPISODES)
    t = read_d4rl_hdf5(path)
    buf = buffer_from_transitions(t, GAMMA, 10.0, -5.0, 0.0)
    assert len(buf) == 7 and buf.num_episodes == 3
    batch = buf.sample_indices(np.arange(7))
    np.testing.assert_allclose(batch["rewards"], [-5, -5, 5, -5, -5, -5, -5])
    np.testing.assert_array_equal(batch["next_observations"][:, 0], t.next_observations[:, 0])
    np.testing.assert_array_equal(batch["dones"], [0, 0, 1, 0, 0, 0, 0])
    np.testing.assert_allclose(batch["mc_returns"], returns_of(t, GAMMA, 10.0, -5.0, 0.0)[1])


@pytest.mark.parametrize("breakage, key", [
    ("missing_actions", "actions"), ("short_rewards", "rewards"),
    ("nan_obs", "observations"), ("bad_terminals", "terminals")])
def test_d4rl_bad_files_name_file_and_key(tmp_path: Path, breakage: str, key: str) -> None:
    path = tmp_path / "bad.hdf5"
    write_d4rl_hdf5(path, EPISODES)
    with h5py.File(path, "a") as f:
        if breakage == "missing_actions":
            del f["actions"]
        elif breakage == "short_rewards":
            r = f["rewards"][:-1]
            del f["rewards"]
            f["rewards"] = r
        elif breakage == "nan_obs":
            f["observations"][4, 1] = np.nan
        else:
            f["terminals"][...] = False
            del f["terminals"]
            f["terminals"] = np.full(9, 2.0)
    with pytest.raises(DatasetFormatError) as err:
        read_d4rl_hdf5(path)
    msg = str(err.value)
    assert str(path) in msg and f"'{key}'" in msg and "\n" not in msg


def test_wrong_observation_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.hdf5"
    write_d4rl_hdf5(path, EPISODES)
    t = read_d4rl_hdf5(path)
    with pytest.raises(DatasetFormatError, match=r"a\.hdf5: 'observations': 3-d observations, "
                                                 r"but antmaze-umaze expects 29-d"):
        check_dims(t, 29, 8, "antmaze-umaze")


def test_not_hdf5_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "x.hdf5"
    path.write_bytes(b"not hdf5")
    with pytest.raises(DatasetFormatError, match="x.hdf5: '/'"):
        read_d4rl_hdf5(path)


# ----------------------------------------------------------------------------- Minari
def _minari_dataset(root: Path, dataset_id: str = "test/maze/tiny-v0") -> None:
    space = gym.spaces.Dict({"observation": gym.spaces.Box(-np.inf, np.inf, (2,), np.float64),
                             "achieved_goal": gym.spaces.Box(-np.inf, np.inf, (1,), np.float64)})
    eps = [{**ep, "observations": {"observation": ep["observations"][:, :2].astype(np.float64),
                                   "achieved_goal": ep["observations"][:, 2:].astype(np.float64)}}
           for ep in EPISODES]
    write_minari(root, dataset_id, eps, space, gym.spaces.Box(-1, 1, (2,), np.float32))


@pytest.mark.parametrize("use_minari", [True, False])
def test_minari_episodes_flattened_in_key_order(tmp_path: Path, use_minari: bool) -> None:
    _minari_dataset(tmp_path)
    t = read_minari("test/maze/tiny-v0", root=tmp_path, obs_keys=("achieved_goal", "observation"),
                    use_minari=use_minari)
    assert len(t) == 9 and t.num_trajectories == 3  # Minari keeps every step (T+1 obs rows)
    np.testing.assert_array_equal(t.observations[:4], [[0, 0, 0], [0, 1, -1], [0, 2, -2],
                                                       [1, 100, 0]])
    np.testing.assert_array_equal(t.next_observations[2], [0, 3, -3])
    np.testing.assert_array_equal(t.terminals, [0, 0, 1, 0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(t.timeouts, [0, 0, 0, 0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(t.ends, [0, 0, 1, 0, 0, 0, 1, 0, 1])


def test_minari_default_order_and_env_root(tmp_path: Path, monkeypatch) -> None:
    _minari_dataset(tmp_path)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    t = read_minari("test/maze/tiny-v0", use_minari=False)
    np.testing.assert_array_equal(t.observations[3], [1, 100, 0])  # sorted: achieved_goal first
    with pytest.raises(FileNotFoundError, match="MINARI_DATASETS_PATH"):
        read_minari("test/maze/absent-v0")


@pytest.mark.parametrize("use_minari", [True, False])
def test_minari_bad_file_names_key(tmp_path: Path, use_minari: bool) -> None:
    _minari_dataset(tmp_path)
    main = tmp_path / "test/maze/tiny-v0/data/main_data.hdf5"
    with h5py.File(main, "a") as f:
        del f["episode_1/rewards"]
    with pytest.raises(DatasetFormatError, match=r"main_data\.hdf5: 'episode_1/rewards'"):
        read_minari("test/maze/tiny-v0", root=tmp_path, use_minari=use_minari)
    with pytest.raises(DatasetFormatError, match="'episode_0/observations/nope'"):
        read_minari("test/maze/tiny-v0", root=tmp_path, obs_keys=("nope",), use_minari=False)


# ----------------------------------------------------------------------------- AWAC
AWAC_EPISODES = [episode(0, 3, "terminal", [0, 0, 1]),         # success at the end
                 episode(1, 4, "timeout", [0, 0, 0, 0]),        # never: dropped
                 episode(2, 5, "timeout", [0, 1, 0, 1, 0])]     # cut after last success (4 steps)


@pytest.mark.parametrize("style", ["expert", "bc"])
def test_awac_binary_cut(tmp_path: Path, style: str) -> None:
    path = tmp_path / f"pen_{style}.npy"
    write_awac_npy(path, AWAC_EPISODES, style)
    t = read_awac(path, trust_pickle=True)
    assert len(t) == 7
    np.testing.assert_array_equal(t.observations[:, 0], [0, 1, 2, 200, 201, 202, 203])
    np.testing.assert_array_equal(t.rewards, [-1, -1, 0, -1, 0, -1, 0])
    np.testing.assert_array_equal(t.terminals, [0, 0, 1, 0, 1, 0, 1])
    assert not t.timeouts.any()
    np.testing.assert_array_equal(t.ends, [0, 0, 1, 0, 1, 0, 1])
    # Adroit transform 10r+5 (raw {-1,0} -> {-5,+5}), r_neg = -1.
    _, g = returns_of(t, GAMMA, 10.0, 5.0, -1.0)
    np.testing.assert_allclose(g, [-5 + GAMMA * (-5 + GAMMA * 5), -5 + GAMMA * 5, 5,
                                   -5 + GAMMA * 5, 5, -5 + GAMMA * 5, 5], rtol=1e-6)
    assert any("1 of 3 trajectories without success dropped" in n for n in t.notes)


def test_awac_refuses_untrusted_pickle(tmp_path: Path) -> None:
    path = tmp_path / "door2_sparse.npy"
    write_awac_npy(path, AWAC_EPISODES, "expert")
    with pytest.raises(UntrustedPickleError) as err:
        read_awac(path)
    msg = str(err.value)
    assert str(path) in msg and "--trust-pickle" in msg and "\n" not in msg


def test_awac_bad_file_names_key(tmp_path: Path) -> None:
    trajs = np.empty(1, dtype=object)
    trajs[0] = {"observations": np.zeros((3, 4)), "actions": np.zeros((3, 2)),
                "rewards": np.zeros(3)}
    path = tmp_path / "bad.npy"
    np.save(path, trajs, allow_pickle=True)
    with pytest.raises(DatasetFormatError, match=r"bad\.npy: '\[0\]/next_observations': missing"):
        read_awac(path, trust_pickle=True)


def test_d4rl_adroit_goal_achieved_binarised(tmp_path: Path) -> None:
    path = tmp_path / "pen-human.hdf5"
    write_d4rl_hdf5(path, [episode(0, 4, "timeout", [0, 1, 1, 0]), episode(1, 3, "timeout",
                                                                             [0, 0, 0])])
    t = read_d4rl_hdf5(path)
    b = binary_success_cut(t, t.success, "D4RL adroit")
    # Episode 0 keeps rows 0..2 (last success at step 2; row 3 is the dropped timeout row).
    np.testing.assert_array_equal(b.observations[:, 0], [0, 1, 2])
    np.testing.assert_array_equal(b.rewards, [-1, 0, 0])
    np.testing.assert_array_equal(b.terminals, [0, 1, 1])


def test_d4rl_package_path_explains_when_unavailable() -> None:
    from data.d4rl_hdf5 import load_with_d4rl

    try:
        import d4rl  # noqa: F401
    except Exception:  # noqa: BLE001 - the normal case on a modern machine
        with pytest.raises(RuntimeError, match=r"d4rl:antmaze-umaze-v2: the d4rl package cannot "
                                               r"be imported.*Pass the downloaded HDF5 file"):
            load_with_d4rl("antmaze-umaze-v2")
    else:
        pytest.skip("d4rl imports here; the package path is exercised by users only")


def test_bench_data_load_path_small() -> None:
    """bench/data.py's load path on a small file: counts and a positive timing."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_data", Path(__file__).resolve()
                                                  .parents[1] / "bench" / "data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.bench_load(5_000, 1)
    assert out["transitions"] == 5_000 and out["trajectories"] == 5
    assert out["load_1m_s"] > 0 and out["mc_returns_1m_s"] > 0
