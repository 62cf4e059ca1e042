"""Running a policy in an environment: one training episode, deterministic evaluation.

Episodes come back in the episode-dict layout of docs/ARCHITECTURE.md (T+1 observation
rows, raw rewards, terminals apart from timeouts), so online data enters the replay buffer
through the same path as offline data (SPEC section 7: one reward transform, one return
function for both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from calql_robot.run.video import VideoRecorder, caption

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
    state before the first action (the test datasets' near-goal starts).
    """
    obs, _ = env.reset(seed=int(seed))
    if after_reset is not None:
        obs = after_reset(obs)
    rows, actions, rewards, terms, touts, hits = [obs], [], [], [], [], []
    success, total, score = False, 0.0, None
    _record(recorder, env, index, 0, total, success)
    while True:
        action = np.asarray(policy(obs), dtype=np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
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
                      float(np.mean(scores)) if len(scores) == len(results) else None)
