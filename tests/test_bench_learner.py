"""bench/learner.py runs the real learner and ends with the JSON line BENCHMARKS.md quotes;
its FLOP count of an update, which every GFLOP/s and ceiling fraction it reports rests
on, is counted again here from the networks it builds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_bench_learner_prints_consistent_json() -> None:
    from bench.learner import MATMUL_SHAPES

    out = subprocess.run([sys.executable, "bench/learner.py", "--updates", "2", "--rounds", "2",
                          "--matmul-seconds", "0.1", "--threads", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["rounds"] == 2 and result["threads"] == 1
    assert result["updates_per_s"] > 0 and result["matmul_gflops"] > 0
    assert set(result["matmul_gflops_by_shape"]) == {f"{m}x{k}@{k}x{n}" for m, k, n in MATMUL_SHAPES}
    assert set(result["bf16_matmul_gflops_by_shape"]) == set(result["matmul_gflops_by_shape"])
    assert all(v > 0 for v in result["bf16_matmul_gflops_by_shape"].values())
    assert isinstance(result["bf16_native"], bool) and result["cpu"]
    if result["bf16_native"]:  # timed in bf16 beside fp32 only where bf16 is native
        assert result["bf16_speedup"] > 0 and result["bf16_updates_per_s"] > 0
    else:
        assert result["bf16_speedup"] is None and "not timed" in out.stdout


def forward_flops(weights) -> int:
    """FLOP of one row through one member of an (ensemble) MLP: 2 x fan_in x fan_out per
    layer, weights stacked (members, fan_in, fan_out)."""
    return sum(2 * w.shape[1] * w.shape[2] for w in weights)


def test_gflop_per_update_counts_the_official_update_of_the_preset_it_builds() -> None:
    """GFLOP_PER_UPDATE is a hand-written constant (23.7): if it does not match the AntMaze
    preset's networks, every achieved GFLOP/s and ceiling fraction of BENCHMARKS.md is off.
    Count it again from the layer shapes of the learner the bench builds, pass by pass of
    the official (JaxCQL) update: E critics forward and backward (x3) over the data action
    and the 3 CQL sets of n actions, and over the policy loss's B rows; E target critics
    forward over the k backup actions; the actor once per sampled action (the new action,
    the two CQL policy sets, the backup set) and backward over the B policy-loss rows. The
    larger timed matmul is the trained critics' hidden layer at (1 + 3n) B rows."""
    from bench.learner import ACTION_DIM, BATCH, GFLOP_PER_UPDATE, MATMUL_SHAPES, OBS_DIM
    from calql_robot.agents.base import AgentSpec
    from calql_robot.agents.calql import PRESETS
    from calql_robot.agents.calql_learner import CalQLLearner

    learner = CalQLLearner(PRESETS["antmaze"](), AgentSpec(OBS_DIM, ACTION_DIM))
    cfg, b = learner.cfg, BATCH
    n, k, e = cfg.cql_n_actions, cfg.backup_k if cfg.max_target_backup else 1, cfg.num_critics
    critic, actor = forward_flops(learner.critic.weights), forward_flops(learner.actor.mlp.weights)
    critics = e * critic * (3 * (1 + 3 * n) * b + 3 * b + k * b)
    actors = actor * ((1 + 2 * n + k) * b + 2 * b)
    assert (critics + actors) / 1e9 == pytest.approx(GFLOP_PER_UPDATE, abs=0.05)
    hidden = learner.critic.weights[1].shape[1:]
    assert ((1 + 3 * n) * b, *hidden) in MATMUL_SHAPES


def test_bench_agents_times_each_algo_in_each_phase() -> None:
    """bench/agents.py builds agents as train_state.py does; an offline-only agent has no
    online figure, and cql-sac's online update (no CQL sets) is faster than its offline one."""
    out = subprocess.run([sys.executable, "bench/agents.py", "--seconds", "0.3", "--threads", "1",
                          "--algos", "calql", "cql-sac", "bc"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    table = result["updates_per_s"]
    assert set(table) == {"calql", "cql-sac", "bc"}
    assert table["bc"]["online"] is None and table["bc"]["offline"] > 0
    assert table["cql-sac"]["online"] > table["cql-sac"]["offline"] > 0


def test_bench_agents_applies_config_overrides() -> None:
    """Flags after `--` change the config the agents are built from, as train_state.py reads
    them (the batch it times here), are recorded in its JSON line, and a flag that does not
    exist is named in one line."""
    from bench.agents import agent_config

    config = agent_config("default", "odt", ["--odt.embed-dim", "128", "--loop.batch-size", "64", "--odt.dropout", "0.0"])
    assert (config.odt.embed_dim, config.loop.batch_size, config.odt.dropout) == (128, 64, 0.0)
    out = subprocess.run([sys.executable, "bench/agents.py", "--seconds", "0.3", "--threads", "1", "--algos", "bc",
                          "--", "--loop.batch-size", "32"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["batch_size"] == 32 and result["flags"] == ["--loop.batch-size", "32"]
    bad = subprocess.run([sys.executable, "bench/agents.py", "--algos", "bc", "--", "--odt.width", "3"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "--odt.width" in bad.stderr and "Traceback" not in bad.stderr
