"""A method that shares another's pre-training fine-tunes from that run's switch.pt and
repeats its own full run exactly (`sweep/grid.FORKS`): the rows of the fork and of the full
run agree bit for bit but for wall-clock fields. A method of another agent is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from calql_robot.sweep.grid import ALGO_ALIASES, FORKS

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TINY = ["--run.no-progress", "--run.threads", "1", "--data.episodes", "6", "--loop.offline-steps", "40",
        "--loop.online-env-steps", "120", "--loop.batch-size", "32", "--loop.eval-episodes", "1",
        "--loop.eval-every-offline", "20", "--loop.eval-every", "40", "--loop.log-every", "10",
        "--loop.checkpoint-every", "1000", "--learner.actor-hidden", "32", "32", "--learner.critic-hidden", "32", "32",
        "--iql.hidden", "32", "32"]


def train(run_dir: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train_state.py", *flags, *TINY, "--run.run-dir", str(run_dir)], cwd=ROOT,
                          env=ENV, capture_output=True, text=True, timeout=300)


def rows(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in ("time", "progress/wall_s")} for line in lines]


def algo_flags(name: str) -> list[str]:
    return list(ALGO_ALIASES.get(name, ["--algo", name]))


@pytest.mark.parametrize("fork", sorted(set(FORKS) - {"wsrl-cql"}))  # wsrl-cql is wsrl-calql with a flag
def test_a_fork_repeats_the_full_run_exactly(tmp_path: Path, fork: str) -> None:
    source = tmp_path / "source"
    assert train(source, *algo_flags(FORKS[fork])).returncode == 0
    full, forked = tmp_path / "full", tmp_path / "fork"
    done = train(full, *algo_flags(fork))
    assert done.returncode == 0, done.stderr[-2000:]
    done = train(forked, *algo_flags(fork), "--run.finetune-from", str(source))
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = rows(full), rows(forked)
    assert len(a) == len(b) > 10 and any(r["step"] > 40 and "train/critic_loss" in r for r in a)
    assert a == b
    assert json.loads((forked / "config.json").read_text())["algo"] == fork


def test_a_fixed_weight_online_repeats_a_no_lagrange_fork_of_the_lagrange_run(tmp_path: Path) -> None:
    """`--learner.no-lagrange-online` is, in one run, what session 13 measured as forks:
    the Lagrange pre-training fine-tuned with `--learner.no-lagrange` from its switch."""
    source = tmp_path / "source"
    assert train(source).returncode == 0  # the state preset tunes alpha' (lagrange)
    full, forked = tmp_path / "full", tmp_path / "fork"
    done = train(full, "--learner.no-lagrange-online")
    assert done.returncode == 0, done.stderr[-2000:]
    done = train(forked, "--learner.no-lagrange", "--run.finetune-from", str(source))
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = rows(full), rows(forked)
    assert len(a) == len(b) > 10 and a == b
    offline = [r["train/alpha_prime"] for r in a if "train/alpha_prime" in r and r["step"] <= 40]
    online = [r["train/alpha_prime"] for r in a if "train/alpha_prime" in r and r["step"] > 40]
    assert offline and min(offline) > 0 and online and set(online) == {0.0}  # tuned offline, none online
    assert rows(source) != a  # and the source's own online phase (the multiplier kept) is another


def test_a_fork_of_another_agents_pre_training_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "source"
    assert train(source, "--algo", "iql").returncode == 0
    proc = train(tmp_path / "fork", "--algo", "cql-sac", "--run.finetune-from", str(source))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"--run.finetune-from {source}: pre-trained with --algo iql, not cql-sac (nor a method of the same " \
           f"agent)" in proc.stderr
