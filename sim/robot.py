"""The light 5-DOF arm with a parallel gripper: loading, analytic IK, position control.

Why our own arm: SIM.md measured the Panda's meshes at ~17-23 ms per ER_TINY_RENDERER frame
and kuka_iiwa at ~5 ms; both leave too little of the 10 ms/step budget (>= 100 steps/s with
images on one core). `assets/light_arm.urdf` is built from boxes and cylinders only, so the
whole scene renders in ~1-2 ms. The kinematics (yaw, shoulder pitch, elbow pitch, wrist
pitch, wrist roll) can reach any top-down gripper pose with any yaw in the workspace, which
is what the PTR/roboverse WidowX task uses (it only rotates the gripper about z in practice).

IK is closed form (a planar two-link solve plus a wrist that keeps the hand vertical), not
pybullet's iterative `calculateInverseKinematics`: exact, cheap and history-free, which keeps
episodes deterministic given the seed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pybullet as p

ASSET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
ARM_URDF = os.path.join(ASSET_DIR, "light_arm.urdf")

# Geometry, matching assets/light_arm.urdf.
SHOULDER_Z = 0.2  # base 0.1 + column 0.1
UPPER_ARM = 0.32
FOREARM = 0.32
WRIST_TO_EE = 0.11  # wrist link 0.04 + palm-to-grasp-point 0.07
ARM_JOINTS = (0, 1, 2, 3, 4)
FINGER_JOINTS = (5, 6)
EE_LINK = 7
FINGER_OPEN = 0.045  # joint position per finger; gap = 2 q - 0.01 (8 cm open)
FINGER_CLOSED = 0.0
ARM_FORCE = (300.0, 300.0, 300.0, 200.0, 100.0)
FINGER_FORCE = 60.0


@dataclass(frozen=True)
class Workspace:
    """Box the commanded grasp point is clipped to (metres, robot base at the origin)."""

    low: tuple[float, float, float] = (0.22, -0.28, 0.018)
    high: tuple[float, float, float] = (0.6, 0.28, 0.3)

    def clip(self, xyz: np.ndarray) -> np.ndarray:
        return np.clip(xyz, self.low, self.high)


def solve_ik(pos: np.ndarray, yaw: float) -> np.ndarray:
    """Joint angles putting the grasp point at `pos` with the hand pointing down, rotated `yaw`.

    Pitch joints rotate about +y, so a link at summed pitch angle phi points along
    (sin phi, cos phi) in the arm's vertical plane. The hand points down when the three pitch
    angles sum to pi. Elbow-up solution; an out-of-reach wrist point is pulled in to 99.5% of
    full extension so the command saturates instead of failing.
    """
    x, y, z = float(pos[0]), float(pos[1]), float(pos[2])
    q1 = np.arctan2(y, x)
    dx, dz = np.hypot(x, y), z + WRIST_TO_EE - SHOULDER_Z
    dist = np.hypot(dx, dz)
    reach = 0.995 * (UPPER_ARM + FOREARM)
    if dist > reach:
        dx, dz, dist = dx * reach / dist, dz * reach / dist, reach
    cos_q3 = (dist**2 - UPPER_ARM**2 - FOREARM**2) / (2 * UPPER_ARM * FOREARM)
    q3 = np.arccos(np.clip(cos_q3, -1.0, 1.0))
    q2 = np.arctan2(dx, dz) - np.arctan2(FOREARM * np.sin(q3), UPPER_ARM + FOREARM * np.cos(q3))
    q4 = np.pi - q2 - q3
    # The hand's z axis points down, so a wrist roll of +r turns the fingers by -r about world z.
    q5 = _wrap(q1 - yaw)
    return np.array([q1, q2, q3, q4, q5])


def _wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


class Arm:
    """One arm instance in one pybullet client; every call passes that client id."""

    def __init__(self, client: int, workspace: Workspace = Workspace()):
        self.client = client
        self.workspace = workspace
        self.body = p.loadURDF(ARM_URDF, [0, 0, 0], useFixedBase=True, physicsClientId=client)
        for link in FINGER_JOINTS:
            p.changeDynamics(self.body, link, lateralFriction=1.5, spinningFriction=0.01,
                             physicsClientId=client)
        # Couple the fingers (q_left = q_right) like a real parallel gripper: independently
        # force-limited fingers let a held object shift sideways under inertia and get
        # flung by one finger on release.
        gear = p.createConstraint(self.body, FINGER_JOINTS[0], self.body, FINGER_JOINTS[1],
                                  p.JOINT_GEAR, [0, 1, 0], [0, 0, 0], [0, 0, 0],
                                  physicsClientId=client)
        p.changeConstraint(gear, gearRatio=-1.0, maxForce=200, erp=0.2, physicsClientId=client)
        self.target_pos = np.zeros(3)
        self.target_yaw = 0.0
        self.gripper_open = True

    def reset(self, pos: np.ndarray, yaw: float = 0.0) -> None:
        """Teleport to a home pose (no dynamics) and hold it; the gripper starts open."""
        self.target_pos = self.workspace.clip(np.asarray(pos, dtype=np.float64))
        self.target_yaw = yaw
        self.gripper_open = True
        q = solve_ik(self.target_pos, yaw)
        for j, qj in zip(ARM_JOINTS, q):
            p.resetJointState(self.body, j, qj, physicsClientId=self.client)
        for j in FINGER_JOINTS:
            p.resetJointState(self.body, j, FINGER_OPEN, physicsClientId=self.client)
        self.apply()

    def command(self, delta_pos: np.ndarray, delta_yaw: float, gripper: float) -> None:
        """Move the commanded pose by a delta (workspace-clipped) and set the gripper.

        Gripper as in SIM.md (roboverse): > 0.5 opens, < -0.5 closes, otherwise hold.
        Deltas integrate into a commanded target rather than the measured pose, so lag in
        the position controller does not accumulate as drift.
        """
        self.target_pos = self.workspace.clip(self.target_pos + delta_pos)
        self.target_yaw = float(np.clip(self.target_yaw + delta_yaw, -np.pi / 2, np.pi / 2))
        self.gripper_open = bool(gripper_open_after(np.float64(gripper), self.gripper_open))
        self.apply()

    def apply(self) -> None:
        """Send position targets for the arm (from IK) and the fingers."""
        q = solve_ik(self.target_pos, self.target_yaw)
        p.setJointMotorControlArray(self.body, ARM_JOINTS, p.POSITION_CONTROL, targetPositions=q,
                                    forces=ARM_FORCE, positionGains=[0.3] * 5,
                                    physicsClientId=self.client)
        f = FINGER_OPEN if self.gripper_open else FINGER_CLOSED
        p.setJointMotorControlArray(self.body, FINGER_JOINTS, p.POSITION_CONTROL,
                                    targetPositions=[f, f], forces=[FINGER_FORCE] * 2,
                                    positionGains=[0.3] * 2, physicsClientId=self.client)

    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """World position and quaternion (x, y, z, w) of the grasp point."""
        st = p.getLinkState(self.body, EE_LINK, computeForwardKinematics=True,
                            physicsClientId=self.client)
        return np.asarray(st[4]), np.asarray(st[5])

    def finger_positions(self) -> np.ndarray:
        st = p.getJointStates(self.body, FINGER_JOINTS, physicsClientId=self.client)
        return np.array([s[0] for s in st])

    def proprio(self) -> np.ndarray:
        """10-d state of SIM.md: ee position 3, ee quaternion 4, two fingers, gripper-open flag."""
        pos, quat = self.ee_pose()
        flag = np.array([1.0 if self.gripper_open else 0.0])
        return np.concatenate([pos, quat, self.finger_positions(), flag]).astype(np.float32)


GRIPPER_OPEN_ABOVE = 0.5
"""Gripper commands above this open the hand, below its negative close it, between: hold."""


def gripper_open_after(command: np.ndarray, open_before: np.ndarray | bool) -> np.ndarray:
    """Whether the hand is open after each gripper command (SIM.md / roboverse semantics).

    Vectorised over steps so that datasets can be rewritten with it: `Arm.command` uses the
    same function, so an offline action mapped with `binary_gripper_command` has exactly the
    effect in the env that the recorded one had.
    """
    command = np.asarray(command)
    keep = np.asarray(open_before, dtype=bool)
    return np.where(command > GRIPPER_OPEN_ABOVE, True, np.where(command < -GRIPPER_OPEN_ABOVE, False, keep))


def binary_gripper_command(command: np.ndarray, open_before: np.ndarray) -> np.ndarray:
    """The binary command (+1 open, -1 close) with the same effect as each recorded command.

    A "hold" command (|g| <= 0.5) keeps the hand as it was, which is what +1 does to an open
    hand and -1 to a closed one; so the gripper of every stored transition becomes one of
    two values without changing what happened. Used by learners that treat the gripper as a
    discrete action (`LearnerConfig.discrete_gripper`).
    """
    return np.where(gripper_open_after(command, open_before), 1.0, -1.0).astype(np.float32)

