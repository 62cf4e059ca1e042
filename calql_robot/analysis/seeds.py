"""Pooling runs over seeds: which runs belong together, their curves with 95% intervals,
the table of pre-trained success, fine-tuned success, dip and regret, and the figures.

A user's question is comparative (does calibrated pre-training fine-tune better than the
alternatives, on my task?), and its unit is the seed: evaluation episodes within a run are
not independent draws of the method's performance, so every interval here is a Student-t
95% interval over runs (`outcomes.mean_interval`), with the number of runs beside it.

Runs are grouped by what their own `config.json` says, so any set of run directories works,
not only a sweep's: the task (`task` for registry tasks, else the pick-and-place domain) and
the method (`--algo`; `cql` / `wsrl-cql` where Cal-QL's bound is off, as `sweep.py` names
them). Definitions (`outcomes.py`): the dip is the lowest evaluation success within the
first `early_fraction` of online env steps minus the success at the switch (0 when it never
falls below it); regret is CORL's cumulative regret, the mean over online training episodes
of (1 - success).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calql_robot.analysis.outcomes import RunOutcome, mean_interval, read_outcome
from calql_robot.errors import ConfigError
from calql_robot.run.atomic import replacing
from calql_robot.run.runlog import CONFIG_FILE, SUMMARY_FILE, read_metrics

TASK_NAMES = {"pickplace_state": "pickplace-state", "pickplace_visual": "pickplace-visual"}
BOUND_OFF_NAMES = {"calql": "cql", "wsrl-calql": "wsrl-cql"}


def find_runs(paths: list[Path]) -> list[Path]:
    """Every finished run directory (config.json and summary.json) at or under `paths`, sorted."""
    found: set[Path] = set()
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path}: no such file or directory")
        if (path / SUMMARY_FILE).is_file() and (path / CONFIG_FILE).is_file():
            found.add(path)
        found.update(p.parent for p in path.rglob(SUMMARY_FILE) if (p.parent / CONFIG_FILE).is_file())
    return sorted(found)


def labels_of(run_dir: Path) -> tuple[str, str]:
    """(task, method) of a run, from its config.json."""
    config = json.loads((Path(run_dir) / CONFIG_FILE).read_text(encoding="utf-8"))
    task = config.get("task") or TASK_NAMES.get(config.get("domain", ""), config.get("domain", "?"))
    algo = config.get("algo", "calql")
    if algo in BOUND_OFF_NAMES and not config.get("learner", {}).get("calql_bound", True):
        algo = BOUND_OFF_NAMES[algo]
    return str(task), str(algo)


METHOD_ORDER = ("calql", "cql", "cql-sac", "wsrl-calql", "wsrl-cql", "iql", "wsrl-iql", "awac", "odt", "sac",
                "sac-offline", "hybrid", "bc")
"""Table and legend order: the paper's method, its ablation, the baselines, the reference."""


def group_runs(run_dirs: list[Path], early_fraction: float = 0.2) -> dict[str, dict[str, list[RunOutcome]]]:
    """task -> method -> outcomes, methods in `METHOD_ORDER` (others after, by name)."""
    groups: dict[str, dict[str, list[RunOutcome]]] = defaultdict(dict)
    for run in run_dirs:
        task, algo = labels_of(run)
        groups[task].setdefault(algo, []).append(read_outcome(run, early_fraction=early_fraction))
    rank = {name: i for i, name in enumerate(METHOD_ORDER)}
    return {task: dict(sorted(methods.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))
            for task, methods in groups.items()}


@dataclass
class Stat:
    """A mean with its 95% interval half-width over `n` runs (nan when it has none)."""

    mean: float
    half: float
    n: int

    @classmethod
    def of(cls, values: list[float | None]) -> Stat:
        kept = [float(v) for v in values if v is not None and not math.isnan(float(v))]
        mean, half = mean_interval(kept)
        return cls(mean, half, len(kept))

    def csv_cells(self) -> list:
        """mean, half-width (empty where nan) and n, for a CSV row."""
        return ["" if math.isnan(self.mean) else f"{self.mean:.6g}",
                "" if math.isnan(self.half) else f"{self.half:.6g}", self.n]

    def text(self, digits: int = 2) -> str:
        if math.isnan(self.mean):
            return "-"
        return f"{self.mean:.{digits}f}" + ("" if math.isnan(self.half) else f" ± {self.half:.{digits}f}")


