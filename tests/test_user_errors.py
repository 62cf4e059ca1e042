"""Issue 9 through the real entry points: a user mistake ends in one line naming the flag,
file or key, exit code 2 and no traceback; nothing the user owns is lost or replaced; a run
killed before its first checkpoint resumes to the same end; a full disk stops a run with a
message about space and leaves its last checkpoint loadable and resumable."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from calql_robot.run.checkpoint import load_checkpoint
from calql_robot.errors import ConfigError, cli_main
from calql_robot.run.runlog import read_metrics

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
ENV.pop("CALQL_DEBUG", None)
TINY = ["--run.no-progress", "--run.threads", "1", "--data.episodes", "6", "--loop.offline-steps", "40",
        "--loop.online-env-steps", "80", "--loop.batch-size", "32", "--loop.eval-episodes", "1",
        "--loop.eval-every-offline", "20", "--loop.eval-every", "40", "--loop.log-every", "10",
        "--loop.checkpoint-every", "20", "--learner.actor-hidden", "32", "32", "--learner.critic-hidden", "32", "32"]


def cli(script: str, *args: str, env: dict | None = None, cwd: Path = ROOT, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env or ENV)


def user_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Assert the issue's contract and return the error line."""
    assert proc.returncode == 2, f"rc {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One uninterrupted tiny state run through train_state.py."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    proc = cli("train_state.py", *TINY, "--run.run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


# ------------------------------------------------------------------------ flags
@pytest.mark.parametrize("args,needle", [
    (["--loop.mixing-ratio", "1.5"], "--loop.mixing-ratio"),
    (["--reward.discount", "1.0"], "--reward.discount"),
    (["--loop.batch-size", "0"], "--loop.batch-size"),
    (["--data.episodes", "-3"], "--data.episodes"),
    (["--loop.eval-episodes", "0"], "--loop.eval-episodes"),
    (["--target", "9"], "--target"),
    (["--learner.bc-encoder-weight", "-1"], "--learner.bc-encoder-weight"),
    (["--learner.td3bc-alpha", "0"], "--learner.td3bc-alpha"),
    (["--preset", "smoke"], "--preset smoke"),
    (["--algo", "bc", "--learner.tau", "0"], "--learner.tau"),  # every agent config is checked
    (["--bc.lr", "0"], "--bc.lr"),
    (["--algo", "sac", "--sac.num-min", "3"], "--sac.num-min"),
    (["--algo", "wsrl-calql", "--loop.warmup-env-steps", "3000"], "--loop.warmup-env-steps 3000"),
])
def test_bad_flags_are_one_line_naming_the_flag(tmp_path: Path, args: list[str], needle: str) -> None:
    run_dir = tmp_path / "run"
    line = user_error(cli("train_state.py", *args, "--run.run-dir", str(run_dir)), needle)
    assert "sim/" not in line and "calql_robot/" not in line
    assert not run_dir.exists(), "a mistyped flag leaves nothing behind"


@pytest.mark.parametrize("script, args, needle, hint", [
    ("train_state.py", ["--bogus"], "Unrecognized options: --bogus", "see --help"),
    ("train_state.py", ["--loop.offline-step", "5"], "Unrecognized options: --loop.offline-step, 5",
     "perhaps you meant --loop.offline-steps"),
    ("train_visual.py", ["--loop.offline-steps", "abc"], "Error parsing --loop.offline-steps: invalid literal", None),
    ("train_state.py", ["--algo", "calqll"], "invalid choice 'calqll' for argument '--algo'", None),
    ("collect_data.py", ["--episodes-per-tsk", "3"], "--episodes-per-tsk", "perhaps you meant --episodes-per-task"),
    ("rollout.py", ["--run-dir", "x", "--episods", "2"], "Unrecognized options: --episods", "--episodes"),
])
def test_parse_errors_are_one_line_not_a_panel(tmp_path: Path, script: str, args: list[str], needle: str,
                                               hint: str | None) -> None:
    """tyro draws its parse errors as a boxed panel; every entry point gives one line."""
    run_dir = tmp_path / "run"
    extra = ["--run.run-dir", str(run_dir)] if script.startswith("train_") else []
    proc = cli(script, *args, *extra)
    user_error(proc, needle)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) <= 2 and not any(c in proc.stderr for c in "│╭─"), proc.stderr
    if hint is not None:
        assert lines[-1].startswith("hint: ") and hint in lines[-1], proc.stderr
    assert not run_dir.exists()


