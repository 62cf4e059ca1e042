"""The learning guard: a short state run through the real entry point that only a working
critic and actor pass (issue 23). A change that breaks learning must fail CI.

Two runs, started together (one torch thread each, on the CPU, so both cores work and the
result does not move with the machine's thread count): the default preset (TD3+BC's actor
term, Lagrange CQL) and the paper preset (pure Cal-QL: no BC term of any kind), each 2,000
offline updates on the preset's 1,000 scripted episodes (seed 0) and 500 online env steps,
20 evaluation episodes at the switch and at the end. What is asserted, and why it needs a
working learner:
- success well above chance: a scripted policy with action noise 0.5 succeeds in 7% of
  episodes, so 6 of 20 happens with probability < 1% by luck;
- fine-tuning keeps the level (online rows, mixing and the online returns really learn);
- the critic's values rise along successful episodes towards their reward: on 40 fresh
  scripted episodes (another seed than the data), the rank correlation between the
  critic's Q(s_t, pi(s_t)) and the return-to-go G_t, and the value's rise from the first
  to the last step. A critic blind to reward keeps its values flat along them;
- Q(s0, pi(s0)) of the successful evaluation episodes within a stated tolerance of the
  return they realised (the calibration the paper is named for).

What it catches: the guard's own command (`python tests/test_learning_guard.py PRESET RUN`
gives the verdict on a finished run) on broken copies of the code, default preset, measured
in session 9 (success at the switch / end of 20 episodes; rank correlation and value rise
along successful episodes; Q(s0, pi) - realised return on successes):
| copy of the code | success | value rise | calibration | guard |
|---|---|---|---|---|
| as it is (default / paper preset) | 0.45 / 0.40, 0.05 / 0.35 | 0.96, 49; 0.96, 48 | 36; 24 | passes |
| critic blind to reward and success (TD target with r = -5 and no terminals, bound G = -500) | 0.55 / 0.35 | **0.58, 4.3** | 42 | fails |
| the default preset without its TD3+BC term (`--learner.td3bc-alpha None`) | **0.30 / 0.00** | 0.97, 46 | **none succeeded** | fails |
| `--no-normalize-obs` | **0.15 / 0.10** | 0.90, 31 | 42 | fails |
| critic frozen (`--learner.critic-lr 1e-12`) | **0 / 0** | **0.00, 0** | **none succeeded** | fails |
| the Cal-QL bound with the wrong sign (min instead of max) | **0 / 0** | **0.14, 1.4** | **none succeeded** | fails |
The blind critic is caught only by the value check: its actor, carried by the BC term,
still succeeds. The runs pin one thread, so the pytest process's own thread count does not
move them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

GUARD_FLAGS = ["--run.seed", "0", "--run.threads", "1", "--run.device", "cpu", "--run.no-progress",
               "--loop.offline-steps", "2000", "--loop.online-env-steps", "500", "--loop.eval-every-offline", "0",
               "--loop.eval-every", "1000", "--loop.eval-episodes", "20", "--loop.checkpoint-every", "2000"]
PRESETS = {"default": [], "paper": ["--preset", "paper"]}

# the module's first test waits for both runs (~4-5 min on a free 2-core machine); pytest.ini's
# 600 s per test is too tight when the machine is shared, the runs' own limit is below
pytestmark = pytest.mark.timeout(1800)

THRESHOLDS = {
    # 6 of 20 episodes at the switch and at the end: P < 1% for the noise-0.5 scripted policy
    # (7% success); the end may sit below the switch by at most 5 of 20 episodes.
    "default": {"min_switch": 0.3, "min_final": 0.3, "min_online_gain": -0.25},
    # pure Cal-QL pre-trains slowly in 2,000 updates (0.05 at the switch on this seed) and
    # must then improve online, which is what the method promises: +0.15 at least, to >= 0.25.
    "paper": {"min_switch": 0.0, "min_final": 0.25, "min_online_gain": 0.15},
}
MIN_RANK_CORRELATION = 0.7  # Spearman of Q(s_t, pi(s_t)) with G_t along successful episodes
MIN_VALUE_RISE = 20.0  # Q at the last step minus Q at the first: 2 reward units at 10r - 5
MAX_CALIBRATION_GAP = 60.0  # |Q(s0, pi(s0)) - realised return| on successes: 6 reward units


@pytest.fixture(scope="module")
def guard_runs(tmp_path_factory) -> dict[str, Path]:
    """Both guard runs, started together and waited for; their run directories. Their data
    (the same 1,000 scripted episodes of seed 0) are collected once, on two workers, into
    the state data cache both runs then read (`domains/pickplace_state_data.py`)."""
    base = tmp_path_factory.mktemp("guard")
    collect_guard_data()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = {}
    for name, flags in PRESETS.items():
        cmd = [sys.executable, "train_state.py", *flags, "--run.run-dir", str(base / name), *GUARD_FLAGS]
        procs[name] = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True)
    try:
        for name, proc in procs.items():
            _, err = proc.communicate(timeout=1500)
            assert proc.returncode == 0, f"{name}: {err[-2000:]}"
    finally:  # a failure or timeout leaves no training process behind
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return {name: base / name for name in PRESETS}


def collect_guard_data() -> None:
    """The presets' scripted data for seed 0 into the repository's cache (the runs' cwd)."""
    from calql_robot.domains import pickplace_state_data as cache
    from calql_robot.domains.pickplace_state import StateExperimentConfig, paper_preset

    config = StateExperimentConfig()
    assert paper_preset().data == config.data  # one dataset serves both runs
    d = config.data
    cache.state_episodes((config.target, config.distractor), d.episodes, noise=d.noise, p_wrong=d.p_wrong,
                         p_drop=d.p_drop, seed=0, workers=2, progress=False, cache_dir=ROOT / cache.CACHE_DIR)


def evaluations(run_dir: Path) -> list[dict]:
    """The run's evaluation rows (the switch's and the final one among them)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "eval/success_rate" in r]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation (no ties expected in continuous values)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


FRESH = {"noise": 0.2, "p_wrong": 0.1, "p_drop": 0.1, "seed": 777}
"""Scripted episodes of the guard's task (the data's settings) from a seed the data never
used (the data's seed is the run's, 0)."""


@pytest.fixture(scope="module")
def fresh_episodes() -> list[dict]:
    from sim.collect import collect_episodes

    return collect_episodes([(0, 1)], 40, privileged=True, progress=False, **FRESH)


def value_along_successes(run_dir: Path, episodes: list[dict]) -> tuple[float, float]:
    """Mean over the successful episodes of (rank correlation of the critic's
    Q(s_t, pi(s_t)) with the return-to-go G_t under the run's reward transform, and
    Q at the last step minus Q at the first)."""
    from calql_robot.policy_io import load_policy

    loaded = load_policy(run_dir)
    reward = loaded.config.reward
    correlations, rises = [], []
    for ep in episodes:
        if not ep["success"]:
            continue
        obs = ep["observations"]  # T + 1 rows: drop the last, which has no action
        obs = {k: v[:-1] for k, v in obs.items()} if isinstance(obs, dict) else obs[:-1]
        q = np.asarray(loaded.learner.value(obs)).reshape(-1)
        r = np.asarray(ep["rewards"], dtype=np.float64) * reward.scale + reward.bias
        g = np.array([sum(reward.discount ** i * x for i, x in enumerate(r[t:])) for t in range(len(r))])
        correlations.append(spearman(q, g))
        rises.append(float(q[-1] - q[0]))
    assert len(correlations) >= 10, "too few successful scripted episodes to judge the critic"
    return float(np.mean(correlations)), float(np.mean(rises))


def verdict(run_dir: Path, preset: str, episodes: list[dict]) -> dict[str, tuple[bool, object]]:
    """Each check of the guard on one finished run: name -> (passed, what was measured).
    Also run by hand on broken copies of the code (module docstring)."""
    t = THRESHOLDS[preset]
    evals = evaluations(run_dir)
    switch, final = evals[-2], evals[-1]
    s0, s1 = switch["eval/success_rate"], final["eval/success_rate"]
    out: dict[str, tuple[bool, object]] = {
        "success": (s0 >= t["min_switch"] and s1 >= t["min_final"], (s0, s1)),
        "online": (s1 - s0 >= t["min_online_gain"] - 1e-9, round(s1 - s0, 3)),
    }
    correlation, rise = value_along_successes(run_dir, episodes)
    out["value_rise"] = (correlation >= MIN_RANK_CORRELATION and rise >= MIN_VALUE_RISE,
                         (round(correlation, 3), round(rise, 1)))
    if "eval/q0_success" in final:
        gap = final["eval/q0_success"] - final["eval/return0_success"]
        out["calibration"] = (abs(gap) <= MAX_CALIBRATION_GAP, round(gap, 1))
    else:
        out["calibration"] = (False, "no successful final evaluation episode")
    return out


@pytest.fixture(scope="module")
def verdicts(guard_runs, fresh_episodes) -> dict[str, dict[str, tuple[bool, object]]]:
    return {preset: verdict(run_dir, preset, fresh_episodes) for preset, run_dir in guard_runs.items()}


@pytest.mark.parametrize("preset", list(PRESETS))
def test_guard_succeeds_well_above_chance(verdicts, preset) -> None:
    assert verdicts[preset]["success"][0], (preset, verdicts[preset])


@pytest.mark.parametrize("preset", list(PRESETS))
def test_guard_fine_tuning_keeps_or_improves_its_level(verdicts, guard_runs, preset) -> None:
    summary = json.loads((guard_runs[preset] / "summary.json").read_text())
    assert summary["online_updates"] >= 500 and summary["env_steps"] >= 500
    assert verdicts[preset]["online"][0], (preset, verdicts[preset])


@pytest.mark.parametrize("preset", list(PRESETS))
def test_guard_critic_values_rise_along_successful_episodes(verdicts, preset) -> None:
    assert verdicts[preset]["value_rise"][0], (preset, verdicts[preset])


@pytest.mark.parametrize("preset", list(PRESETS))
def test_guard_values_track_the_realised_return(verdicts, preset) -> None:
    assert verdicts[preset]["calibration"][0], (preset, verdicts[preset])


def main(argv: list[str]) -> None:
    """`python tests/test_learning_guard.py PRESET RUN_DIR`: the verdict on a finished run of
    the guard's command (for checking that a broken copy of the code fails it)."""
    from sim.collect import collect_episodes

    preset, run_dir = argv
    episodes = collect_episodes([(0, 1)], 40, privileged=True, progress=False, **FRESH)
    print(json.dumps({"preset": preset, "run": run_dir,
                      **{k: [bool(v[0]), v[1]] for k, v in verdict(Path(run_dir), preset, episodes).items()}}))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main(sys.argv[1:])
