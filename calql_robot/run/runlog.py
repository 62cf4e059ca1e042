"""Run directory, resolved config and metrics logging (JSON lines, optional wandb).

One run directory holds everything needed to understand a run after the fact
(STYLE.md point 7: "the resolved config saved in every run directory"):

    <run_dir>/config.json     the resolved config, written atomically (tmp + os.replace)
    <run_dir>/metrics.jsonl   one JSON object per `log` call, flushed line by line
    <run_dir>/wandb/          only when wandb is enabled

Metrics row format (one line each)::

    {"step": 1200, "phase": "offline", "time": 1732380000.123, "train/critic_loss": 0.51, ...}

`time` is the wall clock (`time.time()`, seconds since the epoch) so rows written before
and after a resume stay on one time axis.

Non-finite floats: JSON has no NaN/Infinity (Python's `json` writes them anyway, which
makes the file unreadable for strict parsers such as `jq` or browsers). We keep the
information instead of collapsing it to `null`: NaN, +inf and -inf are written as the
strings "NaN", "Infinity" and "-Infinity" (the same tokens Python's json uses), so the
file is strict JSON and a diverged loss stays distinguishable from a missing one.
`read_metrics` turns those strings back into floats.

Resume (SPEC section 7: "resume must restore ... counters"): a run killed after its last
checkpoint may have logged rows past the checkpoint's step. Open the logger with
`resume=True` (keeps metrics.jsonl) and call `truncate_rows(rows)` with the row count the
checkpoint recorded (`RunLogger.rows` when it was written; exact even for a checkpoint
taken between two rows of one step, as a stop by signal is), or `truncate_after(step)`
for checkpoints that recorded none, so the re-run steps are not duplicated.

wandb is optional and imported lazily only when `wandb_mode != "disabled"`; "offline"
writes a local run that needs no account (sync later with `wandb sync`).
"""
from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import re
import secrets
import string
import time
import warnings
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from calql_robot.run.atomic import atomic_write
from calql_robot.errors import ConfigError, is_no_space, no_space

CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
DERIVED_KEYS = ("obs_normalization",)
"""config.json keys a run derives from its data after start (not settings; not compared on resume)."""
METRICS_FILE = "metrics.jsonl"
WANDB_ID_FILE = "wandb_id.txt"
WANDB_MODES = ("disabled", "offline", "online")
RESERVED_KEYS = ("step", "phase", "time")

# Non-finite floats as JSON strings (see module docstring); the inverse is used on read.
_NONFINITE_TO_STR = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_STR_TO_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (calql_robot/run/atomic.py): a crash mid-write must
    leave either the old file or the new one, never half a file."""
    atomic_write(path, lambda f: f.write(text))


def read_config_json(path: Path) -> dict[str, Any]:
    """A run's config.json as a dict of config fields only (the derived facts of its data,
    `DERIVED_KEYS`, taken out), upgraded from older layouts (`upgrade_legacy_fields`); a
    file that is not a JSON object is a ConfigError."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not a JSON config ({err})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, found {type(data).__name__}")
    for key in DERIVED_KEYS:  # facts of the run's data, not config fields
        data.pop(key, None)
    return upgrade_legacy_fields(data, str(path))


REMOVED_LEARNER_OPTIONS: dict[str, Any] = {
    "bc_weight_online": None, "bc_offline_only": False, "freeze_encoder_online": False, "q_init_mc": False,
    "auto_alpha": True, "target_entropy": None, "orthogonal_init": True}
"""Learner options of earlier code, removed in issue 17, with the value this code always
uses: the first four were tuning options no preset adopted (RESULTS.md, sessions 4-7, keeps
what each did), the last three SPEC constants no preset or test varied. (`fixed_alpha` went
with `auto_alpha`: it was read only when the temperature was not tuned.)"""


