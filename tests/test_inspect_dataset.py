"""inspect_dataset.py on every layout: the summary and its last-line JSON (hand-made files)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from calql_robot.dataset_info import inspect, report
from data.episodes_hdf5 import write_episodes
from data.writers import write_awac_npy, write_d4rl_hdf5
from tests.test_dataset_readers import AWAC_EPISODES, EPISODES, _minari_dataset

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("transitions", "trajectories", "terminals", "timeouts", "obs_dim", "action_dim",
        "mc_return_min", "mc_return_max")


def _pickplace_file(path: Path) -> None:
    eps = []
    for i, ep in enumerate(EPISODES):
        eps.append({k: ep[k] for k in ("observations", "actions", "rewards", "terminals",
                                       "timeouts")} | {"task": np.array([0, 1]), "seed": i,
                                                       "success": bool(ep["terminals"][-1])})
    write_episodes(path, eps, {"env": "hand-made"})


@pytest.mark.parametrize("layout, expected", [
    # (transitions, trajectories, terminals, timeouts, obs_dim, action_dim, G min, G max)
    ("d4rl", (7, 3, 1, 2, 3, 2, 0.0, 1.0)),
    ("minari", (9, 3, 2, 1, 3, 2, 0.0, 1.0)),
    ("awac", (7, 3, 3, 0, 3, 2, -1.99, 0.0)),
    ("pickplace", (9, 3, 2, 1, 3, 2, 0.0, 1.0))])
def test_inspect_every_layout(tmp_path: Path, layout: str, expected: tuple) -> None:
    if layout == "d4rl":
        write_d4rl_hdf5(tmp_path / "a.hdf5", EPISODES)
        s = inspect(str(tmp_path / "a.hdf5"))
    elif layout == "minari":
        _minari_dataset(tmp_path)
        s = inspect("test/maze/tiny-v0", minari_root=str(tmp_path))
    elif layout == "awac":
        write_awac_npy(tmp_path / "pen2_sparse.npy", AWAC_EPISODES, "expert")
        s = inspect(str(tmp_path / "pen2_sparse.npy"), trust_pickle=True)
    else:
        _pickplace_file(tmp_path / "pp.hdf5")
        s = inspect(str(tmp_path / "pp.hdf5"), fmt="pickplace", task="pickplace")
    got = tuple(s[k] for k in KEYS)
    assert got[:6] == expected[:6]
    assert got[6:] == pytest.approx(expected[6:], abs=1e-5)
    last = report(s).splitlines()[-1]
    assert {k: json.loads(last)[k] for k in KEYS} == {k: s[k] for k in KEYS}


def test_inspect_cli_json_line_and_untrusted_error(tmp_path: Path) -> None:
    write_awac_npy(tmp_path / "door2_sparse.npy", AWAC_EPISODES, "bc")
    cmd = [sys.executable, "inspect_dataset.py", str(tmp_path / "door2_sparse.npy")]
    out = subprocess.run([*cmd, "--trust-pickle", "--task", "door"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    # The hand-made file has 3-d observations: the door task refuses it, naming the key.
    assert out.returncode != 0
    assert "door2_sparse.npy: 'observations': 3-d observations, but door expects 39-d" in out.stderr
    out = subprocess.run([*cmd, "--trust-pickle"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert (row["transitions"], row["terminals"], row["success_rate"]) == (7, 3, 1.0)
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "--trust-pickle" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
