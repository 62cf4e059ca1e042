"""Running a policy in an environment: one training episode, deterministic evaluation.

Episodes come back in the episode-dict layout of docs/ARCHITECTURE.md (T+1 observation
rows, raw rewards, terminals apart from timeouts), so online data enters the replay buffer
through the same path as offline data (SPEC section 7: one reward transform, one return
function for both).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from calql_robot.config import RewardConfig
from calql_robot.run.video import VideoRecorder, caption
from data.returns import mc_returns, transform_rewards

Policy = Callable[[Any], np.ndarray]


def is_success(info: dict[str, Any], terminated: bool) -> bool:
    """Goal reached: the env's `success` / `is_success` flag (sim, gymnasium-robotics)."""
    return bool(info.get("success", info.get("is_success", False)))


def _stack(rows: list[Any]) -> np.ndarray | dict[str, np.ndarray]:
    if isinstance(rows[0], dict):
        return {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    return np.asarray(rows, dtype=np.float32)


def run_episode(env: gym.Env, policy: Policy, seed: int, recorder: VideoRecorder | None = None,
                index: int = 0, after_reset: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """Roll one episode to termination or the env's time limit: the one policy rollout loop
    (training episodes, evaluations, rollout.py's videos, scripts/make_test_datasets.py).

    A time-limit cut is a timeout, not a terminal (SPEC section 3). The dict also carries
    `success` (goal reached at any step), `step_success` (per step), `return` (raw),
    `length`, and `score`: the last step's `info['score']` where the env reports one
    (Kitchen: sub-tasks solved / 4), else None. Recorded frames are captioned with episode
    `index`, step, return so far and success. `after_reset(obs) -> obs` may move the start
    state before the first action (the test datasets' near-goal starts). A policy with
    `reset()` and `observe(reward)` (`agents.base.AgentPolicy`) is told where the episode
    starts and each step's raw reward (a decision transformer keeps its context by them).
    """
    obs, _ = env.reset(seed=int(seed))
    if after_reset is not None:
        obs = after_reset(obs)
    if hasattr(policy, "reset"):
        policy.reset()
    observe = getattr(policy, "observe", None)
    rows, actions, rewards, terms, touts, hits = [obs], [], [], [], [], []
    success, total, score = False, 0.0, None
    _record(recorder, env, index, 0, total, success)
    while True:
        action = np.asarray(policy(obs), dtype=np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        if observe is not None:
            observe(float(reward))
        rows.append(obs)
        actions.append(action)
        rewards.append(float(reward))
        terms.append(bool(terminated))
        touts.append(bool(truncated and not terminated))
        hits.append(is_success(info, terminated))
        success = success or hits[-1]
        score = float(info["score"]) if "score" in info else score
        total += float(reward)
        _record(recorder, env, index, len(actions), total, success)
        if terminated or truncated:
            break
    return {"observations": _stack(rows), "actions": np.stack(actions),
            "rewards": np.asarray(rewards, np.float32), "terminals": np.asarray(terms, bool),
            "timeouts": np.asarray(touts, bool), "step_success": np.asarray(hits, bool), "success": success,
            "return": total,
            "length": len(actions), "score": score}


def _record(recorder: VideoRecorder | None, env: gym.Env, index: int, step: int, ret: float,
            success: bool) -> None:
    if recorder is not None and recorder.enabled:
        recorder.add(env.render(), [caption(index, step, ret, success)])


@dataclass
class EvalResult:
    success_rate: float
    mean_return: float
    mean_length: float
    mean_score: float | None = None
    """Mean final `info['score']` (Kitchen's normalised score); None where the env has none."""
    episodes: list[dict[str, Any]] = field(default_factory=list, repr=False)
    """The episodes themselves (for the calibration metrics); not logged."""

    def as_metrics(self) -> dict[str, float]:
        metrics = {"eval/success_rate": self.success_rate, "eval/return": self.mean_return,
                   "eval/length": self.mean_length}
        if self.mean_score is not None:
            metrics["eval/score"] = self.mean_score
        return metrics


def evaluate(env: gym.Env, policy: Policy, episodes: int, seed: int,
             recorder: VideoRecorder | None = None) -> EvalResult:
    """`episodes` deterministic-policy episodes from fixed seeds seed, seed+1, ...

    Fixed seeds make every evaluation of a run face the same initial states, so changes in
    the curve come from the policy. The first episode is recorded when a recorder is given.
    """
    results = [run_episode(env, policy, seed + i, recorder if i == 0 else None)
               for i in range(episodes)]
    if recorder is not None:
        recorder.save()
    scores = [r["score"] for r in results if r["score"] is not None]
    return EvalResult(float(np.mean([r["success"] for r in results])),
                      float(np.mean([r["return"] for r in results])),
                      float(np.mean([r["length"] for r in results])),
                      float(np.mean(scores)) if len(scores) == len(results) else None, results)


def discounted_return(rewards: np.ndarray, reward: RewardConfig) -> float:
    """sum_t gamma^t (scale * r_t + bias) over one episode: what the policy realised from its
    initial state under the run's reward transform, cut where the episode ended (no failure
    rule, no bootstrap past a time limit): G at t = 0 of the project's one return function
    (`data.returns.mc_returns`, SPEC section 7), with the episode as one trajectory."""
    r = transform_rewards(np.asarray(rewards), reward.scale, reward.bias)
    ends = np.zeros(len(r), bool)
    ends[-1] = True
    return float(mc_returns(r, ends, reward.discount)[0])


def initial_observations(episodes: list[dict[str, Any]]) -> Any:
    """Row 0 of each episode's observations, stacked (a dict of stacks for dict observations)."""
    first = [ep["observations"] for ep in episodes]
    if isinstance(first[0], dict):
        return {k: np.stack([obs[k][0] for obs in first]) for k in first[0]}
    return np.stack([obs[0] for obs in first])


def initial_state_calibration(episodes: list[dict[str, Any]], value: Callable[[Any], np.ndarray],
                              reward: RewardConfig) -> dict[str, float]:
    """The paper's calibration, read on the learned policy's own episodes: the critic's
    estimate Q(s0, pi(s0)) at each evaluation episode's initial state against the discounted
    return the episode realised (`discounted_return`), over all episodes and separately
    over the successful and the failed ones (a group with no episode is not logged).

    On a success (a terminal) the two are directly comparable. A failure is cut by the time
    limit, which the critic bootstraps through, so its Q(s0) sits below the realised sum
    when the policy keeps failing (towards r'/(1-gamma) per step, -500 at reward 10r-5)."""
    if not episodes:
        return {}
    q0 = np.asarray(value(initial_observations(episodes)), np.float64).reshape(-1)
    g0 = np.array([discounted_return(ep["rewards"], reward) for ep in episodes])
    success = np.array([bool(ep["success"]) for ep in episodes])
    out: dict[str, float] = {}
    for suffix, rows in (("", np.ones_like(success)), ("_success", success), ("_failure", ~success)):
        if rows.any():
            out[f"eval/q0{suffix}"] = float(q0[rows].mean())
            out[f"eval/return0{suffix}"] = float(g0[rows].mean())
    return out
