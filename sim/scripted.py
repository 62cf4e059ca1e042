"""Scripted pick-and-place policy: the data source of PTR-style pre-training (SIM.md).

A state machine as in roboverse's scripted grasp/place policies: approach above the
object (turning to its grasp yaw), descend, close, lift, move above the bin, open. It reads
privileged state from the env (object poses, bin position, the arm's commanded pose),
which is fine for data collection. Failure knobs as in PTR's datasets:
- `noise`: Gaussian noise std added to every action dim; the clean action is clipped to
  +-0.9 first (roboverse) and the final action to [-1, 1];
- `p_wrong`: with this probability the episode grasps (and bins) the distractor instead;
- `p_drop`: with this probability the gripper opens at a uniformly random point of the
  transport to the bin.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.pickplace_env import PickPlaceEnv

HOVER_Z = 0.09  # grasp-point height before descending
CARRY_Z = 0.13  # carried object clears the bin walls (4 cm) and the other object
LIFT_BEFORE_MOVE_Z = 0.08  # lift straight up to here before moving sideways
MIN_GRASP_Z = 0.018
XY_TOL, Z_TOL, YAW_TOL = 0.008, 0.008, 0.08
CLOSE_STEPS, OPEN_STEPS = 2, 2
CLEAN_CLIP = 0.9

APPROACH, DESCEND, CLOSE, CARRY, RELEASE, DONE = range(6)


@dataclass
class ScriptedConfig:
    """Noise and failure-mode knobs (SIM.md: PTR used std 0.1 plus drop/wrong-object variants)."""

    noise: float = 0.0
    p_wrong: float = 0.0
    p_drop: float = 0.0

    def __post_init__(self) -> None:
        if self.noise < 0 or not (0 <= self.p_wrong <= 1) or not (0 <= self.p_drop <= 1):
            raise ValueError(f"sim/scripted.py: need noise >= 0 and probabilities in [0, 1], "
                             f"got {self}")


class ScriptedPolicy:
    """Call `reset(env, rng)` after every env.reset, then `act()` once per step."""

    def __init__(self, cfg: ScriptedConfig = ScriptedConfig()):
        self.cfg = cfg
        self.env: PickPlaceEnv | None = None
        self.rng = np.random.default_rng(0)
        self.phase, self.count = APPROACH, 0
        self.obj_name = "target"
        self.drop_at: float | None = None
        self.carry_start = np.zeros(2)

    def reset(self, env, rng: np.random.Generator, force_object: str | None = None) -> None:
        """Start a new episode. `force_object` ('target'/'distractor') overrides p_wrong."""
        self.env = env.unwrapped
        self.rng = rng
        self.phase, self.count = APPROACH, 0
        wrong = rng.random() < self.cfg.p_wrong
        self.obj_name = force_object or ("distractor" if wrong else "target")
        drop = rng.random() < self.cfg.p_drop
        self.drop_at = float(rng.uniform(0.05, 0.95)) if drop else None

    def act(self) -> np.ndarray:
        """Clean state-machine action plus noise, in [-1, 1]^7."""
        clean = np.clip(self._clean_action(), -CLEAN_CLIP, CLEAN_CLIP)
        noisy = clean + self.cfg.noise * self.rng.standard_normal(7)
        return np.clip(noisy, -1.0, 1.0).astype(np.float32)

    # ------------------------------------------------------------------
    def _clean_action(self) -> np.ndarray:
        env = self.env
        cmd, yaw = env.arm.target_pos, env.arm.target_yaw
        pos, obj_yaw = env.object_pose(self.obj_name)
        want_yaw = grasp_yaw(env.object_spec(self.obj_name), obj_yaw, yaw)
        bin_xyz = np.array([env.bin_xy[0], env.bin_xy[1], CARRY_Z])
        grip = 1.0
        self._advance(cmd, yaw, pos, want_yaw, bin_xyz)
        if self.phase in (APPROACH, DONE):
            goal = np.array([pos[0], pos[1], HOVER_Z]) if self.phase == APPROACH else cmd
        elif self.phase == DESCEND:
            goal = np.array([pos[0], pos[1], max(pos[2] - 0.005, MIN_GRASP_Z)])
        elif self.phase == CLOSE:
            goal, grip = cmd, -1.0
        elif self.phase == CARRY:
            goal, grip = bin_xyz.copy(), -1.0
            if cmd[2] < LIFT_BEFORE_MOVE_Z:
                goal[:2] = cmd[:2]
        else:  # RELEASE
            goal = cmd
        if self.phase not in (APPROACH, DESCEND):
            want_yaw = yaw
        return self._to_action(goal - cmd, want_yaw - yaw, grip)

    def _advance(self, cmd: np.ndarray, yaw: float, pos: np.ndarray, want_yaw: float,
                 bin_xyz: np.ndarray) -> None:
        """Phase transitions, checked against the commanded pose (the arm tracks it)."""
        self.count += 1
        xy_err = np.linalg.norm(cmd[:2] - pos[:2])
        if self.phase == APPROACH and xy_err < XY_TOL and abs(want_yaw - yaw) < YAW_TOL:
            self._enter(DESCEND)
        elif self.phase == DESCEND and cmd[2] <= max(pos[2] - 0.005, MIN_GRASP_Z) + Z_TOL:
            self._enter(CLOSE)
        elif self.phase == CLOSE and self.count > CLOSE_STEPS:
            self._enter(CARRY)
            self.carry_start = cmd[:2].copy()
        elif self.phase == CARRY:
            if self._should_drop(cmd, bin_xyz):
                self._enter(RELEASE)
            elif np.linalg.norm(cmd[:2] - bin_xyz[:2]) < XY_TOL and cmd[2] > CARRY_Z - Z_TOL:
                self._enter(RELEASE)
        elif self.phase == RELEASE and self.count > OPEN_STEPS:
            self._enter(DONE)

    def _should_drop(self, cmd: np.ndarray, bin_xyz: np.ndarray) -> bool:
        if self.drop_at is None:
            return False
        total = np.linalg.norm(bin_xyz[:2] - self.carry_start) + 1e-6
        progress = 1.0 - np.linalg.norm(bin_xyz[:2] - cmd[:2]) / total
        return progress >= self.drop_at

    def _enter(self, phase: int) -> None:
        self.phase, self.count = phase, 1

    def _to_action(self, delta: np.ndarray, dyaw: float, grip: float) -> np.ndarray:
        env = self.env
        a = np.zeros(7)
        a[:3] = delta / env.action_scale
        a[5] = dyaw / env.yaw_scale
        a[6] = grip
        return a


def grasp_yaw(spec, obj_yaw: float, current: float) -> float:
    """Gripper yaw that grasps `spec` at heading `obj_yaw`, the symmetric copy nearest zero.

    Round objects (period 0) keep the current yaw. The commanded yaw lives in [-pi/2, pi/2]
    (the fingers are symmetric under pi), so we fold into +-period/2.
    """
    if spec.grasp_period == 0.0:
        return current
    per = spec.grasp_period
    return float((obj_yaw + spec.grasp_yaw + per / 2) % per - per / 2)
