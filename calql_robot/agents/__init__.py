"""Agents: one module per method, one interface (`update`, `act`, `set_online`, `settings`,
`state_dict`, `load_state_dict`). Cal-QL and CQL are `calql_robot.agents.calql_learner.CalQLLearner`
(CQL is Cal-QL with `calql_bound=False`); behaviour cloning is `agents.bc`."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from calql_robot.agents.bc import BCConfig, BCLearner
from calql_robot.config import LearnerConfig
from calql_robot.agents.calql_learner import CalQLLearner

Algo = Literal["calql", "bc"]
ALGOS: tuple[str, ...] = ("calql", "bc")


def make_learner(algo: str, learner_cfg: LearnerConfig, bc_cfg: BCConfig, feature_dim: int, action_dim: int,
                 encoder: nn.Module | None = None, augment: nn.Module | None = None,
                 device: str | torch.device = "cpu") -> CalQLLearner | BCLearner:
    """The learner of `--algo` (CQL: `--algo calql --learner.no-calql-bound`)."""
    if algo == "calql":
        return CalQLLearner(learner_cfg, feature_dim, action_dim, encoder, augment, device)
    if algo == "bc":
        return BCLearner(bc_cfg, learner_cfg, feature_dim, action_dim, encoder, augment, device)
    raise ValueError(f"--algo must be one of {', '.join(ALGOS)}, got {algo!r}")
