"""Parallel scripted-data collection: episodes as ARCHITECTURE.md's episode dicts.

Each worker process (spawn context: pybullet clients must not be forked) builds its own
env per task and runs whole episodes. Every episode's seed is derived from
(seed, target, distractor, index) with numpy's SeedSequence, so the data are identical
whatever the number of workers or the order in which workers finish.
"""
from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
import signal
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from tqdm import tqdm

from sim import MAX_EPISODE_STEPS, make_pickplace
from sim.scripted import ScriptedConfig, ScriptedPolicy

Task = tuple[int, int]


def episode_seed(seed: int, task: Task, index: int) -> int:
    """A 63-bit seed that depends only on (seed, task, index), not on scheduling."""
    ss = np.random.SeedSequence([int(seed), int(task[0]), int(task[1]), int(index)])
    return int(ss.generate_state(2, np.uint64)[0] >> np.uint64(1))


def run_episode(env, policy: ScriptedPolicy, task: Task, ep_seed: int, frames: list | None = None) -> dict:
    """Roll one scripted episode; returns the episode dict with T+1 observation rows. The
    one scripted-data loop (collection, and scripts/render_tasks.py, which passes `frames`:
    a list that receives `env.render()` after the reset and after every step)."""
    obs, _ = env.reset(seed=ep_seed, options={"task": task})
    policy.reset(env, np.random.default_rng(ep_seed))
    if frames is not None:
        frames.append(env.render())
    rows, actions, rewards, terms, touts = [obs], [], [], [], []
    info = {"success": False}
    for _ in range(MAX_EPISODE_STEPS):
        action = policy.act()
        obs, reward, terminated, truncated, info = env.step(action)
        rows.append(obs)
        actions.append(action)
        rewards.append(reward)
        terms.append(terminated)
        touts.append(truncated and not terminated)
        if frames is not None:
            frames.append(env.render())
        if terminated or truncated:
            break
    return {
        "observations": _stack(rows),
        "actions": np.asarray(actions, np.float32),
        "rewards": np.asarray(rewards, np.float32),
        "terminals": np.asarray(terms, bool),
        "timeouts": np.asarray(touts, bool),
        "task": np.asarray(task, np.int64),
        "seed": int(ep_seed),
        "success": bool(info["success"]),
    }


def _stack(rows: list) -> np.ndarray | dict[str, np.ndarray]:
    if isinstance(rows[0], dict):
        return {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    return np.stack(rows).astype(np.float32)


def _worker(jobs: list[tuple[int, Task, int]], cfg: ScriptedConfig, image_size: int,
            privileged: bool, queue) -> None:
    """Run (job_id, task, seed) jobs, one env reused across them; results go on `queue`."""
    env = make_pickplace(image_size=image_size, privileged=privileged)
    policy = ScriptedPolicy(cfg)
    try:
        for job_id, task, ep_seed in jobs:
            queue.put((job_id, run_episode(env, policy, task, ep_seed)))
    finally:
        env.close()


def collect_episodes(tasks: Iterable[Sequence[int]], episodes_per_task: int, *,
                     noise: float = 0.1, p_wrong: float = 0.0, p_drop: float = 0.0,
                     image_size: int = 64, seed: int = 0, workers: int = 1,
                     privileged: bool = False, progress: bool = True) -> list[dict]:
    """Scripted episodes for every task, in (task, index) order, from `workers` processes.

    Returns a list of episode dicts (ARCHITECTURE.md) with metadata `task` (int64 (2,)),
    `seed` (int) and `success` (bool). workers <= 1 runs in this process.
    """
    cfg = ScriptedConfig(noise=noise, p_wrong=p_wrong, p_drop=p_drop)
    task_list = [(int(t[0]), int(t[1])) for t in tasks]
    if episodes_per_task < 0 or not task_list:
        raise ValueError(f"sim/collect.py: need tasks and episodes_per_task >= 0, got "
                         f"{task_list}, {episodes_per_task}")
    jobs = [(i, task, episode_seed(seed, task, k)) for i, (task, k) in enumerate(
        (task, k) for task in task_list for k in range(episodes_per_task))]
    results: list[dict | None] = [None] * len(jobs)
    bar = tqdm(total=len(jobs), desc="collect", unit="ep", disable=not progress)
    if workers <= 1:
        env = make_pickplace(image_size=image_size, privileged=privileged)
        policy = ScriptedPolicy(cfg)
        try:
            for job_id, task, ep_seed in jobs:
                results[job_id] = run_episode(env, policy, task, ep_seed)
                bar.update(1)
        finally:
            env.close()
    else:
        _collect_parallel(jobs, results, cfg, image_size, privileged, workers, bar)
    bar.close()
    return results  # type: ignore[return-value]


def _collect_parallel(jobs: list, results: list, cfg: ScriptedConfig, image_size: int,
                      privileged: bool, workers: int, bar: tqdm) -> None:
    """Round-robin the jobs over `workers` spawned processes and gather via a queue.

    A terminal's Ctrl-C reaches every process of its group: the workers are started with
    SIGINT ignored (a spawned Python keeps an ignored SIGINT), so the parent alone answers
    it, and on any exception the workers are terminated at once instead of finishing."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    n = min(workers, len(jobs))
    procs = [ctx.Process(target=_worker, args=(jobs[w::n], cfg, image_size, privileged, queue),
                         daemon=True) for w in range(n)]
    with _sigint_ignored():
        for proc in procs:
            proc.start()
    finished = False
    try:
        done = 0
        while done < len(jobs):
            try:
                job_id, episode = queue.get(timeout=1.0)
            except queue_mod.Empty:
                dead = [p.exitcode for p in procs if p.exitcode not in (0, None)]
                if dead:
                    raise RuntimeError(f"sim/collect.py: worker exit codes {dead}") from None
                continue
            results[job_id] = episode
            done += 1
            bar.update(1)
        finished = True
    finally:
        for proc in procs:
            if not finished:
                proc.terminate()
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored in this process while the block runs (children started in it inherit
    that); a no-op outside the main thread, where Python sets no handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