def upgrade_legacy_fields(data: dict[str, Any], where: str = "config") -> dict[str, Any]:
    """Fields of configs saved by earlier code, mapped to what they meant, so old run
    directories still load, resume and roll out:
    - `learner.bc_trains_encoder` (session 4) put the BC term on the encoder at the actor's
      bc_weight, which is `bc_encoder_weight = bc_weight`;
    - `learner.discount` is `reward.discount` (issue 17: the data, the returns and every
      agent read one discount);
    - `learner.bc_weight` w (sessions 1-7: `policy_loss / mean|Q| + w * MSE`) is
      `td3bc_alpha = 1 / w`, TD3+BC's form of the same objective divided by w (Adam's
      steps do not see the constant factor); w = 0 was Cal-QL's own actor loss, None;
    - the removed options (`REMOVED_LEARNER_OPTIONS`) are dropped; where a run had set one
      otherwise, a note says that this code runs without it."""
    learner = data.get("learner")
    if not isinstance(learner, dict):
        return data
    if "bc_trains_encoder" in learner:
        if learner.pop("bc_trains_encoder") and "bc_encoder_weight" not in learner:
            learner["bc_encoder_weight"] = learner.get("bc_weight", 0.0)
    if "bc_weight" in learner:
        weight = learner.pop("bc_weight")
        learner.setdefault("td3bc_alpha", 1.0 / weight if weight else None)
    if "discount" in learner:
        discount = learner.pop("discount")
        if isinstance(data.get("reward"), dict):
            data["reward"].setdefault("discount", discount)
    fixed_alpha = learner.pop("fixed_alpha", None)
    for name, always in REMOVED_LEARNER_OPTIONS.items():
        if name in learner and learner.pop(name) != always:
            extra = f" (fixed_alpha {fixed_alpha})" if name == "auto_alpha" else ""
            print(f"{where}: learner.{name}{extra} was set, an option removed in issue 17 (RESULTS.md keeps "
                  f"its record); this code runs as with {always!r}", flush=True)
    return data


def to_jsonable(obj: Any, where: str = "config") -> Any:
    """Convert a resolved config (dict, dataclass, tuples, Paths, enums, numpy scalars) to
    plain JSON types; raise naming the offending key for anything else."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return _encode_float(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value, where)
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy / torch scalar
        return to_jsonable(obj.item(), where)
    raise TypeError(f"{where}: value {obj!r} of type {type(obj).__name__} is not JSON-serialisable")


def _encode_float(x: float) -> float | str:
    """Finite floats pass through; NaN/inf become the strings documented above."""
    return x if math.isfinite(x) else _NONFINITE_TO_STR[repr(x)]


def _scalar(key: str, value: Any) -> int | float | bool:
    """A metric value as a Python scalar: accepts int/float/bool, numpy and 0-d torch
    scalars (so `loss.item()` is optional); rejects arrays with the key in the message."""
    if isinstance(value, (bool, int, float)):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return _scalar(key, value.item())
    raise TypeError(f"metric {key!r}: expected a scalar number, got {type(value).__name__} {value!r}")


def encode_row(metrics: Mapping[str, Any], step: int, phase: str, wall_time: float) -> str:
    """One metrics.jsonl line (strict JSON, no trailing newline)."""
    for key in RESERVED_KEYS:
        if key in metrics:
            raise KeyError(f"metric name {key!r} is reserved for the row header {RESERVED_KEYS}")
    row: dict[str, Any] = {"step": int(step), "phase": str(phase), "time": wall_time}
    for key, value in metrics.items():
        v = _scalar(str(key), value)
        row[str(key)] = _encode_float(v) if isinstance(v, float) else v
    return json.dumps(row, allow_nan=False)


def _decode_row(row: dict[str, Any]) -> dict[str, Any]:
    """Inverse of the non-finite encoding for metric values (header keys untouched)."""
    return {
        k: (_STR_TO_NONFINITE[v] if k not in RESERVED_KEYS and isinstance(v, str) and v in _STR_TO_NONFINITE else v)
        for k, v in row.items()
    }


def _parse_lines(path: Path, text: str) -> list[dict[str, Any]]:
    """Parse JSONL text. A last line without a newline that does not parse is the trace of
    a run killed mid-write: it is dropped with a warning. Any other bad line is an error."""
    lines = text.split("\n")
    complete, tail = lines[:-1], lines[-1]  # tail is "" when the text ends with "\n"
    rows = []
    for lineno, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: not a JSON line ({e.msg}): {line[:80]!r}") from e
        if not isinstance(row, dict) or "step" not in row:
            raise ValueError(f"{path}:{lineno}: a metrics row must be an object with a 'step' key: {line[:80]!r}")
        rows.append(row)
    if tail.strip():
        try:
            row = json.loads(tail)
            if not isinstance(row, dict) or "step" not in row:
                raise ValueError
            rows.append(row)
        except ValueError:
            warnings.warn(f"{path}: dropping a truncated last line (run killed mid-write?): {tail[:80]!r}")
    return rows


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All rows of a metrics.jsonl file, in file order, with non-finite values decoded."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics file not found: {path}")
    return [_decode_row(r) for r in _parse_lines(path, path.read_text(encoding="utf-8"))]


def _slug(name: str) -> str:
    """A run name safe as one path component."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    if not slug:
        raise ValueError(f"run name {name!r} has no usable characters for a directory name")
    return slug


