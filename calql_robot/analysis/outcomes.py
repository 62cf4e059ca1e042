"""Reading finished runs: success at the switch and at the end, the dip, regret, curves.

The dip is the paper's "unlearning" measure (Nakamoto et al. 2023, Sec. 6): the lowest
evaluation success within the first `early_fraction` of online env steps (evaluations
counted at the step they were due, `due_steps`) minus the success at the switch (negative
when fine-tuning first loses what pre-training gave; 0 when it does not). Used by `bench/learning.py` and the comparison in RESULTS.md.

Across seeds, `group_table` reports each quantity as a mean with a 95% Student-t interval
over the runs (seeds are the unit: evaluation episodes within a run are not independent
draws of the method's performance).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from calql_robot.run.atomic import replacing
from calql_robot.run.runlog import SUMMARY_FILE, read_metrics
from calql_robot.schedule import last_eval_mark


@dataclass
class RunOutcome:
    """What one finished run achieved (see module docstring for the dip)."""

    run_dir: str
    offline_success: float
    final_success: float
    regret: float | None
    dip: float | None
    evals: list[tuple[int, float]]  # (step, success rate) of every evaluation, in order
    switch_step: int
    eval_episodes: int = 0  # episodes per evaluation (its config's loop.eval_episodes)
    seed: int | None = None  # its config's run.seed: the unit that pairs two methods' runs

    def as_dict(self) -> dict:
        return asdict(self)


def eval_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(step, success rate) of the run's evaluations, in logged order."""
    rows = read_metrics(Path(run_dir) / "metrics.jsonl")
    return [(int(r["step"]), float(r["eval/success_rate"])) for r in rows if "eval/success_rate" in r]


def dip(evals: list[tuple[int, float]], switch: int, online_steps: int, early_fraction: float = 0.2) -> float | None:
    """min success over evaluations in (switch, switch + early_fraction * online_steps],
    minus the success at the switch; None without such an evaluation."""
    at_switch = [s for step, s in evals if step == switch]
    early = [s for step, s in evals if switch < step <= switch + early_fraction * online_steps]
    if not at_switch or not early:
        return None
    return min(0.0, min(early) - at_switch[-1])


def due_steps(evals: list[tuple[int, float]], switch: int, loop: dict) -> list[tuple[int, float]]:
    """Each online evaluation at the step its schedule made it due (`schedule.last_eval_mark`:
    the last multiple of `eval_every` or mark of `eval_at` it had reached), for the dip's
    window: an evaluation waits for the running episode to end, so one due at +500 lands
    at +510 or so, and a window of the first 500 online env steps must still count it."""
    every, at = int(loop.get("eval_every") or 0), [int(m) for m in loop.get("eval_at") or ()]
    out = []
    for step, success in evals:
        offset = step - switch
        mark = last_eval_mark(offset, every, at)
        out.append((switch + mark if offset > 0 and mark > 0 else step, success))
    return out


def read_outcome(run_dir: Path, early_fraction: float = 0.2, early_steps: int | None = None,
                 horizon: int | None = None) -> RunOutcome:
    """A finished run's outcome from its summary.json, config.json and metrics.jsonl.
    `early_steps`, when given, sets the dip's window in online env steps instead of a
    fraction of the run's online phase (runs of different lengths then share one window).
    `horizon` cuts a longer run at its first evaluation at or past that many online env
    steps: that evaluation is its final one and the regret counts the episodes before it,
    which is what a run with `--loop.online-env-steps horizon` and the same seed and schedule
    would report (evaluations draw nothing from the training RNG)."""
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    switch = int(summary["offline_updates"])
    online = int(config["loop"]["online_env_steps"])
    if early_steps is not None:
        early_fraction = early_steps / max(online, 1)
    evals = eval_curve(run_dir)
    final, regret = float(summary["final_success"]), summary.get("cumulative_regret")
    cut = next((step for step, _ in evals if horizon is not None and step - switch >= horizon), None)
    if cut is not None:
        evals = [(step, s) for step, s in evals if step <= cut]
        rows = read_metrics(run_dir / "metrics.jsonl")
        wins = [float(r["online/success"]) for r in rows if "online/success" in r and int(r["step"]) <= cut]
        final, regret = evals[-1][1], (1.0 - float(np.mean(wins)) if wins else None)
    # a run resumed after its switch has no offline_success in its summary; its metrics do
    at_switch = [s for step, s in evals if step == switch]
    offline = summary.get("offline_success", at_switch[-1] if at_switch else float("nan"))
    seed = config.get("run", {}).get("seed")
    due = due_steps(evals, switch, config["loop"])
    return RunOutcome(str(run_dir), float(offline), final, regret, dip(due, switch, online, early_fraction), evals, switch,
                      int(config["loop"].get("eval_episodes", 0)), None if seed is None else int(seed))


