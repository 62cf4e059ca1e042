"""MC returns, reward transform and trajectory boundaries (SPEC.md section 2), checked by hand
and against a plain Python loop."""
import numpy as np
import pytest

from data.returns import mc_returns, trajectory_ends, transform_rewards

GAMMA = 0.99


def loop_reference(rewards, ends, gamma, failure_reward=None):
    """The official calc_return_to_go written as the obvious per-step loop (float64)."""
    g = np.zeros(len(rewards))
    nxt = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        if ends[t]:
            nxt = 0.0
        g[t] = rewards[t] + gamma * nxt
        nxt = g[t]
    if failure_reward is not None:
        start = 0
        for t in range(len(rewards)):
            if ends[t]:
                if all(np.isclose(r, failure_reward) for r in rewards[start:t + 1]):
                    g[start:t + 1] = failure_reward / (1 - gamma)
                start = t + 1
    return g


def test_spec_worked_example_success():
    ends = trajectory_ends(np.array([0, 0, 1]), np.array([0, 0, 0]))
    g = mc_returns(np.array([-5.0, -5.0, 5.0], np.float32), ends, GAMMA)
    assert g.dtype == np.float32
    np.testing.assert_allclose(g, [-5.0495, -0.05, 5.0], rtol=1e-6, atol=1e-6)


def test_spec_worked_example_all_failure():
    ends = trajectory_ends(np.zeros(40), np.r_[np.zeros(39), 1])
    g = mc_returns(np.full(40, -5.0, np.float32), ends, GAMMA, failure_reward=-5.0)
    np.testing.assert_allclose(g, np.full(40, -500.0), rtol=1e-6)


def test_timeout_gives_same_return_as_terminal():
    """No bootstrap tail either way; only the done flag differs (checked in test_replay)."""
    r = np.array([1.0, 2.0, 3.0], np.float32)
    by_terminal = mc_returns(r, trajectory_ends(np.array([0, 0, 1]), np.zeros(3)), GAMMA)
    by_timeout = mc_returns(r, trajectory_ends(np.zeros(3), np.array([0, 0, 1])), GAMMA)
    np.testing.assert_array_equal(by_terminal, by_timeout)
    np.testing.assert_allclose(by_timeout, [1 + GAMMA * (2 + GAMMA * 3), 2 + GAMMA * 3, 3])


def test_timeout_in_the_middle_splits():
    r = np.array([1.0, 1.0, 1.0, 1.0], np.float32)
    ends = trajectory_ends(np.zeros(4), np.array([0, 1, 0, 0]))
    np.testing.assert_array_equal(ends, [False, True, False, True])
    np.testing.assert_allclose(mc_returns(r, ends, GAMMA), [1 + GAMMA, 1, 1 + GAMMA, 1])


def test_observation_discontinuity_splits_unflagged_boundary():
    """CORL PR #63: D4RL files lack flags at some boundaries; obs[t+1] != next_obs[t] splits."""
    obs = np.arange(6, dtype=np.float32)[:, None]
    nxt = obs + 1
    nxt[2] = 100.0  # step 2 leads somewhere else than row 3: a hidden boundary
    ends = trajectory_ends(np.zeros(6), np.zeros(6), obs, nxt)
    np.testing.assert_array_equal(ends, [0, 0, 1, 0, 0, 1])
    nxt[2] = obs[3] + 5e-7  # within the 1e-6 tolerance: no split
    np.testing.assert_array_equal(trajectory_ends(np.zeros(6), np.zeros(6), obs, nxt),
                                  [0, 0, 0, 0, 0, 1])


def test_observation_discontinuity_dict_and_uint8():
    img = np.zeros((4, 2, 2, 3), np.uint8)
    obs = {"image": img, "state": np.zeros((4, 3), np.float32)}
    nxt = {"image": img.copy(), "state": np.zeros((4, 3), np.float32)}
    nxt["image"][0, 1, 1, 2] = 255  # uint8 difference must not wrap around to "equal"
    ends = trajectory_ends(np.zeros(4), np.zeros(4), obs, nxt)
    np.testing.assert_array_equal(ends, [1, 0, 0, 1])


def test_trajectory_ends_needs_both_observation_arrays():
    with pytest.raises(ValueError, match="both"):
        trajectory_ends(np.zeros(3), np.zeros(3), observations=np.zeros((3, 1)))


