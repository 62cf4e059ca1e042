"""Reading finished runs: success at the switch and at the end, the dip, regret, curves.

The dip is the paper's "unlearning" measure (Nakamoto et al. 2023, Sec. 6): the lowest
evaluation success within the first `early_fraction` of online env steps minus the success
at the switch (negative when fine-tuning first loses what pre-training gave; 0 when it does
not). Used by `bench/learning.py` and the comparison in RESULTS.md.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from calql_robot.run.atomic import replacing
from calql_robot.run.runlog import read_metrics


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


def read_outcome(run_dir: Path, early_fraction: float = 0.2) -> RunOutcome:
    """A finished run's outcome from its summary.json, config.json and metrics.jsonl."""
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    switch = int(summary["offline_updates"])
    online = int(config["loop"]["online_env_steps"])
    evals = eval_curve(run_dir)
    # a run resumed after its switch has no offline_success in its summary; its metrics do
    at_switch = [s for step, s in evals if step == switch]
    offline = summary.get("offline_success", at_switch[-1] if at_switch else float("nan"))
    return RunOutcome(str(run_dir), float(offline), float(summary["final_success"]),
                      summary.get("cumulative_regret"), dip(evals, switch, online, early_fraction), evals, switch,
                      int(config["loop"].get("eval_episodes", 0)))


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


def main(argv: list[str] | None = None) -> None:
    """`python -m calql_robot.analysis.outcomes --group NAME RUN... [--group NAME RUN...] --out FILE.png`:
    print each run's outcome (one JSON line per run) and draw the comparison figure."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("--group", nargs="+", action="append", required=True, metavar=("NAME", "RUN"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    outcomes: dict[str, list[RunOutcome]] = {}
    for name, *runs in args.group:
        if not runs:
            parser.error(f"--group {name} names no run directories")
        outcomes[name] = [read_outcome(Path(run)) for run in runs]
        for outcome in outcomes[name]:
            print(json.dumps({"group": name, **outcome.as_dict()}))
    fig = comparison_figure(outcomes, args.title)
    with replacing(args.out, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    print(args.out)


if __name__ == "__main__":
    main()
