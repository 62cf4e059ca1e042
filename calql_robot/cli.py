"""Command lines of the training entry points: `train_state.py` and `train_visual.py`
parse here, with a resumed run's saved config as the defaults that flags override.

Parsing is tyro over the typed configs (CleanRL's style); `--task` / `--preset` are read
first because they choose the defaults every other flag overrides.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from calql_robot.agents.catalog import AGENTS, algo_table, reward_method, with_algo_defaults
from calql_robot.config import RewardConfig, from_dict
from calql_robot.domains.pickplace_state import BASELINE_REWARDS, StateExperimentConfig
from calql_robot.domains.pickplace_state import PRESETS as STATE_PRESETS
from calql_robot.domains.pickplace_visual import PRESETS as VISUAL_PRESETS
from calql_robot.domains.pickplace_visual import VisualExperimentConfig
from calql_robot.domains.registry import PICKPLACE, TASKS, TaskExperimentConfig, preset_config, task_table
from calql_robot.errors import ConfigError, tyro_cli
from calql_robot.run.runlog import CONFIG_FILE, read_config_json


def saved_config_for_resume(cls: type, argv: list[str]) -> Any | None:
    """On `--run.resume --run.run-dir D`: the typed config saved in D/config.json, meant as
    the parser's defaults, so a resumed run continues with its own settings (issue 9: the
    README's resume command passes no other flag) while flags given now still override
    them; None when not resuming or when D has no config (prepare_run_dir says so)."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--run.resume", dest="resume", action="store_true")
    pre.add_argument("--run.no-resume", dest="resume", action="store_false")
    pre.add_argument("--run.run-dir", "--run.run_dir", dest="run_dir")
    known, _ = pre.parse_known_args(argv)
    path = Path(known.run_dir) / CONFIG_FILE if known.resume and known.run_dir else None
    if path is None or not path.is_file():
        return None
    data = read_config_json(path)
    want = getattr(cls, "__dataclass_fields__", {}).get("domain")
    if want is not None and data.get("domain", want.default) != want.default:
        raise ConfigError(f"--run.run-dir {known.run_dir} is a {data.get('domain')} run, not a {want.default} one",
                          "resume it with the entry point that started it")
    try:
        saved = from_dict(cls, data, str(path))
    except (ValueError, TypeError) as err:
        raise ConfigError(" ".join(str(err).split()), "was the run made by another version of this code?") from err
    print(f"--run.resume: continuing with the settings saved in {path} (flags given now override them)",
          flush=True)
    return saved


def peek_algo(argv: list[str]) -> str:
    """`--algo` as given (tyro parses it again), read first because IQL and AWAC start from
    their reference's reward where it differs from the preset's (`BASELINE_REWARDS`)."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--algo", default="calql")
    known, _ = pre.parse_known_args(argv)
    return known.algo


def with_algo_reward(default: Any, algo: str, rewards: dict[str, RewardConfig]) -> Any:
    """The preset with `algo`'s reward from `rewards` (scale, bias, failure reward; the
    discount stays the preset's), or unchanged when `algo` has none there; `algo`'s method's
    (`catalog.reward_method`: `wsrl-iql` takes IQL's)."""
    algo = reward_method(algo)
    if algo not in rewards:
        return default
    r = rewards[algo]
    return dataclasses.replace(default, reward=dataclasses.replace(default.reward, scale=r.scale, bias=r.bias,
                                                                   failure_reward=r.failure_reward))


def parse_config(cls: type, argv: list[str], default: Any | None = None, description: str | None = None) -> Any:
    """`tyro.cli` of an entry point's config, with a resumed run's saved config as default;
    a new run's default is the preset with `--algo`'s settings applied (`agents/catalog.py`:
    what the method implies, e.g. no pre-training for SAC), which the other flags override."""
    base = saved_config_for_resume(cls, argv)
    if base is None and default is not None:
        default = preset_with_algo(default, argv)
    description = f"{description}\n\nAlgorithms (--algo NAME):\n{algo_table()}\n" if description else description
    return tyro_cli(cls, default=base if base is not None else default, args=argv, description=description)



def preset_with_algo(default: Any, argv: list[str]) -> Any:
    """The preset with the settings of the `--algo` given on the command line (if any; an
    unknown name is left to tyro, which lists the choices). They are worked out on the
    online budget given on the command line, if one is (WSRL's warm-up is sized by it)."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--algo", default=None)
    pre.add_argument("--loop.online-env-steps", "--loop.online_env_steps", dest="online", type=int, default=None)
    known, _ = pre.parse_known_args(argv)
    if known.algo is None or known.algo not in AGENTS:
        return default
    if known.online is not None:
        default = dataclasses.replace(default, loop=dataclasses.replace(default.loop, online_env_steps=known.online))
    return with_algo_defaults(default, known.algo)


def parse_state_cli(argv: list[str]) -> StateExperimentConfig | TaskExperimentConfig:
    """train_state.py's config: pick-and-place (default) or a registry task with its preset.

    ``--task`` and ``--preset`` are read first, because they choose the defaults every other
    flag overrides; the rest is parsed by tyro against that task's config, so
    ``--task antmaze-umaze --loop.offline-steps 50`` is the smoke preset with 50 updates.
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--task", default=PICKPLACE, choices=[PICKPLACE, *TASKS])
    pre.add_argument("--preset", default=None, choices=["default", "smoke", "paper"])
    known, rest = pre.parse_known_args(argv)
    tasks = f"Tasks (--task NAME; default {PICKPLACE}):\n  {PICKPLACE:<24} the privileged-state " \
            f"pick-and-place task (options below; --preset default or paper)\n{task_table()}\n"
    if known.task == PICKPLACE:
        preset = known.preset or "default"
        if preset not in STATE_PRESETS:
            raise ConfigError(f"--preset {preset} is not a pick-and-place preset; choose from "
                              f"{', '.join(STATE_PRESETS)}")
        default = with_algo_reward(STATE_PRESETS[preset](), peek_algo(rest), BASELINE_REWARDS)
        return parse_config(StateExperimentConfig, rest, default=default,
                            description=f"Cal-QL on a state task ({preset} preset).\n\n{tasks}")
    if known.preset == "default":
        raise ConfigError("--preset default is a pick-and-place preset; the registry tasks have smoke and paper")
    known.preset = known.preset or "smoke"
    default = preset_config(known.task, known.preset, peek_algo(argv))
    return parse_config(TaskExperimentConfig, argv, default=default,
                        description=f"Cal-QL on {known.task} ({known.preset} preset).\n\n{tasks}")


def parse_visual_cli(argv: list[str], doc: str = "") -> VisualExperimentConfig:
    """train_visual.py's config: `--preset` picks the base config; tyro then overrides any
    of its fields."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", choices=sorted(VISUAL_PRESETS), default="cpu")
    known, rest = pre.parse_known_args(argv)
    description = (f"{doc}\nPreset: {known.preset} (choices: {', '.join(sorted(VISUAL_PRESETS))}; "
                   f"pass --preset NAME first).")
    default = with_algo_reward(VISUAL_PRESETS[known.preset], peek_algo(rest), BASELINE_REWARDS)
    return parse_config(VisualExperimentConfig, rest, default=default, description=description)
