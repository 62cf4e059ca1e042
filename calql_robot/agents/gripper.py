"""A binary gripper chosen by the critic: the hybrid action (continuous arm, discrete gripper).

Why: with the gripper as one more tanh-Gaussian dimension, offline data hold it near +-0.9
only; the CQL regulariser pushes the Q-values of the unseen middle down, the critic's Q
along g gets a dip between "open" and "close", and an actor that follows the critic's local
gradient stays on the side it started on (SPEC section 8: the offline policy brought the hand
to the cube and never closed). HIL-SERL (Luo et al. 2024) meets the same problem with a
separate discrete gripper critic beside SAC; here the one critic ensemble scores both
gripper values and the policy takes the better one:

    pi(a_arm, g | s) = pi_theta(a_arm | s) * 1[g = g*(s, a_arm)],
    g*(s, a_arm) = argmax_{g in {-1, +1}} min_i Q_i(s, a_arm, g).

The actor outputs the arm dims only; its log-density is that of a_arm (the gripper part is
deterministic: mass 1 on g*). Every place that uses a policy action takes g* (policy loss,
max backup, evaluation, online collection); the CQL regulariser sums over both gripper
values exactly (see `calql_robot.agents.calql.compute_losses`). Gripper values are -1 (close) and
+1 (open), the env's binary commands (`sim.robot.binary_gripper_command`).
"""

from __future__ import annotations

import torch

CLOSE, OPEN = -1.0, 1.0


def with_gripper(arm: torch.Tensor, value: float) -> torch.Tensor:
    """(..., A-1) arm actions -> (..., A) with the gripper dim set to `value`."""
    return torch.cat([arm, arm.new_full((*arm.shape[:-1], 1), value)], dim=-1)


def both_grippers(arm: torch.Tensor) -> torch.Tensor:
    """(M, B, A-1) -> (2M, B, A): the M arm actions with g = -1, then the same with g = +1."""
    return torch.cat([with_gripper(arm, CLOSE), with_gripper(arm, OPEN)], dim=0)


def open_is_better(q_both: torch.Tensor) -> torch.Tensor:
    """(E, 2M, B) critic values of `both_grippers` -> (M, B) bool: g* = +1 (ties close).

    The choice uses the min over the ensemble, as the policy loss and the backup do."""
    q_min = q_both.detach().min(dim=0).values
    m = q_min.shape[0] // 2
    return q_min[m:] > q_min[:m]


def greedy_values(q_both: torch.Tensor) -> torch.Tensor:
    """(E, 2M, B) -> (E, M, B): each critic's value at the greedy gripper g*."""
    m = q_both.shape[1] // 2
    return torch.where(open_is_better(q_both), q_both[:, m:], q_both[:, :m])


def greedy_mask(q_both: torch.Tensor) -> torch.Tensor:
    """(E, 2M, B) -> (2M, B) bool: which of the enumerated columns are the policy's action."""
    better = open_is_better(q_both)
    return torch.cat([~better, better], dim=0)


def greedy_actions(arm: torch.Tensor, q_both: torch.Tensor) -> torch.Tensor:
    """(M, B, A-1) arm actions and their `both_grippers` values -> (M, B, A) with g*."""
    g = torch.where(open_is_better(q_both), OPEN, CLOSE).to(arm.dtype)
    return torch.cat([arm, g.unsqueeze(-1)], dim=-1)


def snap(actions: torch.Tensor) -> torch.Tensor:
    """Data actions with the gripper dim as exactly -1 / +1 (sign; 0 counts as open).

    Offline data are rewritten with the env's semantics before they reach the buffer
    (`sim.pickplace_env.binary_gripper_actions`, which maps "hold" by the hand's state);
    this only guards against values that were not."""
    g = torch.where(actions[..., -1:] >= 0, OPEN, CLOSE).to(actions.dtype)
    return torch.cat([actions[..., :-1], g], dim=-1)
