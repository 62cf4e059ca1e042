"""The cells of a sweep and the command each one runs.

A cell is one ordinary run directory, `SWEEP_DIR/<task>/<algo>/seed<k>/`, made by the
project's own entry point with one command, so everything a single run has (config.json,
metrics, checkpoints, videos, exact resume) a cell has too, and any run-directory tool
(`rollout.py`, `python -m calql_robot.analysis`) reads it. The cell's console output goes
to `seed<k>.log` beside the directory (the entry point refuses a non-empty new run
directory, so the log cannot live inside it before the run starts).

Names beyond `--algo`'s catalog: `cql` is Cal-QL with `--learner.no-calql-bound` (SPEC
section 1: nothing else changes) and `wsrl-cql` is `wsrl-calql` with it, as the catalog's
own help says. Tasks: `pickplace-state` and `pickplace-visual` are the two entry points'
pick-and-place defaults; every other name is a registry task of `train_state.py --task`,
whose dataset comes from `--dataset TASK=PATH`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from calql_robot.agents.catalog import AGENTS
from calql_robot.domains.registry import TASKS
from calql_robot.errors import ConfigError
from calql_robot.run.runlog import CONFIG_FILE, SUMMARY_FILE

ROOT = Path(__file__).resolve().parents[2]
PICKPLACE_TASKS = {"pickplace-state": "train_state.py", "pickplace-visual": "train_visual.py"}
ALGO_ALIASES = {"cql": ["--algo", "calql", "--learner.no-calql-bound"],
                "wsrl-cql": ["--algo", "wsrl-calql", "--learner.no-calql-bound"]}
FORKS = {"cql-sac": "cql", "wsrl-calql": "calql", "wsrl-cql": "cql", "wsrl-iql": "iql"}
"""Methods whose pre-training is another method's, flag for flag (they differ only after the
switch): where both are in a grid, the cell of the first fine-tunes from the switch.pt of the
second's cell of the same task and seed (`--run.finetune-from`), which repeats the full run
exactly (tests/test_loop.py pins it for each pair) and saves its pre-training."""
FORK_FLAG = "--run.finetune-from"


def algo_names() -> list[str]:
    """Every name `--algos` accepts: the catalog's and the aliases."""
    return [*AGENTS, *ALGO_ALIASES]


def task_names() -> list[str]:
    """Every name `--tasks` accepts."""
    return [*PICKPLACE_TASKS, *TASKS]


def algo_flags(algo: str) -> list[str]:
    """The entry point's flags that select `algo`."""
    if algo in ALGO_ALIASES:
        return list(ALGO_ALIASES[algo])
    if algo not in AGENTS:
        raise ConfigError(f"--algos: unknown algorithm {algo!r}; choose from {', '.join(algo_names())}")
    return ["--algo", algo]


def task_flags(task: str, datasets: dict[str, str]) -> tuple[str, list[str]]:
    """(entry script, its flags) for `task`."""
    if task in PICKPLACE_TASKS:
        return PICKPLACE_TASKS[task], []
    if task not in TASKS:
        raise ConfigError(f"--tasks: unknown task {task!r}; choose from {', '.join(task_names())}")
    if task not in datasets:
        raise ConfigError(f"--tasks {task} needs its data: pass --dataset {task}=PATH")
    return "train_state.py", ["--task", task, "--dataset", datasets[task]]


@dataclass(frozen=True)
class Cell:
    """One run of the grid: where it lives and the command (after `python`) that makes it."""

    task: str
    algo: str
    seed: int
    run_dir: Path
    command: tuple[str, ...] = field(compare=False)
    source: str | None = field(default=None, compare=False)
    """The key of the cell whose pre-training this one fine-tunes from (`FORKS`), if any."""

    @property
    def key(self) -> str:
        return f"{self.task}/{self.algo}/seed{self.seed}"

    @property
    def log(self) -> Path:
        return self.run_dir.with_suffix(".log")

    def finished(self) -> bool:
        """The run wrote its summary, which the entry point does last."""
        return (self.run_dir / SUMMARY_FILE).is_file()

    def started(self) -> bool:
        """The run wrote its config, so `--run.resume` continues it (from its latest
        checkpoint, or from the start when it was killed before the first)."""
        return (self.run_dir / CONFIG_FILE).is_file()

    def argv(self) -> list[str]:
        """What to run now: the cell's command, plus `--run.resume` once it has started."""
        return [*self.command, "--run.resume"] if self.started() else list(self.command)


