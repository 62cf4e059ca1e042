"""Offline/online batch mixing for online fine-tuning (SPEC.md section 3).

Official Cal-QL keeps two buffers: the offline dataset and the online buffer (online data
only). Each online update draws ``round(batch_size * m)`` transitions from the offline buffer
and the rest from the online one. ``m = -1`` means "one pool": the offline and online data
form a single dataset sampled uniformly, i.e. the expected offline share is
``N_off / (N_off + N_on)`` and varies per batch like the binomial it is.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from data.replay import EpisodeReplayBuffer

ONE_POOL = -1.0
"""The ratio value that selects one-pool sampling (SPEC section 3, Kitchen's -1 setting)."""


def sample_mixed(offline: EpisodeReplayBuffer, online: EpisodeReplayBuffer, batch_size: int,
                 ratio: float, rng: np.random.Generator, context: int = 1) -> dict[str, Any]:
    """Batch of ``batch_size`` transitions mixed from the two buffers.

    ``ratio`` in [0, 1]: exactly ``round(batch_size * ratio)`` offline (Python's round, ties
    to even) and the rest online; if the online buffer is empty the whole batch is offline
    (the first online episode has not been collected yet). ``ratio == -1``: indices uniform
    over the union of both buffers' transitions.

    Returns the batch layout of :meth:`EpisodeReplayBuffer.sample` with offline rows first,
    then online rows (dict observations concatenated key by key), plus ``n_offline`` (int):
    the first ``n_offline`` rows came from the offline buffer, the rest from the online one.
    ``context=K > 1``: each row is a window of K steps starting at the drawn transition
    (:meth:`EpisodeReplayBuffer.sample_windows`), drawn the same way.
    """
    off_idx, on_idx = _draw_indices(len(offline), len(online), int(batch_size), ratio, rng)

    def take(buffer: EpisodeReplayBuffer, idx: np.ndarray) -> dict[str, Any]:
        return buffer.sample_indices(idx) if context == 1 else buffer.sample_windows(idx, context)

    parts = []
    if off_idx.size:
        parts.append(take(offline, off_idx))
    if on_idx.size:
        parts.append(take(online, on_idx))
    batch = parts[0] if len(parts) == 1 else _concat(parts[0], parts[1])
    batch["n_offline"] = int(off_idx.size)
    return batch


def _draw_indices(size_off: int, size_on: int, batch_size: int, ratio: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Transition indices to take from each buffer; validates every argument."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"sample_mixed: rng must be a numpy Generator, got "
                        f"{type(rng).__name__}")
    if batch_size < 1:
        raise ValueError(f"sample_mixed: batch_size must be >= 1, got {batch_size}")
    ratio = float(ratio)
    if ratio != ONE_POOL and not 0.0 <= ratio <= 1.0:
        raise ValueError(f"sample_mixed: ratio must be in [0, 1] or -1 (one pool), got {ratio}")
    if size_off + size_on == 0:
        raise ValueError("sample_mixed: both buffers are empty")
    if ratio == ONE_POOL:
        # Indices into the concatenation [offline, online]; the first size_off are offline.
        pooled = rng.integers(0, size_off + size_on, size=batch_size)
        return pooled[pooled < size_off], pooled[pooled >= size_off] - size_off
    n_off = batch_size if size_on == 0 else round(batch_size * ratio)
    if n_off > 0 and size_off == 0:
        raise ValueError(f"sample_mixed: ratio {ratio} asks for {n_off} offline transitions "
                         f"but the offline buffer is empty")
    return (rng.integers(0, size_off, size=n_off) if n_off else np.zeros(0, np.int64),
            rng.integers(0, size_on, size=batch_size - n_off))


def _concat(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Concatenate two batches key by key (dict observations too)."""
    out = {}
    for key, va in a.items():
        vb = b[key]
        if isinstance(va, dict):
            if set(va) != set(vb):
                raise ValueError(f"sample_mixed: '{key}' keys differ between buffers: "
                                 f"{sorted(va)} vs {sorted(vb)}")
            out[key] = {k: np.concatenate([va[k], vb[k]]) for k in va}
        else:
            out[key] = np.concatenate([va, vb])
    return out
