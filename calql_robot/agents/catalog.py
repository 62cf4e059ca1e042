"""The table of agents: `--algo NAME` -> (config class, learner class, the experiment
config's field that holds the config). Adding a method is one module in `agents/` and one
line here (d3rlpy's `register_learnable`, without its class hierarchy).

CQL is Cal-QL with `--learner.no-calql-bound` (SPEC section 1: nothing else changes), so it
is a setting of the `calql` line, not a line of its own.

A line may also carry `defaults`: settings of the experiment config (its loop and its agent's
fields) that make the method what it is - SAC on online data only is SAC with no
pre-training and mixing ratio 0; CQL + SAC is Cal-QL's agent with the bound off and no CQL
term after the switch. The entry points apply them to the preset before the command line is
read (`cli.parse_config`), so `--help` shows them, explicit flags override them, and the
resolved values are what `config.json` records (a resumed run reads them from there).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from calql_robot.agents.awac import AWACConfig, AWACLearner
from calql_robot.agents.base import Agent, AgentSpec
from calql_robot.agents.bc import BCConfig, BCLearner
from calql_robot.agents.calql import CalQLConfig
from calql_robot.agents.calql_learner import CalQLLearner
from calql_robot.agents.iql import IQLConfig, IQLLearner
from calql_robot.agents.odt import ODTConfig, ODTLearner
from calql_robot.agents.sac import SACConfig
from calql_robot.agents.sac_learner import SACLearner
from calql_robot.errors import ConfigError

Defaults = Callable[[Any], dict[str, Any]]
"""experiment config -> {dotted field path: value}, e.g. {"loop.mixing_ratio": 0.0}."""


@dataclass(frozen=True)
class AgentEntry:
    """One method: its typed config, its learner (built as `learner(config, spec)`), and
    `field`, the name of the experiment config's field that holds its config (the flags'
    prefix: `--learner.*` for Cal-QL, `--bc.*` for behaviour cloning); `summary`, its line in
    `--help`; `defaults`, the settings the method implies (module docstring)."""

    config: type
    learner: type
    field: str
    summary: str = ""
    defaults: Defaults | None = None


# ---------------------------------------------------------------- what each name sets
def _no_pretraining(mixing_ratio: float | None) -> Defaults:
    """SAC from the first env step (no offline updates); online batches at `mixing_ratio`
    (None: the domain's, Cal-QL Table 3 / SPEC section 4)."""
    def defaults(config: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"loop.offline_steps": 0}
        if mixing_ratio is not None:
            out["loop.mixing_ratio"] = mixing_ratio
        return out
    return defaults


SAC_FINETUNING = {"learner.cql_weight_online": 0.0, "learner.bc_online": False}
"""Cal-QL's agent with these settings fine-tunes by SAC's update (no CQL term, no BC terms;
the bound is switched off beside them); tests/test_sac.py pins the equality."""

WSRL_WARMUP = 5000
"""WSRL's warm-up K: env steps collected by the pre-trained policy before the first online
update (Zhou et al. 2025; zhouzypaul/wsrl, every `launch_wsrl_finetune.sh`: --warmup_steps 5000)."""


def wsrl_warmup(online_env_steps: int) -> int:
    """WSRL's K where the online budget is at least 10K (the paper's budgets: 200K-1.25M env
    steps); a tenth of the budget under that (the CPU-sized presets: 100-3,000 env steps),
    which would otherwise make no update at all - a departure from WSRL, named in `--help`."""
    return WSRL_WARMUP if online_env_steps >= 10 * WSRL_WARMUP else online_env_steps // 10


def _cql_sac(config: Any) -> dict[str, Any]:
    return {"learner.calql_bound": False, **SAC_FINETUNING}


def wsrl_loop(config: Any) -> dict[str, Any]:
    """WSRL's data schedule after pre-training, for any pre-trained agent: online batches of
    online rows only (mixing 0; WSRL's `--offline_data_ratio 0`) after the warm-up. Nothing
    is re-initialised at the switch (WSRL keeps the pre-trained networks). `wsrl-iql` is this
    alone: IQL has no setting of its own that changes at the switch (its losses are the same
    online), so WSRL's schedule is all that makes it differ from `iql`."""
    return {"loop.mixing_ratio": 0.0, "loop.warmup_env_steps": wsrl_warmup(config.loop.online_env_steps)}


def _wsrl_calql(config: Any) -> dict[str, Any]:
    """WSRL's schedule with SAC's update after the switch (WSRL fine-tunes with its `sac`
    agent, zhouzypaul/wsrl `launch_wsrl_finetune.sh`); pre-training is the domain's Cal-QL."""
    return {"learner.calibrate_online": False, **SAC_FINETUNING, **wsrl_loop(config)}


def _odt(config: Any) -> dict[str, Any]:
    """Offline and online rows in one pool sampled uniformly: the nearest the loop has to the
    official ODT's single replay of whole trajectories (`agents/odt.py` says what differs)."""
    return {"loop.mixing_ratio": -1.0}


AGENTS: dict[str, AgentEntry] = {
    "calql": AgentEntry(CalQLConfig, CalQLLearner, "learner",  # CQL: --learner.no-calql-bound
                        "Cal-QL: CQL with the MC-return bound (CQL: --learner.no-calql-bound)"),
    "cql-sac": AgentEntry(CalQLConfig, CalQLLearner, "learner",
                          "CQL pre-training, then SAC fine-tuning on mixed batches (bound off; CQL and BC "
                          "terms off after the switch)", _cql_sac),
    "wsrl-calql": AgentEntry(CalQLConfig, CalQLLearner, "learner",
                             f"Cal-QL pre-training, then SAC fine-tuning without offline rows (mixing 0) after "
                             f"a warm-up of {WSRL_WARMUP} env steps (CPU budgets: a tenth); WSRL's data "
                             f"schedule (wsrl-cql: add --learner.no-calql-bound)", _wsrl_calql),
    "sac": AgentEntry(SACConfig, SACLearner, "sac", "SAC from scratch on online data only (no pre-training, "
                      "mixing 0)", _no_pretraining(0.0)),
    "sac-offline": AgentEntry(SACConfig, SACLearner, "sac", "SAC from scratch, offline and online data in one "
                              "pool sampled uniformly (mixing -1)", _no_pretraining(-1.0)),
    "hybrid": AgentEntry(SACConfig, SACLearner, "sac", "hybrid RL: SAC from scratch on batches mixed at the "
                         "domain's mixing ratio", _no_pretraining(None)),
    "iql": AgentEntry(IQLConfig, IQLLearner, "iql", "IQL: expectile value, advantage-weighted actor, the same "
                      "losses online (Kostrikov et al. 2022)"),
    "wsrl-iql": AgentEntry(IQLConfig, IQLLearner, "iql",
                           f"IQL pre-training, then IQL fine-tuning without offline rows (mixing 0) after a "
                           f"warm-up of {WSRL_WARMUP} env steps (CPU budgets: a tenth); WSRL's data schedule",
                           wsrl_loop),
    "awac": AgentEntry(AWACConfig, AWACLearner, "awac", "AWAC: SAC-style critic without entropy, actor weighted "
                       "by softmax(A / lambda) over the batch (Nair et al. 2020)"),
    "odt": AgentEntry(ODTConfig, ODTLearner, "odt", "online decision transformer: return-conditioned causal "
                      "transformer over (R, s, a), entropy-constrained stochastic policy, hindsight returns of "
                      "online episodes, one pool of offline and online rows (Zheng et al. 2022)", _odt),
    "bc": AgentEntry(BCConfig, BCLearner, "bc",  # behaviour cloning, the reference line (offline only)
                     "behaviour cloning, the reference line (offline only)"),
}

Algo = Literal["calql", "cql-sac", "wsrl-calql", "sac", "sac-offline", "hybrid", "iql", "wsrl-iql", "awac", "odt",
               "bc"]
"""The `--algo` choices, as tyro shows them; the same names as `AGENTS` (checked at import)."""
assert set(Algo.__args__) == set(AGENTS)  # one list, checked at import


def algo_table() -> str:
    """One line per `--algo` name for `--help`."""
    width = max(map(len, AGENTS))
    return "\n".join(f"  {name:<{width}}  {entry.summary}" for name, entry in AGENTS.items())


def algo_defaults(config: Any, algo: str) -> dict[str, Any]:
    """The settings `algo` implies for this experiment config (dotted paths -> values)."""
    defaults = entry_of(algo).defaults
    return {} if defaults is None else defaults(config)


def with_algo_defaults(config: Any, algo: str) -> Any:
    """`config` with `algo`'s settings applied and `algo` set (the entry points' defaults)."""
    config = dataclasses.replace(config, algo=algo)
    for path, value in algo_defaults(config, algo).items():
        config = _replace_path(config, path.split("."), value)
    return config


def _replace_path(obj: Any, parts: list[str], value: Any) -> Any:
    if len(parts) == 1:
        return dataclasses.replace(obj, **{parts[0]: value})
    return dataclasses.replace(obj, **{parts[0]: _replace_path(getattr(obj, parts[0]), parts[1:], value)})


def validate_agent_configs(config: Any) -> None:
    """Check every agent config the experiment config holds, as the run starts: a mistyped
    `--learner.*`, `--bc.*`, `--iql.*` or `--awac.*` flag is named before anything is
    written, whichever `--algo` runs (each agent config has `validate()`; `--odt.*` too)."""
    entry_of(config.algo)  # an unknown --algo is named first
    for field in dict.fromkeys(entry.field for entry in AGENTS.values()):  # every domain holds every field
        getattr(config, field).validate()


def agent_config(config: Any) -> Any:
    """The config of `config.algo`'s agent, read from its field of the experiment config."""
    entry = entry_of(config.algo)
    return getattr(config, entry.field)


def reward_method(algo: str) -> str:
    """The method whose reference reward `algo` starts from (the domains' `BASELINE_REWARDS`
    keys): its agent's config field, so `wsrl-iql` starts from IQL's reward as `iql` does
    (IQL's temperature reads the advantage's scale). An unknown name is returned as it is,
    for the parser to name."""
    entry = AGENTS.get(algo)
    return algo if entry is None else entry.field


def same_agent(a: str, b: str) -> bool:
    """Whether two `--algo` names build the same agent (learner and config field), so a
    run of one can fine-tune from the other's pre-training (`--run.finetune-from`)."""
    if a not in AGENTS or b not in AGENTS:
        return False
    return (AGENTS[a].learner, AGENTS[a].field) == (AGENTS[b].learner, AGENTS[b].field)


def entry_of(algo: str) -> AgentEntry:
    """The table's line of `algo`; an unknown name is a one-line ConfigError naming it."""
    if algo not in AGENTS:
        raise ConfigError(f"--algo must be one of {', '.join(AGENTS)}, got {algo!r}")
    return AGENTS[algo]


def build_agent(config: Any, spec: AgentSpec) -> Agent:
    """The agent of an experiment config (its `algo` and that agent's config field)."""
    return entry_of(config.algo).learner(agent_config(config), spec)