def test_help_is_still_tyros(tmp_path: Path) -> None:
    proc = cli("train_state.py", "--help")
    assert proc.returncode == 0 and "usage: " in proc.stdout and "--loop.offline-steps" in proc.stdout


def test_run_dir_mistakes(tmp_path: Path) -> None:
    user_error(cli("train_state.py", "--run.resume", "--run.run-dir", str(tmp_path / "nope")), "--run.run-dir",
               str(tmp_path / "nope"))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    proc = cli("train_state.py", "--run.run-dir", str(busy))
    user_error(proc, "--run.run-dir", "not empty")
    assert "hint: pass --run.resume" in proc.stderr and (busy / "notes.txt").read_text() == "mine"


def test_debug_env_var_shows_the_traceback(tmp_path: Path) -> None:
    """CALQL_DEBUG=1 through the script; --debug is checked in-process below (same code)."""
    proc = cli("train_state.py", "--loop.batch-size", "0", "--run.run-dir", str(tmp_path / "r"),
               env={**ENV, "CALQL_DEBUG": "1"})
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "ConfigError: --loop.batch-size" in proc.stderr


def test_cli_main_reports_user_errors_and_lets_bugs_through(capsys: pytest.CaptureFixture) -> None:
    def mistake(argv: list[str]) -> None:
        raise ConfigError(f"--x must be >= 1, got {argv[0]}", "try 1")

    with pytest.raises(SystemExit) as info:
        cli_main(mistake, ["0"])
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: --x must be >= 1, got 0\nhint: try 1\n"
    with pytest.raises(KeyError):
        cli_main(lambda argv: {}["bug"], [])
    def big(argv: list[str]) -> None:
        raise MemoryError("EpisodeReplayBuffer needs 900.00 GB but only 8.00 GB of memory is available")

    with pytest.raises(SystemExit) as info:
        cli_main(big, [])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("error: out of memory: EpisodeReplayBuffer needs 900.00 GB")
    seen: list[list[str]] = []
    with pytest.raises(ConfigError):
        cli_main(lambda argv: (seen.append(argv), mistake(argv)), ["0", "--debug"])
    assert seen == [["0"]], "--debug is taken off before the config parser sees it"


# ------------------------------------------------------------------ checkpoints
def _write_bad(path: Path, kind: str, good: Path) -> None:
    if kind == "random":
        path.write_bytes(os.urandom(4096))
    elif kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "pickled":
        path.write_bytes(pickle.dumps({"learner": _Evil(path.with_suffix(".pwned"))}, protocol=2))
    else:  # a valid archive of another program
        torch.save({"model": {"w": torch.zeros(3)}, "epoch": 3}, path)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("kind,needle", [
    ("random", "not a PyTorch checkpoint"), ("truncated", "truncated PyTorch checkpoint"),
    ("pickled", "refusing to load"), ("other", "missing keys ['learner']"),
])
def test_rollout_names_what_is_wrong_with_a_checkpoint(finished: Path, tmp_path: Path, kind: str, needle: str) -> None:
    bad = tmp_path / f"{kind}.pt"
    _write_bad(bad, kind, finished / "checkpoints" / "latest.pt")
    before = bad.read_bytes()
    user_error(cli("rollout.py", "--run-dir", str(finished), "--checkpoint", str(bad), "--episodes", "1"),
               str(bad), needle)
    assert bad.read_bytes() == before
    assert not bad.with_suffix(".pwned").exists(), "the pickled object's code never ran"


