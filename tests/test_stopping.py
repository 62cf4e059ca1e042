"""Issue 22 through the real entry points: runs that survive what clusters and people do.

- SIGTERM (offline) and Ctrl-C (online) stop a run where it stands: one `stopped:` line
  saying where and how to resume, exit 128 + signal, no traceback, and a checkpoint from
  which that very command ends bit-identical to an uninterrupted run; in-process, the same
  with the signal at a random update of each phase (the seed is in the failure message);
  a second Ctrl-C during the save aborts at once and still leaves a resumable run.
- One writer per run directory: a second process is refused naming the holder's PID; after
  a kill -9 of the holder the directory resumes without clean-up; readers take no lock.
- Divergence ends in one line with exit 3, its row logged and drawn.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from calql_robot.agents.calql_learner import CalQLLearner
from calql_robot.errors import EXIT_DIVERGED, EXIT_LOCKED, Interrupted, RunInterrupted, RunLockedError
from calql_robot.experiment import run_experiment
from calql_robot.run.checkpoint import load_checkpoint
from calql_robot.run.lock import LOCK_FILE, RunLock
from calql_robot.run.runlog import read_metrics
from tests.test_loop import assert_same_runs, tiny_config
from tests.test_user_errors import ENV, ROOT  # the one child environment of the CLI tests

TINY = ["--run.no-progress", "--run.threads", "1", "--data.episodes", "4", "--loop.offline-steps", "150",
        "--loop.online-env-steps", "80", "--loop.batch-size", "16", "--loop.eval-episodes", "1",
        "--loop.eval-every-offline", "0", "--loop.eval-every", "40", "--loop.log-every", "5",
        "--loop.checkpoint-every", "1000", "--learner.actor-hidden", "32", "32", "--learner.critic-hidden", "32", "32"]
"""No periodic checkpoint before the switch: a resume starts from the stop's own checkpoint."""


def start(run_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "train_state.py", *TINY, *extra, "--run.run-dir", str(run_dir)],
                            cwd=ROOT, env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    assert proc.poll() is None, f"the run ended before the moment came: {proc.communicate()[1][-2000:]}"


def metrics_text(run_dir: Path) -> str:
    path = run_dir / "metrics.jsonl"
    return path.read_text() if path.is_file() else ""


def one_line(stderr: str, label: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith(f"{label}: ")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def same_runs(a: Path, b: Path) -> None:
    summary_a, summary_b = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert_same_runs(a, b, summary_a, summary_b)
    assert {k: v for k, v in summary_a.items() if k != "run_dir"} == {k: v for k, v in summary_b.items() if k != "run_dir"}


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The uninterrupted tiny run every stopped-and-resumed one must equal."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    proc = start(run_dir)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return run_dir


# ------------------------------------------------------------------ signals, real processes
@pytest.mark.parametrize("sig,phase", [(signal.SIGTERM, "offline"), (signal.SIGINT, "online")],
                         ids=["sigterm-offline", "sigint-online"])
def test_a_signal_saves_where_the_run_stands_and_the_printed_command_resumes_it(
        straight: Path, tmp_path: Path, sig: signal.Signals, phase: str) -> None:
    run_dir = tmp_path / "run"
    proc = start(run_dir)
    if phase == "offline":  # some offline rows are in: the run is well inside pre-training
        wait_for(proc, lambda: metrics_text(run_dir).count("\n") >= 3)
    else:  # the first online episode is logged: its updates are under way
        wait_for(proc, lambda: "online/episode_return" in metrics_text(run_dir))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-3000:]
    line = one_line(err, "stopped")
    assert line.startswith(f"stopped: {sig.name} at {phase} ") and str(run_dir / "checkpoints" / "latest.pt") in line
    state = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert state["learner"]["online"] == (phase == "online")
    command = shlex.split(line.split("resume: ", 1)[1])
    assert command[:2] == ["python", "train_state.py"]
    resumed = subprocess.run([sys.executable, *command[1:]], cwd=ROOT, env=ENV, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    same_runs(straight, run_dir)


def test_ctrl_c_during_set_up_ends_at_once_in_one_line_with_the_workers(tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches the whole process group, data collection workers too:
    one `stopped:` line from the run, no worker's traceback, and nothing left running."""
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "train_state.py", "--run.no-progress", "--data.episodes", "400",
                             "--data.workers", "2", "--run.run-dir", str(run_dir)], cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    wait_for(proc, lambda: children.is_file() and len(children.read_text().split()) >= 2)  # the workers
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    line = one_line(err, "stopped")
    assert line == (f"stopped: SIGINT before training began, nothing to save; `python train_state.py --run.resume "
                    f"--run.run-dir {run_dir}` starts the run again")


# ------------------------------------------------------- signals at a random update, in-process
@pytest.fixture(scope="module")
def straight_in_process(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("straight_in_process") / "run"
    run_experiment(tiny_config(run_dir))
    return run_dir


def signal_at_update(monkeypatch, update: int, sig: int) -> None:
    """The learner sends `sig` to this process while it makes update number `update`."""
    original = CalQLLearner.update

    def update_and_signal(self, batch):
        if self.num_updates == update:
            os.kill(os.getpid(), sig)
        return original(self, batch)

    monkeypatch.setattr(CalQLLearner, "update", update_and_signal)


@pytest.mark.parametrize("phase,sig", [("offline", signal.SIGINT), ("online", signal.SIGTERM)],
                         ids=["sigint-offline", "sigterm-online"])
def test_a_signal_at_a_random_update_resumes_bit_identical(straight_in_process: Path, tmp_path: Path,
                                                           monkeypatch, phase: str, sig: signal.Signals) -> None:
    """tiny_config: 30 offline updates, then online episodes of up to 40 updates each."""
    seed = int(os.environ.get("CALQL_STOP_SEED", time.time_ns() % 10**6))
    update = random.Random(seed).randrange(1, 29) if phase == "offline" else random.Random(seed).randrange(31, 120)
    cfg = tiny_config(tmp_path / "run")
    signal_at_update(monkeypatch, update, sig)
    with pytest.raises(RunInterrupted) as info:
        run_experiment(cfg)
    where = f"signal at update {update} (CALQL_STOP_SEED={seed})"
    assert info.value.exit_code == 128 + sig and str(info.value).startswith(f"{sig.name} at {phase} "), where
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")["learner"]["num_updates"] == update + 1, where
    monkeypatch.undo()
    run_experiment(dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, resume=True)))
    try:
        same_runs(straight_in_process, tmp_path / "run")
    except AssertionError as err:
        raise AssertionError(f"{where}: {err}") from err


