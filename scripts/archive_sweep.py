"""Keep a sweep's results small enough to commit, and continue it elsewhere.

    python scripts/archive_sweep.py runs/sweeps/state results/sweeps/state

Copies, for every finished cell (its run wrote summary.json), the files the analysis and a
continued sweep read - config.json, summary.json, metrics.jsonl, run_info.json and the
cell's log - and the sweep's sweep.json; not checkpoints, videos or figures. The sweep
directory's own path inside those files is rewritten to DEST as given, so the archive names
no machine's path. A later session copies DEST back to a sweep directory and re-runs the
same `sweep.py` command with `--out` there: the archived cells count as finished and only
the rest run (`sweep/record.py` compares cells' commands without their run directories).
`python -m calql_robot.analysis DEST` reads the archive as it is.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calql_robot.analysis.seeds import find_runs  # noqa: E402
from calql_robot.errors import ConfigError, cli_main  # noqa: E402
from calql_robot.run.atomic import atomic_write  # noqa: E402
from calql_robot.sweep.grid import as_given_to_cells  # noqa: E402
from calql_robot.sweep.record import SWEEP_FILE  # noqa: E402

CELL_FILES = ("config.json", "summary.json", "metrics.jsonl", "run_info.json")


def rewrite(src: Path, dest: Path, old: list[str], new: str) -> None:
    """Copy a text file, every spelling of the sweep directory's path replaced by `new`."""
    text = src.read_text(encoding="utf-8", errors="replace")
    for path in old:
        text = text.replace(path, new)
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dest, lambda f: f.write(text))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("dest", type=Path)
    args = parser.parse_args(argv)
    src = args.sweep_dir.resolve()
    if not (src / SWEEP_FILE).is_file():
        raise ConfigError(f"{args.sweep_dir}: no {SWEEP_FILE}, so not a sweep directory")
    if args.dest.resolve() == src or src in args.dest.resolve().parents:
        raise ConfigError(f"{args.dest}: inside the sweep directory it archives")
    spellings = sorted({str(src), as_given_to_cells(src)}, key=len, reverse=True)  # the longest first
    new = as_given_to_cells(args.dest)
    runs = find_runs([src])
    for run in runs:
        rel = run.relative_to(src)
        for name in CELL_FILES:
            if (run / name).is_file():
                rewrite(run / name, args.dest / rel / name, spellings, new)
        log = run.with_suffix(".log")
        if log.is_file():
            rewrite(log, (args.dest / rel).with_suffix(".log"), spellings, new)
    rewrite(src / SWEEP_FILE, args.dest / SWEEP_FILE, spellings, new)
    print(f"{len(runs)} finished cells of {args.sweep_dir} archived in {args.dest}")


if __name__ == "__main__":
    cli_main(main)
