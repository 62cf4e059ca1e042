"""Offline/online mixing (SPEC.md section 3): exact counts, one pool, validation."""
import numpy as np
import pytest

from data.mixing import sample_mixed
from data.replay import EpisodeReplayBuffer

SPEC = {"image": ((8, 8, 3), np.uint8), "state": ((2,), np.float32)}


def filled(n_transitions, marker, episode_len=10):
    """Buffer whose state[:, 1] is ``marker`` everywhere, so each row shows its source."""
    buf = EpisodeReplayBuffer(SPEC, 2, capacity=max(n_transitions, 1))
    rng = np.random.default_rng(int(marker) + 10)
    for start in range(0, n_transitions, episode_len):
        t = min(episode_len, n_transitions - start)
        state = np.stack([start + np.arange(t + 1), np.full(t + 1, marker)], 1)
        obs = {"image": rng.integers(0, 256, size=(t + 1, 8, 8, 3), dtype=np.uint8),
               "state": state.astype(np.float32)}
        flags = np.r_[np.zeros(t - 1, bool), True]
        buf.add_episode(obs, np.zeros((t, 2), np.float32), np.full(t, marker, np.float32),
                        flags, np.zeros(t, bool), np.zeros(t, np.float32))
    return buf


OFFLINE, ONLINE = 0.0, 1.0


@pytest.fixture(scope="module")
def buffers():
    return filled(300, OFFLINE), filled(100, ONLINE)


@pytest.mark.parametrize("ratio", [0.0, 0.2, 0.25, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("batch_size", [1, 7, 256])
def test_exact_counts(buffers, ratio, batch_size):
    offline, online = buffers
    batch = sample_mixed(offline, online, batch_size, ratio, np.random.default_rng(0))
    n_off = round(batch_size * ratio)
    assert batch["n_offline"] == n_off
    source = batch["observations"]["state"][:, 1]
    np.testing.assert_array_equal(source[:n_off], OFFLINE)
    np.testing.assert_array_equal(source[n_off:], ONLINE)
    np.testing.assert_array_equal(batch["rewards"], source)  # every key stays aligned
    assert batch["observations"]["image"].shape == (batch_size, 8, 8, 3)
    assert batch["observations"]["image"].dtype == np.uint8
    assert batch["next_observations"]["state"].shape == (batch_size, 2)
    np.testing.assert_array_equal(batch["next_observations"]["state"][:, 0],
                                  batch["observations"]["state"][:, 0] + 1)


def test_empty_online_buffer_gives_all_offline(buffers):
    offline, _ = buffers
    empty = EpisodeReplayBuffer(SPEC, 2, capacity=10)
    batch = sample_mixed(offline, empty, 64, 0.5, np.random.default_rng(1))
    assert batch["n_offline"] == 64
    np.testing.assert_array_equal(batch["observations"]["state"][:, 1], OFFLINE)


def test_one_pool_counts_proportional_to_sizes(buffers):
    """m = -1: uniform over the union, so the offline share is N_off/(N_off+N_on) = 0.75."""
    offline, online = buffers
    rng = np.random.default_rng(2)
    draws, batch_size = 400, 64
    counts = np.array([sample_mixed(offline, online, batch_size, -1, rng)["n_offline"]
                       for _ in range(draws)])
    share = counts.sum() / (draws * batch_size)
    # Binomial: std of the share is sqrt(.75*.25/25600) ~ 0.0027; allow 5 sigma.
    assert abs(share - 0.75) < 0.014
    assert counts.std() > 1.0  # per-batch counts vary: it is one pool, not a fixed split


def test_one_pool_with_empty_online_is_all_offline(buffers):
    offline, _ = buffers
    empty = EpisodeReplayBuffer(SPEC, 2, capacity=10)
    assert sample_mixed(offline, empty, 32, -1, np.random.default_rng(3))["n_offline"] == 32


def test_one_pool_covers_every_transition(buffers):
    offline, online = buffers
    rng = np.random.default_rng(4)
    seen = set()
    for _ in range(40):
        state = sample_mixed(offline, online, 256, -1, rng)["observations"]["state"]
        seen.update(map(tuple, state.tolist()))
    assert len(seen) == 400


@pytest.mark.parametrize("ratio", [1.5, -0.5, -2, float("nan"), 2])
def test_invalid_ratio(buffers, ratio):
    offline, online = buffers
    with pytest.raises(ValueError, match="ratio"):
        sample_mixed(offline, online, 16, ratio, np.random.default_rng(0))


def test_offline_needed_but_empty(buffers):
    _, online = buffers
    empty = EpisodeReplayBuffer(SPEC, 2, capacity=10)
    with pytest.raises(ValueError, match="offline buffer is empty"):
        sample_mixed(empty, online, 16, 0.5, np.random.default_rng(0))
    batch = sample_mixed(empty, online, 16, 0.0, np.random.default_rng(0))
    assert batch["n_offline"] == 0
