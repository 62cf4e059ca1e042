"""Run directory, config.json and metrics.jsonl: format, flushing, resume truncation, wandb."""
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from calql_robot.run.runlog import (
    CONFIG_FILE,
    METRICS_FILE,
    RunLogger,
    make_run_dir,
    read_metrics,
    to_jsonable,
)

ROOT = Path(__file__).resolve().parents[1]


def test_config_json_is_the_resolved_config(tmp_path: Path) -> None:
    @dataclass
    class Cfg:
        lr: float = 3e-4
        hidden: tuple[int, ...] = (256, 256)
        out: Path = Path("runs")
        extra: dict = field(default_factory=lambda: {"seed": np.int64(3)})

    with RunLogger(tmp_path / "run", Cfg()) as logger:
        assert logger.run_dir.is_dir()
    saved = json.loads((tmp_path / "run" / CONFIG_FILE).read_text())
    assert saved == {"lr": 3e-4, "hidden": [256, 256], "out": "runs", "extra": {"seed": 3}}
    assert not [p for p in (tmp_path / "run").iterdir() if ".tmp" in p.name]


def test_config_rejects_unserialisable_value_naming_key() -> None:
    with pytest.raises(TypeError, match=r"config\.net\.act"):
        to_jsonable({"net": {"act": object()}})


def test_rows_have_header_and_metrics_and_are_flushed(tmp_path: Path) -> None:
    logger = RunLogger(tmp_path, {"a": 1})
    logger.log({"train/critic_loss": 0.5, "n": np.int64(3), "t": torch.tensor(2.0)}, step=10, phase="offline")
    # Read while the logger is still open: flush-per-line means a killed run keeps it.
    rows = read_metrics(tmp_path / METRICS_FILE)
    assert len(rows) == 1
    row = rows[0]
    assert (row["step"], row["phase"], row["train/critic_loss"], row["n"], row["t"]) == (10, "offline", 0.5, 3, 2.0)
    assert isinstance(row["time"], float) and abs(row["time"] - __import__("time").time()) < 60
    logger.log({"eval/success_rate": 1.0}, step=20, phase="online")
    logger.close()
    assert [r["phase"] for r in read_metrics(tmp_path / METRICS_FILE)] == ["offline", "online"]


def test_nonfinite_values_are_strict_json_and_round_trip(tmp_path: Path) -> None:
    with RunLogger(tmp_path, {}) as logger:
        logger.log({"nan": float("nan"), "inf": np.float32("inf"), "ninf": -math.inf, "ok": 1.5}, 1, "offline")
    line = (tmp_path / METRICS_FILE).read_text().strip()

    def strict(token: str) -> None:
        raise AssertionError(f"non-JSON token {token}")

    raw = json.loads(line, parse_constant=strict)  # fails on bare NaN / Infinity
    assert (raw["nan"], raw["inf"], raw["ninf"]) == ("NaN", "Infinity", "-Infinity")
    row = read_metrics(tmp_path / METRICS_FILE)[0]
    assert math.isnan(row["nan"]) and row["inf"] == math.inf and row["ninf"] == -math.inf and row["ok"] == 1.5
    assert row["phase"] == "offline"


@pytest.mark.parametrize(
    ("metrics", "err", "match"),
    [
        ({"step": 1.0}, KeyError, "reserved"),
        ({"q": np.zeros(3)}, TypeError, "'q'"),
        ({"q": "high"}, TypeError, "'q'"),
    ],
)
def test_bad_metrics_are_rejected(tmp_path: Path, metrics: dict, err: type, match: str) -> None:
    with RunLogger(tmp_path, {}) as logger, pytest.raises(err, match=match):
        logger.log(metrics, 1, "offline")


def test_fresh_logger_refuses_to_append_to_existing_run(tmp_path: Path) -> None:
    with RunLogger(tmp_path, {}) as logger:
        logger.log({"x": 1.0}, 1, "offline")
    with pytest.raises(FileExistsError, match="resume=True"):
        RunLogger(tmp_path, {})


