"""Atomic checkpoints that load with `torch.load(..., weights_only=True)`, plus RNG state.

Why weights_only: a checkpoint is a pickle, and unpickling runs arbitrary code. Since
PyTorch 2.6 the default loader only rebuilds tensors and plain containers; we always
pass `weights_only=True` explicitly and never fall back, so every object stored here
must be a tensor, a primitive (int incl. 128-bit, float, complex, bool, str, bytes,
None), `torch.device`/`torch.dtype`/`torch.Size`, or a dict/list/tuple/set of those.
`check_weights_only_safe` enforces that at save time, naming the offending key, instead
of failing at resume time hours later. numpy arrays are not allowed (numpy's
`_reconstruct` global is refused): replay buffers store torch tensors (ARCHITECTURE.md,
`EpisodeReplayBuffer.state_dict`) and RNG states are encoded below.

Atomicity: `torch.save` goes to a temporary file in the same directory, which is fsynced
and then `os.replace`d onto the target, so a crash mid-write leaves the previous
checkpoint intact (SPEC section 7: resume must restore buffers, optimizers, counters and
RNG state, which only works if the file on disk is whole).

Layout written by `save_run_checkpoint`::

    <ckpt_dir>/latest.pt                 always the newest state
    <ckpt_dir>/previous.pt               the state before it (a hard link, no extra bytes
                                         until latest.pt is replaced)
    <ckpt_dir>/step_000012000.pt         optional numbered copies, `keep_last` newest kept
    <ckpt_dir>/switch.pt                 the state at the offline-to-online switch (the
                                         pre-trained policy; `keep_switch_checkpoint`)

Two are kept so that a latest.pt damaged after it was written (a disk error, a copy cut
short) still leaves a good one; `resume_state` names it in its hint (issue 9).

Diagnosis (`load_checkpoint`, issue 9): a missing path, a directory, an empty file, a zip
archive cut short, a damaged archive (CRC of an entry wrong), a file that is no PyTorch
checkpoint at all (random bytes, text), pickled objects outside the weights_only
allow-list (refused; their code never runs) and a valid archive from another run or
version (`check_keys`, `fits_run`: missing or mismatched keys, named) each get their own
message. Every one is a `CheckpointError` (calql_robot/errors.py), so entry points print
it as one line with exit code 2.
"""
from __future__ import annotations

import os
import random
import re
import shutil
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calql_robot.run.atomic import atomic_write, replacing
from calql_robot.errors import CheckpointError, CheckpointNotFoundError, is_no_space, no_space  # noqa: F401 - re-exported

LATEST_NAME = "latest.pt"
PREVIOUS_NAME = "previous.pt"
SWITCH_NAME = "switch.pt"
_TMP_RE = re.compile(r"^\..+\.tmp-\d+$")
_STEP_RE = re.compile(r"^step_(\d+)\.pt$")
_NDARRAY_TAG = "__ndarray__"

# Leaf types torch's weights_only unpickler rebuilds by default (checked against
# torch 2.14 in tests/test_checkpoint.py::test_every_allowed_leaf_type_loads_weights_only).
_SAFE_LEAVES = (torch.Tensor, bool, int, float, complex, str, bytes, type(None), torch.device, torch.dtype, torch.Size)


# --------------------------------------------------------------------------- saving
def check_weights_only_safe(obj: Any, where: str = "state") -> None:
    """Raise TypeError naming the key path of the first value `weights_only=True` would
    refuse, so bad state is caught when saving rather than when resuming."""
    if isinstance(obj, _SAFE_LEAVES):
        return
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            check_weights_only_safe(key, f"{where}[key {key!r}]")
            check_weights_only_safe(value, f"{where}[{key!r}]")
        return
    if isinstance(obj, (list, tuple, set, frozenset)):
        for i, value in enumerate(obj):
            check_weights_only_safe(value, f"{where}[{i}]")
        return
    hint = " (convert with torch.from_numpy / .item())" if type(obj).__module__.startswith("numpy") else ""
    raise TypeError(
        f"{where}: {type(obj).__module__}.{type(obj).__qualname__} cannot be loaded with "
        f"torch.load(weights_only=True){hint}"
    )


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    """`torch.save(state)` to a temp file beside `path`, fsync, then `os.replace`.

    The previous file at `path` survives any crash before the final rename.
    """
    path = Path(path)
    if not isinstance(state, Mapping):
        raise TypeError(f"{path}: checkpoint state must be a dict, got {type(state).__name__}")
    check_weights_only_safe(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: torch.save(dict(state), f), binary=True)


