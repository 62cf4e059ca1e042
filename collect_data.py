"""Collect the PTR-style pick-and-place pre-training dataset (scripted, noisy, many tasks).

    python collect_data.py --episodes-per-task 100       # -> datasets/pickplace_64px_<hash>.hdf5
    python collect_data.py --episodes-per-task 100 --output my_data.hdf5

Every option is documented by `python collect_data.py --help`; the logic (task split,
collection, caching, file attributes) lives in calql_robot/domains/pickplace_data.py.
"""
from __future__ import annotations


from calql_robot.domains.pickplace_data import PickPlaceDataConfig, check_data_config, find_or_create_dataset, format_success_table
from calql_robot.errors import cli_main, tyro_cli
from data.episodes_hdf5 import validate


def main(cfg: PickPlaceDataConfig) -> None:
    check_data_config(cfg, prefix="--")
    path = find_or_create_dataset(cfg, prefix="--")
    attrs = validate(path)
    print(f"{path}: {attrs['num_episodes']} episodes, {attrs['num_steps']} steps, "
          f"held-out task {tuple(attrs['split']['held_out_task'])}")
    print(format_success_table(attrs["success_stats"]))


if __name__ == "__main__":
    cli_main(lambda argv: main(tyro_cli(PickPlaceDataConfig, args=argv)))  # --debug: tracebacks
