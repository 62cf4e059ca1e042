"""Learning-curve plots: subplot per key, phase colours, the switch line, errors."""
import subprocess
import sys
from pathlib import Path

import matplotlib.colors as mcolors
import numpy as np
import pytest
from PIL import Image

from calql_robot.run.plots import (
    PHASE_COLOURS,
    learning_curve_figure,
    plot_learning_curves,
    series,
    switch_step,
)
from calql_robot.run.runlog import METRICS_FILE, RunLogger, read_metrics

ROOT = Path(__file__).resolve().parents[1]


def _write_run(run_dir: Path, switch: int | None = 300) -> Path:
    """Offline updates every 50 steps, evals every 100, online from `switch`."""
    with RunLogger(run_dir, {}) as logger:
        for step in range(0, 600, 50):
            phase = "online" if switch is not None and step >= switch else "offline"
            logger.log({"train/critic_loss": 1.0 / (1 + step), "train/actor_loss": -step / 100}, step, phase)
            if step % 100 == 0:
                logger.log({"eval/success_rate": step / 600, "eval/return": float("nan") if step == 200 else 1.0},
                           step, phase)
    return run_dir / METRICS_FILE


def test_png_with_one_subplot_per_existing_default_key(tmp_path: Path) -> None:
    metrics = _write_run(tmp_path / "run")
    out = plot_learning_curves(metrics, tmp_path / "plots" / "curves.png")
    assert out == tmp_path / "plots" / "curves.png"
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (1200, 560)  # 3 columns x 2 rows at 100 dpi
    assert [p.name for p in out.parent.iterdir()] == ["curves.png"]  # temp file renamed away


def test_figure_has_phase_colours_and_switch_line(tmp_path: Path) -> None:
    rows = read_metrics(_write_run(tmp_path))
    assert switch_step(rows) == 300
    fig = learning_curve_figure(rows, ["eval/success_rate", "train/critic_loss"])
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["eval/success_rate", "train/critic_loss"]
    for ax in visible:
        data_lines = [ln for ln in ax.lines if ln.get_linestyle() == "-"]
        assert [ln.get_label() for ln in data_lines] == ["offline", "online"]
        assert [mcolors.to_hex(ln.get_color()) for ln in data_lines] == [
            mcolors.to_hex(PHASE_COLOURS["offline"]), mcolors.to_hex(PHASE_COLOURS["online"])]
        assert max(data_lines[0].get_xdata()) < 300 <= min(data_lines[1].get_xdata())
        switch_lines = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
        assert len(switch_lines) == 1 and list(switch_lines[0].get_xdata()) == [300, 300]


def test_offline_only_run_has_no_switch_line(tmp_path: Path) -> None:
    rows = read_metrics(_write_run(tmp_path, switch=None))
    assert switch_step(rows) is None
    fig = learning_curve_figure(rows, ["train/critic_loss"])
    assert not [ln for ln in fig.axes[0].lines if ln.get_linestyle() == "--"]


def test_series_keeps_only_rows_with_the_key(tmp_path: Path) -> None:
    rows = read_metrics(_write_run(tmp_path))
    steps, values, phases = series(rows, "eval/return")
    assert steps.tolist() == [0, 100, 200, 300, 400, 500]
    assert np.isnan(values[2]) and phases.tolist() == ["offline"] * 3 + ["online"] * 3


def test_missing_keys_are_skipped_with_warning(tmp_path: Path) -> None:
    metrics = _write_run(tmp_path)
    with pytest.warns(UserWarning, match="train/bound_rate"):
        out = plot_learning_curves(metrics, tmp_path / "c.png", keys=["train/bound_rate", "eval/return"])
    with Image.open(out) as img:
        assert img.size == (400, 280)  # only the one existing key is drawn
    with pytest.raises(ValueError, match=r"none of the metrics.*it has \['eval/return'"):
        plot_learning_curves(metrics, tmp_path / "d.png", keys=["nope"])


def test_empty_or_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / METRICS_FILE).write_text("")
    with pytest.raises(ValueError, match="no metric rows"):
        plot_learning_curves(tmp_path / METRICS_FILE, tmp_path / "c.png")
    with pytest.raises(FileNotFoundError, match="absent.jsonl"):
        plot_learning_curves(tmp_path / "absent.jsonl", tmp_path / "c.png")
    with pytest.raises(ValueError, match=r"\.png"):
        plot_learning_curves(tmp_path / METRICS_FILE, tmp_path / "c.jpg")
    assert not (tmp_path / "c.png").exists()


def test_cli_writes_the_png(tmp_path: Path) -> None:
    metrics = _write_run(tmp_path / "run")
    out = tmp_path / "cli.png"
    subprocess.run([sys.executable, "-m", "calql_robot.run.plots", str(metrics), str(out), "--keys", "eval/return"],
                   cwd=ROOT, check=True, capture_output=True, timeout=60)
    with Image.open(out) as img:
        assert img.size == (400, 280)
