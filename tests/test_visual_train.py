"""train_visual.py end to end (tiny): real updates, an online episode, metrics, summary,
checkpoint, decodable videos; resume continues the counters; presets and bad config."""

from __future__ import annotations

import dataclasses
import json
import shutil

import imageio.v3 as iio
import numpy as np
import pytest

from calql_robot.run.checkpoint import load_checkpoint
from calql_robot.domains.pickplace_visual import PRESETS, VisualExperimentConfig, check_visual_config
from tests.visual_tiny_run import HORIZON, OFFLINE_STEPS, ONLINE_STEPS, run_train, tiny_args, tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory.getbasetemp() / "visual_tiny")


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_tiny_run_writes_metrics_summary_checkpoint_and_videos(run):
    run_dir, proc = run
    assert "offline data: 6 episodes" in proc.stdout and "B/transition" in proc.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["offline_updates"] == OFFLINE_STEPS
    assert summary["env_steps"] >= ONLINE_STEPS and summary["online_updates"] == summary["env_steps"]
    for key in ("initial_success", "offline_success", "final_success", "cumulative_regret"):
        assert 0.0 <= summary[key] <= 1.0
    metrics = rows(run_dir)
    train = [r for r in metrics if "train/critic_loss" in r]
    assert {r["phase"] for r in train} == {"offline", "online"}
    assert all(np.isfinite(r["train/critic_loss"]) for r in train)
    assert any("online/episode_return" in r for r in metrics)
    assert sum("eval/success_rate" in r for r in metrics) >= 4  # start, offline, switch, final
    config = json.loads((run_dir / "config.json").read_text())
    assert config["domain"] == "pickplace_visual" and config["data"]["image_size"] == 32
    state = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert state["counters"]["env_steps"] == summary["env_steps"]
    assert any(k.startswith("trunk.") for k in state["learner"]["encoder"])
    assert (run_dir / "learning_curves.png").stat().st_size > 0
    videos = sorted((run_dir / "videos").glob("*.mp4"))
    assert any("final" in v.name for v in videos) and len(videos) >= 4
    frames = iio.imread(videos[-1], index=None)
    # the first eval episode: initial frame + one per step, at the env's render size
    assert frames.ndim == 4 and frames.shape[0] >= 2 and frames.shape[-1] == 3 and frames.dtype == np.uint8


def test_resume_continues_counters_and_metrics(run, tmp_path):
    run_dir, _ = run
    base = tmp_path / "resumed"
    shutil.copytree(run_dir.parent, base)
    before = json.loads((base / "run" / "summary.json").read_text())
    args = tiny_args(base)
    i = args.index("--loop.online-env-steps")
    args[i + 1] = str(ONLINE_STEPS + HORIZON)
    proc = run_train(args + ["--run.resume"])
    assert "Reusing" in proc.stdout  # the cached dataset, not a new collection
    after = json.loads((base / "run" / "summary.json").read_text())
    assert after["offline_updates"] == before["offline_updates"] == OFFLINE_STEPS
    assert after["env_steps"] >= ONLINE_STEPS + HORIZON > before["env_steps"]
    assert after["online_updates"] == after["env_steps"]  # UTD 1 continued, nothing redone
    metrics = rows(base / "run")
    assert [r["step"] for r in metrics] == sorted(r["step"] for r in metrics)
    evals_before = sum("eval/success_rate" in r for r in rows(run_dir))
    assert sum("eval/success_rate" in r for r in metrics) > evals_before  # new final evaluation
    assert max(r["step"] for r in metrics) == OFFLINE_STEPS + after["env_steps"]
    starts = [r for r in metrics if r["phase"] == "offline" and r["step"] == 0 and "eval/success_rate" in r]
    assert len(starts) == 1  # the resumed run did not evaluate the start again


def test_presets_cli_and_held_out_check():
    """`--preset` picks the base config and flags override it field by field: the parsed
    config is the preset with that one field changed, and the preset itself is left as it
    was (it is a shared module-level object). No flags: the cpu preset, whole. The task
    fine-tuned is --finetune-task when given, else the held-out one, which must not be
    among the pre-training tasks."""
    import copy

    from calql_robot.cli import parse_visual_cli

    paper = copy.deepcopy(PRESETS["paper"])
    cfg = parse_visual_cli(["--preset", "paper", "--loop.utd", str(paper.loop.utd + 2)])
    assert cfg == dataclasses.replace(paper, loop=dataclasses.replace(paper.loop, utd=paper.loop.utd + 2))
    assert PRESETS["paper"] == paper
    # the paper preset is the paper's method: no anchor of any kind (README, departures)
    assert paper.learner.bc_encoder_weight == 0.0 and paper.learner.td3bc_alpha is None and not paper.learner.lagrange
    default = parse_visual_cli([])
    assert default == PRESETS["cpu"] and default.resolved_task() == tuple(default.data.held_out_task)
    assert dataclasses.replace(default, finetune_task=(2, 3)).resolved_task() == (2, 3)
    bad = VisualExperimentConfig(finetune_task=(0, 2))
    with pytest.raises(ValueError, match="pre-training tasks"):
        check_visual_config(bad)


def test_target_episodes_are_kept_only_for_the_held_out_task():
    from calql_robot.domains.pickplace_data import PickPlaceDataConfig
    from calql_robot.domains.pickplace_visual import excluded_tasks

    assert excluded_tasks(VisualExperimentConfig()) == [(0, 1)]  # zero-shot: never trained on
    handful = VisualExperimentConfig(data=PickPlaceDataConfig(target_episodes=10))
    assert excluded_tasks(handful) == []
    # fine-tuning another task than the one the handful was collected for drops that task
    other = dataclasses.replace(handful, data=dataclasses.replace(handful.data, held_out_task=(2, 3)),
                                finetune_task=(0, 1))
    assert excluded_tasks(other) == [(0, 1)]