def step_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """Numbered checkpoints `step_<n>.pt` in `ckpt_dir` as (step, path), oldest first."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _STEP_RE.match(p.name))]
    return sorted(found)


def checkpoint_candidates(ckpt_dir: Path) -> list[Path]:
    """Finished checkpoints of a run, newest first: latest.pt, the numbered ones, previous.pt.
    Temporary files of a killed writer (`.latest.pt.tmp-<pid>`) are never among them."""
    ckpt_dir = Path(ckpt_dir)
    named = [ckpt_dir / LATEST_NAME] + [p for _, p in reversed(step_checkpoints(ckpt_dir))]
    return [p for p in named + [ckpt_dir / PREVIOUS_NAME] if p.is_file()]


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """`ckpt_dir/latest.pt` if it exists, else the highest numbered one, else previous.pt,
    else None."""
    found = checkpoint_candidates(ckpt_dir)
    return found[0] if found else None


def _link_or_copy(src: Path, dst: Path) -> None:
    """Make `dst` hold the bytes of `src` atomically. A hard link costs no space or time
    (big replay buffers are written once); fall back to a copy where links fail."""
    with replacing(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def save_run_checkpoint(ckpt_dir: Path, state: Mapping[str, Any], step: int, keep_last: int = 0) -> Path:
    """Write `ckpt_dir/latest.pt`; with `keep_last > 0` also `step_<step>.pt`, keeping only
    the `keep_last` newest numbered files. Returns the path of latest.pt."""
    if keep_last < 0:
        raise ValueError(f"keep_last must be >= 0, got {keep_last}")
    ckpt_dir = Path(ckpt_dir)
    latest = ckpt_dir / LATEST_NAME
    if latest.is_file():
        _link_or_copy(latest, ckpt_dir / PREVIOUS_NAME)  # before the new write: both stay whole
    if keep_last == 0:
        save_checkpoint(latest, state)
        return latest
    numbered = ckpt_dir / f"step_{int(step):09d}.pt"
    save_checkpoint(numbered, state)
    _link_or_copy(numbered, latest)
    for _, old in step_checkpoints(ckpt_dir)[:-keep_last]:
        old.unlink()
    return latest


def keep_switch_checkpoint(ckpt_dir: Path) -> Path:
    """Keep the just-written latest.pt as `switch.pt`: the pre-trained state, so that the
    pre-trained policy can be rolled out (rollout.py) or fine-tuned again with other
    online settings from the same pre-training. A hard link, so it costs no bytes until
    latest.pt is replaced."""
    ckpt_dir = Path(ckpt_dir)
    switch = ckpt_dir / SWITCH_NAME
    _link_or_copy(ckpt_dir / LATEST_NAME, switch)
    return switch


# -------------------------------------------------------------------------- loading
_GLOBAL_RE = re.compile(r"GLOBAL (\S+) was not an allowed global")


def _refused_global(err: Exception) -> str | None:
    """The global torch's weights_only unpickler refused (e.g. 'io.open'), if that is why
    it failed; None for any other failure (random bytes also fail inside that unpickler)."""
    match = _GLOBAL_RE.search(str(err))
    return match.group(1) if match else None


def _archive_problem(path: Path) -> str | None:
    """Why a file that starts like a zip archive is not a whole one, or None if it is (or
    does not look like a zip at all: then torch's legacy pickle reader gets to judge it)."""
    size = path.stat().st_size
    if size == 0:
        return "empty file (0 bytes), not a checkpoint; was its writer killed?"
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        return None
    if not zipfile.is_zipfile(path):
        return (f"truncated PyTorch checkpoint ({size} bytes, the end of the archive is missing); "
                "was it cut short by a kill, a full disk or an unfinished copy?")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        return f"damaged zip archive ({err})"
    return None if bad is None else f"damaged PyTorch checkpoint: entry {bad!r} fails its CRC check"


def _parse_failure(path: Path, err: Exception) -> str:
    """A short why for a file torch could not parse. torch's own text for a non-archive
    is advice about weights_only=False (which we will not follow), so show the bytes."""
    if zipfile.is_zipfile(path):
        return f"a zip archive without PyTorch's layout: {' '.join(str(err).split())[:120]}"
    with open(path, "rb") as f:
        head = f.read(8)
    return f"neither a PyTorch zip archive nor a tensor pickle; it starts with bytes {head.hex()}"


def load_checkpoint(path: Path, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict with `weights_only=True`, always.

    Every failure is a CheckpointError naming the path (CheckpointNotFoundError, also a
    FileNotFoundError, when there is no file): an empty, truncated or damaged archive;
    a file that is not a PyTorch checkpoint; pickled objects the safe loader refuses (we
    will not unpickle untrusted data, so their code never runs); a non-dict. Any exception
    of torch's parser counts as "not a checkpoint": it parses untrusted bytes.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint not found: {path}")
    problem = _archive_problem(path)
    if problem is not None:
        raise CheckpointError(f"{path}: {problem}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - see docstring
        refused = _refused_global(e)
        if refused is not None:
            raise CheckpointError(
                f"{path}: refusing to load. The file contains pickled Python objects outside the "
                f"weights_only allow-list (it needs {refused}). Unpickling them could run "
                "arbitrary code, and this loader will not unpickle untrusted data; re-save the "
                "state as tensors and plain containers (see check_weights_only_safe)."
            ) from e
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({_parse_failure(path, e)})") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, found {type(state).__name__}")
    return state


def check_keys(path: Path, state: Mapping[str, Any], required: Iterable[str]) -> None:
    """A valid archive from another program or an older layout: name the missing keys."""
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"{path}: a PyTorch archive, but not a checkpoint of this kind of run: "
                              f"missing keys {missing} (it has {sorted(map(str, state))[:12]})",
                              "was it written by another program or another version of this one?")


@contextmanager
def fits_run(path: Path, what: str = "this run") -> Iterator[None]:
    """Turn the errors of applying a loaded state (a missing or extra key, a tensor of
    another shape) into a CheckpointError that names the file and the key."""
    try:
        yield
    except CheckpointError:
        raise
    except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as err:
        detail = f"missing key {err}" if isinstance(err, KeyError) else " ".join(str(err).split())[:400]
        raise CheckpointError(f"{path}: does not fit {what}: {detail}",
                              "was it written by another run (other network sizes or settings) or "
                              "another version of this code?") from err


def remove_stale_temporaries(ckpt_dir: Path) -> list[Path]:
    """Delete `.<name>.tmp-<pid>` files a killed writer left (never taken for checkpoints,
    but they hold disk space). Only call it from the one process that owns the run."""
    ckpt_dir = Path(ckpt_dir)
    stale = [p for p in ckpt_dir.iterdir() if _TMP_RE.match(p.name)] if ckpt_dir.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def resume_state(ckpt_dir: Path, map_location: str | torch.device | None = "cpu",
                 required: Iterable[str] = ()) -> tuple[Path, dict[str, Any]] | None:
    """(path, state) of the newest checkpoint in `ckpt_dir`, or None when there is none.

    An unreadable newest checkpoint is an error, not a silent fall-back (the user should
    know that state was lost); its hint names the newest older checkpoint that does load
    and how to resume from it.
    """
    candidates = checkpoint_candidates(ckpt_dir)
    if not candidates:
        return None
    try:
        state = load_checkpoint(candidates[0], map_location=map_location)
        check_keys(candidates[0], state, required)
    except CheckpointError as err:
        raise CheckpointError(str(err), _fallback_hint(candidates[0], candidates[1:])) from err
    return candidates[0], state


def precheck_resume(ckpt_dir: Path) -> None:
    """Fail fast, before a resumed run spends minutes rebuilding its dataset: the newest
    checkpoint must be a whole archive (CRCs streamed, nothing unpickled, little memory).
    A file that is not a zip archive at all is small or foreign, so it is loaded in full
    here to get its diagnosis. Refused pickles and keys are checked at the real load."""
    candidates = checkpoint_candidates(ckpt_dir)
    if not candidates:
        return
    newest = candidates[0]
    try:
        problem = _archive_problem(newest)
        if problem is not None:
            raise CheckpointError(f"{newest}: {problem}")
        if not zipfile.is_zipfile(newest):
            load_checkpoint(newest)
    except CheckpointError as err:
        raise CheckpointError(str(err), _fallback_hint(newest, candidates[1:])) from err


def _fallback_hint(bad: Path, older: list[Path]) -> str:
    """Which older checkpoint loads, and the command that makes a resume use it."""
    for path in older:
        if os.path.samefile(path, bad):
            continue
        try:
            state = load_checkpoint(path)
        except CheckpointError:
            continue
        step = state.get("learner", {}).get("num_updates", "?") if isinstance(state.get("learner"), dict) else "?"
        return (f"the previous checkpoint {path} loads (after {step} updates); move the bad one aside "
                f"(mv {bad} {bad}.bad) and run the same command again to resume from it")
    return "no older checkpoint of this run loads; start the run again in a new --run.run-dir"


# ------------------------------------------------------------------------ RNG state
def _encode_arrays(obj: Any) -> Any:
    """numpy arrays inside a bit-generator state -> {"__ndarray__": uint8 tensor of the raw
    bytes, "dtype", "shape"}: lossless for any dtype (MT19937 keys are uint32, Philox
    uint64, which torch has no full support for) and loadable with weights_only.
    Python ints stay ints: PCG64's 128-bit ints survive weights_only (tested)."""
    if isinstance(obj, np.ndarray):
        raw = torch.frombuffer(bytearray(np.ascontiguousarray(obj).tobytes()), dtype=torch.uint8)
        return {_NDARRAY_TAG: raw, "dtype": obj.dtype.str, "shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _encode_arrays(v) for k, v in obj.items()}
    return obj


def _decode_arrays(obj: Any) -> Any:
    """Inverse of `_encode_arrays`."""
    if isinstance(obj, dict) and _NDARRAY_TAG in obj:
        raw = obj[_NDARRAY_TAG].cpu().numpy().tobytes()
        return np.frombuffer(raw, dtype=np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
    if isinstance(obj, dict):
        return {k: _decode_arrays(v) for k, v in obj.items()}
    return obj


def capture_rng_state(np_rng: np.random.Generator | None = None) -> dict[str, Any]:
    """Every RNG a run draws from, in a weights_only-loadable dict: Python `random`, the
    numpy global RNG, the given numpy Generator (its `bit_generator.state`), torch CPU,
    and torch CUDA (all devices) when available. SPEC section 7: seeds must cover
    everything and resume must restore RNG state."""
    return {
        "python": random.getstate(),
        "numpy_global": _encode_arrays(np.random.get_state(legacy=False)),
        "numpy_generator": None if np_rng is None else _encode_arrays(np_rng.bit_generator.state),
        "torch_cpu": torch.get_rng_state(),
        "torch_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _to_python_random_state(state: Any) -> tuple:
    """`random.setstate` needs tuples; a checkpoint may hand back lists."""
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def _restore_cuda(states: list[torch.Tensor] | None) -> None:
    """CUDA state is restored when both sides have CUDA; a GPU run resumed on CPU (or on
    fewer devices) is allowed but warned about, since its draws will differ."""
    if states is None:
        return
    if not torch.cuda.is_available():
        warnings.warn("checkpoint has CUDA RNG state but CUDA is not available; not restored")
        return
    n = min(len(states), torch.cuda.device_count())
    if n < len(states):
        warnings.warn(f"checkpoint has CUDA RNG state for {len(states)} devices, restoring {n}")
    for i in range(n):
        torch.cuda.set_rng_state(states[i].cpu(), i)


def restore_rng_state(state: Mapping[str, Any], np_rng: np.random.Generator | None = None) -> None:
    """Inverse of `capture_rng_state`; `np_rng` is updated in place."""
    missing = [k for k in ("python", "numpy_global", "numpy_generator", "torch_cpu") if k not in state]
    if missing:
        raise KeyError(f"RNG state is missing keys {missing}; was it made by capture_rng_state?")
    random.setstate(_to_python_random_state(state["python"]))
    np.random.set_state(_decode_arrays(state["numpy_global"]))
    saved_gen = state["numpy_generator"]
    if (saved_gen is None) != (np_rng is None):
        raise ValueError(
            "RNG state and call disagree about the numpy Generator: saved "
            f"{'none' if saved_gen is None else saved_gen['bit_generator']}, given "
            f"{'none' if np_rng is None else type(np_rng.bit_generator).__name__}"
        )
    if np_rng is not None:
        if saved_gen["bit_generator"] != type(np_rng.bit_generator).__name__:
            raise ValueError(
                f"saved numpy Generator uses {saved_gen['bit_generator']}, the given one "
                f"{type(np_rng.bit_generator).__name__}; build it with the same bit generator"
            )
        np_rng.bit_generator.state = _decode_arrays(saved_gen)
    torch.set_rng_state(state["torch_cpu"].cpu())
    _restore_cuda(state.get("torch_cuda"))
