"""EpisodeReplayBuffer: frames stored once, terminals vs timeouts, memory, checkpoints, errors."""
import io

import numpy as np
import pytest
import torch

from data.replay import BufferFullError, EpisodeReplayBuffer
from data.returns import mc_returns, trajectory_ends

GAMMA = 0.99
PIXEL_SPEC = {"image": ((64, 64, 3), np.uint8), "state": ((10,), np.float32),
              "task": ((10,), np.float32)}


def make_episode(rng, t, spec=PIXEL_SPEC, action_dim=4, terminal=True, start=0.0):
    """Episode dict with distinct rows: state[:, 0] counts rows from ``start``."""
    if isinstance(spec, dict):
        obs = {}
        for k, (shape, dtype) in spec.items():
            if np.dtype(dtype) == np.uint8:
                obs[k] = rng.integers(0, 256, size=(t + 1, *shape), dtype=np.uint8)
            else:
                obs[k] = rng.normal(size=(t + 1, *shape)).astype(dtype)
        obs["state"][:, 0] = start + np.arange(t + 1)
    else:
        obs = rng.normal(size=(t + 1, *spec[0])).astype(np.float32)
        obs[:, 0] = start + np.arange(t + 1)
    flags = np.zeros(t, bool)
    flags[-1] = True
    return {"observations": obs,
            "actions": rng.uniform(-1, 1, size=(t, action_dim)).astype(np.float32),
            "rewards": rng.normal(size=t).astype(np.float32),
            "terminals": flags.copy() if terminal else np.zeros(t, bool),
            "timeouts": np.zeros(t, bool) if terminal else flags.copy()}


def add(buf, ep):
    ends = trajectory_ends(ep["terminals"], ep["timeouts"])
    buf.add_episode(ep["observations"], ep["actions"], ep["rewards"], ep["terminals"],
                    ep["timeouts"], mc_returns(ep["rewards"], ends, GAMMA))


def test_frames_stored_once_and_next_obs_is_the_row_after():
    rng = np.random.default_rng(0)
    buf = EpisodeReplayBuffer(PIXEL_SPEC, 4, capacity=200)
    eps = [make_episode(rng, t, start=100 * i) for i, t in enumerate([40, 1, 7])]
    for ep in eps:
        add(buf, ep)
    assert len(buf) == 48 and buf.num_episodes == 3
    assert buf.num_obs_rows == 48 + 3  # T+1 rows per episode, never 2T
    np.testing.assert_array_equal(buf.next_idx, buf.obs_idx + 1)
    batch = buf.sample_indices(np.arange(48))
    obs_all = {k: np.concatenate([ep["observations"][k][:-1] for ep in eps]) for k in PIXEL_SPEC}
    nxt_all = {k: np.concatenate([ep["observations"][k][1:] for ep in eps]) for k in PIXEL_SPEC}
    for k in PIXEL_SPEC:
        np.testing.assert_array_equal(batch["observations"][k], obs_all[k])
        np.testing.assert_array_equal(batch["next_observations"][k], nxt_all[k])
    assert batch["observations"]["image"].dtype == np.uint8
    np.testing.assert_array_equal(batch["actions"], np.concatenate([e["actions"] for e in eps]))


def test_sample_is_uniform_batch_with_contract_dtypes():
    rng = np.random.default_rng(1)
    buf = EpisodeReplayBuffer(((5,), np.float32), 2, capacity=100)
    add(buf, make_episode(rng, 30, spec=((5,), np.float32), action_dim=2))
    batch = buf.sample(4096, np.random.default_rng(2))
    assert batch["observations"].shape == (4096, 5)
    assert batch["actions"].shape == (4096, 2)
    for key in ("rewards", "dones", "mc_returns"):
        assert batch[key].shape == (4096,) and batch[key].dtype == np.float32
    np.testing.assert_array_equal(batch["next_observations"][:, 0],
                                  batch["observations"][:, 0] + 1)
    counts = np.bincount(batch["observations"][:, 0].astype(int), minlength=30)
    assert counts.min() > 0.5 * 4096 / 30  # every transition drawn, roughly equally
    again = buf.sample(4096, np.random.default_rng(2))
    np.testing.assert_array_equal(again["actions"], batch["actions"])


