"""Loading a run's policy back: config.json -> typed config -> env + learner, then the
checkpoint's weights (always `weights_only=True`, `calql_robot.run.checkpoint.load_checkpoint`).

A run records its domain in its config (`domain: "pickplace_state" | "pickplace_visual" |
"state_task"`, the last for `train_state.py --task` runs),
so a rollout rebuilds exactly the env and networks the run trained, without touching the
offline dataset (only the env's observation space is needed to size the networks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym

from calql_robot.agents.base import Agent, AgentPolicy, AgentSpec, resolve_device
from calql_robot.agents.catalog import build_agent
from calql_robot.config import from_dict
from calql_robot.domains.catalog import DOMAINS, domain_entry
from calql_robot.errors import CheckpointNotFoundError, ConfigError, RunDirError
from calql_robot.run.checkpoint import check_keys, fits_run, load_checkpoint, resume_state
from calql_robot.run.runlog import CONFIG_FILE, read_config_json


def read_run_config(run_dir: Path) -> tuple[str, Any]:
    """(domain name, typed config) of a run directory; clear errors for what is missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"run directory not found: {run_dir}")
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise RunDirError(f"{path}: no {CONFIG_FILE}; is {run_dir} a run directory?")
    data = read_config_json(path)
    domain = data.get("domain", _legacy_domain(data))
    entry = domain_entry(domain, str(path))
    try:
        return domain, from_dict(entry.config, data, str(path))
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{' '.join(str(err).split())}",
                        "was the run made by another version of this code?") from err


def _legacy_domain(data: dict[str, Any]) -> str | None:
    """Runs made before configs recorded their domain: the state config is the one with a
    top-level `target`; anything else stays unknown (and is reported as such)."""
    return "pickplace_state" if "target" in data and "encoder" not in data else None


@dataclass
class LoadedPolicy:
    """A run's learner with its checkpoint loaded, and a factory of its env."""

    domain: str
    config: Any
    learner: Agent
    make_env: Callable[[], gym.Env]
    checkpoint: Path
    step_info: dict[str, Any]


def load_policy(run_dir: Path, checkpoint: Path | None = None, device: str = "cpu") -> LoadedPolicy:
    """Rebuild a run's env and learner from config.json and load `checkpoint` (default:
    `<run_dir>/checkpoints/latest.pt`, or the newest numbered one)."""
    run_dir = Path(run_dir)
    domain, cfg = read_run_config(run_dir)
    dev = resolve_device(device)
    if checkpoint is None:
        found = resume_state(run_dir / "checkpoints", map_location=dev, required=("learner",))
        if found is None:
            raise CheckpointNotFoundError(f"{run_dir / 'checkpoints'}: no checkpoint (latest.pt, step_*.pt or "
                                          "previous.pt) to load")
        checkpoint, state = found
    else:
        state = load_checkpoint(Path(checkpoint), map_location=dev)
        check_keys(Path(checkpoint), state, ("learner",))
    entry = DOMAINS[domain]
    env = entry.make_env(cfg)
    try:
        encoder, feature_dim = entry.modules(cfg, env)
        action_dim = int(env.action_space.shape[0])
    finally:
        env.close()
    learner = build_agent(cfg, AgentSpec(feature_dim, action_dim, cfg.reward.discount, encoder, device=dev,
                                         reward_transform=(cfg.reward.scale, cfg.reward.bias)))
    with fits_run(Path(checkpoint), f"the networks described by {run_dir / CONFIG_FILE}"):
        learner.load_state_dict(state["learner"])
    learner.encoder.eval()
    counters = state.get("counters", {})
    info = {k: counters[k] for k in ("offline_updates", "online_updates", "env_steps") if k in counters}
    return LoadedPolicy(domain, cfg, learner, lambda: entry.make_env(cfg), Path(checkpoint), info)


def policy_fn(learner: Agent, deterministic: bool) -> Callable[[Any], Any]:
    """The learner as an `obs -> action` policy (act() itself runs under no_grad), told of
    episode starts and rewards where it keeps a context (`agents.base.AgentPolicy`)."""
    return AgentPolicy(learner, deterministic)
