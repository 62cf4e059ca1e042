"""What every domain hands the experiment: `Domain` (an env factory, the filled offline
buffer, the encoder slot), and `obs_spec_of`, the replay buffer's view of an env's
observation space. Domains import this file; nothing here imports a domain."""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable

import gymnasium as gym
import numpy as np
from torch import nn

from calql_robot.errors import DatasetError
from data.replay import EpisodeReplayBuffer
from data.suspicious import ActionRangeError
from encoders.normalize import ObsNormalizer

ACTIONS_FLAG = "--out-of-range-actions"
"""The flag (field `out_of_range_actions`) that lets a dataset's actions outside [-1, 1]
through, clipped or rescaled (data/suspicious.py); without it they stop the run."""


@dataclass
class Domain:
    """What differs between domains."""

    make_env: Callable[[], gym.Env]
    offline: EpisodeReplayBuffer
    feature_dim: int
    encoder: nn.Module | None = None
    augment: nn.Module | None = None
    record: dict[str, Any] = field(default_factory=dict)
    """Facts the domain derived from its data (e.g. `obs_normalization`), added to config.json."""


def obs_spec_of(space: gym.Space) -> Any:
    """The replay buffer's observation spec for a Box or a Dict of Boxes."""
    if isinstance(space, gym.spaces.Dict):
        return {k: (tuple(s.shape), s.dtype) for k, s in space.spaces.items()}
    if isinstance(space, gym.spaces.Box):
        return (tuple(space.shape), np.dtype(np.float32))
    raise TypeError(f"observation space {space} is neither a Box nor a Dict of Boxes")


def vector_rollout_modules(cfg: Any, env: gym.Env) -> tuple[ObsNormalizer | None, int]:
    """(encoder slot, feature_dim) of a vector-observation run rebuilt for a rollout (the
    pick-and-place state domain and the registry tasks): an observation normaliser when the
    run standardised observations (`cfg.normalize_obs`), whose placeholder statistics the
    checkpoint's encoder buffers overwrite."""
    dim = int(env.observation_space.shape[0])
    return (ObsNormalizer.identity(dim) if cfg.normalize_obs else None), dim


@contextmanager
def naming_the_action_flag() -> Iterator[None]:
    """A reader's refusal of actions outside [-1, 1] as a one-line DatasetError whose hint
    names the flag that accepts them, and what each choice does."""
    try:
        yield
    except ActionRangeError as err:
        raise DatasetError(str(err), f"if that is how the data are meant, pass {ACTIONS_FLAG} clip (clip them to "
                                     f"[-1, 1]) or {ACTIONS_FLAG} rescale (divide them all by their largest |a|)"
                           ) from err
