"""PTR-style pick-and-place (SIM.md): put target object i in the bin with distractor j present.

Follows the roboverse/PTR WidowX task where it matters for learning: 7-D action in [-1, 1]
(xyz delta, euler delta, discrete gripper), sparse +1 reward and termination when the
target rests in the bin, nothing for the distractor, 40-step TimeLimit (added by
`make_pickplace` / the registry), RGB image + 10-d proprio + task one-hot observation.

Where it differs, and why:
- Arm: our own light 5-DOF arm (sim/robot.py) instead of a WidowX/Panda mesh model, so a
  64 px frame renders in ~0.2 ms (SIM.md: the Panda costs ~20 ms per frame).
- Motion scale: 4 cm of commanded grasp-point motion per unit action (SIM.md's roboverse
  scales by 0.2 m, but its controller cannot cover that in one step either); with 10
  substeps of 1/240 s the position controller tracks a 4 cm command within a step, so the
  action means what it says. Yaw: 20 deg per unit as in roboverse; the roll/pitch action
  dims are accepted and ignored (the hand always points down, as in PTR's scripted data).
- The bin is 11 cm inside (SIM.md: ~8.4 cm) because our objects are up to 6 cm long.

One pybullet DIRECT client per instance; `reset` rebuilds the scene with
`resetSimulation`, so an episode depends only on the reset seed and the actions (no
contact caches or solver warm starts carried over from the previous episode).
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pybullet as p
from gymnasium import spaces

from sim import objects as obj
from sim.robot import Arm, Workspace

PHYSICS_DT = 1.0 / 240.0
STATE_DIM = 10
TASK_DIM = 2 * obj.N_TASK_OBJECTS
PRIVILEGED_DIM = STATE_DIM + 9 + TASK_DIM
HOME_POS = np.array([0.33, 0.0, 0.2])
# Object and bin centres are drawn from this box (within the arm's reach, inside the
# camera view); minimum centre distances keep objects apart and out of the bin.
SPAWN_LOW = np.array([0.3, -0.2])
SPAWN_HIGH = np.array([0.54, 0.2])
MIN_OBJ_DIST = 0.09
MIN_BIN_DIST = 0.14
SUCCESS_Z = obj.BIN_WALL_HEIGHT + 0.01  # object centre below the top of the walls


class PickPlaceEnv(gym.Env):
    """The pick-and-place task; see the module docstring for the reference and deviations.

    image_size: observation image side in pixels. Default 64: between COG's 48 and PTR's
        128 px (SIM.md); 4 cm objects stay ~5 px wide while the conv encoder's cost (which
        scales with pixels) stays ~4x below 128 px.
    privileged: if True no image is rendered and the observation is a flat float32 vector
        proprio(10) ++ target xyz ++ distractor xyz ++ bin xyz ++ task one-hot(10), for
        fast state-based experiments.
    render_size: side of the frames returned by `render()` (videos), same camera.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, target: int = 0, distractor: int = 0, image_size: int = 64,
                 privileged: bool = False, render_size: int = 256,
                 render_mode: str | None = None, substeps: int = 10,
                 action_scale: float = 0.04, yaw_scale: float = np.deg2rad(20.0)):
        self.task = _check_task((target, distractor))
        if image_size < 8 or render_size < 8:
            raise ValueError(f"sim/pickplace_env.py: image_size={image_size} and "
                             f"render_size={render_size} must be >= 8")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"sim/pickplace_env.py: render_mode={render_mode!r} unsupported")
        self.image_size, self.render_size = int(image_size), int(render_size)
        self.privileged, self.render_mode = privileged, render_mode
        self.substeps, self.action_scale, self.yaw_scale = substeps, action_scale, yaw_scale
        self.action_space = spaces.Box(-1.0, 1.0, (7,), np.float32)
        self.observation_space = _observation_space(privileged, self.image_size)
        self.client = p.connect(p.DIRECT)
        # Fixed camera, computed once: in front of the table looking back at the arm.
        self._view = p.computeViewMatrixFromYawPitchRoll(
            [0.4, 0.0, 0.06], 0.7, 90.0, -40.0, 0.0, 2, physicsClientId=self.client)
        self._proj = p.computeProjectionMatrixFOV(52.0, 1.0, 0.05, 3.0,
                                                  physicsClientId=self.client)
        self.arm: Arm | None = None
        self.bodies: dict[str, int] = {}
        self.bin_xy = np.zeros(2)

    # ----------------------------------------------------------------- scene
    def _build_scene(self, rng: np.random.Generator) -> None:
        c = self.client
        p.resetSimulation(physicsClientId=c)
        p.setPhysicsEngineParameter(fixedTimeStep=PHYSICS_DT, deterministicOverlappingPairs=1,
                                    physicsClientId=c)
        p.setGravity(0, 0, -9.81, physicsClientId=c)
        table_col = p.createCollisionShape(p.GEOM_PLANE, physicsClientId=c)
        table_vis = p.createVisualShape(p.GEOM_BOX, halfExtents=[0.45, 0.45, 0.005],
                                        visualFramePosition=[0.0, 0.0, -0.005],
                                        rgbaColor=[0.78, 0.72, 0.62, 1], physicsClientId=c)
        p.createMultiBody(0.0, table_col, table_vis, [0.35, 0.0, 0.0], physicsClientId=c)
        self.arm = Arm(c, Workspace())
        self.arm.reset(HOME_POS, 0.0)
        bin_xy, obj_xy = sample_layout(rng)
        yaws = rng.uniform(-np.pi, np.pi, size=2)
        self.bin_xy = bin_xy
        self.bodies = {
            "bin": obj.spawn_bin(c, bin_xy),
            "target": obj.spawn_object(c, obj.TARGETS[self.task[0]], obj_xy[0], yaws[0]),
            "distractor": obj.spawn_object(c, obj.DISTRACTORS[self.task[1]], obj_xy[1],
                                           yaws[1]),
        }
        for _ in range(self.substeps):  # let contacts settle before the first frame
            p.stepSimulation(physicsClientId=c)

    # ------------------------------------------------------------------- API
    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        if options and "task" in options:
            self.task = _check_task(tuple(options["task"]))
        self._build_scene(self.np_random)
        return self._obs(), self._info()

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (7,) or not np.all(np.isfinite(a)):
            raise ValueError(f"sim/pickplace_env.py: action must be 7 finite floats, got {a}")
        a = np.clip(a, -1.0, 1.0)
        self.arm.command(a[:3] * self.action_scale, a[5] * self.yaw_scale, a[6])
        for _ in range(self.substeps):
            p.stepSimulation(physicsClientId=self.client)
        info = self._info()
        reward = 1.0 if info["success"] else 0.0
        return self._obs(), reward, bool(info["success"]), False, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return self._camera(self.render_size)

    def close(self) -> None:
        if self.client is not None and p.isConnected(self.client):
            p.disconnect(self.client)
        self.client = None

    # --------------------------------------------------------------- queries
    def object_pose(self, name: str) -> tuple[np.ndarray, float]:
        """Position and yaw of 'target' or 'distractor' (privileged; scripted policy)."""
        pos, quat = p.getBasePositionAndOrientation(self.bodies[name],
                                                    physicsClientId=self.client)
        return np.asarray(pos), float(p.getEulerFromQuaternion(quat)[2])

    def object_spec(self, name: str) -> obj.ObjectSpec:
        if name == "target":
            return obj.TARGETS[self.task[0]]
        return obj.DISTRACTORS[self.task[1]]

    def in_bin(self, name: str) -> bool:
        """SIM.md success test: object centre low (below the wall tops) and xy inside the bin."""
        pos, _ = self.object_pose(name)
        inside = np.all(np.abs(pos[:2] - self.bin_xy) < obj.BIN_INNER_HALF)
        return bool(inside and pos[2] < SUCCESS_Z)

    def task_onehot(self) -> np.ndarray:
        onehot = np.zeros(TASK_DIM, np.float32)
        onehot[self.task[0]] = 1.0
        onehot[obj.N_TASK_OBJECTS + self.task[1]] = 1.0
        return onehot

    def _info(self) -> dict:
        return {"success": self.in_bin("target"), "distractor_in_bin": self.in_bin("distractor"),
                "task": self.task}

    def _obs(self) -> Any:
        state = self.arm.proprio()
        if self.privileged:
            bin_pos = np.array([self.bin_xy[0], self.bin_xy[1], 0.0])
            return np.concatenate([state, self.object_pose("target")[0],
                                   self.object_pose("distractor")[0], bin_pos,
                                   self.task_onehot()]).astype(np.float32)
        return {"image": self._camera(self.image_size), "state": state,
                "task": self.task_onehot()}

    def _camera(self, size: int) -> np.ndarray:
        """One ER_TINY_RENDERER frame, shadows off (SIM.md: the renderer decides env speed)."""
        _, _, rgba, _, _ = p.getCameraImage(size, size, self._view, self._proj, shadow=0,
                                            renderer=p.ER_TINY_RENDERER,
                                            flags=p.ER_NO_SEGMENTATION_MASK,
                                            physicsClientId=self.client)
        return np.asarray(rgba, dtype=np.uint8).reshape(size, size, 4)[:, :, :3].copy()


