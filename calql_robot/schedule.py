"""The online evaluation schedule, in one place for the loop that keeps it and the analysis
that reads it back (no torch here, so `calql_robot.analysis` stays free of the training room).

An online run evaluates at every multiple of `--loop.eval-every` online env steps and at each
mark of `--loop.eval-at` (LoopConfig). An evaluation waits for the running episode to end, so
it lands a few steps after the mark that made it due; `last_eval_mark` recovers that mark.
"""

from __future__ import annotations

from collections.abc import Sequence


def next_eval_step(env_steps: int, every: int, at: Sequence[int]) -> int:
    """The first online env step after `env_steps` that the schedule evaluates at: the next
    multiple of `every` or an earlier mark of `at` (LoopConfig.eval_at)."""
    return min([m for m in at if m > env_steps] + [(env_steps // every + 1) * every])


def last_eval_mark(env_steps: int, every: int, at: Sequence[int]) -> int:
    """The last mark of the schedule at or before `env_steps` (0 when none has been reached):
    the largest mark of `at` or multiple of `every` (every <= 0: none) not above it. An
    evaluation logged at `env_steps` was made due by this mark."""
    marks = [m for m in at if m <= env_steps] + ([env_steps // every * every] if every > 0 else [])
    return max(marks, default=0)
