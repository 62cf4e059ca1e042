"""EpisodeReplayBuffer.add_episode_arrays: the bulk loader equals add_episodes, frames once."""
import numpy as np
import pytest

from data.replay import BufferFullError, EpisodeReplayBuffer
from tests.test_replay import GAMMA, PIXEL_SPEC, make_episode

SMALL_SPEC = {"image": ((8, 8, 3), np.uint8), "state": ((10,), np.float32),
              "task": ((10,), np.float32)}


def flat(episodes):
    """Concatenate episode dicts the way EpisodeDataset keeps them (T_i + 1 rows each)."""
    cat = {k: np.concatenate([ep[k] for ep in episodes]) for k in
           ("actions", "rewards", "terminals", "timeouts")}
    cat["observations"] = {k: np.concatenate([ep["observations"][k] for ep in episodes])
                           for k in episodes[0]["observations"]}
    cat["lengths"] = np.array([len(ep["rewards"]) for ep in episodes])
    return cat


def episodes(rng, lengths, spec=SMALL_SPEC):
    out = []
    for i, t in enumerate(lengths):
        ep = make_episode(rng, t, spec, action_dim=7, terminal=i % 2 == 0, start=100.0 * i)
        ep["rewards"] = (ep["rewards"] > 0).astype(np.float32)
        out.append(ep)
    return out


def test_bulk_equals_add_episodes_with_reward_transform_and_failure_rule():
    rng = np.random.default_rng(0)
    eps = episodes(rng, [5, 1, 7, 3])
    eps[1]["rewards"][:] = 0.0  # an all-failure trajectory: G = r_neg' / (1 - gamma)
    ref = EpisodeReplayBuffer(SMALL_SPEC, 7, 16, obs_capacity=20)
    ref.add_episodes(eps, GAMMA, failure_reward=0.0, reward_scale=10.0, reward_bias=-5.0)
    bulk = EpisodeReplayBuffer(SMALL_SPEC, 7, 16, obs_capacity=20)
    bulk.add_episode_arrays(**flat(eps), gamma=GAMMA, failure_reward=0.0, reward_scale=10.0,
                            reward_bias=-5.0)
    a, b = ref.state_dict(), bulk.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        if hasattr(a[key], "numpy"):
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy(), err_msg=key)
        else:
            assert a[key] == b[key], key
    assert bulk.num_episodes == 4 and len(bulk) == 16 and bulk.num_obs_rows == 20
    # the all-failure episode's return is the failure value r_neg'/(1-gamma) = -5/0.01
    np.testing.assert_allclose(b["mc_returns"].numpy()[5], -5.0 / (1 - GAMMA), rtol=1e-5)


def test_bulk_frames_once_next_obs_is_next_row_and_memory():
    rng = np.random.default_rng(1)
    eps = episodes(rng, [40, 40, 40], PIXEL_SPEC)
    buf = EpisodeReplayBuffer(PIXEL_SPEC, 7, 120, obs_capacity=123)
    buf.add_episode_arrays(**flat(eps), gamma=GAMMA)
    assert buf.num_obs_rows == 123  # T+1 rows per episode, never 2T
    batch = buf.sample_indices(np.arange(120))
    want_next = np.concatenate([ep["observations"]["image"][1:] for ep in eps])
    np.testing.assert_array_equal(batch["next_observations"]["image"], want_next)
    frame = 64 * 64 * 3
    vectors = 4 * 20 + 8 + 4 * 7 + 4 + 4 + 1 + 1
    assert buf.bytes_per_transition <= 1.1 * (frame + vectors)


def test_bulk_rejects_bad_lengths_and_flags_by_name():
    rng = np.random.default_rng(2)
    data = flat(episodes(rng, [3, 4]))
    buf = EpisodeReplayBuffer(SMALL_SPEC, 7, 16)
    with pytest.raises(ValueError, match="'rewards' must have shape"):
        buf.add_episode_arrays(**{**data, "lengths": np.array([3, 5])}, gamma=GAMMA)
    with pytest.raises(ValueError, match="observations/image"):
        bad_obs = {**data["observations"], "image": data["observations"]["image"][:-1]}
        buf.add_episode_arrays(**{**data, "observations": bad_obs}, gamma=GAMMA)
    term = data["terminals"].copy()
    term[0] = True
    with pytest.raises(ValueError, match="step 0 is terminal"):
        buf.add_episode_arrays(**{**data, "terminals": term}, gamma=GAMMA)
    with pytest.raises(ValueError, match="'lengths'"):
        buf.add_episode_arrays(**{**data, "lengths": np.array([], np.int64)}, gamma=GAMMA)
    assert len(buf) == 0
    small = EpisodeReplayBuffer(SMALL_SPEC, 7, 5)
    with pytest.raises(BufferFullError):
        small.add_episode_arrays(**data, gamma=GAMMA)
    assert len(small) == 0 and small.num_obs_rows == 0