def sample_layout(rng: np.random.Generator, max_tries: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Bin xy and two object xy's, uniform in the spawn box, rejecting overlaps."""
    for _ in range(max_tries):
        pts = rng.uniform(SPAWN_LOW, SPAWN_HIGH, size=(3, 2))
        d_bin = np.linalg.norm(pts[1:] - pts[0], axis=1)
        if np.all(d_bin > MIN_BIN_DIST) and np.linalg.norm(pts[1] - pts[2]) > MIN_OBJ_DIST:
            return pts[0], pts[1:]
    raise RuntimeError("sim/pickplace_env.py: could not place bin and objects without overlap")


def _check_task(task: tuple) -> tuple[int, int]:
    if len(task) != 2 or not all(0 <= int(t) < obj.N_TASK_OBJECTS for t in task):
        raise ValueError(f"sim/pickplace_env.py: task must be (target, distractor) with ints in "
                         f"0..{obj.N_TASK_OBJECTS - 1}, got {task}")
    return int(task[0]), int(task[1])


def _observation_space(privileged: bool, size: int) -> spaces.Space:
    if privileged:
        return spaces.Box(-np.inf, np.inf, (PRIVILEGED_DIM,), np.float32)
    return spaces.Dict({
        "image": spaces.Box(0, 255, (size, size, 3), np.uint8),
        "state": spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32),
        "task": spaces.Box(0.0, 1.0, (TASK_DIM,), np.float32),
    })


GRIPPER_FLAG_INDEX = STATE_DIM - 1
"""Index of the gripper-open flag in the proprio state (and in the privileged vector)."""


def binary_gripper_actions(actions: np.ndarray, states_before: np.ndarray) -> np.ndarray:
    """Actions with the gripper dim rewritten to the +-1 command of the same effect.

    states_before: (T, >= STATE_DIM) proprio (or privileged) rows of the observation each
    action was taken in. See `sim.robot.binary_gripper_command`; the arm dims are unchanged.
    """
    from sim.robot import binary_gripper_command

    out = np.array(actions, dtype=np.float32, copy=True)
    out[:, 6] = binary_gripper_command(out[:, 6], np.asarray(states_before)[:, GRIPPER_FLAG_INDEX] > 0.5)
    return out
