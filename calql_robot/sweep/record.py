"""`SWEEP_DIR/sweep.json`: the grid, the code version and each cell's state.

Written whole to a temporary name and renamed after every change (`run/atomic.py`), so a
sweep killed at any instant leaves the previous record, never half of one. The record is a
report, not the source of truth: whether a cell is finished is read from its run directory
(`summary.json`), so a cell that finished after the record's last write is still skipped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from calql_robot.errors import ConfigError
from calql_robot.run.atomic import atomic_write
from calql_robot.run.provenance import provenance
from calql_robot.sweep.grid import FORK_FLAG, Cell, as_given_to_cells

SWEEP_FILE = "sweep.json"
STATES = ("pending", "running", "done", "failed")


def cell_identity(command: list[str] | tuple[str, ...]) -> list[str]:
    """A cell's command less its run directory's path, which follows from `--out` (a sweep
    directory moved or copied elsewhere, an archived sweep continued, is the same sweep),
    and less the pre-training it forks from (a fork repeats the full run exactly:
    `grid.FORKS`)."""
    command = list(command)
    for flag in ("--run.run-dir", FORK_FLAG):
        if flag in command:
            i = command.index(flag)
            del command[i:i + 2]
    return command


class SweepRecord:
    """The sweep's record, loaded from an earlier run of the same sweep when there is one.

    `keys` are the cells of the grid as given now. A directory re-run with a smaller grid
    (an algorithm dropped) keeps the entries of the earlier grid's started cells, whose runs
    are on disk, but forgets those that never started; the counts, the progress line and the
    exit status are the current grid's only (an old failed cell does not fail a new grid)."""

    def __init__(self, out: Path, grid: dict[str, Any], argv: list[str], keys: list[str] | None = None) -> None:
        self.path = Path(out) / SWEEP_FILE
        old = self._load()
        self.keys = None if keys is None else set(keys)
        cells = old.get("cells", {})
        if self.keys is not None:
            cells = {k: v for k, v in cells.items() if k in self.keys or v.get("state") != "pending"}
        self.data: dict[str, Any] = {"grid": grid, "argv": argv, "code": provenance(),
                                     "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                     "runs_of_this_sweep": old.get("runs_of_this_sweep", 0) + 1,
                                     "cells": cells}

    def _load(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise ConfigError(f"--out {self.path.parent}: {SWEEP_FILE} is not valid JSON ({err})",
                              "move it aside to start the record again (the cells' runs are kept)") from None
        return data if isinstance(data, dict) else {}

    def check_commands(self, cells: list[Cell]) -> None:
        """Refuse a started cell whose directory was made by another command
        (`cell_identity`): skipping or resuming it would put another experiment's run in this
        grid's table. A cell that never started takes the command of the grid as it is now."""
        for cell in cells:
            before = self.data["cells"].get(cell.key, {}).get("command")
            if before is not None and cell.started() and cell_identity(before) != cell_identity(cell.command):
                raise ConfigError(f"--out {self.path.parent}: cell {cell.key} was run with another command "
                                  f"({' '.join(before)})", "use another --out for a different grid or flags")

    def set(self, cell: Cell, state: str, **fields: Any) -> None:
        assert state in STATES, state
        entry = self.data["cells"].setdefault(cell.key, {})
        entry.update({"state": state, "command": list(cell.command), "run_dir": as_given_to_cells(cell.run_dir),
                      **fields})
        if state != "failed":
            entry.pop("error", None)

    def counts(self) -> dict[str, int]:
        """Cells per state, over the current grid's cells."""
        states = [c.get("state") for k, c in self.data["cells"].items() if self.keys is None or k in self.keys]
        return {s: states.count(s) for s in STATES}

    def write(self) -> None:
        self.data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        text = json.dumps(self.data, indent=2) + "\n"
        atomic_write(self.path, lambda f: f.write(text))
