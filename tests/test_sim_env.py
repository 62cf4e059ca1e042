"""PickPlace env: spaces, determinism, rendering, reward/termination semantics."""
import gymnasium as gym
import numpy as np
import pytest

import sim
from sim.pickplace_env import PRIVILEGED_DIM, PickPlaceEnv


def _rollout(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    out = [obs]
    rewards = []
    for a in actions:
        obs, r, _, _, _ = env.step(a)
        out.append(obs)
        rewards.append(r)
    return out, rewards


def test_image_env_spaces_and_dtypes():
    env = gym.make("PickPlace-v0", image_size=48)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert obs["image"].shape == (48, 48, 3) and obs["image"].dtype == np.uint8
    assert obs["state"].shape == (10,) and obs["state"].dtype == np.float32
    assert obs["task"].shape == (10,) and obs["task"].dtype == np.float32
    assert env.action_space.shape == (7,) and env.action_space.dtype == np.float32
    assert set(info) >= {"success", "distractor_in_bin", "task"}
    obs, r, term, trunc, info = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs) and isinstance(r, float)
    env.close()


def test_privileged_env_is_flat_box():
    env = gym.make("PickPlaceState-v0")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (PRIVILEGED_DIM,) == (29,) and obs.dtype == np.float32
    unwrapped = env.unwrapped
    np.testing.assert_allclose(obs[10:13], unwrapped.object_pose("target")[0], atol=1e-6)
    np.testing.assert_allclose(obs[13:16], unwrapped.object_pose("distractor")[0], atol=1e-6)
    np.testing.assert_allclose(obs[16:18], unwrapped.bin_xy, atol=1e-6)
    np.testing.assert_array_equal(obs[19:], unwrapped.task_onehot())
    env.close()


def test_task_one_hot_and_reset_option():
    env = sim.make_pickplace(target=3, distractor=1, image_size=32)
    obs, info = env.reset(seed=0)
    assert info["task"] == (3, 1)
    assert np.flatnonzero(obs["task"]).tolist() == [3, 6]
    obs, info = env.reset(seed=0, options={"task": (0, 4)})
    assert info["task"] == (0, 4) and np.flatnonzero(obs["task"]).tolist() == [0, 9]
    with pytest.raises(ValueError, match="task"):
        env.reset(options={"task": (5, 0)})
    with pytest.raises(ValueError, match="action"):
        env.step(np.zeros(6))
    env.close()


def test_same_seed_same_episode_across_instances_and_history():
    actions = np.random.default_rng(1).uniform(-1, 1, (12, 7)).astype(np.float32)
    env_a = sim.make_pickplace(1, 2, image_size=32)
    env_b = sim.make_pickplace(1, 2, image_size=32)
    env_b.reset(seed=99)  # a different previous episode must not leak into the next one
    for a in actions[:5]:
        env_b.step(a)
    obs_a, rew_a = _rollout(env_a, 7, actions)
    obs_b, rew_b = _rollout(env_b, 7, actions)
    for oa, ob in zip(obs_a, obs_b):
        for key in oa:
            np.testing.assert_array_equal(oa[key], ob[key])
    assert rew_a == rew_b
    other, _ = env_a.reset(seed=8)
    assert not np.array_equal(other["image"], obs_a[0]["image"])
    env_a.close()
    env_b.close()


def test_image_shows_objects_and_arm_motion():
    env = sim.make_pickplace(0, 0, image_size=64)
    img0 = env.reset(seed=0)[0]["image"]
    img1 = env.reset(seed=1)[0]["image"]
    # Different layouts (object + bin positions) change a visible number of pixels.
    assert (np.abs(img0.astype(int) - img1.astype(int)).sum(-1) > 30).sum() > 40
    start = env.reset(seed=0)[0]["image"]
    np.testing.assert_array_equal(start, img0)
    for _ in range(4):
        moved, *_ = env.step(np.array([1, 0.5, -1, 0, 0, 0, 0], np.float32))
    assert (np.abs(moved["image"].astype(int) - start.astype(int)).sum(-1) > 30).sum() > 40
    # Red target cube: some strongly red pixels are present in the frame.
    r, g, b = (img0[..., i].astype(int) for i in range(3))
    assert ((r > 150) & (g < 80) & (b < 80)).sum() >= 2
    env.close()


def test_timeout_is_truncated_not_terminated():
    env = sim.make_pickplace(0, 0, privileged=True)
    env.reset(seed=0)
    hold = np.zeros(7, np.float32)
    for t in range(sim.MAX_EPISODE_STEPS):
        _, r, term, trunc, info = env.step(hold)
        assert r == 0.0 and not term and not info["success"]
        assert trunc == (t == sim.MAX_EPISODE_STEPS - 1)
    env.close()


def test_render_size_and_close():
    env = sim.make_pickplace(image_size=32, render_size=96, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (96, 96, 3) and frame.dtype == np.uint8
    env.close()
    assert env.unwrapped.client is None


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="task"):
        PickPlaceEnv(target=7)
    with pytest.raises(ValueError, match="image_size"):
        PickPlaceEnv(image_size=2)
