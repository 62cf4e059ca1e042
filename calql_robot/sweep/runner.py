"""Running a sweep's cells on Ray: a local instance by default, a cluster by address.

Why Ray: a grid of 5-30 minute runs needs a scheduler that packs cells onto cores (and
GPUs) and, where one machine is not enough, spreads them over several; Ray does both with
the same code (`ray.init(num_cpus=N)` here, `ray.init(address=...)` on a cluster), so the
project writes no scheduler of its own.

Each cell is one Ray task that runs the entry point as a child process (`python
train_*.py ...`), reserving `cpus_per_cell` CPUs (the run's torch threads: cells never
oversubscribe the cores) and `gpus_per_cell` GPUs. A fractional GPU share is a scheduling
hint to Ray, not memory isolation: two cells on one GPU share its memory. When the
driver is killed, Ray ends its workers and their children with them (seen here: no cell
outlived a SIGKILLed driver, and none had time to write a checkpoint of its own); the child
also asks for SIGTERM when its worker dies (Linux `PR_SET_PDEATHSIG`) as a second guard.
The re-run resumes each cell from its latest periodic checkpoint (`tests/test_sweep.py`).
A local instance's cells run at sweep.py's own niceness, not Ray's +15 (`_worker_niceness`).

On a cluster every node must see the repository and `--out` at the same paths (a shared
filesystem); the cells' commands are relative to the repository root.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from calql_robot.sweep.grid import Cell, progress_of
from calql_robot.sweep.record import SweepRecord

ROOT = Path(__file__).resolve().parents[2]
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent (the Ray worker) exits."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux: the child outlives a killed worker, and its run lock names it on re-run


NICENESS_ENV = "RAY_worker_niceness"
"""Ray's setting for how much its workers add to the raylet's niceness (default 15)."""


@contextlib.contextmanager
def _worker_niceness() -> Iterator[None]:
    """Start a local Ray instance whose workers run at sweep.py's own niceness.

    Ray starts its task workers at niceness +15 by default, so a local sweep's cells yielded
    the CPU to anything else on the machine (a user's tests slowed a sweep without warning,
    and the sweep's walls depended on it; BENCHMARKS.md, session 12). The increment is set
    to 0 for the instance's start unless the user set RAY_worker_niceness; `nice -n 10
    python sweep.py ...` still makes a polite sweep. A cluster (`--address`) keeps the
    niceness it was started with."""
    if NICENESS_ENV in os.environ:  # the user's own choice
        yield
        return
    os.environ[NICENESS_ENV] = "0"
    try:
        yield
    finally:
        os.environ.pop(NICENESS_ENV, None)


def run_cell_process(argv: list[str], log: str, threads: int) -> dict[str, Any]:
    """Run one cell's command to its end (the body of the Ray task). Returns the exit code,
    the entry point's one-line error (`error: ...`; else its output's last line) and wall."""
    start = time.time()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"$ python {' '.join(argv)}\n")
        out.flush()
        proc = subprocess.run([sys.executable, *argv], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env,
                              preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    lines = [line for line in Path(log).read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("error: ", "stopped: "))]  # cli_main's one line
    last = errors[-1] if errors else lines[-1] if lines else ""
    return {"returncode": proc.returncode, "last_line": last, "wall_s": time.time() - start}


def format_progress(cell: Cell, now: dict[str, Any]) -> str:
    """One progress line: algo, task, seed, phase, step of total, last success, ETA."""
    done = now["step"] / now["total"] if now["total"] else 0.0
    eta = now["wall_s"] * (1 - done) / done if done > 0 else None
    success = "-" if now["success"] is None else f"{now['success']:.2f}"
    eta_text = "?" if eta is None else f"{eta / 60:.0f} min" if eta >= 90 else f"{eta:.0f} s"
    return (f"  {cell.algo:<12} {cell.task:<18} seed {cell.seed:<3} {now['phase']:<7} step {now['step']}/{now['total']}"
            f"  success {success}  ETA {eta_text}")


def run_sweep(cells: list[Cell], record: SweepRecord, *, address: str | None, num_cpus: int | None,
              cpus_per_cell: int, gpus_per_cell: float, poll_s: float) -> dict[str, int]:
    """Run every unfinished cell to its end; return the final counts of cell states.
    Finished cells (their run wrote summary.json) are skipped; started ones resume; a
    failing cell is recorded with its one-line error and the others go on."""
    import ray  # the runner's dependency only

    todo = []
    for cell in cells:
        if cell.finished():
            record.set(cell, "done")
        else:
            record.set(cell, "pending")
            todo.append(cell)
    record.write()
    print(f"sweep: {len(cells)} cells, {len(cells) - len(todo)} finished before, {len(todo)} to run", flush=True)
    if not todo:
        return record.counts()
    if address:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    else:
        with _worker_niceness():
            ray.init(num_cpus=num_cpus, num_gpus=None, include_dashboard=False, log_to_driver=False)
    task = ray.remote(run_cell_process).options(num_cpus=cpus_per_cell, num_gpus=gpus_per_cell, max_retries=0)
    slots = cell_slots(ray.cluster_resources(), cpus_per_cell, gpus_per_cell)
    queue, refs = list(todo), {}
    last_poll = time.time()
    try:
        while queue or refs:
            while len(refs) < slots:
                cell = next_cell(queue, {c.key for c in queue} | {c.key for c in refs.values()})
                if cell is None:
                    break
                queue.remove(cell)
                failed = record.data["cells"].get(cell.source or "", {}).get("state") == "failed"
                if failed:  # a fork whose pre-training failed has nothing to fine-tune
                    record.set(cell, "failed", error=f"error: its pre-training {cell.source} failed")
                    print(f"FAILED {cell.key}: its pre-training {cell.source} failed", flush=True)
                    continue
                refs[task.remote(cell.argv(), str(cell.log), cpus_per_cell)] = cell
            if not refs:
                break
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=poll_s)
            for ref in ready:
                cell = refs.pop(ref)
                _finish(cell, ref, record, ray)
            for cell in refs.values():
                if cell.started() and record.data["cells"][cell.key]["state"] == "pending":
                    record.set(cell, "running")
            record.write()
            if time.time() - last_poll >= poll_s or not ready:
                last_poll = time.time()
                _print_progress(list(refs.values()), record)
    finally:
        ray.shutdown()
    return record.counts()


def cell_slots(resources: dict[str, float], cpus_per_cell: int, gpus_per_cell: float) -> int:
    """How many cells run at once: what the instance's CPUs (and GPUs, when cells ask for
    them) hold. The driver submits no more than that, so cells start in grid order rather
    than in whatever order Ray takes queued tasks (it does not promise FIFO)."""
    slots = int(resources.get("CPU", 0) // cpus_per_cell)
    if gpus_per_cell > 0:
        slots = min(slots, int(resources.get("GPU", 0) // gpus_per_cell))
    return max(1, slots)


def next_cell(queue: list[Cell], unfinished: set[str]) -> Cell | None:
    """The first queued cell that can start: a fork only once its source has ended."""
    return next((cell for cell in queue if cell.source is None or cell.source not in unfinished), None)


def _finish(cell: Cell, ref: Any, record: SweepRecord, ray: Any) -> None:
    try:
        result = ray.get(ref)
    except Exception as err:  # the worker died (out of memory, node lost): the cell failed, the sweep goes on
        line = str(err).strip().splitlines()
        record.set(cell, "failed", error=line[-1] if line else type(err).__name__)
        print(f"FAILED {cell.key}: {record.data['cells'][cell.key]['error']}", flush=True)
        return
    if result["returncode"] == 0 and cell.finished():
        record.set(cell, "done", wall_s=round(result["wall_s"], 1))
        print(f"done   {cell.key} ({result['wall_s'] / 60:.1f} min)", flush=True)
    else:
        record.set(cell, "failed", error=result["last_line"], returncode=result["returncode"])
        print(f"FAILED {cell.key}: {result['last_line']} (log: {cell.log})", flush=True)


def _print_progress(cells: list[Cell], record: SweepRecord) -> None:
    counts = record.counts()
    print(f"sweep: {counts['done']} done, {counts['running']} running, {counts['pending']} pending, "
          f"{counts['failed']} failed", flush=True)
    for cell in cells:
        if cell.started() and not cell.finished():
            try:
                print(format_progress(cell, progress_of(cell)), flush=True)
            except (OSError, ValueError, KeyError):
                continue  # a run directory caught mid-write: the next poll reads it
