"""Run a grid of algorithms x tasks x seeds to completion on Ray, resumably.

    python sweep.py --algos calql cql iql --tasks pickplace-state --seeds 0 1 2 3 4 --out runs/sweeps/state
    python sweep.py ... -- --loop.online-env-steps 1000     # flags after -- go to every cell
    python -m calql_robot.analysis runs/sweeps/state         # again: curves, regret, calibration, the table

Every cell is an ordinary run directory, OUT/<task>/<algo>/seed<k>/ (its config.json,
metrics, checkpoints, videos), with its console output in seed<k>.log beside it. Re-running
the same command skips finished cells and resumes unfinished ones from their checkpoints; a
failing cell is reported with its one-line error and the others go on. OUT/sweep.json
records the grid, the code version and each cell's state. At the end the sweep pools its
finished cells into OUT/analysis (table.md, table.csv; paired.md, paired.csv: each method
minus calql seed by seed; a figure per task) and prints the tables.

Scheduling: a local Ray instance with --num-cpus CPUs (default: all cores) unless --address
names a running cluster (every node must see the repository and OUT at the same paths).
Each cell reserves --cpus-per-cell CPUs and runs that many torch threads, so cells never
oversubscribe the cores; --gpus-per-cell may be fractional (0.5: two cells per GPU) - a
scheduling hint to Ray, not memory isolation. A local instance's cells run at sweep.py's
own niceness (Ray's default would add 15): `nice -n 10 python sweep.py ...` for a sweep that
yields the CPU to other work.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from calql_robot.analysis.seeds import write_report
from calql_robot.errors import ConfigError, cli_main
from calql_robot.run.lock import RunLock
from calql_robot.sweep.grid import algo_names, build_grid, task_names
from calql_robot.sweep.record import SweepRecord


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    parser = argparse.ArgumentParser(prog="sweep.py", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--algos", nargs="+", required=True, metavar="ALGO",
                        help=f"algorithms: {' '.join(algo_names())} (cql = calql --learner.no-calql-bound)")
    parser.add_argument("--tasks", nargs="+", default=["pickplace-state"], metavar="TASK",
                        help=f"tasks: {' '.join(task_names())} (default pickplace-state)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], metavar="SEED", help="default 0 1 2")
    parser.add_argument("--out", type=Path, required=True, help="the sweep's directory (re-use it to resume)")
    parser.add_argument("--preset", default=None, help="the entry points' --preset for every cell")
    parser.add_argument("--dataset", action="append", default=[], metavar="TASK=PATH",
                        help="the dataset of a registry task (antmaze-*, kitchen-*, pen, ...); repeatable")
    parser.add_argument("--address", default=None, help="a running Ray cluster (default: a local instance)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local instance (default: all)")
    parser.add_argument("--cpus-per-cell", type=int, default=1, help="CPUs and torch threads per cell (default 1)")
    parser.add_argument("--gpus-per-cell", type=float, default=0.0,
                        help="GPUs per cell, may be fractional: a scheduling hint, not memory isolation")
    parser.add_argument("--poll", type=float, default=60.0, help="seconds between progress lines (default 60)")
    parser.add_argument("--no-forks", dest="forks", action="store_false",
                        help="run cql-sac, wsrl-* in full even beside the method whose pre-training they share\n"
                             "(default: they fine-tune from its cell's switch.pt, which repeats the full run exactly)")
    args = parser.parse_args(argv)
    if args.cpus_per_cell < 1:
        raise ConfigError(f"--cpus-per-cell must be >= 1, got {args.cpus_per_cell}")
    if args.gpus_per_cell < 0:
        raise ConfigError(f"--gpus-per-cell must be >= 0, got {args.gpus_per_cell}")
    if args.num_cpus is not None and args.num_cpus < args.cpus_per_cell:
        raise ConfigError(f"--num-cpus {args.num_cpus} cannot hold one cell of --cpus-per-cell {args.cpus_per_cell}")
    return args, extra


def datasets_of(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        task, sep, path = pair.partition("=")
        if not sep or not task or not path:
            raise ConfigError(f"--dataset {pair}: expected TASK=PATH")
        out[task] = str(Path(path).resolve())
    return out


def main(argv: list[str]) -> None:
    args, extra = parse(argv)
    out = args.out.resolve()
    cells = build_grid(out, args.algos, args.tasks, args.seeds, preset=args.preset, threads=args.cpus_per_cell,
                       datasets=datasets_of(args.dataset), extra=extra, forks=args.forks)
    out.mkdir(parents=True, exist_ok=True)
    grid = {"algos": args.algos, "tasks": args.tasks, "seeds": args.seeds, "preset": args.preset, "extra": extra,
            "forks": args.forks,
            "cpus_per_cell": args.cpus_per_cell, "gpus_per_cell": args.gpus_per_cell}
    with RunLock(out).acquire():  # one driver per sweep directory
        record = SweepRecord(out, grid, ["python", "sweep.py", *argv], keys=[c.key for c in cells])
        record.check_commands(cells)
        from calql_robot.sweep.runner import run_sweep

        counts = run_sweep(cells, record, address=args.address, num_cpus=args.num_cpus or os.cpu_count(),
                           cpus_per_cell=args.cpus_per_cell, gpus_per_cell=args.gpus_per_cell, poll_s=args.poll)
    print(f"sweep: {counts['done']} of {len(cells)} cells done, {counts['failed']} failed", flush=True)
    if counts["done"]:
        print(write_report([out], out / "analysis"), end="", flush=True)  # python -m calql_robot.analysis OUT
    if counts["failed"]:
        sys.exit(1)


if __name__ == "__main__":
    cli_main(main)
