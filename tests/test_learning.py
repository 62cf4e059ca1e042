"""Learning: the dip and outcome arithmetic, bench/learning.py's JSON line, the tables and
figures over seeds. The learning guard itself is tests/test_learning_guard.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from calql_robot.analysis.outcomes import dip

ROOT = Path(__file__).resolve().parents[1]


def test_dip_worked_by_hand() -> None:
    evals = [(0, 0.0), (100, 0.6), (150, 0.2), (200, 0.4), (400, 0.9)]  # switch at 100, 500 online steps
    assert dip(evals, 100, 500) == pytest.approx(0.2 - 0.6)  # min over (100, 200] is 0.2
    assert dip(evals, 100, 500, early_fraction=0.05) is None  # no evaluation in (100, 125]
    assert dip([(100, 0.3), (150, 0.5)], 100, 500) == 0.0  # no loss: no dip
    assert dip([(150, 0.5)], 100, 500) is None  # no evaluation at the switch


def test_bench_learning_prints_its_json_line(tmp_path: Path) -> None:
    cmd = [sys.executable, "bench/learning.py", "--entry", "state", "--algo", "bc", "--seeds", "0", "1",
           "--parallel", "2", "--runs-dir", str(tmp_path), "--", "--data.episodes", "4",
           "--loop.offline-steps", "20", "--loop.eval-episodes", "1", "--loop.eval-every-offline", "10",
           "--loop.batch-size", "16", "--loop.log-every", "5"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("success_offline_mean", "success_final_mean", "regret_mean", "wall_s_mean", "dip_mean"):
        assert key in result
    assert result["seeds"] == [0, 1] and len(result["success_final"]) == 2
    assert all(0.0 <= s <= 1.0 for s in result["success_offline"] + result["success_final"])
    assert result["regret"] == [None, None]  # BC has no online episodes
    assert all(w > 0 for w in result["wall_s"])


def fake_run(path: Path, evals: list[tuple[int, float]], switch: int, online: int) -> Path:
    """A run directory with the three files read_outcome reads (the layout runlog writes)."""
    path.mkdir(parents=True)
    rows = [{"step": s, "phase": "offline" if s <= switch else "online", "time": 0.0, "eval/success_rate": v}
            for s, v in evals]
    rows += [{"step": s, "phase": "offline" if s <= switch else "online", "time": 0.0, "train/q_pi": -1.0 * s,
              "train/mc_return": -5.0} for s in range(0, switch + online, 100)]
    rows.sort(key=lambda r: r["step"])
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "config.json").write_text(json.dumps({"loop": {"online_env_steps": online, "eval_episodes": 40}}))
    (path / "summary.json").write_text(json.dumps({"offline_updates": switch, "final_success": evals[-1][1],
                                                   "cumulative_regret": 0.5}))  # as after a resume
    return path


def test_outcome_and_comparison_cli(tmp_path: Path) -> None:
    a = fake_run(tmp_path / "a", [(0, 0.0), (100, 0.6), (130, 0.2), (300, 0.8)], 100, 200)
    b = fake_run(tmp_path / "b", [(0, 0.0), (100, 0.4), (140, 0.5), (300, 0.3)], 100, 200)
    out = tmp_path / "cmp.png"
    res = subprocess.run([sys.executable, "-m", "calql_robot.analysis.outcomes", "--group", "x", str(a), "--group", "y",
                          str(b), "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    # offline_success comes from the evaluation at the switch when the summary lacks it
    assert [(r["group"], r["offline_success"], r["final_success"]) for r in lines] == [("x", 0.6, 0.8),
                                                                                      ("y", 0.4, 0.3)]
    assert lines[0]["dip"] == pytest.approx(-0.4) and lines[1]["dip"] == 0.0
    assert out.stat().st_size > 5000


def test_comparison_figure_draws_every_group_and_names_its_episodes(tmp_path: Path) -> None:
    """Five groups are five legend entries (a fifth was once dropped without a word), and
    the axis names the runs' own evaluation episodes."""
    from calql_robot.analysis.outcomes import comparison_figure, read_outcome
    groups = {f"g{i}": [read_outcome(fake_run(tmp_path / f"r{i}", [(0, 0.0), (100, 0.1 * i), (300, 0.2)], 100, 200))]
              for i in range(5)}
    top = comparison_figure(groups).axes[0]
    assert [t.get_text() for t in top.get_legend().get_texts()] == [f"g{i} (mean of 1)" for i in range(5)]
    assert top.get_ylabel() == "success rate (40 eval episodes)"


