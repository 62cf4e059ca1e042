"""The table of agents: `--algo NAME` -> (config class, learner class, the experiment
config's field that holds the config). Adding a method is one module in `agents/` and one
line here (d3rlpy's `register_learnable`, without its class hierarchy).

CQL is Cal-QL with `--learner.no-calql-bound` (SPEC section 1: nothing else changes), so it
is a setting of the `calql` line, not a line of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from calql_robot.agents.awac import AWACConfig, AWACLearner
from calql_robot.agents.base import Agent, AgentSpec
from calql_robot.agents.bc import BCConfig, BCLearner
from calql_robot.agents.calql import CalQLConfig
from calql_robot.agents.calql_learner import CalQLLearner
from calql_robot.agents.iql import IQLConfig, IQLLearner
from calql_robot.errors import ConfigError


@dataclass(frozen=True)
class AgentEntry:
    """One method: its typed config, its learner (built as `learner(config, spec)`), and
    `field`, the name of the experiment config's field that holds its config (the flags'
    prefix: `--learner.*` for Cal-QL, `--bc.*` for behaviour cloning)."""

    config: type
    learner: type
    field: str


AGENTS: dict[str, AgentEntry] = {
    "calql": AgentEntry(CalQLConfig, CalQLLearner, "learner"),  # CQL: --learner.no-calql-bound
    "bc": AgentEntry(BCConfig, BCLearner, "bc"),  # behaviour cloning, the reference line (offline only)
    "iql": AgentEntry(IQLConfig, IQLLearner, "iql"),  # implicit Q-learning (Kostrikov et al. 2022)
    "awac": AgentEntry(AWACConfig, AWACLearner, "awac"),  # advantage-weighted actor-critic (Nair et al. 2020)
}

Algo = Literal["calql", "bc", "iql", "awac"]
"""The `--algo` choices, as tyro shows them; the same names as `AGENTS` (checked at import)."""
assert set(Algo.__args__) == set(AGENTS)  # one list, checked at import


def validate_agent_configs(config: Any) -> None:
    """Check every agent config the experiment config holds, as the run starts: a mistyped
    `--learner.*`, `--bc.*`, `--iql.*` or `--awac.*` flag is named before anything is
    written, whichever `--algo` runs (each agent config has `validate()`)."""
    entry_of(config.algo)  # an unknown --algo is named first
    for entry in AGENTS.values():  # every domain's config holds every agent's field
        getattr(config, entry.field).validate()


def agent_config(config: Any) -> Any:
    """The config of `config.algo`'s agent, read from its field of the experiment config."""
    entry = entry_of(config.algo)
    return getattr(config, entry.field)


def entry_of(algo: str) -> AgentEntry:
    """The table's line of `algo`; an unknown name is a one-line ConfigError naming it."""
    if algo not in AGENTS:
        raise ConfigError(f"--algo must be one of {', '.join(AGENTS)}, got {algo!r}")
    return AGENTS[algo]


def build_agent(config: Any, spec: AgentSpec) -> Agent:
    """The agent of an experiment config (its `algo` and that agent's config field)."""
    return entry_of(config.algo).learner(agent_config(config), spec)
