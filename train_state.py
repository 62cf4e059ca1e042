"""Cal-QL on the state-based pick-and-place task: offline pre-training, online fine-tuning.

    python train_state.py                      # CPU-sized defaults, a few minutes
    python train_state.py --help               # every option
    python train_state.py --run.resume --run.run-dir runs/<dir>   # continue a killed run
    python train_state.py --task antmaze-umaze --dataset antmaze-umaze-v2.hdf5   # D4RL file
    python train_state.py --task pen --dataset pen2_sparse.npy --trust-pickle --preset paper
"""

import sys

from calql_robot.experiment import run_experiment
from calql_robot.domains.pickplace_state import StateExperimentConfig, build_state_domain
from calql_robot.domains.registry import TaskExperimentConfig, build_task_domain, parse_state_cli


def main(cfg: StateExperimentConfig | TaskExperimentConfig) -> None:
    if isinstance(cfg, TaskExperimentConfig):
        summary = run_experiment(cfg, cfg.learner, cfg.loop, cfg.reward, cfg.run,
                                 lambda: build_task_domain(cfg), videos=cfg.videos)
    else:
        summary = run_experiment(cfg, cfg.learner, cfg.loop, cfg.reward, cfg.run,
                                 lambda: build_state_domain(cfg))
    print({k: round(v, 3) if isinstance(v, float) else v for k, v in summary.items()})


if __name__ == "__main__":
    main(parse_state_cli(sys.argv[1:]))