def t_quantile(p: float, df: int) -> float:
    """Student-t quantile (inverse CDF) for 0.5 < p < 1, by bisection on the CDF integrated
    from the density (Simpson's rule): the intervals over seeds need it for df = 1..~30,
    and no pinned dependency provides it (torch's StudentT has no icdf)."""
    if not 0.5 < p < 1.0 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(x: float) -> float:
        t = np.linspace(0.0, x, 4001)
        pdf = np.exp(log_c - (df + 1) / 2 * np.log1p(t * t / df))
        return 0.5 + (x / 4000 / 3) * (pdf[0] + pdf[-1] + 4 * pdf[1:-1:2].sum() + 2 * pdf[2:-1:2].sum())

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        hi *= 2.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return 0.5 * (lo + hi)


def mean_interval(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of its 95% Student-t interval (nan half-width for one value)."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if x.size == 0:
        return math.nan, math.nan
    if x.size == 1:
        return float(x[0]), math.nan
    return float(x.mean()), t_quantile(0.975, x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)


def online_evals(outcome: RunOutcome) -> list[tuple[int, float]]:
    """(online env steps since the switch, success) of the switch's and later evaluations."""
    return [(step - outcome.switch_step, s) for step, s in outcome.evals if step >= outcome.switch_step]


def calibration_at(run_dir: Path, switch: int, last: int | None = None) -> dict[str, float]:
    """Q(s0, pi(s0)) minus the realised discounted return (`eval/q0 - eval/return0`) at the
    switch and at the last evaluation (up to step `last`), on all evaluation episodes and on
    successful ones."""
    rows = [r for r in read_metrics(Path(run_dir) / "metrics.jsonl")
            if "eval/q0" in r and (last is None or int(r["step"]) <= last)]
    out: dict[str, float] = {}
    for tag, row in (("switch", next((r for r in rows if int(r["step"]) == switch), None)),
                     ("final", rows[-1] if rows else None)):
        for suffix in ("", "_success"):
            q, g = (row or {}).get(f"eval/q0{suffix}"), (row or {}).get(f"eval/return0{suffix}")
            out[f"{tag}{suffix}"] = float(q) - float(g) if q is not None and g is not None else math.nan
    return out


def _cell(values: list[float], digits: int = 2) -> str:
    mean, half = mean_interval(values)
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" + ("" if math.isnan(half) else f" ± {half:.{digits}f}")


def group_table(groups: dict[str, list[RunOutcome]]) -> str:
    """A Markdown table, one row per group: success at the switch, at each later online
    evaluation (columns headed by the mean env step, evaluations matched by order), the
    dip and the regret, and the calibration gap Q(s0, pi) - realised return (all episodes,
    successful ones) at the switch and at the end; each as mean ± 95% interval over runs."""
    curves = {label: [online_evals(o) for o in runs] for label, runs in groups.items()}
    n_marks = min(len(c) for cs in curves.values() for c in cs)
    steps = [int(round(np.mean([c[i][0] for cs in curves.values() for c in cs]))) for i in range(n_marks)]
    head = (["group", "runs"] + [("switch" if i == 0 else f"+{s}") for i, s in enumerate(steps)]
            + ["dip", "regret", "Q0 - G0 switch (succ.)", "Q0 - G0 final (succ.)"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, runs in groups.items():
        cal = [calibration_at(Path(o.run_dir), o.switch_step, o.evals[-1][0]) for o in runs]
        cells = [label, str(len(runs))]
        cells += [_cell([c[i][1] for c in curves[label]]) for i in range(n_marks)]
        cells += [_cell([o.dip for o in runs]), _cell([o.regret for o in runs])]
        for tag in ("switch", "final"):
            cells.append(f"{_cell([c[tag] for c in cal], 1)} ({_cell([c[tag + '_success'] for c in cal], 1)})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def comparison_figure(groups: dict[str, list[RunOutcome]], title: str = ""):
    """Success rate over steps, one thin line per run and a thick mean per group (the i-th
    evaluations of the runs averaged, at their mean step), the switch marked; below, each
    run's calibration on its own evaluation episodes: the critic's Q(s0, pi(s0)) (solid)
    against the discounted return the episodes realised (dotted), as the runs log them
    (`eval/q0`, `eval/return0`; README). Not the batch mean of G, which failure-rule rows
    dominate (RESULTS.md, session 8). Paper Fig. 6."""
    import numpy as np
    from matplotlib.figure import Figure

    from calql_robot.run.plots import series

    fig = Figure(figsize=(8.0, 6.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    colours = ["tab:red", "tab:blue", "tab:green", "tab:purple",  # the published figures' first four
               "tab:orange", "tab:brown", "tab:pink", "tab:gray", "tab:olive", "tab:cyan"]
    if len(groups) > len(colours):
        raise ValueError(f"at most {len(colours)} groups fit one figure, got {len(groups)}")
    switch = None
    for colour, (label, runs) in zip(colours, groups.items()):
        curves = []
        for outcome in runs:
            switch = outcome.switch_step
            steps, values = zip(*outcome.evals)
            top.plot(steps, values, color=colour, alpha=0.3, linewidth=0.8)
            curves.append(outcome.evals)
            rows = read_metrics(Path(outcome.run_dir) / "metrics.jsonl")
            for key, style in (("eval/q0", "-"), ("eval/return0", ":")):
                steps_k, values_k, _ = series(rows, key)
                bottom.plot(steps_k, values_k, color=colour, alpha=0.6, linewidth=0.9, linestyle=style)
        n = min(len(c) for c in curves)
        steps = [np.mean([c[i][0] for c in curves]) for i in range(n)]
        means = [np.mean([c[i][1] for c in curves]) for i in range(n)]
        top.plot(steps, means, color=colour, linewidth=2.2, marker="o", markersize=3,
                 label=f"{label} (mean of {len(runs)})")
    for ax in (top, bottom):
        if switch is not None:
            ax.axvline(switch, color="black", linestyle="--", linewidth=1.0, alpha=0.7)
        ax.grid(alpha=0.3)
    episodes = sorted({o.eval_episodes for runs in groups.values() for o in runs})
    top.set_ylabel(f"success rate ({' / '.join(map(str, episodes))} eval episodes)", fontsize=8)
    top.legend(fontsize=8)
    bottom.set_ylabel("Q(s0, pi(s0)) (solid), realised return (dotted)", fontsize=8)
    bottom.set_xlabel("step (offline updates, then offline updates + online env steps; dashed: switch)", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def online_figure(groups: dict[str, list[RunOutcome]], title: str = ""):
    """The unlearning view (paper Fig. 2 and 8): success from the switch on against online
    env steps, each group's mean with its 95% interval over runs shaded (evaluations matched
    by order, at their mean env step), thin lines per run; below, each group's mean
    Q(s0, pi(s0)) (solid) against the mean realised discounted return of the same
    evaluation episodes (dotted), the calibration the paper is named for."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 6.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    colours = ["tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:brown"]
    if len(groups) > len(colours):
        raise ValueError(f"at most {len(colours)} groups fit one figure, got {len(groups)}")
    for colour, (label, runs) in zip(colours, groups.items()):
        curves = [online_evals(o) for o in runs]
        n = min(len(c) for c in curves)
        steps = np.array([np.mean([c[i][0] for c in curves]) for i in range(n)])
        stats = np.array([mean_interval([c[i][1] for c in curves]) for i in range(n)])
        for c in curves:
            top.plot([p[0] for p in c], [p[1] for p in c], color=colour, alpha=0.2, linewidth=0.7)
        top.plot(steps, stats[:, 0], color=colour, linewidth=2.0, marker="o", markersize=3,
                 label=f"{label} ({len(runs)} runs)")
        top.fill_between(steps, stats[:, 0] - stats[:, 1], stats[:, 0] + stats[:, 1], color=colour, alpha=0.15)
        for key, style in (("eval/q0", "-"), ("eval/return0", ":")):
            per_run = []
            for o in runs:
                rows = [r for r in read_metrics(Path(o.run_dir) / "metrics.jsonl")
                        if key in r and o.switch_step <= int(r["step"]) <= o.evals[-1][0]]
                per_run.append([float(r[key]) for r in rows])
            m = min(len(v) for v in per_run)
            bottom.plot(steps[:m], np.mean([v[:m] for v in per_run], axis=0), color=colour, linestyle=style,
                        linewidth=1.6, label=f"{label}: {'Q(s0, pi(s0))' if key == 'eval/q0' else 'realised return'}")
    episodes = sorted({o.eval_episodes for runs in groups.values() for o in runs})
    top.set_ylabel(f"success rate ({' / '.join(map(str, episodes))} eval episodes; band: 95% over runs)", fontsize=8)
    top.set_ylim(-0.03, 1.03)  # success is a rate: the t-band may reach past it, the axis does not
    top.legend(fontsize=8)
    bottom.set_ylabel("mean over runs", fontsize=8)
    bottom.legend(fontsize=7, ncol=2)
    bottom.set_xlabel("online env steps since the switch", fontsize=8)
    for ax in (top, bottom):
        ax.axvline(0, color="black", linestyle="--", linewidth=1.0, alpha=0.7)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return fig


def main(argv: list[str] | None = None) -> None:
    """`python -m calql_robot.analysis.outcomes --group NAME RUN... [--group NAME RUN...] --out FILE.png`:
    print each run's outcome (one JSON line per run) and draw the comparison figure
    (`--online`: the unlearning view from the switch on; `--table FILE.md`: group_table)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("--group", nargs="+", action="append", required=True, metavar=("NAME", "RUN"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--title", default="")
    parser.add_argument("--online", action="store_true", help="draw success from the switch on, with 95%% bands")
    parser.add_argument("--table", type=Path, default=None, help="also write group_table's Markdown here")
    parser.add_argument("--early-steps", type=int, default=None,
                        help="the dip's window in online env steps (default: the first 20%% of each run's)")
    parser.add_argument("--horizon", type=int, default=None,
                        help="cut longer runs at their first evaluation at or past this many online env steps")
    args = parser.parse_args(argv)
    outcomes: dict[str, list[RunOutcome]] = {}
    for name, *runs in args.group:
        if not runs:
            parser.error(f"--group {name} names no run directories")
        outcomes[name] = [read_outcome(Path(run), early_steps=args.early_steps, horizon=args.horizon) for run in runs]
        for outcome in outcomes[name]:
            print(json.dumps({"group": name, **outcome.as_dict()}))
    fig = (online_figure if args.online else comparison_figure)(outcomes, args.title)
    with replacing(args.out, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    print(args.out)
    if args.table is not None:
        table = group_table(outcomes)
        with replacing(args.table, ".md") as tmp:
            Path(tmp).write_text(table, encoding="utf-8")
        print(table, end="")


if __name__ == "__main__":
    main()
