"""Scripted policy quality knobs and parallel collection (sim/scripted.py, sim/collect.py)."""
import numpy as np
import pytest

import sim
from sim.collect import collect_episodes, episode_seed
from sim.scripted import ScriptedConfig, ScriptedPolicy


def _run(env, policy, seed, force_object=None):
    env.reset(seed=seed)
    policy.reset(env, np.random.default_rng(seed), force_object=force_object)
    total = 0.0
    for _ in range(sim.MAX_EPISODE_STEPS):
        _, r, term, trunc, info = env.step(policy.act())
        total += r
        if term or trunc:
            break
    return total, info


def _success_rate(target, cfg, n, distractor=None, seed0=0):
    env = sim.make_pickplace(target, (target + 1) % 5 if distractor is None else distractor,
                             privileged=True)
    policy = ScriptedPolicy(cfg)
    rate = np.mean([_run(env, policy, seed0 + k)[1]["success"] for k in range(n)])
    env.close()
    return rate


@pytest.mark.parametrize("target", range(5))
def test_noise_free_success_per_target(target):
    assert _success_rate(target, ScriptedConfig(), 20) >= 0.9


def test_success_falls_with_noise():
    rates = [np.mean([_success_rate(t, ScriptedConfig(noise=n), 8, seed0=100) for t in (0, 3)])
             for n in (0.0, 0.5)]
    assert rates[0] >= 0.9 and rates[1] <= rates[0] - 0.4


def test_actions_are_bounded_and_noisy():
    env = sim.make_pickplace(0, 0, privileged=True)
    policy = ScriptedPolicy(ScriptedConfig(noise=2.0))
    env.reset(seed=0)
    policy.reset(env, np.random.default_rng(0))
    acts = np.stack([policy.act() for _ in range(50)])
    assert acts.dtype == np.float32 and acts.min() >= -1 and acts.max() <= 1
    assert (np.abs(acts) == 1.0).mean() > 0.2  # large noise saturates the clip
    env.close()


def test_only_target_earns_reward():
    env = sim.make_pickplace(0, 0, privileged=True)
    policy = ScriptedPolicy()
    results = [_run(env, policy, 200 + k, force_object="distractor") for k in range(5)]
    assert all(total == 0.0 and not info["success"] for total, info in results)
    assert sum(info["distractor_in_bin"] for _, info in results) >= 4
    env.close()


def test_failure_modes_lower_success():
    assert _success_rate(2, ScriptedConfig(p_wrong=1.0), 5) == 0.0
    assert _success_rate(2, ScriptedConfig(p_drop=1.0), 8) <= 0.5
    with pytest.raises(ValueError, match="probabilities"):
        ScriptedConfig(p_drop=1.5)


def test_episode_seed_depends_on_all_parts():
    seeds = {episode_seed(0, (0, 1), 0), episode_seed(1, (0, 1), 0),
             episode_seed(0, (1, 0), 0), episode_seed(0, (0, 1), 1)}
    assert len(seeds) == 4


def test_collect_shapes_and_worker_determinism():
    kw = dict(noise=0.2, image_size=32, seed=5, progress=False)
    one = collect_episodes([(0, 1), (4, 2)], 2, workers=1, **kw)
    two = collect_episodes([(0, 1), (4, 2)], 2, workers=2, **kw)
    assert [tuple(e["task"]) for e in one] == [(0, 1), (0, 1), (4, 2), (4, 2)]
    for a, b in zip(one, two):
        steps = len(a["actions"])
        assert a["actions"].shape == (steps, 7) and a["actions"].dtype == np.float32
        assert a["observations"]["image"].shape == (steps + 1, 32, 32, 3)
        assert a["observations"]["image"].dtype == np.uint8
        assert a["observations"]["state"].shape == (steps + 1, 10)
        assert a["observations"]["task"].shape == (steps + 1, 10)
        assert a["rewards"].shape == a["terminals"].shape == a["timeouts"].shape == (steps,)
        assert not np.any(a["terminals"] & a["timeouts"])
        assert a["terminals"][-1] == a["success"] and a["rewards"].sum() == float(a["success"])
        assert a["terminals"][-1] or a["timeouts"][-1]
        assert a["task"].dtype == np.int64 and isinstance(a["seed"], int)
        assert a["seed"] == b["seed"] and a["success"] == b["success"]
        np.testing.assert_array_equal(a["actions"], b["actions"])
        for key in a["observations"]:
            np.testing.assert_array_equal(a["observations"][key], b["observations"][key])
