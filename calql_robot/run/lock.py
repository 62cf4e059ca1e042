"""One writer per run directory: an OS file lock held for the life of a run.

Two processes training into one directory (a `--run.resume` typed while the first run still
trains, a sweep runner started twice) interleave checkpoints and metrics rows, and each
removes the other's temporary files. `RunLock` takes `fcntl.flock(LOCK_EX | LOCK_NB)` on
`<run_dir>/run.lock`; a second process is refused at once with the holder's PID and host,
which the holder writes into the file.

Why flock: the kernel releases the lock when the holder's last descriptor of the file is
closed, which includes every way a process dies (SIGKILL, OOM killer, a node's reboot
ends the process and its locks with it), so there is never a stale lock to clean up by
hand; the file that stays behind is only a record of the last holder. It is never
deleted: deleting a lock file lets two processes lock two different files of one name.
On Linux NFS clients flock is carried by NFS's byte-range locks, so it holds across
nodes of a cluster that share the run directory over NFS (v3 with lockd, v4).

Readers take no lock: rollout.py, the analysis and `--run.finetune-from` read checkpoints
that are replaced atomically (`run/atomic.py`), so they see a whole file whichever.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from calql_robot.errors import RunLockedError

LOCK_FILE = "run.lock"


def _holder_of(fd: int) -> str:
    """'process <pid> on <host>' as the holder wrote it, or a vaguer phrase if it has not yet."""
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 256).decode("utf-8", "replace").split()
    if len(text) >= 2 and text[0].isdigit():
        return f"process {text[0]} on {text[1]}"
    return "another process (it has not written its PID yet)"


def _refusal(run_dir: Path, holder: str) -> RunLockedError:
    return RunLockedError(f"--run.run-dir {run_dir} is in use by {holder} (it holds {run_dir / LOCK_FILE})",
                          "wait for that run to end, or stop it (Ctrl-C or kill PID: it saves a checkpoint), "
                          "then resume with --run.resume; a killed holder leaves no lock behind")


class RunLock:
    """The exclusive lock of one run directory, held from `acquire` to `release` (or the
    process's end)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock, or raise RunLockedError naming the directory and the holder."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_of(fd)
            os.close(fd)
            raise _refusal(self.run_dir, holder) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Let the lock go (closing the descriptor is what releases it); safe to call twice."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def refuse_if_locked(run_dir: Path) -> None:
    """Raise RunLockedError when a live process holds `run_dir`'s lock; touch nothing
    otherwise (no lock file is created in a directory that has none)."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _refusal(Path(run_dir), _holder_of(fd)) from None
    finally:
        os.close(fd)
