"""Offline pre-training, then online fine-tuning: the official Cal-QL schedule (SPEC 3).

Offline: `offline_steps` updates on uniform batches of the offline buffer. Online,
repeated: collect one trajectory with the current stochastic policy (frozen during the
episode), insert it with its Monte-Carlo returns, then `len(traj) * utd` updates (none
until `warmup_env_steps` env steps are in, WSRL's warm-up) on mixed batches (`round(B*m)`
offline + rest online; m=-1 pools both). Evaluations at the start, during pre-training,
at the switch, every `eval_every` env steps online (and at `eval_at`'s steps) and at the end.

Resumable: a checkpoint holds the learner (networks, optimizers, alpha, alpha'), the
online buffer, all counters and every RNG state; the offline buffer is rebuilt from its
dataset. An agent with work to do on the offline data first (`agents/base.Preparing`) does
it before the offline phase, once: its state says whether it is done. Env episodes are
seeded from (seed, episode index), so a resumed run sees the same episodes as an
uninterrupted one.

Stoppable (issue 22): on SIGINT or SIGTERM (`run/stopping.py`) the loop stops at its next
safe point: after the update under way (offline, or between the updates that follow an
online episode, whose count still due is a counter), or after the episode or evaluation
under way. It writes a checkpoint that also holds the metrics not yet averaged into a row,
and the number of rows logged, so that the resumed run logs exactly the rows an
uninterrupted one would; then it raises `RunInterrupted`.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from calql_robot.agents.base import (Agent, AgentPolicy, NonFiniteLossError, Preparing, ValueEstimator,
                                     context_length)
from calql_robot.config import LoopConfig, RewardConfig
from calql_robot.errors import CheckpointError, RunInterrupted, TrainingDiverged
from calql_robot.rollouts import EvalResult, evaluate, initial_state_calibration, run_episode
from calql_robot.run.checkpoint import (capture_rng_state, fits_run, keep_switch_checkpoint, restore_rng_state,
                                        resume_state, save_run_checkpoint)
from calql_robot.run.plots import has_calibration_metrics, plot_calibration, plot_learning_curves
from calql_robot.run.runlog import RunLogger
from calql_robot.run.stopping import StopRequest
from calql_robot.run.video import VideoRecorder
from calql_robot.schedule import next_eval_step
from data.mixing import sample_mixed
from data.replay import EpisodeReplayBuffer
from data.returns import transform_rewards

EVAL_SEED_OFFSET = 10_000_000  # eval episode seeds never meet training episode seeds
EPISODE_SEED_STRIDE = 1_000_003
RESUME_KEYS = ("learner", "online_buffer", "counters", "rng")  # what Trainer.save writes


def eval_seed_base(run_seed: int) -> int:
    """Seed of a run's first evaluation episode; episode i uses base + i (< 1000 episodes).

    Shared by the loop's evaluations and rollout.py, so a rollout of a checkpoint faces the
    same initial states as the run's own evaluations."""
    return EVAL_SEED_OFFSET + 1000 * run_seed


class TrainingStopped(TrainingDiverged):
    """The run stopped on a non-finite loss; the last good checkpoint is kept (exit 3)."""


@dataclass
class Counters:
    """Progress of a run, saved in every checkpoint."""

    offline_updates: int = 0
    online_updates: int = 0
    env_steps: int = 0
    episodes: int = 0
    successes: list[bool] = field(default_factory=list)
    next_eval_step: int = 0  # next online env step at which to evaluate
    # evaluations the summary reports; kept here so that a run resumed after them still
    # reports them (checkpoints written before these fields load with None)
    initial_success: float | None = None
    offline_success: float | None = None
    # online updates still due for the last collected episode, and its length: a run
    # stopped between those updates resumes with them (checkpoints before issue 22: 0)
    pending_updates: int = 0
    episode_length: int = 0

    @property
    def cumulative_regret(self) -> float:
        """CORL's regret: mean over online training episodes of (1 - success)."""
        return float(np.mean([1.0 - s for s in self.successes])) if self.successes else 0.0


def insert_episode(buffer: EpisodeReplayBuffer, episode: dict[str, Any], reward: RewardConfig,
                   with_returns: bool) -> None:
    """Store an online episode with its MC return (official Cal-QL), or with G=0 when the
    agent reads none (CORL's choice when the bound is switched off online); the same reward
    transform and discount as offline data."""
    if with_returns:
        buffer.add_episodes([episode], reward.discount, reward.failure_reward, reward.scale, reward.bias)
        return
    rewards = transform_rewards(episode["rewards"], reward.scale, reward.bias)
    buffer.add_episode(episode["observations"], episode["actions"], rewards, episode["terminals"],
                       episode["timeouts"], np.zeros_like(rewards))


