"""Cal-QL on the state-based pick-and-place task: offline pre-training, online fine-tuning.

    python train_state.py                      # CPU-sized defaults, a few minutes
    python train_state.py --help               # every option
    python train_state.py --run.resume --run.run-dir runs/<dir>   # continue a killed run
"""

import tyro

from calql_robot.experiment import run_experiment
from calql_robot.domains.pickplace_state import StateExperimentConfig, build_state_domain


def main(cfg: StateExperimentConfig) -> None:
    summary = run_experiment(cfg, cfg.learner, cfg.loop, cfg.reward, cfg.run,
                             lambda: build_state_domain(cfg))
    print({k: round(v, 3) if isinstance(v, float) else v for k, v in summary.items()})


if __name__ == "__main__":
    main(tyro.cli(StateExperimentConfig))
