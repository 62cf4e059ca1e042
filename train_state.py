"""Cal-QL on the state-based pick-and-place task: offline pre-training, online fine-tuning.

    python train_state.py                      # CPU-sized defaults, a few minutes
    python train_state.py --help               # every option
    python train_state.py --run.resume --run.run-dir runs/<dir>   # continue a killed run
"""

from calql_robot.errors import cli_main
from calql_robot.experiment import parse_config, run_experiment
from calql_robot.domains.pickplace_state import StateExperimentConfig, build_state_domain, check_state_config


def main(cfg: StateExperimentConfig) -> None:
    check_state_config(cfg)
    summary = run_experiment(cfg, cfg.learner, cfg.loop, cfg.reward, cfg.run,
                             lambda: build_state_domain(cfg))
    print({k: round(v, 3) if isinstance(v, float) else v for k, v in summary.items()})


if __name__ == "__main__":
    cli_main(lambda argv: main(parse_config(StateExperimentConfig, argv)))  # --debug: tracebacks