def summary_rows(groups: dict[str, dict[str, list[RunOutcome]]]) -> list[dict]:
    """One row per (task, method): runs, pre-trained success, fine-tuned success, dip and
    regret, each a `Stat` over runs. A method without an online phase (behaviour cloning)
    has no fine-tuned success, dip or regret."""
    rows = []
    for task, methods in groups.items():
        for algo, runs in methods.items():
            online = [o for o in runs if has_online(o)]
            rows.append({"task": task, "method": algo, "runs": len(runs),
                         "pretrained": Stat.of([o.offline_success for o in runs]),
                         "finetuned": Stat.of([o.final_success for o in online]),
                         "dip": Stat.of([o.dip for o in online]),
                         "regret": Stat.of([o.regret for o in online]),
                         "wall_min": Stat.of([w / 60 for w in map(wall_s, (Path(o.run_dir) for o in runs)) if w is not None])})
    return rows


def has_online(o: RunOutcome) -> bool:
    """Whether the run evaluated after its switch (behaviour cloning does not)."""
    return any(step > o.switch_step for step, _ in o.evals)


def wall_s(run_dir: Path) -> float | None:
    """The run's own wall clock at its last row (`progress/wall_s`): its sessions, not the
    time it lay stopped. Runs resumed before the loop carried its clock over from the
    checkpoint started each session's clock at 0; each such restart adds the clock of the
    last row before it."""
    walls = [float(r["progress/wall_s"]) for r in read_metrics(run_dir / "metrics.jsonl") if "progress/wall_s" in r]
    if not walls:
        return None
    total = 0.0
    for before, after in zip(walls, walls[1:]):
        if after < before:
            total += before
    return total + walls[-1]


COLUMNS = ("pretrained", "finetuned", "dip", "regret", "wall_min")


def markdown_table(rows: list[dict]) -> str:
    """The table as Markdown: mean ± 95% interval over runs."""
    head = ["task", "method", "runs", "pre-trained success", "fine-tuned success", "dip", "regret", "wall (min)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        lines.append("| " + " | ".join([row["task"], row["method"], str(row["runs"]),
                                          *(row[c].text(1 if c == "wall_min" else 2) for c in COLUMNS)]) + " |")
    return "\n".join(lines) + "\n"


def csv_table(rows: list[dict]) -> str:
    """The table as CSV: each quantity's mean, interval half-width and number of runs."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["task", "method", "runs", *(f"{c}_{s}" for c in COLUMNS for s in ("mean", "ci95", "n"))])
    for row in rows:
        writer.writerow([row["task"], row["method"], row["runs"], *(x for c in COLUMNS for x in row[c].csv_cells())])
    return out.getvalue()


PAIRED_COLUMNS = ("pretrained", "finetuned", "dip", "regret")
PAIRED_KEYS = {"pretrained": "offline_success", "finetuned": "final_success", "dip": "dip", "regret": "regret"}


def paired_rows(groups: dict[str, dict[str, list[RunOutcome]]], reference: str = "calql") -> tuple[list[dict], list[str]]:
    """Each method against `reference` on the seeds both ran: per quantity, the mean of the
    per-seed differences (method - reference) with a 95% t-interval over those seeds.

    Why paired: runs of two methods with one seed share their data (the scripted episodes
    are drawn from the run's seed) and, for the forks, their whole pre-training, so most of
    the seed-to-seed spread is common to both; the interval of the differences is then much
    narrower than the two unpaired intervals suggest (session 11: Cal-QL - CQL regret
    -0.06 ± 0.05 paired, against 0.20 ± 0.22 and 0.26 ± 0.18 apart). Returns the rows and a
    note per method that could not be paired (no common seed, a seed seen in two runs)."""
    rows, notes = [], []
    for task, methods in groups.items():
        if reference not in methods:
            notes.append(f"{task}: no {reference} run to pair against")
            continue
        ref, ref_note = _by_seed(methods[reference])
        if ref_note:
            notes.append(f"{task} {reference}: {ref_note}; nothing paired against it")
            continue
        for algo, runs in methods.items():
            if algo == reference:
                continue
            mine, note = _by_seed(runs)
            seeds = sorted(set(mine) & set(ref))
            if note or not seeds:
                notes.append(f"{task} {algo}: {note or 'no seed in common with ' + reference}")
                continue
            row = {"task": task, "method": algo, "reference": reference, "seeds": seeds}
            for column in PAIRED_COLUMNS:
                row[column] = Stat.of([_difference(_value(mine[s], column), _value(ref[s], column)) for s in seeds])
            rows.append(row)
    return rows, notes


def _by_seed(runs: list[RunOutcome]) -> tuple[dict[int, RunOutcome], str]:
    """seed -> run, or a note when a run has no recorded seed or two runs share one."""
    found: dict[int, RunOutcome] = {}
    for o in runs:
        if o.seed is None:
            return {}, f"{o.run_dir} records no run.seed"
        if o.seed in found:
            return {}, f"seed {o.seed} in two runs ({found[o.seed].run_dir}, {o.run_dir})"
        found[o.seed] = o
    return found, ""


def _value(o: RunOutcome, column: str) -> float | None:
    """A run's value in a paired column; None for the online columns of a run that has no
    online phase (behaviour cloning), as in the main table."""
    if column != "pretrained" and not has_online(o):
        return None
    return getattr(o, PAIRED_KEYS[column])


def _difference(value: float | None, reference: float | None) -> float | None:
    """value - reference, None where either is missing (a run without an online phase)."""
    if value is None or reference is None or math.isnan(value) or math.isnan(reference):
        return None
    return float(value) - float(reference)


def paired_markdown(rows: list[dict], notes: list[str]) -> str:
    """The paired table as Markdown, with the notes of what was not paired."""
    if not rows and not notes:
        return ""
    head = ["task", "method - reference", "seeds", "pre-trained success", "fine-tuned success", "dip", "regret"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        seeds = " ".join(map(str, row["seeds"]))
        lines.append("| " + " | ".join([row["task"], f"{row['method']} - {row['reference']}", seeds,
                                          *(row[c].text(2) for c in PAIRED_COLUMNS)]) + " |")
    return "\n".join(lines + [f"not paired: {n}" for n in notes]) + "\n"


def paired_csv(rows: list[dict]) -> str:
    """The paired table as CSV: each difference's mean, interval half-width and number of seeds."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["task", "method", "reference", "seeds",
                     *(f"{c}_diff_{s}" for c in PAIRED_COLUMNS for s in ("mean", "ci95", "n"))])
    for row in rows:
        writer.writerow([row["task"], row["method"], row["reference"], " ".join(map(str, row["seeds"])),
                         *(x for c in PAIRED_COLUMNS for x in row[c].csv_cells())])
    return out.getvalue()


