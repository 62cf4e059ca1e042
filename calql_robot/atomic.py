"""Atomic file writes: a crash mid-write leaves the old file or the new one, never half.

The bytes go to a temporary file in the same directory (so the final `os.replace` is an
atomic rename on one filesystem), are flushed and fsynced, then renamed over the target.
Used for config.json, metrics rewrites and checkpoints.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Callable


def atomic_write(path: Path, write: Callable[[IO], None], binary: bool = False) -> None:
    """Call `write(f)` on a temporary file beside `path`, then rename it to `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
