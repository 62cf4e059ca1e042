"""Analysis over seeds against numbers worked by hand: runs grouped by their own config,
the dip, regret and 95% intervals of the table, curves pooled only where every run
evaluated, and the CLI's files."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from calql_robot.analysis.seeds import (find_runs, group_runs, labels_of, paired_rows, pooled_curve, pooled_running,
                                        summary_rows)
from calql_robot.run.runlog import encode_row

ROOT = Path(__file__).resolve().parents[1]
T_975_2 = 4.302652729911275  # Student-t 0.975 quantile, 2 degrees of freedom (tables)
T_975_1 = 12.706204736174705


def write_run(run_dir: Path, algo: str, evals: list[tuple[int, float]], regret: float | None, *, offline: int = 100,
              online: int = 1000, bound: bool = True, domain: str = "pickplace_state", seed: int = 0) -> Path:
    """A finished run directory as the entry points write one: config, summary, metrics."""
    run_dir.mkdir(parents=True)
    config = {"algo": algo, "domain": domain, "learner": {"calql_bound": bound}, "run": {"seed": seed},
              "loop": {"offline_steps": offline, "online_env_steps": online, "eval_episodes": 20}}
    (run_dir / "config.json").write_text(json.dumps(config))
    at_switch = [s for step, s in evals if step == offline]
    summary = {"offline_updates": offline, "offline_success": at_switch[0], "final_success": evals[-1][1]}
    if regret is not None:
        summary["cumulative_regret"] = regret
    (run_dir / "summary.json").write_text(json.dumps(summary))
    rows = [encode_row({"eval/success_rate": s, "eval/q0": -10.0 * s, "eval/return0": -12.0 * s,
                        "progress/wall_s": 0.6 * step}, step, "online" if step > offline else "offline", 0.0)
            for step, s in evals]
    if regret is not None:
        rows += [encode_row({"online/cumulative_regret": regret}, offline + online, "online", 0.0)]
    (run_dir / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    return run_dir


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """Three Cal-QL seeds (evaluations at the switch, +100, +200 and +1,000 of 1,000 online
    env steps), two CQL seeds, one behaviour-cloning run."""
    root = tmp_path / "sweep"
    for seed, (sw, a, b, final, regret) in enumerate([(0.6, 0.4, 0.5, 0.8, 0.3), (0.7, 0.7, 0.6, 1.0, 0.1),
                                                      (0.5, 0.6, 0.6, 0.9, 0.5)]):
        write_run(root / "calql" / f"seed{seed}", "calql", [(0, 0.0), (100, sw), (200, a), (300, b), (1100, final)],
                  regret, seed=seed)
    for seed, (sw, a, final) in enumerate([(0.8, 0.2, 0.6), (0.6, 0.6, 0.8)]):
        write_run(root / "cql" / f"seed{seed}", "calql", [(100, sw), (200, a), (1100, final)], 0.4, bound=False,
                  seed=seed)
    write_run(root / "bc" / "seed0", "bc", [(0, 0.0), (100, 0.45)], None, online=0)
    return root


def test_runs_are_grouped_by_their_config(runs: Path) -> None:
    found = find_runs([runs])
    assert len(found) == 6
    assert labels_of(runs / "cql" / "seed1") == ("pickplace-state", "cql")  # calql with the bound off
    assert labels_of(runs / "calql" / "seed0") == ("pickplace-state", "calql")
    write_run(runs / "w", "wsrl-calql", [(100, 0.5)], None, bound=False, domain="pickplace_visual")
    assert labels_of(runs / "w") == ("pickplace-visual", "wsrl-cql")


def test_table_matches_the_hand_worked_numbers(runs: Path) -> None:
    rows = {r["method"]: r for r in summary_rows(group_runs(find_runs([runs])))}
    calql = rows["calql"]
    assert calql["runs"] == 3
    # pre-trained 0.6, 0.7, 0.5: mean 0.6, sd 0.1, half-width t(0.975, 2) * 0.1 / sqrt(3)
    assert calql["pretrained"].mean == pytest.approx(0.6)
    assert calql["pretrained"].half == pytest.approx(T_975_2 * 0.1 / math.sqrt(3), rel=1e-6)
    # fine-tuned 0.8, 1.0, 0.9: mean 0.9, sd 0.1
    assert calql["finetuned"].mean == pytest.approx(0.9)
    assert calql["finetuned"].half == pytest.approx(0.248413, abs=1e-5)
    # dip window: the first 20% of 1,000 online env steps (+100 and +200)
    # seed 0: min(0.4, 0.5) - 0.6 = -0.2; seed 1: 0.6 - 0.7 = -0.1; seed 2: never below 0.5 -> 0
    assert calql["dip"].mean == pytest.approx(-0.1)
    assert calql["dip"].half == pytest.approx(T_975_2 * 0.1 / math.sqrt(3), rel=1e-6)
    # regret 0.3, 0.1, 0.5: mean 0.3, sd 0.2
    assert calql["regret"].mean == pytest.approx(0.3)
    assert calql["regret"].half == pytest.approx(T_975_2 * 0.2 / math.sqrt(3), rel=1e-6)
    cql = rows["cql"]
    # two seeds: dips 0.2 - 0.8 = -0.6 and 0; mean -0.3, sd 0.3 * sqrt(2), half t(0.975, 1) * sd / sqrt(2)
    assert cql["dip"].mean == pytest.approx(-0.3)
    assert cql["dip"].half == pytest.approx(T_975_1 * 0.3, rel=1e-6)
    assert cql["finetuned"].mean == pytest.approx(0.7)
    bc = rows["bc"]  # no online phase: pre-trained success only
    assert bc["pretrained"].mean == pytest.approx(0.45) and math.isnan(bc["pretrained"].half)
    assert bc["finetuned"].n == bc["dip"].n == bc["regret"].n == 0


def test_paired_differences_match_the_hand_worked_numbers(runs: Path) -> None:
    """CQL against Cal-QL on the seeds both ran (0 and 1; Cal-QL's seed 2 has no partner)."""
    write_run(runs / "calql-again" / "seed2", "calql", [(100, 0.5), (1100, 0.9)], 0.5, seed=2)
    rows, notes = paired_rows(group_runs(find_runs([runs])))
    assert rows == [] and notes[0].startswith("pickplace-state calql: seed 2 in two runs")
    (runs / "calql-again" / "seed2" / "summary.json").unlink()  # unfinished: not a run of the table
    rows, notes = paired_rows(group_runs(find_runs([runs])))
    by = {r["method"]: r for r in rows}
    cql = by["cql"]
    assert cql["seeds"] == [0, 1] and cql["reference"] == "calql"
    # pre-trained: seed 0 0.8 - 0.6 = 0.2, seed 1 0.6 - 0.7 = -0.1: mean 0.05, sd 0.15 * sqrt(2)
    assert cql["pretrained"].mean == pytest.approx(0.05)
    assert cql["pretrained"].half == pytest.approx(T_975_1 * 0.15, rel=1e-6)
    # fine-tuned: 0.6 - 0.8 = -0.2, 0.8 - 1.0 = -0.2: no spread
    assert cql["finetuned"].mean == pytest.approx(-0.2) and cql["finetuned"].half == pytest.approx(0.0, abs=1e-12)
    # dip: CQL -0.6 and 0, Cal-QL -0.2 and -0.1: differences -0.4 and 0.1
    assert cql["dip"].mean == pytest.approx(-0.15)
    assert cql["dip"].half == pytest.approx(T_975_1 * 0.25, rel=1e-6)
    # regret: 0.4 - 0.3 = 0.1, 0.4 - 0.1 = 0.3
    assert cql["regret"].mean == pytest.approx(0.2) and cql["regret"].n == 2
    bc = by["bc"]  # offline only: pre-trained 0.45 - 0.6, nothing online to pair
    assert bc["seeds"] == [0] and bc["pretrained"].mean == pytest.approx(-0.15)
    assert bc["finetuned"].n == bc["dip"].n == bc["regret"].n == 0
    assert notes == []
    rows, notes = paired_rows(group_runs(find_runs([runs])), reference="iql")
    assert rows == [] and notes == ["pickplace-state: no iql run to pair against"]


def test_an_evaluation_due_inside_the_dip_window_counts_though_it_landed_after(tmp_path: Path) -> None:
    """The visual preset: 2,500 online env steps, evaluations due every 500 but run when the
    episode ends (+513); the dip window is the first 500 env steps."""
    from calql_robot.analysis.outcomes import due_steps, read_outcome

    run = write_run(tmp_path / "v", "calql", [(100, 0.5), (613, 0.2), (1109, 0.6), (2604, 0.7)], 0.5,
                    online=2500)
    config = json.loads((run / "config.json").read_text())
    config["loop"]["eval_every"] = 500
    (run / "config.json").write_text(json.dumps(config))
    assert read_outcome(run).dip == pytest.approx(0.2 - 0.5)
    assert due_steps([(100, 0.5), (613, 0.2), (1109, 0.6), (2604, 0.7)], 100, {"eval_every": 500}) == [
        (100, 0.5), (600, 0.2), (1100, 0.6), (2600, 0.7)]
    # marks of eval_at come first: due at +100 and +250, then the multiples of 1000
    assert due_steps([(210, 0.1), (362, 0.2), (1115, 0.3)], 100, {"eval_every": 1000, "eval_at": [100, 250]}) == [
        (200, 0.1), (350, 0.2), (1100, 0.3)]


def test_the_wall_of_a_run_resumed_with_a_restarted_clock_adds_its_sessions(tmp_path: Path) -> None:
    from calql_robot.analysis.seeds import wall_s

    run = tmp_path / "r"
    run.mkdir()
    walls = [5.0, 60.0, 120.0, 4.0, 50.0, 3.0, 30.0]  # clock restarted twice: 120 + 50 + 30
    (run / "metrics.jsonl").write_text("\n".join(encode_row({"progress/wall_s": w}, i, "offline", 0.0)
                                                 for i, w in enumerate(walls)) + "\n")
    assert wall_s(run) == pytest.approx(200.0)


def test_curves_pool_the_ith_evaluations_at_their_mean_step() -> None:
    """Online evaluations wait for their episode's end, so runs evaluate a few steps apart."""
    steps, mean, half = pooled_curve([[(0, 0.2), (510, 0.4), (1013, 0.6)], [(0, 0.4), (519, 0.8)]])
    assert steps.tolist() == [0, 514.5]
    assert mean.tolist() == pytest.approx([0.3, 0.6])
    assert half.tolist() == pytest.approx([T_975_1 * 0.1, T_975_1 * 0.2])


def test_running_quantities_are_pooled_on_one_grid() -> None:
    steps, mean, half = pooled_running([[(40, 1.0), (140, 0.5)], [(60, 1.0), (100, 0.6), (160, 0.4)]], points=3)
    assert steps.tolist() == [60, 100, 140]
    # run 1 at 60, 100, 140: 0.9, 0.7, 0.5; run 2: 1.0, 0.6, 0.6 - 0.2 * 40 / 60 = 0.4667
    assert mean.tolist() == pytest.approx([0.95, 0.65, (0.5 + 0.6 - 0.2 * 40 / 60) / 2])
    assert half[0] == pytest.approx(T_975_1 * 0.05)


def test_cli_writes_table_csv_and_one_figure_per_task(runs: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "calql_robot.analysis", str(runs)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    # wall: the last evaluation's progress/wall_s, 0.6 s per step at step 1,100: 11.0 min in every seed
    assert "| pickplace-state | calql | 3 | 0.60 ± 0.25 | 0.90 ± 0.25 | -0.10 ± 0.25 | 0.30 ± 0.50 | 11.0 ± 0.0 |" \
        in proc.stdout
    table = {r["method"]: r for r in csv.DictReader((runs / "analysis" / "table.csv").open())}
    assert float(table["calql"]["regret_ci95"]) == pytest.approx(T_975_2 * 0.2 / math.sqrt(3), rel=1e-5)
    assert table["bc"]["finetuned_mean"] == "" and table["bc"]["finetuned_n"] == "0"
    assert (runs / "analysis" / "table.md").read_text().count("\n") == 5
    assert (runs / "analysis" / "pickplace-state.png").stat().st_size > 10_000
    assert "| pickplace-state | cql - calql | 0 1 | 0.05 ± 1.91 | -0.20 ± 0.00 | -0.15 ± 3.18 | 0.20 ± 1.27 |" \
        in proc.stdout
    paired = {r["method"]: r for r in csv.DictReader((runs / "analysis" / "paired.csv").open())}
    assert paired["cql"]["seeds"] == "0 1" and float(paired["cql"]["regret_diff_mean"]) == pytest.approx(0.2)
    missing = subprocess.run([sys.executable, "-m", "calql_robot.analysis", str(runs / "nowhere")], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "nowhere: no such file or directory" in missing.stderr
    assert "Traceback" not in missing.stderr