def test_failure_rule_only_on_all_failure_trajectories_and_only_when_given():
    r = np.array([-5, -5, -5, -5, 5, -5, -5], np.float32)
    ends = np.array([0, 0, 1, 0, 0, 0, 1], bool)  # failure traj, then one with a success
    g = mc_returns(r, ends, GAMMA, failure_reward=-5.0)
    np.testing.assert_allclose(g[:3], -500.0, rtol=1e-6)
    np.testing.assert_allclose(g[3:], loop_reference(r[3:], ends[3:], GAMMA), rtol=1e-5)
    plain = mc_returns(r, ends, GAMMA)
    np.testing.assert_allclose(plain[:3], [-5 - 5 * GAMMA - 5 * GAMMA ** 2, -5 - 5 * GAMMA, -5],
                               rtol=1e-6)


def test_length_one_trajectories():
    r = np.array([3.0, -5.0, 2.0], np.float32)
    ends = np.ones(3, bool)
    np.testing.assert_array_equal(mc_returns(r, ends, GAMMA), r)
    np.testing.assert_allclose(mc_returns(r, ends, GAMMA, failure_reward=-5.0),
                               [3.0, -500.0, 2.0], rtol=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.9, 0.99, 0.999, 1.0])
@pytest.mark.parametrize("end_prob", [1e-4, 0.01, 0.3, 1.0])
def test_vectorised_matches_loop_reference(gamma, end_prob):
    rng = np.random.default_rng(int(gamma * 1000) + int(end_prob * 1e4))
    n = 5000
    r = rng.choice([-5.0, 5.0, 0.3, -1.7], size=n).astype(np.float32)
    ends = rng.random(n) < end_prob
    ends[-1] = True
    fail = None if gamma == 1.0 else -5.0
    ref = loop_reference(r.astype(np.float64), ends, gamma, fail)
    got = mc_returns(r, ends, gamma, fail)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_long_single_trajectory_is_stable():
    """gamma**-t over 200k steps would overflow; the blocked scan must not."""
    n = 200_000
    r = np.zeros(n, np.float32)
    r[-1] = 1.0
    r[::1000] = -1.0
    ends = np.zeros(n, bool)
    ends[-1] = True
    got = mc_returns(r, ends, GAMMA)
    assert np.all(np.isfinite(got))
    tail = slice(n - 3000, n)  # loop reference on the tail only (the head is ~0)
    np.testing.assert_allclose(got[tail], loop_reference(r[tail], ends[tail], GAMMA), rtol=1e-5)
    # A block head far before the reward: exact value is sum of discounted terms.
    t = n - 1 - 2500
    expected = GAMMA ** (n - 1 - t) + sum(-(GAMMA ** (j - t)) for j in range(0, n, 1000)
                                           if j >= t)
    np.testing.assert_allclose(got[t], expected, rtol=1e-5)


def test_one_million_transitions_run_vectorised():
    """Not a timing test: checks the big cases run and agree on a sampled trajectory."""
    rng = np.random.default_rng(0)
    n = 1_000_000
    r = rng.normal(size=n).astype(np.float32)
    ends = np.zeros(n, bool)
    ends[999::1000] = True
    g = mc_returns(r, ends, GAMMA)
    sl = slice(500_000, 501_000)
    np.testing.assert_allclose(g[sl], loop_reference(r[sl], ends[sl], GAMMA), rtol=1e-5,
                               atol=1e-5)
    ends_single = np.zeros(n, bool)
    ends_single[-1] = True
    assert np.all(np.isfinite(mc_returns(r, ends_single, GAMMA)))


def test_transform_rewards_is_affine_float32():
    out = transform_rewards(np.array([0, 1, 1, 0], np.float64), scale=10.0, bias=-5.0)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [-5, 5, 5, -5])


def test_transform_then_failure_rule_antmaze():
    """AntMaze: 10r-5 with raw r_neg=0, so the transformed failure reward is -5."""
    raw = np.zeros(10)
    r = transform_rewards(raw, 10.0, -5.0)
    fail = float(transform_rewards(np.array([0.0]), 10.0, -5.0)[0])
    g = mc_returns(r, np.r_[np.zeros(9, bool), True], GAMMA, fail)
    np.testing.assert_allclose(g, -500.0, rtol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(rewards=np.array([1.0, np.nan]), ends=np.array([0, 1])), "finite"),
    (dict(rewards=np.array([1.0, 2.0]), ends=np.array([1, 0])), "ends\\[-1\\]"),
    (dict(rewards=np.array([1.0, 2.0]), ends=np.array([1])), "shape"),
    (dict(rewards=np.array([1.0]), ends=np.array([2])), "ends"),
])
def test_mc_returns_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mc_returns(gamma=GAMMA, **kwargs)


def test_mc_returns_bad_gamma():
    with pytest.raises(ValueError, match="gamma"):
        mc_returns(np.ones(2), np.array([0, 1]), 1.5)
    with pytest.raises(ValueError, match="gamma < 1"):
        mc_returns(np.ones(2), np.array([0, 1]), 1.0, failure_reward=-1.0)
