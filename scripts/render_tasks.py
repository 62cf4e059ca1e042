"""Render one noise-free scripted episode per target object: a PNG strip and an animated GIF.

    python scripts/render_tasks.py            # writes docs/pickplace_tasks.png and .gif

One row per task (target i with distractor (i + 1) mod 5), a few frames per episode from
`env.render()` (the same fixed camera as the observation, at `render_size`). The picture is
for the README: it shows what each task asks, and that the scripted policy solves it.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import imageio.v2 as imageio
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tyro  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere
import sim  # noqa: E402
from sim import collect, objects  # noqa: E402
from sim.scripted import ScriptedConfig, ScriptedPolicy  # noqa: E402
from calql_robot.run.atomic import replacing  # noqa: E402


@dataclass
class RenderConfig:
    """Render the pick-and-place tasks for the README."""

    png: str = "docs/pickplace_tasks.png"
    """Output strip: one row per task, frames_per_episode frames per row."""
    gif: str | None = "docs/pickplace_tasks.gif"
    """Output animation (all tasks side by side); None to skip it."""
    render_size: int = 128
    """Side of the rendered frames in pixels."""
    frames_per_episode: int = 6
    """Frames shown per row of the PNG, evenly spaced from reset to the last step."""
    seed: int = 0
    """Reset seed of the first task's episode; task i uses seed + i (layouts differ)."""


def run_episode(target: int, distractor: int, seed: int,
                cfg: RenderConfig) -> tuple[np.ndarray, bool]:
    """Frames (T+1, S, S, 3) of one noise-free scripted episode, and whether it succeeded."""
    env = sim.make_pickplace(target, distractor, image_size=16, render_size=cfg.render_size,
                             render_mode="rgb_array")
    policy = ScriptedPolicy(ScriptedConfig(noise=0.0, p_wrong=0.0, p_drop=0.0))
    frames: list[np.ndarray] = []
    try:
        episode = collect.run_episode(env, policy, (target, distractor), seed, frames=frames)
    finally:
        env.close()
    return np.stack(frames), episode["success"]


def write_strip(episodes: list[tuple[np.ndarray, bool]], labels: list[str],
                cfg: RenderConfig) -> None:
    """PNG grid: row = task, columns = evenly spaced frames (step index in each title)."""
    k = cfg.frames_per_episode
    fig, axes = plt.subplots(len(episodes), k, figsize=(1.6 * k, 1.75 * len(episodes)),
                             squeeze=False)
    for row, ((frames, success), label) in enumerate(zip(episodes, labels)):
        steps = np.linspace(0, len(frames) - 1, k).round().astype(int)
        for ax, t in zip(axes[row], steps):
            ax.imshow(frames[t])
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"t={t}", fontsize=7, pad=2)
        axes[row, 0].set_ylabel(f"{label}\n({'success' if success else 'failed'})",
                                fontsize=7)
    fig.tight_layout(pad=0.4)
    _atomic(cfg.png, lambda tmp: fig.savefig(tmp, dpi=80, format="png"))
    plt.close(fig)


def write_gif(episodes: list[tuple[np.ndarray, bool]], cfg: RenderConfig) -> None:
    """All tasks side by side; finished episodes hold their last frame."""
    longest = max(len(frames) for frames, _ in episodes)
    padded = [np.concatenate([f, np.repeat(f[-1:], longest - len(f), axis=0)])
              for f, _ in episodes]
    movie = np.concatenate(padded, axis=2)  # (T, S, n*S, 3)
    _atomic(cfg.gif, lambda tmp: imageio.mimsave(tmp, list(movie), format="GIF",
                                                 duration=100, loop=0))


def _atomic(path: str, write) -> None:
    """Write through the project's one temporary-name-then-rename writer."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with replacing(out, out.suffix) as tmp:
        write(str(tmp))


def main(cfg: RenderConfig) -> None:
    tasks = [(t, (t + 1) % objects.N_TASK_OBJECTS) for t in range(objects.N_TASK_OBJECTS)]
    episodes = [run_episode(t, d, cfg.seed + t, cfg) for t, d in tasks]
    labels = [f"{objects.TARGETS[t].name}\nvs {objects.DISTRACTORS[d].name}" for t, d in tasks]
    for (t, d), (frames, success) in zip(tasks, episodes):
        print(f"task ({t}, {d}): {len(frames) - 1} steps, success={success}")
    write_strip(episodes, labels, cfg)
    print(f"wrote {cfg.png} ({os.path.getsize(cfg.png) / 1e3:.0f} kB)")
    if cfg.gif:
        write_gif(episodes, cfg)
        print(f"wrote {cfg.gif} ({os.path.getsize(cfg.gif) / 1e3:.0f} kB)")


if __name__ == "__main__":
    main(tyro.cli(RenderConfig))
