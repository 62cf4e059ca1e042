"""The house rules of docs/ARCHITECTURE.md, checked from the code's own imports, and the
agent contract checked on every `--algo` built through the real entry points' parsers.

- No import circle among the project's modules, counting function-level imports too.
- Floors: a module imports only lower floors, or its own folder's neighbours.
- `sim/`, `data/`, `encoders/` stand alone; the loop and the experiment import no concrete
  agent; no deferred import marked as dodging a circle (ruff's PLC0415 waiver) is left anywhere.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from calql_robot.agents.base import Agent, AgentSpec
from calql_robot.agents.catalog import AGENTS, Algo, build_agent
from calql_robot.cli import parse_state_cli, parse_visual_cli

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("calql_robot", "sim", "data", "encoders")

FLOORS: dict[str, int] = {
    "calql_robot.errors": 1, "calql_robot.perf": 1, "calql_robot.precision": 1, "calql_robot.config": 1, "calql_robot.networks": 1,
    "calql_robot.schedule": 1,
    "calql_robot.run": 2, "calql_robot.agents": 2,
    "calql_robot.rollouts": 3, "calql_robot.analysis": 3, "calql_robot.domains": 3,
    "calql_robot.loop": 4, "calql_robot.dataset_info": 4,
    "calql_robot.experiment": 5, "calql_robot.policy_io": 5, "calql_robot.cli": 5,
    "calql_robot.sweep": 4,
}
"""docs/ARCHITECTURE.md's floors, by module or folder (the longest prefix wins)."""

CONCRETE_AGENTS = ("calql_robot.agents.calql", "calql_robot.agents.calql_learner", "calql_robot.agents.reference",
                   "calql_robot.agents.bc", "calql_robot.agents.sac", "calql_robot.agents.sac_learner",
                   "calql_robot.agents.iql", "calql_robot.agents.awac", "calql_robot.agents.odt")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules imported anywhere in the file (top level or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import sub` imports the submodule; `from pkg import name` the package
            subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
            names = subs + ([node.module] if len(subs) < len(node.names) else [])
        else:
            continue
        found.update(n for n in names if n in modules)
    return found


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def floor_of(module: str) -> int | None:
    best = max((p for p in FLOORS if module == p or module.startswith(p + ".")), key=len, default=None)
    return None if best is None else FLOORS[best]


def test_no_import_circle() -> None:
    g = graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(g[node]):
            if state.get(nxt) == 1:
                circle = path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
                pytest.fail(f"import circle: {' -> '.join(circle)}")
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(g):
        if name not in state:
            visit(name, [name])


def test_every_import_runs_down_the_floors() -> None:
    g = graph()
    bad = []
    for src, targets in g.items():
        if not src.startswith("calql_robot."):
            continue
        for dst in targets:
            if not dst.startswith("calql_robot.") or dst == "calql_robot":
                continue
            fs, fd = floor_of(src), floor_of(dst)
            same_folder = src.rsplit(".", 1)[0] == dst.rsplit(".", 1)[0]
            if fs is None or fd is None or not (fd < fs or (fd == fs and same_folder)):
                bad.append(f"{src} (floor {fs}) -> {dst} (floor {fd})")
    assert not bad, "imports that run up or sideways:\n" + "\n".join(sorted(bad))


def test_sim_data_encoders_stand_alone() -> None:
    g = graph()
    for src, targets in g.items():
        top = src.split(".")[0]
        if top in ("sim", "data", "encoders"):
            assert all(t.split(".")[0] == top for t in targets), (src, sorted(targets))


def test_loop_and_experiment_import_no_concrete_agent() -> None:
    g = graph()
    for src in ("calql_robot.loop", "calql_robot.experiment"):
        assert not [t for t in g[src] if t.startswith(CONCRETE_AGENTS)], (src, sorted(g[src]))


def test_only_the_sweep_runner_imports_ray() -> None:
    """Ray is the runner's dependency: everything else (training, analysis, the grid)
    imports without it."""
    users = []
    for path in ROOT.rglob("*.py"):
        if ".git" in path.parts or "tests" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "ray" or n.startswith("ray.") for n in names):
                users.append(str(path.relative_to(ROOT)))
    assert sorted(set(users)) == ["calql_robot/sweep/runner.py"]


def test_no_import_is_deferred_to_dodge_a_circle() -> None:
    marker = "noqa: " + "PLC0415"
    hits = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
            if ".git" not in p.parts and marker in p.read_text(encoding="utf-8")]
    assert not hits, hits


@pytest.mark.parametrize("algo", sorted(AGENTS))
@pytest.mark.parametrize("entry", ["state", "visual", "task"])
def test_every_algo_builds_through_the_entry_points_and_keeps_the_contract(algo: str, entry: str) -> None:
    argv = ["--algo", algo]
    if entry == "state":
        cfg = parse_state_cli(argv)
    elif entry == "visual":
        cfg = parse_visual_cli(argv)
    else:
        cfg = parse_state_cli(["--task", "door", *argv])
    assert cfg.algo == algo
    agent = build_agent(cfg, AgentSpec(feature_dim=6, action_dim=3, discount=cfg.reward.discount))
    assert isinstance(agent, Agent) and isinstance(agent, AGENTS[algo].learner)
    assert isinstance(agent.learns_online, bool) and isinstance(agent.needs_returns, bool)
    assert agent.act([0.0] * 6, deterministic=True).shape == (3,)
    state = agent.state_dict()
    agent.load_state_dict(state)


def test_the_algo_choices_are_the_table() -> None:
    assert set(Algo.__args__) == set(AGENTS)
