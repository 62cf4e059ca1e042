"""The sweep runner: the grid and its commands, one-line errors, and a real 2-algorithm x
1-task x 2-seed sweep of tiny runs on a local Ray instance, killed mid-way (SIGKILL of the
driver) and re-run with the same command: finished cells are not re-run, the unfinished one
resumes from its checkpoint, and the gathered table has all 4 cells."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from calql_robot.errors import ConfigError
from calql_robot.run.lock import refuse_if_locked
from calql_robot.run.runlog import read_metrics
from calql_robot.sweep.grid import build_grid
from calql_robot.sweep.record import SweepRecord

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"}
CELL_FLAGS = ["--data.episodes", "6", "--loop.batch-size", "32", "--loop.eval-episodes", "1",
              "--loop.eval-every-offline", "100", "--loop.eval-every", "100", "--loop.log-every", "10",
              "--loop.checkpoint-every", "50", "--learner.actor-hidden", "32", "32", "--learner.critic-hidden", "32",
              "32", "--bc.hidden", "32", "32"]


def test_grid_is_seed_major_with_each_cell_its_own_directory_and_seed(tmp_path: Path) -> None:
    cells = build_grid(tmp_path, ["calql", "cql", "iql"], ["pickplace-state"], [3, 4], extra=["--loop.offline-steps", "7"])
    assert [c.key for c in cells] == ["pickplace-state/calql/seed3", "pickplace-state/cql/seed3",
                                      "pickplace-state/iql/seed3", "pickplace-state/calql/seed4",
                                      "pickplace-state/cql/seed4", "pickplace-state/iql/seed4"]
    cql = cells[1]
    assert cql.command[0] == "train_state.py"
    assert cql.command[1:4] == ("--algo", "calql", "--learner.no-calql-bound")
    i = cql.command.index("--run.run-dir")
    assert cql.command[i + 1] == str(tmp_path / "pickplace-state" / "cql" / "seed3")
    assert cql.command[cql.command.index("--run.seed") + 1] == "3"
    assert cql.command[-2:] == ("--loop.offline-steps", "7")  # the user's flags come last
    assert cql.argv() == list(cql.command)  # not started: no --run.resume
    visual = build_grid(tmp_path, ["bc"], ["pickplace-visual"], [0], preset="cpu")[0]
    assert visual.command[:5] == ("train_visual.py", "--preset", "cpu", "--algo", "bc")
    task = build_grid(tmp_path, ["iql"], ["antmaze-umaze"], [0], datasets={"antmaze-umaze": "/d/a.hdf5"})[0]
    assert task.command[:5] == ("train_state.py", "--task", "antmaze-umaze", "--dataset", "/d/a.hdf5")


@pytest.mark.parametrize("kwargs, message", [
    ({"algos": ["calq"]}, "--algos: unknown algorithm 'calq'"),
    ({"tasks": ["antmaze-umaze"]}, "--tasks antmaze-umaze needs its data: pass --dataset antmaze-umaze=PATH"),
    ({"tasks": ["pickplace"]}, "--tasks: unknown task 'pickplace'"),
    ({"seeds": [0, 0]}, "--seeds repeats a value: 0 0"),
    ({"extra": ["--run.seed", "3"]}, "extra flag --run.seed is the sweep's to set"),
])
def test_grid_names_what_is_wrong(tmp_path: Path, kwargs: dict, message: str) -> None:
    args = {"algos": ["calql"], "tasks": ["pickplace-state"], "seeds": [0], **kwargs}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_grid(tmp_path, args.pop("algos"), args.pop("tasks"), args.pop("seeds"), **args)


def test_a_cell_made_by_another_command_is_refused(tmp_path: Path) -> None:
    first = build_grid(tmp_path, ["calql"], ["pickplace-state"], [0], extra=["--loop.offline-steps", "7"])
    record = SweepRecord(tmp_path, {}, ["sweep.py"])
    record.set(first[0], "done")
    record.write()
    again = SweepRecord(tmp_path, {}, ["sweep.py"])
    again.check_commands(first)  # the same command: accepted
    assert again.data["runs_of_this_sweep"] == 2
    other = build_grid(tmp_path, ["calql"], ["pickplace-state"], [0], extra=["--loop.offline-steps", "8"])
    again.check_commands(other)  # never started: it takes the grid's command as it is now
    first[0].run_dir.mkdir(parents=True)
    (first[0].run_dir / "config.json").write_text("{}")  # started
    with pytest.raises(ConfigError, match="cell pickplace-state/calql/seed0 was run with another command"):
        again.check_commands(other)


def test_a_smaller_grid_counts_only_its_own_cells(tmp_path: Path) -> None:
    """Re-run with an algorithm dropped: the old grid's never-started cells are forgotten,
    its started ones stay in the record, and neither counts for the grid as it is now."""
    old = {c.key: c for c in build_grid(tmp_path, ["calql", "bc"], ["pickplace-state"], [0, 1])}
    record = SweepRecord(tmp_path, {}, ["sweep.py"], keys=list(old))
    for key, state in (("pickplace-state/calql/seed0", "done"), ("pickplace-state/bc/seed0", "failed"),
                       ("pickplace-state/calql/seed1", "pending"), ("pickplace-state/bc/seed1", "pending")):
        record.set(old[key], state)
    record.write()
    assert record.counts() == {"pending": 2, "running": 0, "done": 1, "failed": 1}
    new = build_grid(tmp_path, ["calql"], ["pickplace-state"], [0, 1])
    again = SweepRecord(tmp_path, {}, ["sweep.py"], keys=[c.key for c in new])
    assert set(again.data["cells"]) == {"pickplace-state/calql/seed0", "pickplace-state/bc/seed0",
                                        "pickplace-state/calql/seed1"}
    assert again.counts() == {"pending": 1, "running": 0, "done": 1, "failed": 0}


def test_sweep_cli_errors_are_one_line(tmp_path: Path) -> None:
    for argv, message in ((["--algos", "nope", "--out", str(tmp_path)], "--algos: unknown algorithm 'nope'"),
                          (["--algos", "bc", "--out", str(tmp_path), "--cpus-per-cell", "0"],
                           "--cpus-per-cell must be >= 1, got 0"),
                          (["--algos", "bc", "--out", str(tmp_path), "--dataset", "pen"], "--dataset pen: expected")):
        proc = subprocess.run([sys.executable, "sweep.py", *argv], cwd=ROOT, capture_output=True, text=True, env=ENV)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) <= 2  # the error and, at most, its hint


def _sessions(run_dir: Path) -> int:
    return len(json.loads((run_dir / "run_info.json").read_text())["sessions"])


def _wait_unlocked(run_dir: Path, timeout: float = 60.0) -> None:
    """Until no live process holds the run's lock (Ray ends a killed driver's workers and
    their children within seconds)."""
    deadline = time.time() + timeout
    while True:
        try:
            refuse_if_locked(run_dir)
            return
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.timeout(1200)
def test_a_killed_sweep_resumes_with_the_same_command(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    command = [sys.executable, "sweep.py", "--algos", "bc", "calql", "--seeds", "0", "1", "--out", str(out),
               "--num-cpus", "2", "--poll", "1", "--", *CELL_FLAGS, "--loop.offline-steps", "400",
               "--loop.online-env-steps", "200"]
    bc0, calql0 = out / "pickplace-state" / "bc" / "seed0", out / "pickplace-state" / "calql" / "seed0"
    driver = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 600
        while not ((bc0 / "summary.json").is_file() and (calql0 / "checkpoints" / "latest.pt").is_file()):
            assert driver.poll() is None, driver.stdout.read()
            assert time.time() < deadline, "the first cells did not get going"
            time.sleep(0.2)
        assert not (calql0 / "summary.json").is_file(), "calql seed 0 finished before the kill: make it longer"
        driver.send_signal(signal.SIGKILL)
        killed_at = time.time()
        driver.wait(30)
    finally:
        if driver.poll() is None:
            driver.kill()
    _wait_unlocked(calql0)
    record = json.loads((out / "sweep.json").read_text())
    assert record["cells"]["pickplace-state/calql/seed1"]["state"] in ("pending", "running")

    again = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "4 cells, 1 finished before, 3 to run" in again.stdout
    record = json.loads((out / "sweep.json").read_text())
    assert record["runs_of_this_sweep"] == 2
    assert {k: v["state"] for k, v in record["cells"].items()} == {
        f"pickplace-state/{a}/seed{s}": "done" for a in ("bc", "calql") for s in (0, 1)}
    assert record["code"]["git_commit"] is None or len(record["code"]["git_commit"]) == 40
    # the cells ran at the driver's niceness (this process's), not Ray's worker default of +15
    sessions = json.loads((calql0 / "run_info.json").read_text())["sessions"]
    assert [s["niceness"] for s in sessions] == [os.nice(0)] * 2
    # the finished cell was not run again
    assert _sessions(bc0) == 1
    assert bc0.with_suffix(".log").read_text().count("$ python") == 1
    # the unfinished one resumed from its checkpoint: rows written before the kill were kept
    log = calql0.with_suffix(".log").read_text()
    assert log.count("$ python") == 2 and log.splitlines()[-1] != "" and "--run.resume" in log
    assert _sessions(calql0) == 2
    rows = read_metrics(calql0 / "metrics.jsonl")
    assert any(r["step"] > 0 and r["time"] < killed_at for r in rows)
    assert max(r["step"] for r in rows) == 600
    # the gathered table has all 4 cells
    analysis = subprocess.run([sys.executable, "-m", "calql_robot.analysis", str(out)], cwd=ROOT, env=ENV,
                              capture_output=True, text=True, timeout=300)
    assert analysis.returncode == 0, analysis.stderr
    table = list(csv.DictReader((out / "analysis" / "table.csv").open()))
    assert {(r["method"], r["runs"]) for r in table} == {("bc", "2"), ("calql", "2")}
    assert (out / "analysis" / "pickplace-state.png").stat().st_size > 10_000
    # archived (small files only, no path of the sweep directory left) and continued elsewhere: nothing re-runs
    archive = tmp_path / "archive"
    subprocess.run([sys.executable, "scripts/archive_sweep.py", str(out), str(archive)], cwd=ROOT, env=ENV,
                   check=True, capture_output=True, timeout=120)
    assert not list(archive.rglob("*.pt")) and str(out) not in (archive / "sweep.json").read_text()
    moved = [*command[:command.index("--out") + 1], str(archive), *command[command.index("--out") + 2:]]
    cont = subprocess.run(moved, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert cont.returncode == 0 and "4 cells, 4 finished before, 0 to run" in cont.stdout, cont.stdout + cont.stderr


@pytest.mark.timeout(900)
def test_a_failing_cell_is_reported_in_one_line_and_the_others_finish(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "sweep.py", "--algos", "bc", "--tasks", "pickplace-state", "door",
                           "--seeds", "0", "--out", str(out), "--dataset", f"door={tmp_path}/nope/door.npy",
                           "--poll", "1", "--", "--data.episodes", "6", "--loop.offline-steps", "20",
                           "--loop.batch-size", "16", "--loop.eval-episodes", "1", "--bc.hidden", "16", "16"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=800)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    cells = json.loads((out / "sweep.json").read_text())["cells"]
    assert cells["pickplace-state/bc/seed0"]["state"] == "done"
    failed = cells["door/bc/seed0"]
    # the registry task has no --data.* flags: its cell fails at parsing, as the entry point would alone
    assert failed["state"] == "failed" and failed["error"] == "error: Unrecognized options: --data.episodes, 6"
    assert f"FAILED door/bc/seed0: {failed['error']}" in proc.stdout


def test_forks_fine_tune_from_their_source_cell_only_when_it_is_in_the_grid(tmp_path: Path) -> None:
    cells = {c.key: c for c in build_grid(tmp_path, ["cql", "cql-sac", "wsrl-calql", "wsrl-iql"], ["pickplace-state"],
                                          [0])}
    fork = cells["pickplace-state/cql-sac/seed0"]
    assert fork.source == "pickplace-state/cql/seed0"
    i = fork.command.index("--run.finetune-from")
    assert fork.command[i + 1] == str(tmp_path / "pickplace-state" / "cql" / "seed0")
    assert cells["pickplace-state/wsrl-calql/seed0"].source is None  # calql is not in this grid: a full run
    assert "--run.finetune-from" not in cells["pickplace-state/wsrl-iql/seed0"].command
    full = build_grid(tmp_path, ["cql", "cql-sac"], ["pickplace-state"], [0], forks=False)[1]
    assert full.source is None and "--run.finetune-from" not in full.command
    # a fork and a full run of one cell are the same cell to the record (the fork repeats the full run)
    record = SweepRecord(tmp_path, {}, ["sweep.py"])
    record.set(full, "running")
    (full.run_dir).mkdir(parents=True)
    (full.run_dir / "config.json").write_text("{}")
    record.check_commands([fork])


def test_cells_start_in_grid_order_and_a_fork_after_its_source(tmp_path: Path) -> None:
    from calql_robot.sweep.runner import cell_slots, next_cell

    queue = build_grid(tmp_path, ["cql-sac", "cql", "iql"], ["pickplace-state"], [0, 1])
    unfinished = {c.key for c in queue}
    assert next_cell(queue, unfinished).key == "pickplace-state/cql/seed0"  # the fork waits for its source
    unfinished.discard("pickplace-state/cql/seed0")
    assert next_cell(queue, unfinished).key == "pickplace-state/cql-sac/seed0"
    assert cell_slots({"CPU": 2.0}, 1, 0.0) == 2 and cell_slots({"CPU": 16.0, "GPU": 1.0}, 2, 0.5) == 2
    assert cell_slots({"CPU": 1.0}, 2, 0.0) == 1