def make_run_dir(root: Path, name: str | None = None) -> Path:
    """Create and return a new, unique `root/<YYYYmmdd-HHMMSS>[_<name>][_<n>]` directory.

    Uniqueness comes from `mkdir(exist_ok=False)`, which is atomic, so two runs started in
    the same second (or by two processes) get different directories.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base = datetime.now().strftime("%Y%m%d-%H%M%S") + (f"_{_slug(name)}" if name else "")
    for n in range(10_000):
        candidate = root / (base if n == 0 else f"{base}_{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a unique run directory under {root} for {base!r}")


def _new_wandb_id() -> str:
    """An 8-character lowercase id in wandb's own format (its `generate_id` helper moved
    between wandb versions, so we do not depend on it)."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


class RunLogger:
    """Owns one run directory: config.json, metrics.jsonl and (optionally) a wandb run.

    Usage::

        logger = RunLogger(run_dir, config)
        logger.log({"train/critic_loss": 0.5}, step=100, phase="offline")
        logger.close()

    With `resume=True` an existing metrics.jsonl is kept (call `truncate_after(step)`
    with the checkpoint's step); without it, a non-empty metrics.jsonl is an error so a
    new run never silently appends to an old one.
    """

    def __init__(
        self,
        run_dir: Path,
        config: Mapping[str, Any] | Any,
        wandb_mode: str = "disabled",
        project: str = "calql-robot",
        run_name: str | None = None,
        resume: bool = False,
    ) -> None:
        if wandb_mode not in WANDB_MODES:
            raise ValueError(f"wandb_mode must be one of {WANDB_MODES}, got {wandb_mode!r}")
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / METRICS_FILE
        self.config_path = self.run_dir / CONFIG_FILE
        self.config = to_jsonable(config)
        self.resume = resume
        self._check_metrics_file()
        self._write_config()
        if resume:
            self._drop_partial_tail()
        self.rows = self._count_rows()  # rows in metrics.jsonl: a checkpoint records it
        self._wandb_run = self._init_wandb(wandb_mode, project, run_name)
        self._file: TextIO | None = open(self.metrics_path, "a", encoding="utf-8")

    # ------------------------------------------------------------------ setup
    def _check_metrics_file(self) -> None:
        if not self.resume and self.metrics_path.is_file() and self.metrics_path.stat().st_size > 0:
            raise FileExistsError(
                f"{self.metrics_path} already has rows; pass resume=True to continue that run "
                "or use make_run_dir() for a fresh one"
            )

    def _write_config(self) -> None:
        """Write the resolved config; on resume, warn when it differs from the saved one
        (a resumed run with changed settings is legal but should not go unnoticed)."""
        if self.resume and self.config_path.is_file():
            old = json.loads(self.config_path.read_text(encoding="utf-8"))
            changed = sorted(k for k in set(old) | set(self.config)
                             if k not in DERIVED_KEYS and old.get(k) != self.config.get(k))
            if changed:
                warnings.warn(f"{self.config_path}: resumed with a different config; changed keys: {changed}")
        atomic_write_text(self.config_path, json.dumps(self.config, indent=2, sort_keys=True, allow_nan=False) + "\n")

    def add_derived(self, facts: Mapping[str, Any]) -> None:
        """Add what the run derived from its data (DERIVED_KEYS) to config.json."""
        unknown = sorted(set(facts) - set(DERIVED_KEYS))
        if unknown:
            raise ValueError(f"not derived config keys: {unknown}; known: {list(DERIVED_KEYS)}")
        if facts:
            self.config.update(to_jsonable(dict(facts)))
            atomic_write_text(self.config_path,
                              json.dumps(self.config, indent=2, sort_keys=True, allow_nan=False) + "\n")

    def _drop_partial_tail(self) -> None:
        """A kill mid-write can leave a line without its newline; appending to it would glue
        two rows together. Rewrite the file without it."""
        if not self.metrics_path.is_file():
            return
        text = self.metrics_path.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):
            self._rewrite(_parse_lines(self.metrics_path, text))

    def _count_rows(self) -> int:
        if not self.metrics_path.is_file():
            return 0
        return len(_parse_lines(self.metrics_path, self.metrics_path.read_text(encoding="utf-8")))

    def _init_wandb(self, mode: str, project: str, run_name: str | None) -> Any:
        """Lazy wandb import: a disabled logger never imports wandb. The run id is kept in
        the run dir so a resumed run continues the same wandb run."""
        if mode == "disabled":
            return None
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb  # lazy: only runs that log to wandb load it

        id_path = self.run_dir / WANDB_ID_FILE
        run_id = id_path.read_text().strip() if id_path.is_file() else _new_wandb_id()
        atomic_write_text(id_path, run_id + "\n")
        return wandb.init(
            project=project, name=run_name, id=run_id, resume="allow", mode=mode,
            dir=str(self.run_dir), config=self.config,
        )

    # ---------------------------------------------------------------- logging
    def log(self, metrics: Mapping[str, Any], step: int, phase: str) -> None:
        """Append one row and flush it, so a killed process keeps everything logged so far."""
        if self._file is None:
            raise RuntimeError(f"RunLogger for {self.run_dir} is closed")
        line = encode_row(metrics, step, phase, time.time()) + "\n"
        end = self._file.tell()
        try:
            self._file.write(line)
            self._file.flush()
        except OSError as err:
            self._undo_partial_row(end)
            raise no_space(self.metrics_path) if is_no_space(err) else err
        self.rows += 1
        if self._wandb_run is not None:
            self._wandb_run.log({k: _scalar(k, v) for k, v in metrics.items()}, step=int(step))

    def _undo_partial_row(self, end: int) -> None:
        """After a failed write (a full disk): drop the unwritten rest of the buffer and cut
        the file back to its last whole row, so metrics.jsonl stays valid JSON lines and a
        later close() does not fail again on the same bytes."""
        try:
            self._file.close()
        except OSError:
            pass  # the buffered bytes are the ones that did not fit
        os.truncate(self.metrics_path, end)
        self._file = open(self.metrics_path, "a", encoding="utf-8")

    def truncate_after(self, step: int) -> int:
        """Drop rows with `row["step"] > step` (atomically) and return how many were dropped.

        Called after restoring a checkpoint taken at `step`: rows past it were logged by
        the killed process and will be produced again by the resumed one.
        """
        if self._file is not None:
            self._file.close()
        text = self.metrics_path.read_text(encoding="utf-8") if self.metrics_path.is_file() else ""
        rows = _parse_lines(self.metrics_path, text)
        return self._keep([r for r in rows if r["step"] <= step], len(rows))

    def truncate_rows(self, count: int) -> int:
        """Keep the first `count` rows (atomically) and return how many were dropped: the
        rows a checkpoint recorded (`rows` when it was written); the rest were logged after
        it by a process that did not live to checkpoint them."""
        if self._file is not None:
            self._file.close()
        text = self.metrics_path.read_text(encoding="utf-8") if self.metrics_path.is_file() else ""
        rows = _parse_lines(self.metrics_path, text)
        return self._keep(rows[:max(int(count), 0)], len(rows))

    def _keep(self, kept: list[dict[str, Any]], total: int) -> int:
        """Rewrite the file with `kept` (closed before) and reopen it for appending."""
        self._rewrite(kept)
        self.rows = len(kept)
        if self._file is not None:
            self._file = open(self.metrics_path, "a", encoding="utf-8")
        return total - len(kept)

    def adopt_rows(self, rows: list[dict[str, Any]]) -> None:
        """Start an empty metrics file with another run's rows, as read by `read_metrics`
        (`--run.finetune-from`: the pre-training this run continues)."""
        if self._file is None:
            raise RuntimeError(f"RunLogger for {self.run_dir} is closed")
        if self._file.tell() or (self.metrics_path.is_file() and self.metrics_path.stat().st_size):
            raise RuntimeError(f"{self.metrics_path} already has rows")
        self._file.close()
        atomic_write_text(self.metrics_path, "".join(
            encode_row({k: v for k, v in r.items() if k not in RESERVED_KEYS}, r["step"], r["phase"], r["time"]) + "\n"
            for r in rows))
        self.rows = len(rows)
        self._file = open(self.metrics_path, "a", encoding="utf-8")

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        """Rows are still in their on-disk (encoded) form here, so dumping them is lossless."""
        atomic_write_text(self.metrics_path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in rows))

    def close(self) -> None:
        """Close the metrics file and finish the wandb run; safe to call twice."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._wandb_run is not None:
            self._wandb_run.finish()
            self._wandb_run = None

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
