"""data/episodes_hdf5.py: exact round trip, atomic writes, one named error per kind of bad file."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from data.episodes_hdf5 import (FORMAT_NAME, FORMAT_VERSION, DatasetFormatError, read_episodes,
                                validate, write_episodes)

TASKS = [(0, 1), (1, 4), (2, 3), (1, 4), (3, 0), (0, 1), (1, 4)]
ATTRS = {"env_config": {"env_id": "PickPlace-v0", "image_size": 16, "camera": [0.1, 2]},
         "collection_config": {"noise": 0.1, "p_wrong": 0.1, "seed": 7}, "note": "synthetic"}


def make_episode(rng: np.random.Generator, length: int, task: tuple[int, int], seed: int,
                 success: bool, image: int = 16) -> dict:
    """Random arrays with the contract's shapes; success ends on a terminal, else a timeout."""
    last = np.zeros(length, dtype=bool)
    last[-1] = True
    rewards = np.zeros(length, dtype=np.float32)
    rewards[-1] = float(success)
    return {
        "observations": {
            "image": rng.integers(0, 256, (length + 1, image, image, 3), dtype=np.uint8),
            "state": rng.standard_normal((length + 1, 10)).astype(np.float32),
            "task": rng.standard_normal((length + 1, 10)).astype(np.float32),
        },
        "actions": rng.uniform(-1, 1, (length, 7)).astype(np.float32),
        "rewards": rewards,
        "terminals": last & success,
        "timeouts": last & (not success),
        "task": np.asarray(task, dtype=np.int64), "seed": seed, "success": success,
    }


@pytest.fixture
def episodes() -> list[dict]:
    rng = np.random.default_rng(0)
    lengths = [3, 40, 17, 1, 25, 40, 9]
    return [make_episode(rng, n, task, seed=100 + i, success=bool(i % 2))
            for i, (n, task) in enumerate(zip(lengths, TASKS))]


@pytest.fixture
def good_file(tmp_path: Path, episodes: list[dict]) -> Path:
    path = tmp_path / "good.hdf5"
    write_episodes(path, episodes, ATTRS)
    return path


