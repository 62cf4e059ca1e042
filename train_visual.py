"""Cal-QL from pixels on pick-and-place: offline pre-training on scripted data of many tasks,
online fine-tuning on the held-out task (0, 1), with evaluation videos, checkpoints, plots.

    python train_visual.py                     # the CPU preset (~15 min on 2 cores, data included)
    python train_visual.py --preset paper      # SPEC section 4, visual column (GPU-sized)
    python train_visual.py --preset cpu --help # every option, with the preset's values as defaults
    python train_visual.py --run.resume --run.run-dir runs/<dir>   # continue a killed run
"""

import argparse

from calql_robot.errors import cli_main
from calql_robot.experiment import parse_config, run_experiment
from calql_robot.domains.pickplace_visual import (PRESETS, VisualExperimentConfig, adopt_dataset, build_visual_domain,
                                                  check_visual_config)


def parse(argv: list[str]) -> VisualExperimentConfig:
    """`--preset` picks the base config; tyro then overrides any of its fields."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    known, rest = pre.parse_known_args(argv)
    description = f"{__doc__}\nPreset: {known.preset} (choices: {', '.join(sorted(PRESETS))}; pass --preset NAME first)."
    return parse_config(VisualExperimentConfig, rest, default=PRESETS[known.preset], description=description)


def main(cfg: VisualExperimentConfig) -> None:
    cfg = adopt_dataset(cfg)
    check_visual_config(cfg)
    summary = run_experiment(cfg, cfg.learner, cfg.loop, cfg.reward, cfg.run,
                             lambda: build_visual_domain(cfg), videos=cfg.video)
    print({k: round(v, 3) if isinstance(v, float) else v for k, v in summary.items()})


if __name__ == "__main__":
    cli_main(lambda argv: main(parse(argv)))  # --debug: tracebacks
