"""Cal-QL on a state task: privileged-state pick-and-place (default), AntMaze, Kitchen or
Adroit from the dataset you hold; offline pre-training, then online fine-tuning.

    python train_state.py                      # CPU-sized defaults, a few minutes
    python train_state.py --help               # every option and every task
    python train_state.py --algo bc            # the behaviour-cloning reference on the same data
    python train_state.py --run.resume --run.run-dir runs/<dir>   # continue a killed run
    python train_state.py --task antmaze-umaze --dataset antmaze-umaze-v2.hdf5   # D4RL file
    python train_state.py --task pen --dataset pen2_sparse.npy --trust-pickle --preset paper
"""

from calql_robot.cli import parse_state_cli
from calql_robot.errors import cli_main
from calql_robot.experiment import run_experiment


def main(argv: list[str]) -> None:
    summary = run_experiment(parse_state_cli(argv))
    print({k: round(v, 3) if isinstance(v, float) else v for k, v in summary.items()})


if __name__ == "__main__":
    cli_main(main)  # --debug: tracebacks