def test_rollout_never_replaces_a_named_video(finished: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine.mp4"
    mine.write_bytes(b"my video")
    user_error(cli("rollout.py", "--run-dir", str(finished), "--output", str(mine), "--episodes", "1"),
               f"--output {mine} exists")
    assert mine.read_bytes() == b"my video"


def test_resume_with_an_unreadable_latest_offers_the_previous_one(finished: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text((finished / "config.json").read_text())
    (run_dir / "checkpoints").mkdir()
    previous = run_dir / "checkpoints" / "previous.pt"
    previous.write_bytes((finished / "checkpoints" / "previous.pt").read_bytes())
    (run_dir / "checkpoints" / "latest.pt").write_bytes(os.urandom(2048))
    proc = cli("train_state.py", "--run.resume", "--run.run-dir", str(run_dir))
    user_error(proc, "latest.pt", "not a PyTorch checkpoint")
    assert f"hint: the previous checkpoint {previous} loads" in proc.stderr
    assert "offline data:" not in proc.stdout, "named before the offline data are collected again"
    load_checkpoint(previous)


def test_half_written_checkpoints_are_never_taken_for_finished_ones(tmp_path: Path) -> None:
    """A kill inside torch.save leaves `.latest.pt.tmp-<pid>`: not a candidate, removed on resume."""
    from calql_robot.run.checkpoint import remove_stale_temporaries, resume_state, save_run_checkpoint

    save_run_checkpoint(tmp_path, {"learner": {"num_updates": 10}}, 10)
    stale = tmp_path / ".latest.pt.tmp-4242"
    stale.write_bytes(b"PK\x03\x04half")
    path, state = resume_state(tmp_path, required=("learner",))
    assert path == tmp_path / "latest.pt" and state["learner"]["num_updates"] == 10
    assert remove_stale_temporaries(tmp_path) == [stale] and not stale.exists()
    assert resume_state(tmp_path / "empty") is None


def test_a_collection_killed_midway_leaves_no_dataset(tmp_path: Path) -> None:
    from calql_robot.domains.pickplace_data import PickPlaceDataConfig, reusable_dataset

    path = tmp_path / "data.hdf5"
    proc = subprocess.Popen([sys.executable, "collect_data.py", *DATA[:2], "--episodes-per-task", "50", *DATA[4:],
                             "--output", str(path)], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".data.hdf5.*.tmp")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and not path.exists()
    assert reusable_dataset(PickPlaceDataConfig(output=str(path), num_tasks=1, episodes_per_task=50,
                                                image_size=16)) is None, "nothing there to be reused"


def test_previous_checkpoint_is_kept(finished: Path) -> None:
    ckpt = finished / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir()) == ["latest.pt", "previous.pt", "switch.pt"]
    assert not os.path.samefile(ckpt / "latest.pt", ckpt / "previous.pt")
    assert load_checkpoint(ckpt / "previous.pt")["learner"]["num_updates"] <= \
        load_checkpoint(ckpt / "latest.pt")["learner"]["num_updates"]


def test_switch_checkpoint_holds_the_pretrained_state(finished: Path) -> None:
    """switch.pt is the state right after pre-training: every offline update done, no
    online one, the learner already switched, an empty online buffer."""
    config = json.loads((finished / "config.json").read_text())
    switch = load_checkpoint(finished / "checkpoints" / "switch.pt")
    latest = load_checkpoint(finished / "checkpoints" / "latest.pt")
    assert switch["counters"]["offline_updates"] == config["loop"]["offline_steps"]
    assert switch["counters"]["online_updates"] == 0 and switch["counters"]["env_steps"] == 0
    assert switch["learner"]["num_updates"] == config["loop"]["offline_steps"]
    assert latest["counters"]["online_updates"] > 0, "latest.pt moved on past the switch"


# --------------------------------------------------------------------- resume
def _learner_equal(a: Path, b: Path) -> None:
    sa, sb = load_checkpoint(a)["learner"], load_checkpoint(b)["learner"]
    for part in ("actor", "critic", "target_critic"):
        for name, tensor in sa[part].items():
            assert torch.equal(tensor, sb[part][name]), f"{part}.{name}"


def _strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("time", "progress/wall_s")} for r in rows]


