"""Where a result came from: the code's git commit and the machine, written beside every run
(`run_info.json`) and into every generated dataset.

Why: `config.json` says what a run was asked to do, not which code did it; a number in
RESULTS.md or a sweep table is only worth as much as the commit it can be traced to, and a
speed figure only as much as the CPU it ran on (the same "AMD EPYC" name covers hosts with
and without bf16 units). A run resumed on other code appends a second entry rather than
overwriting the first, so a run that spans two commits says so.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from calql_robot.run.atomic import atomic_write

ROOT = Path(__file__).resolve().parents[2]
RUN_INFO_FILE = "run_info.json"


def provenance() -> dict[str, Any]:
    """Git commit of the code, and whether the code folders differ from it (None outside a
    git checkout)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "sim", "data", "encoders",
                                "calql_robot"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.strip() != ""
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit, "git_dirty": dirty}


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def session_info(precision: str, device: str) -> dict[str, Any]:
    """One entry of `run_info.json`: code, machine, and how this process was started."""
    import torch

    return {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **provenance(), "host": socket.gethostname(),
            "cpu": cpu_model(), "cpus": os.cpu_count(), "device": device, "precision": precision,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "niceness": os.nice(0) if hasattr(os, "nice") else None, "argv": sys.argv}


def record_session(run_dir: Path, info: dict[str, Any]) -> None:
    """Append `info` to run_dir/run_info.json (written whole to a temporary name, then renamed)."""
    path = Path(run_dir) / RUN_INFO_FILE
    sessions: list[dict[str, Any]] = []
    if path.exists():
        try:
            sessions = json.loads(path.read_text()).get("sessions", [])
        except (OSError, ValueError, AttributeError):
            sessions = []  # a damaged file is replaced, not trusted
    sessions.append(info)
    text = json.dumps({"sessions": sessions}, indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text))
