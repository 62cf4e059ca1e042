"""What each `--algo` costs: learner updates per second of every agent in the catalog on
the state pick-and-place preset, in its offline phase and after `set_online(True)`.

    python bench/agents.py [--threads 2] [--seconds 4] [--preset default] [--algos calql sac ...]
    python bench/agents.py --algos odt -- --odt.embed-dim 128 --odt.n-layer 3 --odt.n-head 1 --loop.batch-size 64

Each agent's config comes from train_state.py's own parser (`cli.parse_state_cli` of
`--preset P --algo NAME` and the flags after `--`, which go to every agent unchanged, as in
`sweep.py` and `bench/learning.py`): the preset with the name's implied settings applied
(`agents/catalog.with_algo_defaults`) and its reward. Agents are built on the state task's
sizes (observation 29, action 7) and batch; the batches are random (speed does not depend
on the values). The agents take turns in ~1 s windows (a drifting shared machine slows
them alike) and each rate is the median of its windows. An agent that does not learn
online (`learns_online` False) has no online figure. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.hardware import machine  # noqa: E402
from calql_robot.agents.base import AgentSpec, batch_to_torch, context_length  # noqa: E402
from calql_robot.agents.catalog import AGENTS, build_agent  # noqa: E402
from calql_robot.cli import parse_state_cli  # noqa: E402
from calql_robot.domains.pickplace_state import PRESETS  # noqa: E402
from calql_robot.errors import cli_main  # noqa: E402
from calql_robot.perf import tune_malloc  # noqa: E402

OBS_DIM, ACTION_DIM = 29, 7


def random_batch(rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
    """A batch with the state task's shapes and value ranges (reward 10r - 5, G in [-500, 500])."""
    actions = rng.uniform(-1, 1, (size, ACTION_DIM)).astype(np.float32)
    actions[:, -1] = np.sign(actions[:, -1])
    return {"observations": rng.normal(size=(size, OBS_DIM)).astype(np.float32),
            "next_observations": rng.normal(size=(size, OBS_DIM)).astype(np.float32),
            "actions": actions, "rewards": rng.choice([-5.0, 5.0], size).astype(np.float32),
            "dones": (rng.random(size) < 0.03).astype(np.float32),
            "mc_returns": rng.uniform(-500, 500, size).astype(np.float32)}


def random_windows(rng: np.random.Generator, size: int, context: int) -> dict[str, np.ndarray]:
    """A batch of `size` windows of `context` steps, for a sequence agent (`--algo odt`)."""
    flat = random_batch(rng, size * context)
    out = {k: flat[k].reshape(size, context, *flat[k].shape[1:]) for k in ("observations", "actions", "rewards", "dones")}
    out["returns_to_go"] = rng.uniform(0, 1, (size, context)).astype(np.float32)
    out["mask"] = np.ones((size, context), np.float32)
    return out


def agent_config(preset: str, algo: str, flags: list[str]):
    """The config `train_state.py --preset PRESET --algo ALGO FLAGS...` would run with."""
    return parse_state_cli(["--preset", preset, "--algo", algo, *flags])


def make_agents(preset: str, algos: list[str], device: torch.device, flags: list[str] = ()):
    """(name, phase) -> an agent in that phase, built as the entry point builds it."""
    agents = {}
    for algo in algos:
        config = agent_config(preset, algo, list(flags))
        for online in (False, True):
            torch.manual_seed(0)
            agent = build_agent(config, AgentSpec(OBS_DIM, ACTION_DIM, config.reward.discount, device=device,
                                                  failure_return=config.reward.failure_return()))
            if online and not agent.learns_online:
                continue
            agent.set_online(online)
            agents[(algo, "online" if online else "offline")] = agent
    return agents, config.loop.batch_size


def rates(agents: dict, batches: dict[int, list[dict]], seconds: float) -> dict:
    """Median updates/s of each agent over windows of ~1 s, the agents taking turns;
    `batches` by context length (1: transitions)."""
    for agent in agents.values():
        for b in batches[context_length(agent)][:2]:
            agent.update(b)
    windows: dict = {key: [] for key in agents}
    deadline, i = time.perf_counter() + seconds * len(agents), 0
    while time.perf_counter() < deadline or min(len(w) for w in windows.values()) < 2:
        for key, agent in agents.items():
            start, count = time.perf_counter(), 0
            while count == 0 or time.perf_counter() - start < 1.0:
                agent.update(batches[context_length(agent)][i % 4])
                i, count = i + 1, count + 1
            windows[key].append(count / (time.perf_counter() - start))
    return {key: float(np.median(w)) for key, w in windows.items()}


def main(argv: list[str]) -> None:
    flags: list[str] = []
    if "--" in argv:  # train_state.py's flags, for every agent
        i = argv.index("--")
        argv, flags = argv[:i], argv[i + 1:]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Flags after -- go to every agent's config as train_state.py reads them.")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--seconds", type=float, default=4.0, help="timing budget per agent and phase")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default", help="train_state.py's --preset")
    parser.add_argument("--algos", nargs="+", choices=sorted(AGENTS), default=list(AGENTS),
                        help="the --algo names to time (default: all)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.seconds <= 0:
        parser.error(f"--threads must be >= 1 and --seconds > 0, got {args.threads} and {args.seconds}")
    tune_malloc()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    agents, batch_size = make_agents(args.preset, args.algos, device, flags)
    rng = np.random.default_rng(0)
    batches = {1: [batch_to_torch(random_batch(rng, batch_size), device) for _ in range(4)]}
    for context in sorted({context_length(agent) for agent in agents.values()} - {1}):
        batches[context] = [batch_to_torch(random_windows(rng, batch_size, context), device) for _ in range(4)]
    measured = rates(agents, batches, args.seconds)
    hw = machine(device)
    print(f"state pick-and-place, preset {args.preset}, batch {batch_size}, {args.threads} threads, {hw['cpu']}, "
          f"load {os.getloadavg()[0]:.2f}")
    table = {}
    for algo in args.algos:
        off, on = measured.get((algo, "offline")), measured.get((algo, "online"))
        table[algo] = {"offline": round(off, 2), "online": None if on is None else round(on, 2)}
        print(f"  {algo:<12} offline {off:8.2f} updates/s   online " + ("       -" if on is None else f"{on:8.2f}"))
    print(json.dumps({"updates_per_s": table, "batch_size": batch_size, "preset": args.preset, "flags": flags,
                      "threads": args.threads, "loadavg_1min": round(os.getloadavg()[0], 2), **hw}))


if __name__ == "__main__":
    cli_main(main)