def test_dones_are_terminals_only_timeouts_are_not_dones():
    rng = np.random.default_rng(3)
    spec = ((3,), np.float32)
    buf = EpisodeReplayBuffer(spec, 2, capacity=20)
    ep_term = make_episode(rng, 3, spec=spec, action_dim=2, terminal=True)
    ep_tout = dict(make_episode(rng, 3, spec=spec, action_dim=2, terminal=False),
                   rewards=ep_term["rewards"])
    add(buf, ep_term)
    add(buf, ep_tout)
    batch = buf.sample_indices(np.arange(6))
    np.testing.assert_array_equal(batch["dones"], [0, 0, 1, 0, 0, 0])
    # Same rewards: same G, since neither a terminal nor a timeout bootstraps.
    np.testing.assert_array_equal(batch["mc_returns"][:3], batch["mc_returns"][3:])


def test_bytes_per_transition_pixels_t40_within_10_percent():
    rng = np.random.default_rng(4)
    cap = 400
    buf = EpisodeReplayBuffer(PIXEL_SPEC, 4, capacity=cap,
                              obs_capacity=EpisodeReplayBuffer.obs_rows_needed(cap, 40))
    for i in range(10):
        add(buf, make_episode(rng, 40, start=100 * i))
    frame_and_vectors = 64 * 64 * 3 + 2 * 10 * 4 + 4 * 4 + 4 + 4 + 1 + 1
    assert buf.nbytes == buf.bytes_per_transition * len(buf)
    assert abs(buf.bytes_per_transition / frame_and_vectors - 1) < 0.10
    assert buf.bytes_per_transition < 1.5 * 64 * 64 * 3  # a frame stored twice would be 2x


def test_state_dict_round_trip_exact_with_weights_only_load():
    rng = np.random.default_rng(5)
    buf = EpisodeReplayBuffer(PIXEL_SPEC, 4, capacity=100)
    for i, t in enumerate([5, 9]):
        add(buf, make_episode(rng, t, start=100 * i, terminal=bool(i)))
    stream = io.BytesIO()
    torch.save(buf.state_dict(), stream)
    stream.seek(0)
    sd = torch.load(stream, weights_only=True)
    assert sd["obs/image"].shape == (16, 64, 64, 3)  # only the filled part
    other = EpisodeReplayBuffer(PIXEL_SPEC, 4, capacity=100)
    other.load_state_dict(sd)
    assert (len(other), other.num_episodes, other.num_obs_rows) == (14, 2, 16)
    a = buf.sample(64, np.random.default_rng(9))
    b = other.sample(64, np.random.default_rng(9))
    for key in ("actions", "rewards", "dones", "mc_returns"):
        np.testing.assert_array_equal(a[key], b[key])
    for k in PIXEL_SPEC:
        np.testing.assert_array_equal(a["next_observations"][k], b["next_observations"][k])
    add(other, make_episode(rng, 3))  # still usable after loading
    assert len(other) == 17


def test_load_state_dict_refuses_other_spec():
    buf = EpisodeReplayBuffer(((3,), np.float32), 2, capacity=10)
    add(buf, make_episode(np.random.default_rng(0), 2, spec=((3,), np.float32), action_dim=2))
    with pytest.raises(ValueError, match="obs_spec"):
        EpisodeReplayBuffer(((4,), np.float32), 2, capacity=10).load_state_dict(buf.state_dict())
    with pytest.raises(BufferFullError):
        EpisodeReplayBuffer(((3,), np.float32), 2, capacity=1).load_state_dict(buf.state_dict())


def test_full_buffer_raises_and_writes_nothing():
    rng = np.random.default_rng(6)
    spec = ((3,), np.float32)
    buf = EpisodeReplayBuffer(spec, 2, capacity=10)
    add(buf, make_episode(rng, 8, spec=spec, action_dim=2))
    before = buf.state_dict()["actions"].clone()
    with pytest.raises(BufferFullError, match="never overwrites"):
        add(buf, make_episode(rng, 3, spec=spec, action_dim=2))
    assert len(buf) == 8 and buf.num_episodes == 1
    torch.testing.assert_close(buf.state_dict()["actions"], before)
    small_rows = EpisodeReplayBuffer(spec, 2, capacity=10, obs_capacity=4)
    with pytest.raises(BufferFullError, match="rows"):
        add(small_rows, make_episode(rng, 4, spec=spec, action_dim=2))


