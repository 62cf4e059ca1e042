"""`python -m calql_robot.analysis DIR [DIR ...] [--out OUT]`: pool finished runs over seeds.

DIR is a sweep's directory (`sweep.py --out`), any folder holding run directories, or run
directories themselves; runs are grouped by task and method from their own config.json.
Writes into OUT (default: DIR/analysis for one DIR): `table.md` and `table.csv` (pre-trained
success, fine-tuned success, dip and regret, mean ± 95% interval over seeds, with the number
of runs); `paired.md` and `paired.csv` (each method minus the reference method, default
calql, seed by seed on the seeds both ran, mean ± 95% interval of the differences); and one
figure per task, `<task>.png` (success with 95% bands and the switch, the first online
steps, cumulative regret, calibration). Prints the tables.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from calql_robot.analysis.seeds import write_report
from calql_robot.errors import ConfigError, cli_main


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m calql_robot.analysis", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default DIR/analysis for one DIR)")
    parser.add_argument("--early-fraction", type=float, default=0.2,
                        help="the dip's window: this fraction of each run's online env steps (default 0.2)")
    parser.add_argument("--reference", default="calql", metavar="METHOD",
                        help="the method every other is paired against, seed by seed (default calql)")
    args = parser.parse_args(argv)
    if not 0 < args.early_fraction <= 1:
        raise ConfigError(f"--early-fraction must be in (0, 1], got {args.early_fraction}")
    if args.out is None:
        if len(args.dirs) != 1:
            raise ConfigError("--out is needed with more than one DIR")
        args.out = args.dirs[0] / "analysis"
    table = write_report(args.dirs, args.out, args.early_fraction, args.reference)
    print(table, end="")


if __name__ == "__main__":
    cli_main(main)
