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

from calql_robot.runlog import read_metrics


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
    return RunOutcome(str(run_dir), float(summary["offline_success"]), float(summary["final_success"]),
                      summary.get("cumulative_regret"), dip(evals, switch, online, early_fraction), evals, switch)
