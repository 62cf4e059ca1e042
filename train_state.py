"""Cal-QL on a state task: privileged-state pick-and-place (default), AntMaze, Kitchen or
Adroit from the dataset you hold; offline pre-training, then online fine-tuning.

    python train_state.py                      # CPU-sized defaults, a few minutes
    python train_state.py --help               # every option and every task
    python train_state.py --algo bc            # the behaviour-cloning reference on the same data
    python train_state.py --run.resume --run.run-dir runs/<dir>   # continue a killed run
    python train_state.py --task antmaze-umaze --dataset antmaze-umaze-v2.hdf5   # D4RL file
    python train_state.py --task pen --dataset pen2_sparse.npy --trust-pickle --preset paper
"""

from calql_robot.domains.pickplace_state import StateExperimentConfig, build_state_domain, check_state_config
from calql_robot.domains.registry import TaskExperimentConfig, build_task_domain, parse_state_cli
from calql_robot.errors import cli_main
from calql_robot.experiment import run_experiment


def main(cfg: StateExperimentConfig | TaskExperimentConfig) -> None:
    if isinstance(cfg, TaskExperimentConfig):
        summary = run_experiment(cfg, cfg.learner, cfg.loop, cfg.reward, cfg.run,
                                 lambda: build_task_domain(cfg), videos=cfg.videos)
    else:
        check_state_config(cfg)
        summary = run_experiment(cfg, cfg.learner, cfg.loop, cfg.reward, cfg.run,
                                 lambda: build_state_domain(cfg))
    print({k: round(v, 3) if isinstance(v, float) else v for k, v in summary.items()})


if __name__ == "__main__":
    cli_main(lambda argv: main(parse_state_cli(argv)))  # --debug: tracebacks
