"""Stopping a run where it stands on SIGINT (Ctrl-C) and SIGTERM (a scheduler's notice).

Clusters and people end runs: SLURM, Kubernetes and `kill` send SIGTERM and wait a grace
period before SIGKILL; a user presses Ctrl-C. Python's defaults lose everything since the
last checkpoint (SIGTERM ends the process at once; SIGINT raises KeyboardInterrupt wherever
the code happens to be). `stop_on_signals` replaces both handlers for the life of a run:

- while the run is being set up (flags, data, buffers) a signal ends it at once with
  `Interrupted` (there is no progress to save; `--run.resume` starts it again);
- once training runs (`StopRequest.graceful`), the first SIGINT or SIGTERM only sets the
  request: the loop finishes the update (or episode, or evaluation) under way, writes its
  checkpoint and logs, and raises `RunInterrupted` saying where the run stands and the
  command that resumes it;
- a second SIGINT after that aborts at once (`Interrupted`), even inside the checkpoint
  write, which is atomic (`run/atomic.py`): the previous checkpoint stays whole. A repeated
  SIGTERM is ignored: schedulers and shells forward one notice through several layers, and
  SIGKILL is theirs to send.

The handler itself only writes one notice with `os.write` (a `print` inside a signal
handler can re-enter a stream that tqdm is writing to) and sets a field: everything else
happens in the loop, between updates, where the state is whole.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from calql_robot.errors import Interrupted

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """What the signal handler tells the loop: which signal asked the run to stop, if any.

    `resume` is the command that continues the run (named in every message); `graceful`
    is False while the run is set up (a signal then ends it at once) and True from the
    moment the loop trains (it then stops at its next safe point; after the last one, the
    run simply finishes)."""

    def __init__(self, resume: str = "") -> None:
        self.resume = resume
        self.signum: int | None = None
        self.graceful = False

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler (see the module docstring for what each signal does when)."""
        name = signal.Signals(signum).name
        if not self.graceful:
            raise Interrupted(f"{name} before training began, nothing to save"
                              + (f"; `{self.resume}` starts the run again" if self.resume else ""), signum)
        if self.signum is None:
            self.signum = signum
            _notice(f"{name}: stopping after the current update to save a checkpoint "
                    f"(press Ctrl-C again to abort at once)")
        elif signum == signal.SIGINT:
            raise Interrupted("aborted by a second Ctrl-C; the run's last finished checkpoint is kept"
                              + (f"; resume: {self.resume}" if self.resume else ""), signum)


def _notice(text: str) -> None:
    """One line on stderr, written with one `os.write` (safe inside a signal handler)."""
    try:
        os.write(2, ("\n" + text + "\n").encode())
    except OSError:
        pass  # stderr closed: the final message still says what happened


@contextmanager
def stop_on_signals(resume: str = "") -> Iterator[StopRequest]:
    """Install `StopRequest.handle` for SIGINT and SIGTERM, restoring the previous handlers
    on exit. Outside the main thread (where Python allows no handler) the request is
    returned as is and never set: signals keep their default effect there."""
    request = StopRequest(resume)
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {s: signal.signal(s, request.handle) for s in STOP_SIGNALS}
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)

