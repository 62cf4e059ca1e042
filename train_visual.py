"""Cal-QL from pixels on pick-and-place: offline pre-training on scripted data of many tasks,
online fine-tuning on the held-out task (0, 1), with evaluation videos, checkpoints, plots.

    python train_visual.py                     # the CPU preset (~15 min on 2 cores, data included)
    python train_visual.py --preset paper      # SPEC section 4, visual column (GPU-sized)
    python train_visual.py --preset cpu --help # every option, with the preset's values as defaults
    python train_visual.py --run.resume --run.run-dir runs/<dir>   # continue a killed run
"""

from calql_robot.cli import parse_visual_cli
from calql_robot.errors import cli_main
from calql_robot.experiment import run_experiment


def main(argv: list[str]) -> None:
    summary = run_experiment(parse_visual_cli(argv, __doc__))
    print({k: round(v, 3) if isinstance(v, float) else v for k, v in summary.items()})


if __name__ == "__main__":
    cli_main(main)  # --debug: tracebacks
