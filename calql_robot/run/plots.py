"""Learning curves from a run's metrics.jsonl (written by `calql_robot.run.runlog`).

One subplot per metric, x = gradient/env step as logged, offline rows and online rows
in different colours, and a vertical dashed line at the offline->online switch (the
step of the first row with phase "online"), the picture of the paper's Fig. 1 / 6: does
fine-tuning start from the pre-trained level, dip ("unlearning"), or climb?

Rendering uses `matplotlib.figure.Figure` directly: it draws with the Agg canvas and
never touches pyplot's global state or the process-wide backend, so calling this from a
training loop (or a test) cannot open windows or leak figures.

Usage from the shell::

    python -m calql_robot.run.plots runs/<run>/metrics.jsonl runs/<run>/curves.png
"""
from __future__ import annotations

import argparse
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from calql_robot.run.atomic import replacing
from calql_robot.run.runlog import read_metrics

# Evaluation first (SPEC section 3 reports success rate, return, kitchen score, regret),
# then the losses and Cal-QL diagnostics (SPEC section 1: the "bound rate"). The train/
# names are the learner's `update()` metric names (calql_robot/agents/calql.py) under "train/".
DEFAULT_KEYS = (
    "eval/success_rate",
    "eval/return",
    "eval/kitchen_score",
    "online/cumulative_regret",
    "train/critic_loss",
    "train/actor_loss",
    "train/bellman_loss",
    "train/cql_diff",
    "train/q_data",
    "train/q_pi",
    "train/mc_return",
    "train/q_data_mean",
    "train/bound_rate",
    "train/alpha",
    "train/alpha_prime",
)
PHASE_COLOURS = {"offline": "tab:blue", "online": "tab:orange"}
OTHER_COLOUR = "tab:gray"
MAX_COLS = 3


def switch_step(rows: Sequence[dict[str, Any]]) -> int | None:
    """Step of the first online row (the offline->online switch), or None if offline only."""
    return next((int(r["step"]) for r in rows if r.get("phase") == "online"), None)


def divergence_step(rows: Sequence[dict[str, Any]]) -> int | None:
    """Step of the row a run logged for the update whose loss was not finite (the loop's
    `error/non_finite_loss`), or None: the figure marks where a diverged run stopped."""
    return next((int(r["step"]) for r in rows if r.get("error/non_finite_loss")), None)