class Trainer:
    """Runs one offline-to-online experiment end to end into `logger.run_dir`, for any
    agent of the contract (`agents/base.Agent`): it asks the agent, never its class."""

    def __init__(self, learner: Agent, offline: EpisodeReplayBuffer,
                 online: EpisodeReplayBuffer, make_env: Callable[[], gym.Env], loop: LoopConfig,
                 reward: RewardConfig, logger: RunLogger, seed: int, progress: bool = True,
                 videos: bool = False, stop: StopRequest | None = None) -> None:
        self.learner, self.offline, self.online = learner, offline, online
        self.loop, self.reward, self.logger, self.seed = loop, reward, logger, seed
        self.progress, self.videos, self.stop = progress, videos, stop
        self.env, self.eval_env = make_env(), make_env()
        self.rng = np.random.default_rng(seed)
        self.context = context_length(learner)  # 1: transition batches; K: K-step windows (a sequence agent)
        self.counters = Counters(next_eval_step=next_eval_step(0, loop.eval_every, loop.eval_at))
        self.ckpt_dir = Path(logger.run_dir) / "checkpoints"
        self._window: dict[str, list[float]] = defaultdict(list)
        self._start = time.time()

    # ---------------------------------------------------------------- steps
    @property
    def step(self) -> int:
        """Global x-axis: offline updates, then offline_steps + online env steps."""
        c = self.counters
        return self.loop.offline_steps + c.env_steps if self.learner.online else c.offline_updates

    def _update(self, batch: dict[str, Any]) -> None:
        try:
            metrics = self.learner.update(batch)
        except NonFiniteLossError as err:
            raise self._diverged(err) from err
        for k, v in metrics.items():
            self._window[k].append(v)

    def _diverged(self, err: NonFiniteLossError) -> TrainingStopped:
        """Log the good updates' metrics and a row for the bad update (its loss values,
        `error/non_finite_loss`; the plot marks its step), draw the curves, and say so. No
        checkpoint is written: the last one holds the last good state."""
        self._flush_train_metrics()
        step = self.step if self.learner.online else self.step + 1  # offline, update n is step n
        losses = {f"error/{name}_loss": value for name, value in getattr(err, "losses", {}).items()}
        self.logger.log({"error/non_finite_loss": 1.0, **losses, **self._progress_metrics()}, step, self._phase())
        self._plot(quiet=True)
        has_checkpoint = (self.ckpt_dir / "latest.pt").is_file()
        kept = f"last good checkpoint kept in {self.ckpt_dir}" if has_checkpoint else "no checkpoint written yet"
        resume = self.stop.resume if self.stop is not None and self.stop.resume else "--run.resume"
        return TrainingStopped(f"{err}; run stopped at step {step}, {kept}",
                               f"its row in {self.logger.metrics_path} (error/non_finite_loss) and "
                               f"learning_curves.png show where; try lower learning rates or a smaller reward "
                               f"scale: {resume} --<flag> <value> continues from the "
                               f"{'last checkpoint' if has_checkpoint else 'start'} with them")

    def _phase(self) -> str:
        return "online" if self.learner.online else "offline"

    def _flush_train_metrics(self) -> None:
        if not self._window:
            return
        row = {f"train/{k}": float(np.mean(v)) for k, v in self._window.items()}
        row.update(self._progress_metrics())
        self.logger.log(row, self.step, self._phase())
        self._window.clear()

    def _progress_metrics(self) -> dict[str, float]:
        c = self.counters
        return {"progress/offline_updates": c.offline_updates, "progress/online_updates": c.online_updates,
                "progress/env_steps": c.env_steps, "progress/wall_s": time.time() - self._start}

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, tag: str) -> EvalResult:
        """Deterministic evaluation; writes a rollout video of its first episode if asked."""
        path = Path(self.logger.run_dir) / "videos" / f"eval_{self.step:08d}_{tag}.mp4"
        recorder = VideoRecorder(path, enabled=self.videos)
        result = evaluate(self.eval_env, AgentPolicy(self.learner, deterministic=True), self.loop.eval_episodes,
                          eval_seed_base(self.seed), recorder)
        calibration = (initial_state_calibration(result.episodes, self.learner.value, self.reward)
                       if isinstance(self.learner, ValueEstimator) else {})
        self.logger.log({**result.as_metrics(), **calibration, **self._progress_metrics()}, self.step,
                        self._phase())
        return result

    # ---------------------------------------------------------------- checkpoints
    def save(self, keep_window: bool = False) -> Path:
        """Flush the metric window first (at the schedule's checkpoints, where an
        uninterrupted run flushes too), or with `keep_window` (a stop between two rows) save
        it in the checkpoint: either way a resumed run logs exactly what this one would."""
        if not keep_window:
            self._flush_train_metrics()
        state = {"learner": self.learner.state_dict(), "online_buffer": self.online.state_dict(),
                 "counters": {**self.counters.__dict__}, "rng": capture_rng_state(self.rng),
                 "window": {k: [float(v) for v in values] for k, values in self._window.items()},
                 "metrics_rows": self.logger.rows, "wall_s": time.time() - self._start}
        return save_run_checkpoint(self.ckpt_dir, state, self.step)

    def _check_stop(self) -> None:
        """At a safe point: if a signal asked the run to stop, checkpoint it here, draw the
        curves and raise RunInterrupted saying where it stands and how to resume."""
        if self.stop is None or not self.stop.requested:
            return
        path = self.save(keep_window=True)
        self._plot(quiet=True)
        raise RunInterrupted(f"{self.stop.name} at {self._where()}; checkpoint {path}"
                             + (f"; resume: {self.stop.resume}" if self.stop.resume else ""), self.stop.signum)

    def _where(self) -> str:
        c, loop = self.counters, self.loop
        if not self.learner.online:
            return f"offline update {c.offline_updates} of {loop.offline_steps}"
        due = f", {c.pending_updates} more due for its last episode" if c.pending_updates else ""
        return f"online env step {c.env_steps} of {loop.online_env_steps} (online update {c.online_updates}{due})"

    def try_resume(self) -> bool:
        """Restore the latest checkpoint of this run directory, if there is one."""
        found = resume_state(self.ckpt_dir, self.learner.device, RESUME_KEYS)
        if found is None:
            return False
        path, state = found
        self._restore(path, state, with_online_buffer=True)
        self._window = defaultdict(list, {k: list(v) for k, v in state.get("window", {}).items()})
        # the run's own clock goes on from the checkpoint (its sessions, not the time it lay
        # stopped); checkpoints written before it was saved start a resumed session at 0
        self._start = time.time() - float(state.get("wall_s", 0.0))
        if "metrics_rows" in state:  # exact, also for a stop between two rows of one step
            self.logger.truncate_rows(state["metrics_rows"])
        else:
            self.logger.truncate_after(self.step)
        return True

    def start_from_switch(self, path: Path, state: dict[str, Any], wall_s: float) -> None:
        """Take another run's pre-trained state (its switch.pt) as this run's: learner,
        counters and RNG. Its online buffer is empty by construction, so this run's own
        (sized for its online steps) stays as built. `wall_s`: the source's wall clock at
        the switch, so this run's progress/wall_s counts the pre-training it reuses."""
        c = state["counters"]
        if not state["learner"].get("online") or c["online_updates"] or c["env_steps"]:
            raise CheckpointError(f"{path}: not a switch checkpoint (online updates {c['online_updates']}, "
                                  f"env steps {c['env_steps']})", "pass a run directory whose pre-training ended")
        self._restore(path, state, with_online_buffer=False)
        self.counters.next_eval_step = next_eval_step(0, self.loop.eval_every, self.loop.eval_at)  # this run's, not the source's
        self._start = time.time() - wall_s

    def _restore(self, path: Path, state: dict[str, Any], with_online_buffer: bool) -> None:
        with fits_run(path):  # a checkpoint of another run or version: named, not a KeyError
            self.learner.load_state_dict(state["learner"])
            if with_online_buffer:
                self.online.load_state_dict(state["online_buffer"])
            counters = state["counters"]
            self.counters = Counters(**{**counters, "successes": [bool(s) for s in counters["successes"]]})
            restore_rng_state(state["rng"], self.rng)

    # ---------------------------------------------------------------- phases
    def run(self) -> dict[str, float]:
        """Pre-train (from where a resumed run stopped), fine-tune, evaluate; return a summary."""
        c = self.counters
        if c.offline_updates == 0 and not self.learner.online:
            c.initial_success = self.evaluate("start").success_rate
        self._prepare()
        self._offline_phase()
        if not self.learner.online:
            c.offline_success = self.evaluate("switch").success_rate
            self.learner.set_online(True)
            keep_switch_checkpoint(self.save().parent)
        self._online_phase()
        final = self.evaluate("final")
        summary: dict[str, float | None] = {k: v for k, v in (("initial_success", c.initial_success),
                                                             ("offline_success", c.offline_success)) if v is not None}
        summary.update(final_success=final.success_rate, final_return=final.mean_return,
                       cumulative_regret=c.cumulative_regret if c.successes else None, env_steps=c.env_steps,
                       offline_updates=c.offline_updates, online_updates=c.online_updates)
        self.save()
        self._plot()
        return summary

    def _prepare(self) -> None:
        """An agent's work on the offline data before its first update (`agents/base.Preparing`:
        Cal-QL's learned reference value); its metrics in one row. The agent knows whether it
        is done (a resumed run: nothing to do, no draws from the RNG)."""
        if isinstance(self.learner, Preparing):
            metrics = self.learner.prepare(self.offline, self.loop.batch_size, self.rng)
            if metrics:
                self.logger.log({**metrics, **self._progress_metrics()}, self.step, self._phase())

    def _offline_phase(self) -> None:
        c, loop = self.counters, self.loop
        bar = tqdm(total=loop.offline_steps, initial=c.offline_updates, desc="offline",
                   disable=not self.progress, unit="upd")
        while c.offline_updates < loop.offline_steps and not self.learner.online:
            self._update(self.offline.sample(loop.batch_size, self.rng, self.context))
            c.offline_updates += 1
            bar.update(1)
            self._offline_hooks()
            self._check_stop()
        bar.close()

    def _offline_hooks(self) -> None:
        c, loop = self.counters, self.loop
        if c.offline_updates % loop.log_every == 0:
            self._flush_train_metrics()
        if loop.eval_every_offline and c.offline_updates % loop.eval_every_offline == 0 \
                and c.offline_updates < loop.offline_steps:
            self.evaluate("offline")
        if c.offline_updates % loop.checkpoint_every == 0:
            self.save()

    def _online_phase(self) -> None:
        c, loop = self.counters, self.loop
        bar = tqdm(total=loop.online_env_steps, initial=c.env_steps, desc="online",
                   disable=not self.progress, unit="step")
        if c.pending_updates:  # stopped between the updates of an episode: finish them first
            self._finish_episode()
            self._check_stop()
        while c.env_steps < loop.online_env_steps:
            before = c.env_steps
            self._online_episode()
            bar.update(c.env_steps - before)
            bar.set_postfix(regret=f"{c.cumulative_regret:.2f}")
            self._check_stop()
        bar.close()

    def _online_episode(self) -> None:
        """One trajectory with the frozen stochastic policy, then len(traj) * utd updates."""
        self._collect_episode()
        if self.counters.pending_updates:
            self._check_stop()
        self._finish_episode()

    def _collect_episode(self) -> None:
        """Run and store one episode; its updates become due (none during the warm-up)."""
        c, loop = self.counters, self.loop
        episode = run_episode(self.env, AgentPolicy(self.learner, deterministic=False),
                              seed=EPISODE_SEED_STRIDE * self.seed + c.episodes)
        insert_episode(self.online, episode, self.reward, self.learner.needs_returns)
        c.episodes += 1
        c.env_steps += episode["length"]
        c.successes.append(bool(episode["success"]))
        self.logger.log({"online/episode_return": episode["return"], "online/success": float(episode["success"]),
                         "online/cumulative_regret": c.cumulative_regret, "online/episode_length": episode["length"],
                         **self._progress_metrics()}, self.step, "online")
        c.episode_length = episode["length"]
        c.pending_updates = episode["length"] * loop.utd if c.env_steps > loop.warmup_env_steps else 0

    def _finish_episode(self) -> None:
        """The updates still due for the last episode (a stop may come between two), then
        the evaluation and checkpoint its env steps call for."""
        c, loop = self.counters, self.loop
        while c.pending_updates:
            self._update(sample_mixed(self.offline, self.online, loop.batch_size, loop.mixing_ratio, self.rng,
                                      self.context))
            c.online_updates += 1
            c.pending_updates -= 1
            if c.online_updates % loop.log_every == 0:
                self._flush_train_metrics()
            if c.pending_updates:
                self._check_stop()
        if c.env_steps >= c.next_eval_step and c.env_steps < loop.online_env_steps:
            self.evaluate("online")
        if c.next_eval_step <= c.env_steps:
            c.next_eval_step = next_eval_step(c.env_steps, loop.eval_every, loop.eval_at)
        if c.env_steps // loop.checkpoint_every != (c.env_steps - c.episode_length) // loop.checkpoint_every:
            self.save()

    def _plot(self, quiet: bool = False) -> None:
        """learning_curves.png (and calibration.png); `quiet`: a run stopping early may not
        have logged what a figure needs, which must not hide why it stopped."""
        if quiet:
            try:
                self._plot()
            except ValueError:
                pass
            return
        run_dir = Path(self.logger.run_dir)
        plot_learning_curves(self.logger.metrics_path, run_dir / "learning_curves.png")
        if has_calibration_metrics(self.logger.metrics_path):  # agents whose metrics hold Q and G
            plot_calibration(self.logger.metrics_path, run_dir / "calibration.png")

    def close(self) -> None:
        self.env.close()
        self.eval_env.close()
        self.logger.close()