def _kill_when(run_dir: Path, marker: str) -> None:
    """Start the tiny run and SIGKILL it as soon as `run_dir/marker` exists."""
    proc = subprocess.Popen([sys.executable, "train_state.py", *TINY, "--run.run-dir", str(run_dir)], cwd=ROOT,
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (run_dir / marker).is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run was still going when it was killed"


@pytest.mark.parametrize("moment", ["before", "after"])
def test_sigkill_then_resume_equals_uninterrupted(finished: Path, tmp_path: Path, moment: str) -> None:
    """Killed during data collection (config.json written, no checkpoint yet) or right after
    its first checkpoint; the README's resume command (no other flag) ends as an
    uninterrupted run: same summary, bit-identical parameters, same metrics rows."""
    run_dir = tmp_path / "run"
    _kill_when(run_dir, "config.json" if moment == "before" else "checkpoints/latest.pt")
    if moment == "before":
        assert not (run_dir / "checkpoints" / "latest.pt").exists(), "killed before its first checkpoint"
    resumed = cli("train_state.py", "--run.resume", "--run.run-dir", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    if moment == "before":
        assert "starting it again from the beginning" in resumed.stdout
    summary_a = json.loads((finished / "summary.json").read_text())
    summary_b = json.loads((run_dir / "summary.json").read_text())
    # the evaluations done before the kill (initial_success, ...) travel in the checkpoint's
    # counters, so the resumed run's summary is the whole summary
    shared = [k for k in summary_b if k != "run_dir"]
    assert {"initial_success", "offline_success", "final_success", "cumulative_regret", "env_steps",
            "online_updates", "offline_updates"} <= set(shared)
    assert set(summary_a) == set(summary_b)
    assert {k: summary_a[k] for k in shared} == {k: summary_b[k] for k in shared}
    _learner_equal(finished / "checkpoints" / "latest.pt", run_dir / "checkpoints" / "latest.pt")
    assert _strip(read_metrics(finished / "metrics.jsonl")) == _strip(read_metrics(run_dir / "metrics.jsonl"))


# ------------------------------------------------------------------- datasets
DATA = ["--num-tasks", "1", "--episodes-per-task", "1", "--image-size", "16", "--workers", "1"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """A directory where collect_data.py ran once without --output (the cache path)."""
    where = tmp_path_factory.mktemp("cache")
    proc = cli("collect_data.py", *DATA, cwd=where)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return where


def test_cached_datasets_are_named_by_their_settings(cache_dir: Path) -> None:
    """Other settings -> another cache file under datasets/, never a replaced one."""
    first = sorted((cache_dir / "datasets").glob("pickplace_16px_*.hdf5"))
    assert len(first) == 1
    before = first[0].read_bytes()
    proc = cli("collect_data.py", *DATA, "--noise", "0.05", cwd=cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted((cache_dir / "datasets").glob("pickplace_16px_*.hdf5"))
    assert len(files) == 2 and first[0] in files and first[0].read_bytes() == before


def test_a_named_dataset_is_never_replaced_without_force(cache_dir: Path, tmp_path: Path) -> None:
    from calql_robot.domains.pickplace_data import PickPlaceDataConfig, _mismatch

    path = tmp_path / "mine.hdf5"
    path.write_bytes(next((cache_dir / "datasets").glob("pickplace_16px_*.hdf5")).read_bytes())
    before, mtime = path.read_bytes(), path.stat().st_mtime_ns
    proc = cli("collect_data.py", *DATA[:2], "--episodes-per-task", "2", *DATA[4:], "--output", str(path))
    user_error(proc, f"--output {path}", "episodes_per_task")
    assert "hint: nothing was changed; pass --force" in proc.stderr
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime
    (tmp_path / "junk.hdf5").write_bytes(b"not hdf5, but still mine")
    assert "not a valid dataset" in _mismatch(tmp_path / "junk.hdf5", PickPlaceDataConfig(output="junk.hdf5"))


def test_train_visual_stops_on_a_named_dataset_collected_otherwise(cache_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "mine.hdf5"
    path.write_bytes(next((cache_dir / "datasets").glob("pickplace_16px_*.hdf5")).read_bytes())
    before = path.read_bytes()
    proc = cli("train_visual.py", "--data.output", str(path), "--data.num-tasks", "1", "--data.episodes-per-task", "2",
               "--data.image-size", "16", "--run.run-dir", str(tmp_path / "run"))
    user_error(proc, f"--data.output {path}", "episodes_per_task")
    assert "--data.force" in proc.stderr and f"--dataset {path}" in proc.stderr
    assert path.read_bytes() == before and not (tmp_path / "run").exists()


def test_dataset_flag_adopts_the_files_recorded_settings(cache_dir: Path) -> None:
    import dataclasses

    from calql_robot.domains.pickplace_visual import PRESETS, adopt_dataset, check_visual_config

    path = next((cache_dir / "datasets").glob("pickplace_16px_*.hdf5"))
    cfg = adopt_dataset(dataclasses.replace(PRESETS["cpu"], dataset=str(path)))
    assert (cfg.data.image_size, cfg.data.episodes_per_task, cfg.data.num_tasks) == (16, 1, 1)
    assert cfg.data.output == str(path) and cfg.dataset == str(path)
    check_visual_config(cfg)


# ---------------------------------------------------------------- full disks
def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True,
                         text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {out.stderr.strip()}")


@pytest.fixture
def small_fs(tmp_path: Path):
    mounted: list[Path] = []

    def make(size: str) -> Path:
        where = tmp_path / f"fs{len(mounted)}"
        _mount_tmpfs(where, size)
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)  # -l: even if a killed run held a file


def _fill(fs: Path) -> Path:
    """Write zeros until the filesystem is full (unbuffered: nothing left to fail at close)."""
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, bytes(65536)) > 0:
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def test_a_disk_too_small_stops_before_training(small_fs) -> None:
    fs = small_fs("400k")
    proc = cli("train_state.py", *TINY, "--run.run-dir", str(fs / "run"))
    user_error(proc, "not enough free space in", str(fs / "run"))
    assert not (fs / "run" / "checkpoints").exists()


def test_a_dataset_that_cannot_fit_is_not_started(small_fs) -> None:
    fs = small_fs("400k")
    path = fs / "data.hdf5"
    proc = cli("collect_data.py", "--num-tasks", "2", "--episodes-per-task", "20", "--output", str(path))
    user_error(proc, "not enough free space in", f"the dataset {path}")
    assert "--output on a larger disk" in proc.stderr and list(fs.iterdir()) == []


def test_a_disk_that_fills_up_keeps_the_last_checkpoint_and_resumes(small_fs) -> None:
    fs = small_fs("1500k")
    run_dir = fs / "run"
    args = [*TINY, "--loop.offline-steps", "100", "--loop.checkpoint-every", "10", "--loop.online-env-steps", "40",
            "--loop.eval-every-offline", "0", "--run.run-dir", str(run_dir)]
    proc = subprocess.Popen([sys.executable, "train_state.py", *args], cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    latest = run_dir / "checkpoints" / "latest.pt"
    try:
        deadline = time.monotonic() + 120
        while not latest.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        filler = _fill(fs)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    line = user_error(subprocess.CompletedProcess(proc.args, proc.returncode, out, err),
                      "no space left on device writing", str(run_dir))
    leftovers = [p.name for p in (run_dir / "checkpoints").iterdir() if p.name not in ("latest.pt", "previous.pt", "switch.pt")]
    assert leftovers == [], f"half-written files under the run dir: {leftovers} ({line})"
    state = load_checkpoint(latest)
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert rows and state["counters"]["offline_updates"] < 100
    filler.unlink()
    resumed = cli("train_state.py", "--run.resume", "--run.run-dir", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["offline_updates"] == 100 and summary["env_steps"] >= 40


def test_full_disk_writes_name_the_file_and_keep_the_old_one(small_fs) -> None:
    """torch.save hides ENOSPC behind 'unexpected pos'; ffmpeg exits quietly with a cut file."""
    import numpy as np

    from calql_robot.run.checkpoint import save_checkpoint
    from calql_robot.errors import NoSpaceError
    from calql_robot.run.video import write_video

    fs = small_fs("200k")
    path = fs / "latest.pt"
    save_checkpoint(path, {"w": torch.ones(1000)})
    with pytest.raises(NoSpaceError, match=f"no space left on device writing {path}"):
        save_checkpoint(path, {"w": torch.ones(100_000)})
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(1000))
    assert [p.name for p in fs.iterdir()] == ["latest.pt"]
    videos = small_fs("100k")
    frames = np.random.default_rng(0).integers(0, 255, (60, 64, 64, 3), dtype=np.uint8)  # ~145 KB as mp4
    with pytest.raises(NoSpaceError, match="writing .*v.mp4"):
        write_video(videos / "v.mp4", frames)
    assert list(videos.iterdir()) == [], "no cut video under the final name"
