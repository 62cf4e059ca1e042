"""Atomic file writes: a crash mid-write leaves the old file or the new one, never half.

The bytes go to a temporary file in the same directory (so the final `os.replace` is an
atomic rename on one filesystem), are flushed and fsynced, then renamed over the target.
Used for config.json, metrics rewrites, checkpoints (`atomic_write`), and through
`replacing` for the writers that need a file name: videos, figures, checkpoint links.

A full disk: the writer (e.g. `torch.save`, whose C++ zip writer turns the OSError of its
`write` into "RuntimeError: unexpected pos ...") may hide why it failed. The file object is
wrapped so that an ENOSPC/EDQUOT raised by any `write` is remembered, and the failure is
re-raised as `NoSpaceError("no space left on device writing PATH")`; the temporary file is
removed and the old file at PATH is untouched (issue 9).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable

from calql_robot.errors import NoSpaceError, is_no_space, no_space


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


def temporary_name(path: Path, suffix: str = "") -> Path:
    """`.<name>.tmp-<pid><suffix>` beside `path`: hidden, one per process, and of the form
    `checkpoint.remove_stale_temporaries` recognises. `suffix` keeps a format-bearing
    extension for writers that pick the format from the name (ffmpeg, matplotlib)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}{suffix}")


@contextmanager
def replacing(path: Path, suffix: str = "") -> Iterator[Path]:
    """The one temporary-name-then-rename writer: yield a temporary name beside `path`;
    when the block ends without error it is renamed onto `path` (atomic on one filesystem),
    and in every case no temporary file is left. A full disk (ENOSPC/EDQUOT) raised in the
    block becomes `NoSpaceError` naming `path`; the old file at `path` is untouched."""
    path = Path(path)
    tmp = temporary_name(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except Exception as err:
        if not isinstance(err, NoSpaceError) and is_no_space(err):
            raise no_space(path) from err
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path: Path, write: Callable[[IO], None], binary: bool = False) -> None:
    """Call `write(f)` on a temporary file beside `path`, flush and fsync it, then rename it
    to `path`."""
    path = Path(path)
    recorder: _WriteRecorder | None = None
    try:
        with replacing(path) as tmp, open(tmp, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
            recorder = _WriteRecorder(f)
            write(recorder)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
    except Exception as err:
        if not isinstance(err, NoSpaceError) and recorder is not None and recorder.error is not None \
                and is_no_space(recorder.error):
            raise no_space(path) from err
        raise
