"""The project's user-facing errors and the one error path of every entry point.

A user mistake (a bad flag, a dataset or checkpoint that does not fit, a full disk) must end
in one line that names what the user typed, not in a traceback through our files; a bug
must still end in its traceback, so that it gets reported and fixed (issue 9). Entry
scripts therefore wrap their body in `cli_main`:

    if __name__ == "__main__":
        cli_main(lambda argv: main(tyro_cli(Config, args=argv)))

`cli_main` turns a `UserError` (and the few foreign errors that mean the same thing: the
HDF5 reader's `DatasetFormatError`, an OSError for a full disk, a MemoryError) into

    error: <what is wrong, naming the flag, file or key>
    hint: <what to do>                       (only when there is one)

on stderr and exit code 2 (the code argparse/tyro use for usage errors). `--debug` on the
command line (removed before the config parser sees it) or `CALQL_DEBUG=1` in the
environment re-raises instead, with the full traceback.

Exit codes (issue 22: a sweep runner reads them to decide what to do next):

    0    the run finished
    2    a user error: a flag, file, dataset or checkpoint to fix (`UserError`)
    3    training diverged: a non-finite loss; the last good checkpoint is kept
    75   the run directory is in use by another process (EX_TEMPFAIL: try again later)
    130  stopped by SIGINT (Ctrl-C), 143 by SIGTERM: 128 + the signal, as a shell reports
         it; a checkpoint was written where the run stood unless the line says otherwise
    1    a bug (its traceback is printed)

A stop by signal prints `stopped: ...` instead of `error: ...`: it is not a mistake.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable

EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3
EXIT_LOCKED = 75  # sysexits.h EX_TEMPFAIL
DEBUG_FLAG = "--debug"
DEBUG_ENV = "CALQL_DEBUG"
_NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class UserError(Exception):
    """Something the user can fix; `str(err)` names the flag, file or key as they gave it,
    and `hint` (optional) says what to do about it."""

    exit_code: int = EXIT_USER_ERROR
    label: str = "error"
    """The word before the message on stderr."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class ConfigError(UserError, ValueError):
    """A command-line value that cannot work (named as the flag: `--loop.batch-size`).
    A ValueError too, so callers that validated before issue 9 keep catching it."""


class DatasetError(UserError, ValueError):
    """A dataset file that is missing, unreadable or does not fit the run."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint file that cannot be (safely) loaded or does not fit the run."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint file where one was expected."""


class RunDirError(UserError, FileNotFoundError):
    """A run directory that does not exist, or is not a run directory."""


class NoSpaceError(UserError, OSError):
    """The disk is full (or will be before a phase ends); names the file being written."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        UserError.__init__(self, message, hint)


class OutOfMemoryError(UserError, MemoryError):
    """Not enough memory for what the run asked for."""


class RunLockedError(UserError):
    """Another live process holds the run directory's lock (`run/lock.py`); exit 75, so a
    sweep runner can tell "busy, try later" from a mistake."""

    exit_code = EXIT_LOCKED


class TrainingDiverged(UserError, RuntimeError):
    """A non-finite loss stopped the run before it changed any parameter; exit 3. Not the
    user's mistake as such, but theirs to act on (other settings), so it is one line too."""

    exit_code = EXIT_DIVERGED


class RunInterrupted(UserError):
    """A run stopped by SIGINT or SIGTERM where it stood, its checkpoint written
    (`run/stopping.py`); exit 128 + the signal number, the code a shell gives a process the
    signal ended. The message says where the run stands and the command that resumes it."""

    label = "stopped"

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class Interrupted(KeyboardInterrupt):
    """A signal that ends a run at once, saving nothing more: a second Ctrl-C while the
    first one's checkpoint is written, or a stop signal before training began. A
    KeyboardInterrupt, so code that cleans up after Ctrl-C does so for these too."""

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = signum


def is_no_space(err: BaseException) -> bool:
    """True for an OSError that means the filesystem (or quota) is full."""
    return isinstance(err, OSError) and err.errno in _NO_SPACE_ERRNOS


def no_space(path: Path | str, hint: str | None = None) -> NoSpaceError:
    """The one wording of a failed write for lack of space (tests grep for it)."""
    return NoSpaceError(f"no space left on device writing {path}",
                        hint or "free some space (or pick another --run.run-dir) and run the same "
                                "command again; files written before are intact")


