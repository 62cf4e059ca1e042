"""Roll out a trained run's policy and write a captioned video (visual or state runs).

    python rollout.py --run-dir runs/<dir>                      # 5 deterministic episodes -> mp4
    python rollout.py --run-dir runs/<dir> --episodes 10 --gif  # also a GIF beside the mp4
    python rollout.py --run-dir runs/<dir> --checkpoint runs/<dir>/checkpoints/switch.pt \
        --episodes 100 --no-video                               # a 100-episode success rate only
    python rollout.py --help                                    # every option

The run is rebuilt from `<run_dir>/config.json` (its `domain` field says which env and
networks) and `<run_dir>/checkpoints/latest.pt` (loaded with weights_only=True). Episode
seeds follow the training loop's evaluation seeds, so with the same number of episodes a
rollout of the final checkpoint faces the initial states of the run's final evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from calql_robot.errors import ConfigError, cli_main, tyro_cli
from calql_robot.loop import eval_seed_base
from calql_robot.policy_io import load_policy, policy_fn
from calql_robot.rollouts import run_episode
from calql_robot.run.video import VideoRecorder


@dataclass
class RolloutConfig:
    """Load a run's checkpoint, run episodes, write an annotated mp4 and print the success rate."""

    run_dir: str
    """Run directory holding config.json and checkpoints/."""
    checkpoint: str | None = None
    """Checkpoint file; None: <run_dir>/checkpoints/latest.pt."""
    episodes: int = 5
    """Episodes to roll out (all are recorded, one after another, unless --no-video)."""
    deterministic: bool = True
    """tanh(mean) actions, as in evaluation; --no-deterministic samples from the policy."""
    seed: int | None = None
    """Seed of the episode seeds; None: the run's own seed (its evaluation episodes)."""
    output: str | None = None
    """mp4 path; None: <run_dir>/rollouts/rollout_<checkpoint stem>.mp4."""
    force: bool = False
    """Replace an existing --output file (a file you named is never replaced without it)."""
    video: bool = True
    """Record the episodes; --no-video only counts successes (faster: no frames rendered;
    a 100-episode estimate of a checkpoint's success has a standard error of ~0.05)."""
    gif: bool = False
    """Also write a GIF beside the mp4."""
    fps: int = 10
    """Frames per second of the video."""
    hold: int = 5
    """Extra copies of each episode's last frame, so its result stays readable."""
    device: str = "cpu"
    """'cpu', 'cuda' or 'auto'."""
    threads: int = 1
    """torch CPU threads (acting is one small forward per step)."""


def rollout(cfg: RolloutConfig) -> dict[str, float | str]:
    """Run the episodes into one video; return success rate, mean return and the paths."""
    if cfg.episodes < 1 or cfg.fps < 1 or cfg.hold < 0:
        raise ConfigError(f"need --episodes >= 1, --fps >= 1, --hold >= 0; got {cfg.episodes}, {cfg.fps}, {cfg.hold}")
    if not Path(cfg.run_dir).is_dir():
        raise ConfigError(f"--run-dir {cfg.run_dir}: no such run directory")
    if not cfg.video and (cfg.output or cfg.gif):
        raise ConfigError("--no-video writes no file; drop --output / --gif, or drop --no-video")
    named = Path(cfg.output) if cfg.output else None
    if named is not None and not cfg.force and (named.exists() or (cfg.gif and named.with_suffix(".gif").exists())):
        raise ConfigError(f"--output {cfg.output} exists" + ("" if named.exists() else " (its .gif)"),
                          "pass --force to replace it, or another --output")
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    loaded = load_policy(Path(cfg.run_dir), None if cfg.checkpoint is None else Path(cfg.checkpoint), cfg.device)
    seed = loaded.config.run.seed if cfg.seed is None else cfg.seed
    out = Path(cfg.output) if cfg.output else Path(cfg.run_dir) / "rollouts" / f"rollout_{loaded.checkpoint.stem}.mp4"
    recorder = VideoRecorder(out, fps=cfg.fps) if cfg.video else None
    policy = policy_fn(loaded.learner, cfg.deterministic)
    env = loaded.make_env()
    successes, returns = [], []
    try:
        for i in range(cfg.episodes):
            episode = run_episode(env, policy, eval_seed_base(seed) + i, recorder, index=i)
            if recorder is not None:  # the last frame again, so the episode's result stays readable
                for _ in range(cfg.hold):
                    recorder.add(recorder.frames[-1])
            success, ret = episode["success"], episode["return"]
            successes.append(success)
            returns.append(ret)
            print(f"episode {i}: {'success' if success else 'fail'}, return {ret:.2f}", flush=True)
    finally:
        env.close()
    if recorder is not None:
        recorder.save(gif=cfg.gif)
    result = {"success_rate": float(np.mean(successes)), "mean_return": float(np.mean(returns)),
              "episodes": cfg.episodes, "video": str(out) if recorder is not None else None,
              "checkpoint": str(loaded.checkpoint), "domain": loaded.domain}
    written = (f"; video {out}" + (f" and {out.with_suffix('.gif')}" if cfg.gif else "")) if recorder is not None else ""
    print(f"{loaded.domain} {loaded.checkpoint} {loaded.step_info}: success rate {result['success_rate']:.2f} "
          f"over {cfg.episodes} episodes, mean return {result['mean_return']:.2f}{written}")
    return result


if __name__ == "__main__":
    cli_main(lambda argv: rollout(tyro_cli(RolloutConfig, args=argv)))  # --debug: tracebacks