@pytest.mark.parametrize("key, value, match", [
    ("rewards", lambda ep: np.r_[ep["rewards"][:-1], np.nan], "rewards.*NaN"),
    ("actions", lambda ep: ep["actions"][:, :3], "actions.*shape"),
    ("terminals", lambda ep: ep["terminals"][:-1], "terminals.*shape"),
    ("observations", lambda ep: {**ep["observations"], "state": ep["observations"]["state"][1:]},
     "observations/state.*shape"),
    ("observations", lambda ep: {**ep["observations"],
                                 "image": ep["observations"]["image"].astype(np.float32)},
     "observations/image.*dtype"),
    ("observations", lambda ep: {"image": ep["observations"]["image"]}, "keys"),
])
def test_bad_episode_errors_name_the_key(key, value, match):
    rng = np.random.default_rng(7)
    buf = EpisodeReplayBuffer(PIXEL_SPEC, 4, capacity=50)
    ep = make_episode(rng, 5)
    ep[key] = value(ep)
    with pytest.raises(ValueError, match=match):
        buf.add_episode(ep["observations"], ep["actions"], ep["rewards"], ep["terminals"],
                        ep["timeouts"], np.zeros(5, np.float32))
    assert len(buf) == 0


def test_add_flat_d4rl_arrays_splits_and_stores_rows_once():
    """Two trajectories in flat arrays, the boundary flagged only by the obs discontinuity."""
    obs = np.array([[0], [1], [2], [10], [11]], np.float32)
    nxt = np.array([[1], [2], [3], [11], [12]], np.float32)
    term = np.zeros(5, bool)
    tout = np.r_[np.zeros(4, bool), True]
    rewards = np.array([1, 1, 1, 2, 2], np.float32)
    ends = trajectory_ends(term, tout, obs, nxt)
    np.testing.assert_array_equal(ends, [0, 0, 1, 0, 1])
    buf = EpisodeReplayBuffer(((1,), np.float32), 1, capacity=10)
    buf.add_flat(obs, np.zeros((5, 1), np.float32), rewards, nxt, term, tout,
                 mc_returns(rewards, ends, GAMMA), ends)
    assert (len(buf), buf.num_episodes, buf.num_obs_rows) == (5, 2, 7)
    batch = buf.sample_indices(np.arange(5))
    np.testing.assert_array_equal(batch["observations"], obs)
    np.testing.assert_array_equal(batch["next_observations"], nxt)
    np.testing.assert_allclose(batch["mc_returns"], [1 + GAMMA + GAMMA ** 2, 1 + GAMMA, 1,
                                                     2 + 2 * GAMMA, 2])
    np.testing.assert_array_equal(batch["dones"], 0)


def test_add_flat_refuses_unsplit_discontinuity():
    obs = np.array([[0], [1], [5]], np.float32)
    nxt = np.array([[1], [2], [6]], np.float32)
    buf = EpisodeReplayBuffer(((1,), np.float32), 1, capacity=10)
    with pytest.raises(ValueError, match=r"next_observations\[1\]"):
        buf.add_flat(obs, np.zeros((3, 1), np.float32), np.zeros(3, np.float32), nxt,
                     np.zeros(3, bool), np.zeros(3, bool), np.zeros(3, np.float32),
                     np.array([False, False, True]))


def test_add_episodes_computes_transformed_returns_once():
    """Raw rewards + (scale, bias) + raw failure reward: AntMaze-style 10r-5, r_neg=0."""
    rng = np.random.default_rng(8)
    spec = ((3,), np.float32)
    fail = make_episode(rng, 4, spec=spec, action_dim=2, terminal=False)
    fail["rewards"] = np.zeros(4, np.float32)
    success = make_episode(rng, 3, spec=spec, action_dim=2, terminal=True)
    success["rewards"] = np.array([0, 0, 1], np.float32)
    success["task"] = np.array([1, 2])  # extra episode keys are ignored
    buf = EpisodeReplayBuffer(spec, 2, capacity=20)
    buf.add_episodes([fail, success], GAMMA, failure_reward=0.0, reward_scale=10.0,
                     reward_bias=-5.0)
    assert (len(buf), buf.num_episodes, buf.num_obs_rows) == (7, 2, 9)
    batch = buf.sample_indices(np.arange(7))
    np.testing.assert_array_equal(batch["rewards"], [-5, -5, -5, -5, -5, -5, 5])
    np.testing.assert_allclose(batch["mc_returns"], [-500] * 4 + [-5.0495, -0.05, 5], rtol=1e-5)
    np.testing.assert_array_equal(batch["dones"], [0, 0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(batch["next_observations"][4:],
                                  success["observations"][1:])


def test_memory_check_refuses_impossible_buffer():
    with pytest.raises(MemoryError, match="GB"):
        EpisodeReplayBuffer({"image": ((1024, 1024, 3), np.uint8)}, 4, capacity=10 ** 9)


def test_bad_obs_spec():
    with pytest.raises(ValueError, match="obs_spec"):
        EpisodeReplayBuffer({"image": (64, np.uint8)}, 4, capacity=10)