def test_a_second_ctrl_c_during_the_save_aborts_and_the_run_still_resumes(straight_in_process: Path, tmp_path: Path,
                                                                          monkeypatch) -> None:
    import torch

    cfg = tiny_config(tmp_path / "run")  # checkpoints every 10 updates
    signal_at_update(monkeypatch, 25, signal.SIGINT)
    real_save, calls = torch.save, []

    def save_interrupted(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("counters", {}).get("offline_updates") == 26:  # the stop's checkpoint: Ctrl-C again, mid-write
            calls.append(1)
            os.kill(os.getpid(), signal.SIGINT)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_interrupted)
    with pytest.raises(Interrupted, match="aborted by a second Ctrl-C.*resume: python train_state.py --run.resume"):
        run_experiment(cfg)
    assert calls == [1]
    ckpt = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir()) == ["latest.pt", "previous.pt"], "no half-written file"
    assert load_checkpoint(ckpt / "latest.pt")["counters"]["offline_updates"] == 20, "the last finished one"
    monkeypatch.undo()
    run_experiment(dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, resume=True)))
    same_runs(straight_in_process, tmp_path / "run")


# --------------------------------------------------------------------- one writer per directory
def test_a_second_writer_is_refused_and_a_killed_holder_leaves_no_lock(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    holder = start(run_dir, "--loop.offline-steps", "100000", "--loop.checkpoint-every", "100000")
    try:
        wait_for(holder, lambda: (run_dir / "config.json").is_file())
        for args in (["--run.resume", "--run.run-dir", str(run_dir)], ["--run.run-dir", str(run_dir)]):
            second = subprocess.run([sys.executable, "train_state.py", *args], cwd=ROOT, env=ENV, capture_output=True,
                                    text=True, timeout=120)
            assert second.returncode == EXIT_LOCKED, second.stderr[-3000:]
            line = one_line(second.stderr, "error")
            assert f"--run.run-dir {run_dir} is in use by process {holder.pid} on {socket.gethostname()}" in line
        assert holder.poll() is None, "the first run trains on"
    finally:
        holder.kill()  # SIGKILL: no handler runs, the kernel drops the lock
        holder.communicate(timeout=60)
    assert (run_dir / LOCK_FILE).is_file()
    resumed = subprocess.run([sys.executable, "train_state.py", "--run.resume", "--run.run-dir", str(run_dir),
                              "--loop.offline-steps", "20"], cwd=ROOT, env=ENV, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run_dir / "summary.json").read_text())["offline_updates"] == 20


def test_the_lock_is_per_directory_and_readers_take_none(straight: Path, tmp_path: Path) -> None:
    with RunLock(tmp_path).acquire():
        with pytest.raises(RunLockedError, match=f"in use by process {os.getpid()} "):
            RunLock(tmp_path).acquire()  # even from this process: one open file, one lock
        (tmp_path / "sub").mkdir()
        with RunLock(tmp_path / "sub").acquire():  # another directory: another lock
            pass
    with RunLock(tmp_path).acquire():  # released: taken again
        pass
    with RunLock(straight).acquire():  # a run being written: rollout.py reads it all the same
        out = subprocess.run([sys.executable, "rollout.py", "--run-dir", str(straight), "--episodes", "1",
                              "--output", str(tmp_path / "r.mp4")], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]


# ------------------------------------------------------------------------------- divergence
def test_divergence_is_one_line_with_its_row_and_plot(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "train_state.py", *TINY, "--learner.critic-lr", "1e12",
                           "--run.run-dir", str(run_dir)], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == EXIT_DIVERGED, proc.stderr[-3000:]
    line = one_line(proc.stderr, "error")
    assert "non-finite loss at update" in line and "run stopped at step" in line
    assert "hint: its row in" in proc.stderr and "--run.resume" in proc.stderr
    bad = read_metrics(run_dir / "metrics.jsonl")[-1]
    assert bad["error/non_finite_loss"] == 1.0 and f"run stopped at step {bad['step']}," in line
    assert any(not math.isfinite(v) for k, v in bad.items() if k.startswith("error/") and k.endswith("_loss"))
    assert (run_dir / "learning_curves.png").stat().st_size > 1000
