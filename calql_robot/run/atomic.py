"""Atomic file writes: a crash mid-write leaves the old file or the new one, never half.

The bytes go to a temporary file in the same directory (so the final `os.replace` is an
atomic rename on one filesystem), are flushed and fsynced, then renamed over the target.
Used for config.json, metrics rewrites and checkpoints.

A full disk: the writer (e.g. `torch.save`, whose C++ zip writer turns the OSError of its
`write` into "RuntimeError: unexpected pos ...") may hide why it failed. The file object is
wrapped so that an ENOSPC/EDQUOT raised by any `write` is remembered, and the failure is
re-raised as `NoSpaceError("no space left on device writing PATH")`; the temporary file is
removed and the old file at PATH is untouched (issue 9).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any, Callable

from calql_robot.errors import is_no_space, no_space


class _WriteRecorder:
    """A file object that remembers the OSError of a failed `write` (see module docstring)."""

    def __init__(self, f: IO) -> None:
        self._f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._f.write(data)
        except OSError as err:
            self.error = err
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def atomic_write(path: Path, write: Callable[[IO], None], binary: bool = False) -> None:
    """Call `write(f)` on a temporary file beside `path`, then rename it to `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    recorder: _WriteRecorder | None = None
    try:
        with open(tmp, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
            recorder = _WriteRecorder(f)
            write(recorder)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as err:
        if is_no_space(err) or (recorder is not None and recorder.error is not None
                                and is_no_space(recorder.error)):
            raise no_space(path) from err
        raise
    finally:
        if tmp.exists():
            tmp.unlink()
