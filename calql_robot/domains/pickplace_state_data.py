"""The state task's scripted episodes, collected once per settings and kept as an HDF5 file.

Every state run needs the same 1,000 scripted episodes for a given seed, and collecting them
took ~35-50 s of one core per run (1,000 episodes, one worker; BENCHMARKS.md): 8% of a Cal-QL
run, a third of an IQL or SAC one, and it was repeated by every cell of a sweep and by both
runs of the learning guard. The episodes now go to `datasets/pickplace_state_<hash>.hdf5` in
the project's episode format (`data/episodes_hdf5.py`, as the visual domain's cache does) and
later runs read them back. Read back they are the very arrays that were collected (float32
observations, actions and rewards, bool flags), so a run is the same, bit for bit, whether
its data came from the simulator or the file (`tests/test_state_data_cache.py`).

The file's name is a hash of everything that decides the episodes: the task, the collection
settings, the seed and the source of `sim/` (the simulator and the scripted policy), so an
edit of the simulator never reuses data it did not make. A cache that cannot be written (a
read-only or full disk) is reported in one line and the run goes on with the episodes in
memory; a cached file that does not read back is collected again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from calql_robot.domains.pickplace_data import CACHE_DIR, HASH_CHARS
from calql_robot.run.provenance import provenance
from data.episodes_hdf5 import DatasetFormatError, read_episodes, write_episodes

SIM_DIR = Path(__file__).resolve().parents[2] / "sim"


def sim_source_digest() -> str:
    """SHA-256 of the simulator package's Python sources, in name order."""
    digest = hashlib.sha256()
    for path in sorted(SIM_DIR.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def collection_key(task: tuple[int, int], episodes: int, noise: float, p_wrong: float, p_drop: float,
                   seed: int) -> dict[str, Any]:
    """What decides the episodes (stored in the file and compared on reading)."""
    key = {"env": "PickPlaceState-v0", "task": list(task), "episodes": episodes, "noise": noise,
           "p_wrong": p_wrong, "p_drop": p_drop, "seed": seed, "sim_source": sim_source_digest()}
    return json.loads(json.dumps(key))


def cache_path(key: dict[str, Any], cache_dir: Path | None = None) -> Path:
    """CACHE_DIR/pickplace_state_<hash of the key>.hdf5 (or under `cache_dir`)."""
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:HASH_CHARS]
    return (CACHE_DIR if cache_dir is None else cache_dir) / f"pickplace_state_{name}.hdf5"


def state_episodes(task: tuple[int, int], episodes: int, *, noise: float, p_wrong: float, p_drop: float,
                   seed: int, workers: int, progress: bool, cache_dir: Path | None = None) -> list[dict]:
    """The scripted episodes of `sim.collect.collect_episodes(..., privileged=True)`, read
    from the cache when it holds them, else collected and cached. `cache_dir` defaults to
    the runs' relative `datasets/` (CACHE_DIR); a caller whose cwd is not the runs' (the
    learning guard's fixture) names the folder instead."""
    key = collection_key(task, episodes, noise, p_wrong, p_drop, seed)
    path = cache_path(key, cache_dir)
    cached = _read(path, key)
    if cached is not None:
        print(f"offline data: read from {path}", flush=True)
        return cached
    from sim.collect import collect_episodes

    collected = collect_episodes([task], episodes, noise=noise, p_wrong=p_wrong, p_drop=p_drop, seed=seed,
                                 workers=workers, privileged=True, progress=progress)
    try:
        write_episodes(path, collected, {"collection_config": key, "provenance": provenance()})
    except OSError as err:  # the run does not need the file, only later runs would
        print(f"warning: the collected data were not cached at {path} ({err.strerror or err}); "
              f"the run goes on", flush=True)
    return collected


def _read(path: Path, key: dict[str, Any]) -> list[dict] | None:
    """The cached episodes, or None when there is no usable file for `key`."""
    if not path.is_file():
        return None
    try:
        data = read_episodes(path)
    except DatasetFormatError as err:
        print(f"warning: {err}; collecting the data again", flush=True)
        return None
    if data.attrs.get("collection_config") != key or data.num_episodes != key["episodes"]:
        return None
    return data.to_episodes()