def as_given_to_cells(path: Path) -> str:
    """A path as a cell's command names it: relative to the repository root (where cells
    run) when it lies inside, so records and configs name no machine's path; else absolute."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def cell_command(task: str, algo: str, seed: int, run_dir: Path, *, preset: str | None, threads: int,
                 datasets: dict[str, str], extra: list[str]) -> tuple[str, ...]:
    """The entry point's command line for one cell. The cell's flags come last but for
    `extra`, which the user may use to override anything but the run directory and seed."""
    script, flags = task_flags(task, datasets)
    preset_flags = ["--preset", preset] if preset else []
    return (script, *preset_flags, *flags, *algo_flags(algo), "--run.seed", str(seed),
            "--run.run-dir", as_given_to_cells(run_dir),
            "--run.threads", str(threads), "--run.no-progress", *extra)


def build_grid(out: Path, algos: list[str], tasks: list[str], seeds: list[int], *, preset: str | None = None,
               threads: int = 1, datasets: dict[str, str] | None = None, extra: list[str] | None = None,
               forks: bool = True) -> list[Cell]:
    """The grid's cells, seed-major (every algorithm and task of seed 0 before seed 1): a
    sweep cut short still holds whole seeds of every method, the unit a comparison needs.
    With `forks`, a method of `FORKS` whose source method is in the grid fine-tunes from that
    cell's pre-training instead of repeating it."""
    for name, values in (("--algos", algos), ("--tasks", tasks), ("--seeds", seeds)):
        if not values:
            raise ConfigError(f"{name} is empty")
        if len(set(values)) != len(values):
            raise ConfigError(f"{name} repeats a value: {' '.join(map(str, values))}")
    forbidden = [f for f in extra or [] if f.split("=")[0] in ("--run.run-dir", "--run.seed", "--run.resume",
                                                               FORK_FLAG)]
    if forbidden:
        raise ConfigError(f"extra flag {forbidden[0]} is the sweep's to set (cells get their own run directory "
                          f"and seed)")
    cells = []
    for seed in seeds:
        for task in tasks:
            for algo in algos:
                run_dir = Path(out).resolve() / task / algo / f"seed{seed}"
                source = FORKS.get(algo) if forks and FORKS.get(algo) in algos else None
                fork = [FORK_FLAG, as_given_to_cells(run_dir.parent.parent / source / run_dir.name)] if source else []
                command = cell_command(task, algo, seed, run_dir, preset=preset, threads=threads,
                                       datasets=datasets or {}, extra=fork + list(extra or []))
                cells.append(Cell(task, algo, seed, run_dir, command,
                                  f"{task}/{source}/seed{seed}" if source else None))
    return cells


def progress_of(cell: Cell) -> dict:
    """Where a started cell stands, from its files alone: phase, step, the planned total,
    wall seconds, the last evaluation's success (None before one)."""
    config = json.loads((cell.run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    offline, online = int(config["loop"]["offline_steps"]), int(config["loop"]["online_env_steps"])
    if config.get("algo") == "bc":
        online = 0  # behaviour cloning has no online phase
    last, success = _tail_rows(cell.run_dir / "metrics.jsonl")
    step = int(last.get("step", 0)) if last else 0
    return {"phase": "offline" if step < offline else "online", "step": step, "total": offline + online,
            "wall_s": float(last.get("progress/wall_s", 0.0)) if last else 0.0, "success": success}


def _tail_rows(path: Path, size: int = 65536) -> tuple[dict | None, float | None]:
    """The last whole row of a metrics file and the last success rate in its final `size`
    bytes (a poll must not re-read a long run's whole log)."""
    if not path.is_file():
        return None, None
    with open(path, "rb") as f:
        f.seek(0, 2)
        end = f.tell()
        f.seek(max(0, end - size))
        lines = f.read().decode("utf-8", errors="replace").splitlines()
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # the cut first line or a row being written
    rows = [r for r in rows if isinstance(r, dict)]
    success = next((float(r["eval/success_rate"]) for r in reversed(rows) if "eval/success_rate" in r), None)
    return (rows[-1] if rows else None), success
