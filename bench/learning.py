"""What an entry point's preset learns, over seeds: success at the switch and at the end,
the dip right after the switch, cumulative regret and wall time.

Usage::

    python bench/learning.py --entry state --algo calql --seeds 0 1 2 [--parallel 2] [-- EXTRA FLAGS]

`--algo cql` is Cal-QL with `--learner.no-calql-bound`; `--algo bc` the behaviour-cloning
reference. Flags after `--` go to the entry point unchanged (e.g. `-- --loop.offline-steps 2000`).
Each seed runs `python train_<entry>.py --run.seed S --run.run-dir RUNS/<entry>-<algo>-s<S>` in
its own process (one torch thread each when `--parallel` > 1). Prints a table, then as its last
line one JSON object with `success_offline_mean`, `success_final_mean`, `regret_mean`, `dip_mean`,
`wall_s_mean` and the per-seed lists.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from calql_robot.analysis.outcomes import read_outcome  # noqa: E402

ALGO_FLAGS = {"calql": [], "cql": ["--learner.no-calql-bound"], "bc": ["--algo", "bc"], "iql": ["--algo", "iql"],
              "awac": ["--algo", "awac"]}


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entry", choices=("state", "visual"), default="state")
    parser.add_argument("--algo", choices=sorted(ALGO_FLAGS), default="calql")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--parallel", type=int, default=1, help="seeds run at once (2 cores: at most 2)")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "bench-learning")
    args = parser.parse_args(argv)
    if args.parallel < 1:
        parser.error(f"--parallel must be >= 1, got {args.parallel}")
    return args, extra


def run_seed(args: argparse.Namespace, extra: list[str], seed: int) -> dict:
    run_dir = args.runs_dir / f"{args.entry}-{args.algo}-s{seed}-{int(time.time())}"
    cmd = [sys.executable, str(ROOT / f"train_{args.entry}.py"), "--run.seed", str(seed), "--run.run-dir",
           str(run_dir), "--run.no-progress", *ALGO_FLAGS[args.algo], *extra]
    if args.parallel > 1:
        cmd += ["--run.threads", "1"]
    start = time.time()
    log = run_dir.with_suffix(".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                              env={**os.environ, "OMP_NUM_THREADS": "1"} if args.parallel > 1 else None)
    wall = time.time() - start
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        raise SystemExit(f"error: seed {seed} failed (exit {proc.returncode}): {tail[0]} (log: {log})")
    return {"seed": seed, "wall_s": wall, **read_outcome(run_dir).as_dict()}


def mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def main(argv: list[str]) -> None:
    args, extra = parse(argv)
    with ThreadPoolExecutor(args.parallel) as pool:
        results = list(pool.map(lambda s: run_seed(args, extra, s), args.seeds))
    print(f"{'seed':>4} {'switch':>7} {'final':>6} {'dip':>6} {'regret':>7} {'wall s':>7}  run")
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    for r in results:
        print(f"{r['seed']:>4} {fmt(r['offline_success']):>7} {fmt(r['final_success']):>6} {fmt(r['dip']):>6} "
              f"{fmt(r['regret']):>7} {r['wall_s']:>7.0f}  {r['run_dir']}")
    summary = {"entry": args.entry, "algo": args.algo, "extra": extra, "seeds": args.seeds,
               "success_offline": [r["offline_success"] for r in results],
               "success_final": [r["final_success"] for r in results],
               "regret": [r["regret"] for r in results], "dip": [r["dip"] for r in results],
               "wall_s": [round(r["wall_s"], 1) for r in results],
               "run_dirs": [r["run_dir"] for r in results]}
    for key, name in (("success_offline", "success_offline_mean"), ("success_final", "success_final_mean"),
                      ("regret", "regret_mean"), ("dip", "dip_mean"), ("wall_s", "wall_s_mean")):
        summary[name] = mean(summary[key])
    print(json.dumps(summary))


if __name__ == "__main__":
    main(sys.argv[1:])