def as_user_error(err: BaseException) -> UserError | None:
    """The user-facing form of `err`, or None when it is a bug (to be shown as a traceback)."""
    if isinstance(err, UserError):
        return err
    from data.schema import DatasetFormatError  # data/ never imports calql_robot/, so map here

    if isinstance(err, DatasetFormatError):
        return DatasetError(str(err))
    if is_no_space(err):
        return no_space(err.filename or "a file (the OS did not say which)")
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":  # torch.cuda's
        return OutOfMemoryError(f"out of memory: {str(err).splitlines()[0] if str(err) else 'allocation failed'}",
                                "use smaller settings (e.g. --loop.batch-size, fewer episodes) or a "
                                "machine with more memory")
    return None


def debug_requested(argv: list[str]) -> bool:
    """`--debug` on the command line or CALQL_DEBUG set to anything but '' or '0'."""
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def one_line(text: str) -> str:
    """Messages may carry a wrapped detail from a library; the contract is one line."""
    return " ".join(text.split())


def report(err: UserError) -> None:
    """Print `error: ...` (`stopped: ...` for a signal) and, if there is one, `hint: ...`
    to stderr."""
    print(f"{err.label}: {one_line(str(err))}", file=sys.stderr)
    if err.hint:
        print(f"hint: {one_line(err.hint)}", file=sys.stderr)


def cli_main(main: Callable[[list[str]], object], argv: list[str] | None = None) -> None:
    """Run `main(argv)` (argv without `--debug`) with the project's one error path:
    user errors -> one line + hint on stderr, their exit code (2 unless the class says
    otherwise); Ctrl-C -> one line, exit 130; bugs -> their traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    try:
        main([a for a in argv if a != DEBUG_FLAG])
    except KeyboardInterrupt as err:  # Ctrl-C outside a run's graceful stop, or a second one
        if debug:
            raise
        sys.stdout.flush()
        print(f"stopped: {one_line(str(err)) or 'interrupted (Ctrl-C)'}", file=sys.stderr)
        sys.exit(128 + getattr(err, "signum", signal.SIGINT))
    except BrokenPipeError:  # `--help | head`: the reader left; the recipe of Python's docs
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except Exception as err:  # noqa: BLE001 - sorted into user errors and bugs right here
        user = as_user_error(err)
        if user is None or debug:
            raise
        sys.stdout.flush()
        report(user)
        sys.exit(user.exit_code)


def tyro_cli(cls: type, *, args: list[str], **kwargs: Any) -> Any:
    """`tyro.cli`, with its parse errors (an unknown flag, a value of the wrong type, an
    invalid choice) turned into the project's one-line `ConfigError` naming the flag as
    given, tyro's suggestions as the hint: tyro draws them as a boxed panel of 5-11 lines,
    which breaks the one-line error every other mistake gets (`errors.cli_main`). `--help`
    is left to tyro as it is."""
    import tyro  # the entry points' parser; loaded here only when one parses

    if "-h" in args or "--help" in args:
        return tyro.cli(cls, args=args, **kwargs)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            return tyro.cli(cls, args=args, **kwargs)
    except SystemExit as exit_:
        if exit_.code in (0, None):
            print(captured.getvalue(), end="")
            raise
        message, hint = panel_to_line(captured.getvalue())
        raise ConfigError(message, hint) from None


def panel_to_line(text: str) -> tuple[str, str | None]:
    """(message, hint) from a tyro error panel, boxed (a terminal) or plain (captured): the
    panel's title and separators are dropped, its first section is joined into one line;
    the hint names the flags under "Perhaps you meant", if any, else points to --help.
    Text that is not a panel is returned joined, as it is."""
    sections: list[list[str]] = [[]]
    boxed = False
    for raw in text.splitlines():
        line = raw.strip().strip("│").strip()
        if not line:
            continue
        if line[0] in "╭╰" or set(line) <= set("─-"):
            boxed = boxed or line[0] == "╭"
            if sections[-1]:
                sections.append([])
        else:
            sections[-1].append(line)
    sections = [section for section in sections if section]
    if not boxed and len(sections) > 1 and len(sections[0]) == 1:
        sections = sections[1:]  # the plain panel's title line
    if not sections:
        return " ".join(text.split()), None
    suggested = [line.split()[0] for section in sections[1:] if section[0].startswith("Perhaps")
                 for line in section[1:] if line.startswith("--")]
    hint = f"perhaps you meant {' or '.join(suggested[:3])}" if suggested else "see --help for every flag"
    return " ".join(" ".join(sections[0]).split()), hint