def pooled_curve(curves: list[list[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, 95% half-width) over runs, the i-th points of the runs pooled at their
    mean step, up to the shortest run. Runs of one config evaluate on one schedule, but an
    online evaluation waits for its episode to end, so its step differs by a few env steps
    from run to run: matching by order pools them, matching by step would not."""
    if not curves:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    n = min(len(c) for c in curves)
    steps = np.array([np.mean([c[i][0] for c in curves]) for i in range(n)], dtype=float)
    stats = [mean_interval([c[i][1] for c in curves]) for i in range(n)]
    mean = np.array([m for m, _ in stats], dtype=float)
    half = np.nan_to_num(np.array([h for _, h in stats], dtype=float))
    return steps, mean, half


def pooled_running(curves: list[list[tuple[int, float]]], points: int = 200) -> tuple[np.ndarray, np.ndarray,
                                                                                      np.ndarray]:
    """(steps, mean, 95% half-width) of a running quantity logged at different steps in each
    run (cumulative regret): each run interpolated onto one grid over the steps all runs cover."""
    if not curves:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    lo, hi = max(c[0][0] for c in curves), min(c[-1][0] for c in curves)
    grid = np.linspace(lo, hi, points) if hi > lo else np.array([float(lo)])
    values = np.array([np.interp(grid, [p[0] for p in c], [p[1] for p in c]) for c in curves])
    stats = [mean_interval(list(values[:, j])) for j in range(grid.size)]
    return grid, np.array([m for m, _ in stats]), np.nan_to_num(np.array([h for _, h in stats]))


def keyed_curve(runs: list[RunOutcome], key: str, online_only: bool = False) -> list[list[tuple[int, float]]]:
    """Each run's (step, value) series of a metrics key; `online_only` keeps steps after the
    switch, counted in online env steps since it."""
    curves = []
    for o in runs:
        rows = read_metrics(Path(o.run_dir) / "metrics.jsonl")
        points = [(int(r["step"]), float(r[key])) for r in rows if key in r and r[key] is not None]
        if online_only:
            points = [(step - o.switch_step, v) for step, v in points if step > o.switch_step]
        if points:
            curves.append(list(dict(points).items()))  # a resumed run's repeated step keeps its last row
    return curves


def task_figure(task: str, methods: dict[str, list[RunOutcome]], early_fraction: float = 0.2):
    """Four panels for one task: success over the whole run (mean and 95% band over seeds,
    the switch dashed); a zoom on the first online env steps, where unlearning shows (paper
    Fig. 2 / 8); cumulative regret over online env steps; and calibration, the critic's
    Q(s0, pi(s0)) (solid) against the discounted return the evaluation episodes realised
    (dotted), means over seeds (paper Fig. 6). Q-values of IQL, AWAC and ODT are in their
    own reward units, not Cal-QL's (their +1/0 reward)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12.0, 8.0), layout="constrained")
    (whole, early), (regret, calib) = fig.subplots(2, 2)
    colours = colormaps["tab20"].colors[::2] + colormaps["tab20"].colors[1::2]
    horizon, zoom = 0, 0.0
    for i, (algo, runs) in enumerate(methods.items()):
        colour = colours[i % len(colours)]
        n = len(runs)
        steps, mean, half = pooled_curve([o.evals for o in runs])
        whole.plot(steps, mean, color=colour, marker="o", markersize=2.5, linewidth=1.6, label=f"{algo} ({n})")
        whole.fill_between(steps, mean - half, mean + half, color=colour, alpha=0.12)
        switch = runs[0].switch_step
        if switch:
            whole.axvline(switch, color=colour, linestyle="--", linewidth=0.8, alpha=0.5)
        online = [[(step - o.switch_step, s) for step, s in o.evals if step >= o.switch_step] for o in runs]
        if all(len(c) > 1 for c in online):
            steps_o, mean_o, half_o = pooled_curve(online)
            horizon = max(horizon, int(steps_o[-1]))
            window = early_fraction * steps_o[-1]  # the zoom reaches the first evaluation past the dip window
            zoom = max(zoom, next((float(s) for s in steps_o if s > window), float(steps_o[-1])))
            early.plot(steps_o, mean_o, color=colour, marker="o", markersize=3, linewidth=1.6, label=algo)
            early.fill_between(steps_o, mean_o - half_o, mean_o + half_o, color=colour, alpha=0.12)
        regrets = keyed_curve(runs, "online/cumulative_regret", online_only=True)
        if len(regrets) == n:
            steps_r, mean_r, half_r = pooled_running(regrets)
            regret.plot(steps_r, mean_r, color=colour, linewidth=1.6, label=algo)
            regret.fill_between(steps_r, mean_r - half_r, mean_r + half_r, color=colour, alpha=0.12)
        for key, style in (("eval/q0", "-"), ("eval/return0", ":")):
            series = keyed_curve(runs, key)
            if len(series) == n:
                steps_c, mean_c, _ = pooled_curve(series)
                calib.plot(steps_c, mean_c, color=colour, linestyle=style, linewidth=1.4,
                           label=algo if key == "eval/q0" else None)
    early.set_xlim(-0.02 * max(zoom, 1), max(zoom, 1) * 1.05)
    whole.set_title("success rate (mean, 95% band over seeds; dashed: switch)", fontsize=9)
    whole.set_xlabel("step (offline updates, then + online env steps)", fontsize=8)
    early.set_title(f"the first online env steps (dip window: first {early_fraction:.0%})", fontsize=9)
    early.set_xlabel("online env steps since the switch", fontsize=8)
    early.axvline(early_fraction * horizon, color="gray", linestyle=":", linewidth=1.0)
    regret.set_title("cumulative regret (mean over online episodes of 1 - success)", fontsize=9)
    regret.set_xlabel("online env steps since the switch", fontsize=8)
    calib.set_title("Q(s0, pi(s0)) solid, realised discounted return dotted (means over seeds;\n"
                    "each method in its own reward's units: IQL and AWAC train on +1/0)", fontsize=9)
    calib.set_xlabel("step", fontsize=8)
    for ax in (whole, early, regret):  # rates: a t-band over few seeds may reach past [0, 1], the axes do not
        ax.set_ylim(-0.03, 1.03)
    for ax in (whole, early, regret, calib):
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    whole.legend(fontsize=7, ncol=2)
    fig.suptitle(f"{task}: {', '.join(f'{a} ({len(r)} runs)' for a, r in methods.items())}", fontsize=9)
    return fig


def write_report(dirs: list[Path], out: Path, early_fraction: float = 0.2, reference: str = "calql") -> str:
    """Pool the finished runs at or under `dirs` into `out`: table.md, table.csv, the paired
    differences against `reference` (paired.md, paired.csv; only where a task has
    it) and one figure per task; returns the Markdown tables with a closing line saying
    what was written."""
    runs = find_runs(dirs)
    if not runs:
        raise ConfigError(f"{' '.join(map(str, dirs))}: no finished run directory (config.json and summary.json) "
                          f"found")
    groups = group_runs(runs, early_fraction)
    rows = summary_rows(groups)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pairs, notes = paired_rows(groups, reference)
    paired = paired_markdown(pairs, notes)
    files = [("table.md", markdown_table(rows)), ("table.csv", csv_table(rows))]
    if paired:
        files += [("paired.md", paired), ("paired.csv", paired_csv(pairs))]
    else:  # a table of an earlier call with other runs must not stand beside this one's
        for name in ("paired.md", "paired.csv"):
            (out / name).unlink(missing_ok=True)
    for name, text in files:
        with replacing(out / name) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
    for task, methods in groups.items():
        fig = task_figure(task, methods, early_fraction)
        with replacing(out / f"{task}.png", ".png") as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    written = ", ".join(name for name, _ in files)
    return (markdown_table(rows) + (f"\npaired by seed against {reference}:\n{paired}" if paired else "")
            + f"{len(runs)} runs; wrote {written} and {len(groups)} figure(s) in {out}\n")
