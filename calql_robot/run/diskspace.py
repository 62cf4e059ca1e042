"""Free-space checks before the long phases of a run (issue 9).

A run that fills its disk hours in loses those hours, so before training starts (and
before a dataset is collected) the space the phase will need is compared with what the
filesystem has, and the run stops at once with a message naming the directory, the need
and what is free. The estimates are upper bounds on purpose: they count the checkpoint
four times (latest.pt, previous.pt, switch.pt and the temporary file of the next write,
which all exist at the moment of a rename) and every evaluation video at a generous size.

Writes that still fail for lack of space (another process filled the disk) are reported
by `calql_robot.run.atomic` and `calql_robot.run.runlog` as "no space left on device writing PATH".
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from calql_robot.errors import NoSpaceError

VIDEO_BYTES = 512 * 1024
"""Upper bound of one evaluation mp4 (41 frames; measured 30-150 KB at 48-64 px)."""
SLACK_BYTES = 256 * 1024
"""metrics.jsonl, config.json, summary.json, the learning-curve png."""
CHECKPOINT_COPIES = 4


def free_bytes(path: Path) -> int:
    """Bytes free for an unprivileged writer on the filesystem holding `path` (or the
    nearest existing parent, for a file that is about to be made)."""
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def tensor_bytes(obj: Any) -> int:
    """Bytes of every tensor in a nested state dict (what torch.save writes, give or take
    the small pickle of the containers)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, Mapping):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def require_free_space(where: Path, need: int, what: str, hint: str | None = None) -> None:
    """Stop with a NoSpaceError naming `where` if its filesystem has less than `need` bytes."""
    free = free_bytes(where)
    if free < need:
        raise NoSpaceError(f"not enough free space in {where} for {what}: needs about {_mib(need)}, "
                           f"{_mib(free)} free",
                           hint or "free some space or pick a directory on a larger disk")


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB"