def series(rows: Sequence[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, values, phases) of the rows that carry a numeric `key`. Rows are sparse (an
    eval row has no losses), so each key keeps only its own rows; NaN/inf stay in and
    show as gaps, which is the honest picture of a diverged value."""
    hits = [r for r in rows if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
    steps = np.array([r["step"] for r in hits], dtype=np.int64)
    values = np.array([r[key] for r in hits], dtype=np.float64)
    phases = np.array([str(r.get("phase", "")) for r in hits], dtype=object)
    return steps, values, phases


def _resolve_keys(rows: Sequence[dict[str, Any]], keys: Sequence[str] | None, path: Path) -> list[str]:
    """Keys that exist in the file; missing requested keys are skipped with a warning,
    and having nothing left to draw is an error that lists what the file does hold."""
    present = {k for r in rows for k, v in r.items() if isinstance(v, (int, float)) and k not in ("step", "time")}
    wanted = list(DEFAULT_KEYS) if keys is None else list(keys)
    missing = [k for k in wanted if k not in present]
    chosen = [k for k in wanted if k in present]
    if not chosen:
        raise ValueError(f"{path}: none of the metrics {wanted} are in the file; it has {sorted(present)}")
    if keys is not None and missing:
        warnings.warn(f"{path}: skipping metrics not in the file: {missing}")
    return chosen


def _draw_key(ax: Any, rows: Sequence[dict[str, Any]], key: str, switch: int | None,
              diverged: int | None = None) -> None:
    """One subplot: a line per phase, markers when points are sparse (evaluations)."""
    steps, values, phases = series(rows, key)
    marker = "o" if len(steps) <= 50 else None
    for phase in dict.fromkeys(phases.tolist()):  # phases in order of appearance
        sel = phases == phase
        ax.plot(steps[sel], values[sel], marker=marker, markersize=3, linewidth=1.2,
                color=PHASE_COLOURS.get(phase, OTHER_COLOUR), label=phase)
    if switch is not None:
        ax.axvline(switch, color="black", linestyle="--", linewidth=1.0, alpha=0.7)
    if diverged is not None:
        ax.axvline(diverged, color="tab:red", linestyle=":", linewidth=1.5)
    ax.set_title(key, fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def learning_curve_figure(rows: Sequence[dict[str, Any]], keys: Sequence[str], title: str = "") -> Figure:
    """The figure itself (one subplot per key, in `keys` order); split out so callers and
    tests can inspect or restyle it before saving."""
    switch, diverged = switch_step(rows), divergence_step(rows)
    ncols = min(MAX_COLS, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig = Figure(figsize=(4.0 * ncols, 2.8 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, key in zip(axes, keys):
        _draw_key(ax, rows, key, switch, diverged)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    phases = dict.fromkeys(str(r.get("phase", "")) for r in rows)  # all phases, in order
    handles = [Line2D([], [], color=PHASE_COLOURS.get(p, OTHER_COLOUR), label=p) for p in phases]
    handles += [Line2D([], [], color="black", linestyle="--", label="online switch")] if switch is not None else []
    handles += [Line2D([], [], color="tab:red", linestyle=":", label="non-finite loss")] if diverged is not None else []
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8)
    fig.suptitle(title + ("" if switch is None else f"  (online from step {switch})")
                 + ("" if diverged is None else f"  (diverged at step {diverged})"), fontsize=10)
    return fig


def plot_learning_curves(metrics_path: Path, out_path: Path, keys: list[str] | None = None) -> Path:
    """Draw the learning curves of `metrics_path` into the PNG `out_path` (atomically).

    keys=None plots whichever of DEFAULT_KEYS exist. Raises ValueError for a file with no
    rows or with none of the keys; FileNotFoundError (naming it) for a missing file.
    """
    metrics_path, out_path = Path(metrics_path), Path(out_path)
    if out_path.suffix.lower() != ".png":
        raise ValueError(f"out_path must end in .png, got {out_path}")
    rows = read_metrics(metrics_path)
    if not rows:
        raise ValueError(f"{metrics_path}: no metric rows to plot (empty file)")
    fig = learning_curve_figure(rows, _resolve_keys(rows, keys, metrics_path), metrics_path.parent.name)
    return _save(fig, out_path)


CALIBRATION_KEYS = ("eval/q0", "train/q_pi", "train/mc_return")
"""Any of these makes a run's calibration.png: agents with a critic log them, behaviour
cloning does not."""

CALIBRATION_PANELS: tuple[tuple[str, tuple[tuple[str, str, str, str], ...]], ...] = (
    ("value at s0 of the evaluations", (
        ("eval/q0", "Q(s0, pi(s0))", "tab:red", "-"),
        ("eval/return0", "realised discounted return", "tab:green", "-"),
        ("eval/q0_success", "Q(s0, pi(s0)), successes", "tab:red", ":"),
        ("eval/return0_success", "realised return, successes", "tab:green", ":"))),
    ("Q(s, pi(s)) - G, batch rows", (
        ("train/q_pi_minus_g_succ", "rows of successful trajectories", "tab:blue", "-"),
        ("train/q_pi_minus_g_fail", "failure-rule rows", "tab:gray", "-"))),
    ("fraction Q(s, a_pi) < G", (
        ("train/bound_rate_succ", "rows of successful trajectories", "tab:blue", "-"),
        ("train/bound_rate_fail", "failure-rule rows", "tab:gray", "-"),
        ("train/bound_rate", "all rows (when the bound is on)", "tab:purple", "--"))),
)
"""What calibration.png draws, panel by panel: (y label, ((metric key, label, colour, style), ...))."""


def calibration_figure(rows: Sequence[dict[str, Any]], title: str = "") -> Figure:
    """Calibration as the paper means it (Nakamoto et al. 2023, Section 4): the critic's
    Q(s0, pi(s0)) against the discounted return the policy realised from the same initial
    states at every evaluation (top); Q(s, pi(s)) - G and the bound rate on the rows of
    successful trajectories and on failure-rule rows, whose G bounds nothing (middle,
    bottom). The switch is marked; a metric the run did not log is left out."""
    switch = switch_step(rows)
    fig = Figure(figsize=(7.5, 7.0), layout="constrained")
    axes = fig.subplots(len(CALIBRATION_PANELS), 1, sharex=True, height_ratios=(2, 1.5, 1))
    for ax, (ylabel, lines) in zip(axes, CALIBRATION_PANELS):
        for key, label, colour, style in lines:
            steps, values, _ = series(rows, key)
            if len(steps):
                marker = "o" if key.startswith("eval/") else None
                ax.plot(steps, values, color=colour, linestyle=style, marker=marker, markersize=3,
                        linewidth=1.2, label=label)
        if switch is not None:
            ax.axvline(switch, color="black", linestyle="--", linewidth=1.0, alpha=0.7, label="online switch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.tick_params(labelsize=7)
        ax.set_ylabel(ylabel, fontsize=8)
    axes[1].axhline(0.0, color="black", linewidth=0.6)
    axes[-1].set_xlabel("step (offline updates, then offline updates + online env steps)", fontsize=8)
    fig.suptitle(f"calibration {title}", fontsize=10)
    return fig


def has_calibration_metrics(metrics_path: Path) -> bool:
    """Whether the run logged any calibration key (agents with a critic and MC returns do;
    behaviour cloning does not), so the loop draws calibration.png only for those."""
    return any(isinstance(r.get(k), (int, float)) for r in read_metrics(Path(metrics_path)) for k in CALIBRATION_KEYS)


def plot_calibration(metrics_path: Path, out_path: Path) -> Path:
    """Draw `calibration_figure` of `metrics_path` into the PNG `out_path` (atomically)."""
    metrics_path, out_path = Path(metrics_path), Path(out_path)
    rows = read_metrics(metrics_path)
    if not any(isinstance(r.get(k), (int, float)) for r in rows for k in CALIBRATION_KEYS):
        raise ValueError(f"{metrics_path}: no calibration metrics ({', '.join(CALIBRATION_KEYS)}) to plot")
    return _save(calibration_figure(rows, metrics_path.parent.name), out_path)


def _save(fig: Figure, out_path: Path) -> Path:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(out_path, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return out_path


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: `python -m calql_robot.run.plots METRICS.jsonl OUT.png [--keys k1 k2 ...]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--keys", nargs="+", default=None)
    args = parser.parse_args(argv)
    print(plot_learning_curves(args.metrics, args.out, args.keys))


if __name__ == "__main__":
    main()
