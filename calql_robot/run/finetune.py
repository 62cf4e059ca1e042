"""`--run.finetune-from DIR`: fine-tune from another run's pre-trained state.

Researchers compare online settings (mixing ratio, CQL weight, learning rates, UTD) on one
pre-training, as the Cal-QL paper's fine-tuning comparisons do; re-running the offline
phase for each costs most of a run and adds its own seed-to-seed variance. A finished run
keeps its pre-trained state as `checkpoints/switch.pt` (calql_robot/loop.py); a new run
started from it takes the learner, counters and RNG from that file, the offline rows of
the source's metrics.jsonl, and the source's `--loop.offline-steps` (the x-axis of its
online rows starts there), and then fine-tunes with its own flags. With the source's
settings it repeats the source's fine-tuning exactly (tests/test_loop.py). Its `--algo` may
differ from the source's where both build the same agent and the source's pre-training is
the new method's (CQL + SAC from CQL, WSRL from Cal-QL or IQL): it then repeats the new
method's own full run exactly (tests/test_forks.py), which is how sweeps save those
pre-trainings.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calql_robot.run.checkpoint import SWITCH_NAME, check_keys, checkpoint_candidates, load_checkpoint
from calql_robot.config import RunConfig
from calql_robot.errors import ConfigError
from calql_robot.run.runlog import CONFIG_FILE, METRICS_FILE, read_metrics

FLAG = "--run.finetune-from"


@dataclass
class PretrainedSource:
    """What a run that fine-tunes from `run_dir` takes over from it."""

    run_dir: Path
    switch: Path
    state: dict[str, Any]
    offline_steps: int
    rows: list[dict[str, Any]]
    """The source's metrics rows up to and including the switch."""

    @property
    def wall_s(self) -> float:
        """The source's wall clock at the switch (0 when it logged none)."""
        walls = [r["progress/wall_s"] for r in self.rows if "progress/wall_s" in r]
        return float(walls[-1]) if walls else 0.0


def load_source(run_dir: str, domain: str | None, algo: str,
                same_agent: Callable[[str], bool] | None = None) -> PretrainedSource:
    """Read and check `run_dir`'s switch.pt, config and metrics; each problem is one line
    naming the flag and the path. The source's `--algo` must be `algo`, or one that
    `same_agent` accepts: a method whose agent is the same (CQL + SAC and WSRL fine-tune
    Cal-QL's agent, `wsrl-iql` IQL's), so one pre-training serves every fine-tuning of it -
    the caller keeps to forks whose offline settings are the source's (`sweep/grid.py`)."""
    root = Path(run_dir)
    config_path, switch = root / CONFIG_FILE, root / "checkpoints" / SWITCH_NAME
    if not config_path.is_file():
        raise ConfigError(f"{FLAG} {run_dir}: no {CONFIG_FILE}, so not a run directory")
    if not switch.is_file():
        raise ConfigError(f"{FLAG} {run_dir}: no checkpoints/{SWITCH_NAME}",
                          "the run has not finished pre-training, or it predates switch.pt")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if domain is not None and config.get("domain", domain) != domain:
        raise ConfigError(f"{FLAG} {run_dir}: a {config.get('domain')} run, not {domain}")
    source_algo = config.get("algo", "calql")
    if source_algo != algo and not (same_agent is not None and same_agent(source_algo)):
        raise ConfigError(f"{FLAG} {run_dir}: pre-trained with --algo {source_algo}, not {algo} "
                          f"(nor a method of the same agent)")
    state = load_checkpoint(switch)
    check_keys(switch, state, ("learner", "counters", "rng"))
    offline_steps = int(state["counters"]["offline_updates"])
    metrics = root / METRICS_FILE
    rows = [r for r in read_metrics(metrics) if r["step"] <= offline_steps] if metrics.is_file() else []
    return PretrainedSource(root, switch, state, offline_steps, rows)


def source_for(run: RunConfig, domain: str | None, algo: str,
               same_agent: Callable[[str], bool] | None = None) -> PretrainedSource | None:
    """The source of `run.finetune_from`, or None: without the flag, and for a resumed
    fine-tuning run that has checkpoints of its own (it continues from those; the offline
    steps it took over are in its saved config)."""
    if not run.finetune_from:
        return None
    if run.resume and run.run_dir and checkpoint_candidates(Path(run.run_dir, "checkpoints")):
        return None
    return load_source(run.finetune_from, domain, algo, same_agent)
