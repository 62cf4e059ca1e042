"""Check a dataset before a long run: counts, boundaries, returns, sizes, mappings.

    python inspect_dataset.py antmaze-umaze-v2.hdf5 --task antmaze-umaze
    python inspect_dataset.py D4RL/kitchen/mixed-v2 --minari-root ~/.minari/datasets
    python inspect_dataset.py pen2_sparse.npy --trust-pickle --task pen
    python inspect_dataset.py datasets/pickplace_64px.hdf5 --format pickplace

Prints a summary, then as its last line one JSON object (transitions, trajectories,
terminals, timeouts, obs_dim, action_dim, mc_return_min, mc_return_max, success_rate, ...).
"""

import argparse
import sys

from calql_robot.dataset_info import inspect, report
from calql_robot.domains.registry import PICKPLACE, TASKS
from data.schema import DatasetFormatError


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", help="D4RL .hdf5, AWAC .npy, d4rl:<name>, Minari id or directory, "
                                   "or a pick-and-place episode file")
    p.add_argument("--format", default="auto", choices=["auto", "d4rl", "minari", "awac", "pickplace"])
    p.add_argument("--task", default=None, choices=[PICKPLACE, *TASKS],
                   help="read as this task does (its mapping, size checks and reward transform)")
    p.add_argument("--minari-root", default=None, help="root of local Minari datasets")
    p.add_argument("--trust-pickle", action="store_true", help="allow loading AWAC pickles")
    p.add_argument("--out-of-range-actions", default="error", choices=["error", "clip", "rescale"],
                   help="actions outside [-1, 1]: stop naming the row (error), clip them, or divide all by "
                        "their largest |a| (rescale), as a run's flag of the same name")
    a = p.parse_args()
    task = PICKPLACE if a.format == "pickplace" and a.task is None else a.task
    try:
        print(report(inspect(a.dataset, a.format, task, a.minari_root, a.trust_pickle, a.out_of_range_actions)))
    except (DatasetFormatError, FileNotFoundError, RuntimeError, ValueError) as err:
        # A bad or untrusted file is the user's to fix: one line naming the file and key.
        sys.exit(f"inspect_dataset.py: error: {err}")


if __name__ == "__main__":
    main()