def test_resume_truncates_rows_after_checkpoint_step(tmp_path: Path) -> None:
    with RunLogger(tmp_path, {"lr": 1.0}) as logger:
        for step in range(0, 60, 10):
            logger.log({"x": float(step)}, step, "offline")
    # Killed after the checkpoint at step 30; the restart replays 40 and 50.
    with pytest.warns(UserWarning, match="lr"):
        logger = RunLogger(tmp_path, {"lr": 2.0}, resume=True)
    assert logger.truncate_after(30) == 2
    for step in (40, 50):
        logger.log({"x": -float(step)}, step, "online")
    logger.close()
    rows = read_metrics(tmp_path / METRICS_FILE)
    assert [r["step"] for r in rows] == [0, 10, 20, 30, 40, 50]
    assert [r["x"] for r in rows[-2:]] == [-40.0, -50.0]
    assert json.loads((tmp_path / CONFIG_FILE).read_text()) == {"lr": 2.0}


def test_truncated_last_line_is_dropped_and_repaired_on_resume(tmp_path: Path) -> None:
    with RunLogger(tmp_path, {}) as logger:
        logger.log({"x": 1.0}, 1, "offline")
    with open(tmp_path / METRICS_FILE, "a") as f:
        f.write('{"step": 2, "phase": "off')  # killed mid-write
    with pytest.warns(UserWarning, match="truncated last line"):
        assert [r["step"] for r in read_metrics(tmp_path / METRICS_FILE)] == [1]
    with pytest.warns(UserWarning, match="truncated"), RunLogger(tmp_path, {}, resume=True) as logger:
        logger.log({"x": 2.0}, 2, "offline")
    assert [r["step"] for r in read_metrics(tmp_path / METRICS_FILE)] == [1, 2]


def test_corrupt_middle_line_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / METRICS_FILE
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match=rf"{METRICS_FILE}:2"):
        read_metrics(path)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_metrics(tmp_path / "nope.jsonl")


def test_make_run_dir_is_unique_and_named(tmp_path: Path) -> None:
    dirs = [make_run_dir(tmp_path, "pick place/v0") for _ in range(3)]
    assert len(set(dirs)) == 3 and all(d.is_dir() and d.parent == tmp_path for d in dirs)
    assert all("_pick-place-v0" in d.name for d in dirs)
    assert make_run_dir(tmp_path, None).name[:8].isdigit()
    with pytest.raises(ValueError, match="run name"):
        make_run_dir(tmp_path, "///")


def test_disabled_wandb_is_never_imported(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from calql_robot.run.runlog import RunLogger\n"
        f"l = RunLogger(Path({str(tmp_path)!r}), {{}}); l.log({{'x': 1.0}}, 1, 'offline'); l.close()\n"
        "assert 'wandb' not in sys.modules, 'wandb imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_bad_wandb_mode_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="wandb_mode"):
        RunLogger(tmp_path, {}, wandb_mode="dryrun")


def test_wandb_offline_needs_no_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc credentials
    with RunLogger(tmp_path / "run", {"lr": 1e-3}, wandb_mode="offline", run_name="t") as logger:
        logger.log({"train/critic_loss": 1.0}, 5, "offline")
    assert os.environ.get("WANDB_SILENT") == "true"
    offline_runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1
    run_id = (tmp_path / "run" / "wandb_id.txt").read_text().strip()
    assert offline_runs[0].name.endswith(run_id)
    # A resumed run reuses the stored id, so wandb continues the same run.
    with RunLogger(tmp_path / "run", {"lr": 1e-3}, wandb_mode="offline", resume=True) as logger:
        logger.truncate_after(5)
        logger.log({"train/critic_loss": 0.5}, 6, "online")
    assert (tmp_path / "run" / "wandb_id.txt").read_text().strip() == run_id
    assert [r["step"] for r in read_metrics(tmp_path / "run" / METRICS_FILE)] == [5, 6]