def assert_episode_equal(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    assert got["observations"].keys() == want["observations"].keys()
    for key, value in want["observations"].items():
        assert got["observations"][key].dtype == value.dtype
        np.testing.assert_array_equal(got["observations"][key], value)
    for key in ("actions", "rewards", "terminals", "timeouts", "task"):
        assert got[key].dtype == np.asarray(want[key]).dtype, key
        np.testing.assert_array_equal(got[key], want[key])
    assert got["seed"] == want["seed"] and got["success"] == want["success"]
    assert type(got["seed"]) is int and type(got["success"]) is bool


def test_round_trip_is_exact(good_file: Path, episodes: list[dict]) -> None:
    data = read_episodes(good_file)
    assert data.num_episodes == len(episodes)
    for key in ("image", "state", "task"):
        np.testing.assert_array_equal(data.observations[key],
                                      np.concatenate([e["observations"][key] for e in episodes]))
    for key in ("actions", "rewards", "terminals", "timeouts"):
        np.testing.assert_array_equal(getattr(data, key),
                                      np.concatenate([e[key] for e in episodes]))
    np.testing.assert_array_equal(data.length, [len(e["rewards"]) for e in episodes])
    for got, want in zip(data.to_episodes(), episodes, strict=True):
        assert_episode_equal(got, want)
    for key, value in ATTRS.items():
        assert data.attrs[key] == json.loads(json.dumps(value))
    assert data.attrs["format_name"] == FORMAT_NAME
    assert data.attrs["format_version"] == FORMAT_VERSION
    assert data.attrs["num_steps"] == sum(len(e["rewards"]) for e in episodes)
    assert data.attrs["observation_keys"] == ["image", "state", "task"]


def test_success_stats_per_task(good_file: Path, episodes: list[dict]) -> None:
    stats = validate(good_file)["success_stats"]
    assert stats["episodes"] == 7 and stats["successes"] == 3
    per_task = {tuple(row["task"]): row for row in stats["per_task"]}
    assert set(per_task) == set(TASKS)
    # (1, 4) is episodes 1, 3, 6: successes at odd indices 1 and 3
    assert per_task[(1, 4)]["episodes"] == 3 and per_task[(1, 4)]["successes"] == 2
    assert per_task[(1, 4)]["mean_length"] == pytest.approx((40 + 1 + 9) / 3)


def test_layout_frames_once_and_image_chunks(good_file: Path, episodes: list[dict]) -> None:
    steps = sum(len(e["rewards"]) for e in episodes)
    with h5py.File(good_file) as f:
        image = f["observations/image"]
        assert image.shape == (steps + len(episodes), 16, 16, 3)
        assert image.chunks == (64, 16, 16, 3) and image.compression == "gzip"
        assert image.compression_opts == 1
        assert f["actions"].shape == (steps, 7) and f["actions"].compression is None
        np.testing.assert_array_equal(f["episodes/step_start"][...],
                                      np.cumsum([0] + [len(e["rewards"]) for e in episodes])[:-1])


def test_array_observations_and_generator_input(tmp_path: Path, episodes: list[dict]) -> None:
    flat = [{**e, "observations": e["observations"]["state"]} for e in episodes]
    path = tmp_path / "state.hdf5"
    write_episodes(path, (e for e in flat), {})
    data = read_episodes(path)
    assert isinstance(data.observations, np.ndarray) and data.observations.shape[1] == 10
    for got, want in zip(data, flat, strict=True):
        np.testing.assert_array_equal(got["observations"], want["observations"])
        np.testing.assert_array_equal(got["actions"], want["actions"])


def test_transition_rows_never_cross_episodes(good_file: Path, episodes: list[dict]) -> None:
    data = read_episodes(good_file)
    obs_idx, next_idx = data.transition_rows()
    state = data.observations["state"]
    want_s = np.concatenate([e["observations"]["state"][:-1] for e in episodes])
    want_next = np.concatenate([e["observations"]["state"][1:] for e in episodes])
    np.testing.assert_array_equal(state[obs_idx], want_s)
    np.testing.assert_array_equal(state[next_idx], want_next)


# ----------------------------------------------------------------------------- filtering

def test_filter_by_tasks_keeps_order_and_content(good_file: Path, episodes: list[dict]) -> None:
    data = read_episodes(good_file, tasks=[(1, 4), (3, 0)])
    want = [e for e in episodes if tuple(e["task"]) in {(1, 4), (3, 0)}]
    assert data.num_episodes == 4
    for got, ref in zip(data, want, strict=True):
        assert_episode_equal(got, ref)
    assert data.num_steps == sum(len(e["rewards"]) for e in want)
    assert data.observations["image"].shape[0] == data.num_steps + 4


def test_exclude_held_out_task(good_file: Path, episodes: list[dict]) -> None:
    data = read_episodes(good_file, exclude_tasks=[(0, 1), (9, 9)])
    want = [e for e in episodes if tuple(e["task"]) != (0, 1)]
    assert {tuple(t) for t in data.task} == {(1, 4), (2, 3), (3, 0)}
    for got, ref in zip(data, want, strict=True):
        assert_episode_equal(got, ref)


def test_filter_reads_one_slice_per_run(good_file: Path, monkeypatch) -> None:
    """Kept episodes 1..4 and 6 form two runs: two reads per observation dataset, not five."""
    calls = []
    original = h5py.Dataset.read_direct
    monkeypatch.setattr(h5py.Dataset, "read_direct",
                        lambda self, *a, **k: (calls.append(self.name), original(self, *a, **k)))
    read_episodes(good_file, exclude_tasks=[(0, 1)])
    assert sorted(calls) == sorted(2 * ["/observations/image", "/observations/state",
                                        "/observations/task"])
    calls.clear()
    read_episodes(good_file, observation_keys=["state"])
    assert calls == ["/observations/state"]


def test_filter_errors(good_file: Path) -> None:
    with pytest.raises(ValueError, match=r"\[\[4, 4\]\] not in the file"):
        read_episodes(good_file, tasks=[(1, 4), (4, 4)])
    with pytest.raises(ValueError, match="no episodes left"):
        read_episodes(good_file, tasks=[(0, 1)], exclude_tasks=[(0, 1)])
    with pytest.raises(ValueError, match="unknown observation keys"):
        read_episodes(good_file, observation_keys=["depth"])


# ----------------------------------------------------------------------------- atomic writes

def test_failed_write_keeps_existing_file(good_file: Path, episodes: list[dict]) -> None:
    before = good_file.read_bytes()
    bad = dict(episodes[2], actions=episodes[2]["actions"][:, :6])  # wrong action dim
    with pytest.raises(DatasetFormatError, match="episode 2/actions"):
        write_episodes(good_file, iter(episodes[:2] + [bad]), {"x": 1})
    assert good_file.read_bytes() == before
    assert sorted(p.name for p in good_file.parent.iterdir()) == ["good.hdf5"]


def test_crash_mid_stream_leaves_no_partial_file(tmp_path: Path, episodes: list[dict]) -> None:
    def crashing():
        yield episodes[0]
        raise RuntimeError("collector died")

    path = tmp_path / "sub" / "new.hdf5"
    with pytest.raises(RuntimeError, match="collector died"):
        write_episodes(path, crashing(), {})
    assert list(path.parent.iterdir()) == []


@pytest.mark.parametrize("mutate, match", [
    (lambda e: (e["terminals"].__setitem__(-1, True), e["timeouts"].__setitem__(-1, True)),
     "both terminal and timeout"),
    (lambda e: e["rewards"].__setitem__(0, np.nan), "episode 1/rewards.*non-finite"),
    (lambda e: e["terminals"].__setitem__(0, True), "before the end of its episode"),
    (lambda e: e.__setitem__("rewards", e["rewards"].astype(np.float64)), "episode 1/rewards"),
    (lambda e: e["observations"].pop("state"), "keys .* differ from episode 0"),
    (lambda e: e["observations"].__setitem__("image", e["observations"]["image"][1:]),
     "episode 1/observations/image.*T\\+1"),
    (lambda e: e.__setitem__("infos", {}), "unexpected keys \\['infos'\\]"),
    (lambda e: e.__setitem__("seed", 1.5), "episode 1/seed"),
])
def test_writer_refuses_bad_episodes(tmp_path: Path, episodes: list[dict], mutate, match) -> None:
    bad = {**episodes[1], "observations": dict(episodes[1]["observations"]),
           **{k: episodes[1][k].copy() for k in ("rewards", "terminals", "timeouts")}}
    mutate(bad)
    with pytest.raises(DatasetFormatError, match=match):
        write_episodes(tmp_path / "x.hdf5", [episodes[0], bad], {})
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_bad_attrs(tmp_path: Path, episodes: list[dict]) -> None:
    with pytest.raises(ValueError, match="written by write_episodes itself"):
        write_episodes(tmp_path / "x.hdf5", episodes, {"format_version": 3})
    with pytest.raises(ValueError, match="'cfg' is not JSON-serialisable"):
        write_episodes(tmp_path / "x.hdf5", episodes, {"cfg": object()})
    with pytest.raises(DatasetFormatError, match="no episodes"):
        write_episodes(tmp_path / "x.hdf5", [], {})
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- bad files

def _replace(f: h5py.File, key: str, data: np.ndarray) -> None:
    del f[key]
    f.create_dataset(key, data=data)


def _set(key: str, index, value):
    def edit(f: h5py.File) -> None:
        data = f[key][...]
        data[index] = value
        _replace(f, key, data)
    return edit


BAD_FILES = {
    "missing rewards": (lambda f: f.__delitem__("rewards"), "rewards", "missing"),
    "missing length": (lambda f: f.__delitem__("episodes/length"), "episodes/length", "missing"),
    "missing obs": (lambda f: f.__delitem__("observations"), "observations", "missing"),
    "actions f64": (lambda f: _replace(f, "actions", f["actions"][...].astype(np.float64)),
                    "actions", "expected dtype float32, got float64"),
    "terminals int": (lambda f: _replace(f, "terminals", f["terminals"][...].astype(np.int8)),
                      "terminals", "expected dtype bool"),
    "rewards 2d": (lambda f: _replace(f, "rewards", f["rewards"][...][:, None]),
                   "rewards", "expected ndim 1"),
    "task shape": (lambda f: _replace(f, "episodes/task", f["episodes/task"][:, :1]),
                   "episodes/task", "does not match"),
    "lengths vs rows": (_set("episodes/length", 0, 4), "actions", "but episodes/length sums"),
    "obs rows": (lambda f: _replace(f, "observations/state", f["observations/state"][1:]),
                 "observations/state", "need sum\\(T\\+1\\)"),
    "starts": (_set("episodes/obs_start", 1, 5), "episodes/obs_start", "cumulative sum"),
    "newer version": (lambda f: f.attrs.__setitem__("format_version", FORMAT_VERSION + 1),
                      "format_version", "newer than this reader supports"),
    "version str": (lambda f: f.attrs.__setitem__("format_version", "1"),
                    "format_version", "positive integer"),
    "format name": (lambda f: f.attrs.__setitem__("format_name", "d4rl"),
                    "format_name", "got 'd4rl'"),
    "nan reward": (_set("rewards", 5, np.nan), "rewards", "non-finite rows, first at step 5"),
    "inf action": (_set("actions", (7, 2), np.inf), "actions", "first at step 7"),
    "terminal and timeout": (_set("terminals", 2, True), "terminals",
                             "both terminal and timeout"),
    "bad json attr": (lambda f: f.attrs.__setitem__("env_config", "{oops"),
                      "env_config", "not a JSON string"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_file_raises_named_error(good_file: Path, tmp_path: Path, name: str) -> None:
    edit, key, match = BAD_FILES[name]
    bad = tmp_path / "bad.hdf5"
    shutil.copy(good_file, bad)
    with h5py.File(bad, "r+") as f:
        edit(f)
    for load in (validate, read_episodes):
        with pytest.raises(DatasetFormatError, match=match) as info:
            load(bad)
        assert info.value.key == key and info.value.path == str(bad)
        assert str(bad) in str(info.value) and f"'{key}'" in str(info.value)


def test_truncated_and_foreign_files(good_file: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.hdf5"
    truncated.write_bytes(good_file.read_bytes()[: os.path.getsize(good_file) // 2])
    text = tmp_path / "notes.hdf5"
    text.write_text("not an hdf5 file\n")
    for path in (truncated, text):
        with pytest.raises(DatasetFormatError, match="not a readable HDF5 file") as info:
            read_episodes(path)
        assert str(path) in str(info.value)
    with pytest.raises(FileNotFoundError, match="missing.hdf5"):
        validate(tmp_path / "missing.hdf5")