def test_t_quantile_and_interval_match_the_tables() -> None:
    """Student-t quantiles as printed in every statistics table (t_0.975 at 1, 2, 4 and 30
    degrees of freedom), and one interval worked by hand: 0.2, 0.4, 0.6 have mean 0.4,
    sample std 0.2, so the half-width is 4.303 * 0.2 / sqrt(3) = 0.4968."""
    from calql_robot.analysis.outcomes import mean_interval, t_quantile

    for df, table in ((1, 12.706), (2, 4.303), (4, 2.776), (30, 2.042)):
        assert t_quantile(0.975, df) == pytest.approx(table, abs=1e-3)
    mean, half = mean_interval([0.2, 0.4, 0.6])
    assert mean == pytest.approx(0.4) and half == pytest.approx(0.4968, abs=1e-3)
    assert mean_interval([0.7])[0] == 0.7 and np.isnan(mean_interval([0.7])[1])


def test_group_table_matches_evaluations_by_order_and_reads_calibration(tmp_path: Path) -> None:
    """Two runs whose online evaluations land at slightly different env steps are matched
    by order (column +105 = mean of 100 and 110); the calibration columns are
    eval/q0 - eval/return0 at the switch's and the last evaluation, over both runs."""
    from calql_robot.analysis.outcomes import group_table, read_outcome

    runs = []
    for name, evals, q0 in (("a", [(0, 0.0), (100, 0.6), (200, 0.2), (300, 0.8)], -10.0),
                            ("b", [(0, 0.0), (100, 0.4), (210, 0.4), (300, 0.6)], -20.0)):
        path = fake_run(tmp_path / name, evals, 100, 1000)  # first 20%: (100, 300]
        rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
        for r in rows:
            if "eval/success_rate" in r:
                r.update({"eval/q0": q0, "eval/return0": -30.0, "eval/q0_success": q0, "eval/return0_success": -12.0})
        (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        runs.append(read_outcome(path))
    table = group_table({"x": runs}).splitlines()
    assert table[0].split(" | ")[2:5] == ["switch", "+105", "+200"]
    cells = table[2].strip("| ").split(" | ")
    assert cells[:2] == ["x", "2"] and cells[2].startswith("0.50 ± ") and cells[3].startswith("0.30 ± ")
    assert cells[5].startswith("-0.20 ± ")  # dips -0.4 and 0.0
    assert cells[7].startswith("15.0 ± ") and "(-3.0 ± " in cells[7]  # q0 - G0: 20 and 10; successes 2, -8


def test_horizon_cuts_a_longer_run_where_a_shorter_one_would_end(tmp_path: Path) -> None:
    """--horizon 100 on a run with 200 online steps: the first evaluation at or past +100
    (step 220) becomes the final one, and the regret counts only the episodes up to it
    (successes 0, 1, 0 -> regret 2/3), as a 100-step run with the same seed would report."""
    from calql_robot.analysis.outcomes import read_outcome

    path = fake_run(tmp_path / "a", [(0, 0.0), (100, 0.6), (130, 0.2), (220, 0.5), (300, 0.8)], 100, 200)
    online = [{"step": s, "phase": "online", "time": 0.0, "online/success": w}
              for s, w in ((110, 0.0), (125, 1.0), (200, 0.0), (250, 1.0), (290, 1.0))]
    with open(path / "metrics.jsonl", "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in online)
    cut = read_outcome(path, horizon=100)
    assert cut.evals[-1] == (220, 0.5) and cut.final_success == 0.5 and cut.regret == pytest.approx(2 / 3)
    whole = read_outcome(path)
    assert whole.final_success == 0.8 and whole.regret == 0.5  # summary.json's, untouched
