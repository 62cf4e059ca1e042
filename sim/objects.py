"""The ten task objects (5 targets, 5 distractors, disjoint) and the bin, from primitives.

SIM.md: the Cal-QL visual task uses 10 unique objects with no overlap between the target
and distractor sets. roboverse's ShapeNet meshes are not redistributable, so ours are
primitive shapes (boxes, cylinders, spheres, capsules, convex prisms, compounds) with
distinct colours; they cost almost nothing to render (SIM.md: rendering decides speed).
Every object fits the 8 cm open gripper across at least one axis, so any of them can be
picked (the wrong-object failure mode of the scripted policy needs distractors graspable).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pybullet as p

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class Part:
    """One primitive of an object: `geom` in {box, cylinder, sphere, capsule, prism}.

    dims: box half-extents; (radius, length) for cylinder/capsule; (radius,) for sphere;
    (radius, height, n_sides) for a regular convex prism.
    """

    geom: str
    dims: tuple[float, ...]
    pos: Vec3 = (0.0, 0.0, 0.0)
    euler: Vec3 = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class ObjectSpec:
    """A task object. `base_z` is the height of its frame above the table when resting.

    `grasp_yaw` is the gripper yaw (object frame) whose finger axis crosses the object's
    narrow side; `grasp_period` the object's symmetry in yaw (0: round, any yaw grasps).
    """

    name: str
    rgba: tuple[float, float, float, float]
    parts: tuple[Part, ...]
    base_z: float
    mass: float = 0.08
    grasp_yaw: float = 0.0
    grasp_period: float = np.pi
    friction: dict = field(default_factory=lambda: {"lateralFriction": 1.2,
                                                    "rollingFriction": 0.001,
                                                    "spinningFriction": 0.001})


_X_AXIS = (0.0, np.pi / 2, 0.0)  # rotate a z-aligned cylinder/capsule to lie along x

TARGETS: tuple[ObjectSpec, ...] = (
    ObjectSpec("red cube", (0.9, 0.1, 0.1, 1), (Part("box", (0.02, 0.02, 0.02)),), 0.02,
               grasp_period=np.pi / 2),
    ObjectSpec("green cylinder", (0.1, 0.75, 0.2, 1), (Part("cylinder", (0.02, 0.05)),), 0.025,
               grasp_period=0.0),
    ObjectSpec("blue sphere", (0.15, 0.3, 0.95, 1), (Part("sphere", (0.022,)),), 0.022,
               grasp_period=0.0,
               friction={"lateralFriction": 1.2, "rollingFriction": 0.005,
                         "spinningFriction": 0.005}),
    ObjectSpec("yellow capsule", (0.95, 0.85, 0.1, 1),
               (Part("capsule", (0.016, 0.05), euler=_X_AXIS),), 0.016),
    ObjectSpec("orange cross", (1.0, 0.5, 0.0, 1),
               (Part("box", (0.03, 0.01, 0.015)), Part("box", (0.01, 0.03, 0.015))), 0.015,
               grasp_period=np.pi / 2),
)

DISTRACTORS: tuple[ObjectSpec, ...] = (
    ObjectSpec("purple tall box", (0.55, 0.15, 0.75, 1), (Part("box", (0.015, 0.015, 0.035)),),
               0.035, grasp_period=np.pi / 2),
    ObjectSpec("cyan disc", (0.1, 0.85, 0.85, 1), (Part("cylinder", (0.03, 0.02)),), 0.01,
               grasp_period=0.0),
    ObjectSpec("pink triangle prism", (1.0, 0.45, 0.7, 1), (Part("prism", (0.025, 0.04, 3)),),
               0.02, grasp_yaw=np.pi / 2, grasp_period=np.pi / 3),
    ObjectSpec("brown hexagon prism", (0.5, 0.3, 0.1, 1), (Part("prism", (0.024, 0.04, 6)),),
               0.02, grasp_period=np.pi / 3),
    ObjectSpec("white dumbbell", (0.92, 0.92, 0.92, 1),
               (Part("cylinder", (0.008, 0.06), euler=_X_AXIS),
                Part("sphere", (0.016,), pos=(0.03, 0.0, 0.0)),
                Part("sphere", (0.016,), pos=(-0.03, 0.0, 0.0))), 0.016),
)

N_TASK_OBJECTS = 5
BIN_INNER_HALF = 0.055  # 11 cm square inside; SIM.md: ~8.4 cm for the WidowX's smaller objects
BIN_WALL_HEIGHT = 0.04
BIN_WALL = 0.008
BIN_RGBA = (0.35, 0.25, 0.2, 1)


def _prism_mesh(radius: float, height: float, n: int) -> tuple[list, list]:
    """Vertices and triangle indices of a regular n-gon prism centred on its frame."""
    ang = 2 * np.pi * np.arange(n) / n
    ring = np.stack([radius * np.cos(ang), radius * np.sin(ang)], 1)
    verts = [[x, y, -height / 2] for x, y in ring] + [[x, y, height / 2] for x, y in ring]
    tris = []
    for i in range(1, n - 1):  # bottom (facing down) and top caps as fans
        tris += [0, i + 1, i, n, n + i, n + i + 1]
    for i in range(n):
        j = (i + 1) % n
        tris += [i, j, n + j, i, n + j, n + i]
    return verts, tris


def _shape_args(part: Part) -> tuple[dict, dict]:
    """Keyword arguments for createCollisionShape / createVisualShape of one part."""
    if part.geom == "box":
        kw = {"shapeType": p.GEOM_BOX, "halfExtents": list(part.dims)}
        return kw, dict(kw)
    if part.geom in ("cylinder", "capsule"):
        shape = p.GEOM_CYLINDER if part.geom == "cylinder" else p.GEOM_CAPSULE
        r, length = part.dims
        return ({"shapeType": shape, "radius": r, "height": length},
                {"shapeType": shape, "radius": r, "length": length})
    if part.geom == "sphere":
        kw = {"shapeType": p.GEOM_SPHERE, "radius": part.dims[0]}
        return kw, dict(kw)
    if part.geom == "prism":
        verts, tris = _prism_mesh(part.dims[0], part.dims[1], int(part.dims[2]))
        return ({"shapeType": p.GEOM_MESH, "vertices": verts},
                {"shapeType": p.GEOM_MESH, "vertices": verts, "indices": tris})
    raise ValueError(f"sim/objects.py: unknown part geom {part.geom!r}")


def spawn_object(client: int, spec: ObjectSpec, xy: np.ndarray, yaw: float) -> int:
    """Create `spec` resting on the table at `xy` with heading `yaw`; returns the body id."""
    cols, viss = [], []
    for part in spec.parts:
        c_kw, v_kw = _shape_args(part)
        orn = p.getQuaternionFromEuler(part.euler)
        cols.append(p.createCollisionShape(collisionFramePosition=part.pos,
                                           collisionFrameOrientation=orn, **c_kw,
                                           physicsClientId=client))
        viss.append(p.createVisualShape(visualFramePosition=part.pos,
                                        visualFrameOrientation=orn, rgbaColor=spec.rgba,
                                        **v_kw, physicsClientId=client))
    col, vis = _merge(client, cols, viss, spec.parts)
    body = p.createMultiBody(spec.mass, col, vis, [float(xy[0]), float(xy[1]), spec.base_z],
                             p.getQuaternionFromEuler((0.0, 0.0, float(yaw))),
                             physicsClientId=client)
    p.changeDynamics(body, -1, **spec.friction, physicsClientId=client)
    if len(spec.parts) > 1:  # createVisualShapeArray takes no colour
        p.changeVisualShape(body, -1, rgbaColor=spec.rgba, physicsClientId=client)
    return body


def _merge(client: int, cols: list, viss: list, parts: tuple[Part, ...]) -> tuple[int, int]:
    """Single-part objects use their shapes directly; compounds become shape arrays."""
    if len(parts) == 1:
        return cols[0], viss[0]
    kinds = [_shape_args(pt) for pt in parts]
    col = p.createCollisionShapeArray(
        shapeTypes=[k[0]["shapeType"] for k in kinds],
        radii=[k[0].get("radius", 0.0) for k in kinds],
        halfExtents=[k[0].get("halfExtents", [0.0, 0.0, 0.0]) for k in kinds],
        lengths=[k[0].get("height", 0.0) for k in kinds],
        collisionFramePositions=[pt.pos for pt in parts],
        collisionFrameOrientations=[p.getQuaternionFromEuler(pt.euler) for pt in parts],
        physicsClientId=client)
    vis = p.createVisualShapeArray(
        shapeTypes=[k[1]["shapeType"] for k in kinds],
        radii=[k[1].get("radius", 0.0) for k in kinds],
        halfExtents=[k[1].get("halfExtents", [0.0, 0.0, 0.0]) for k in kinds],
        lengths=[k[1].get("length", 0.0) for k in kinds],
        visualFramePositions=[pt.pos for pt in parts],
        visualFrameOrientations=[p.getQuaternionFromEuler(pt.euler) for pt in parts],
        physicsClientId=client)
    return col, vis


def spawn_bin(client: int, xy: np.ndarray) -> int:
    """A static open box: floor plus four walls, inner size 2 * BIN_INNER_HALF."""
    h, w, t = BIN_INNER_HALF, BIN_WALL_HEIGHT, BIN_WALL
    half = [[h + t, h + t, t / 2], [t / 2, h + t, w / 2], [t / 2, h + t, w / 2],
            [h + t, t / 2, w / 2], [h + t, t / 2, w / 2]]
    pos = [[0, 0, t / 2], [h + t / 2, 0, w / 2], [-h - t / 2, 0, w / 2],
           [0, h + t / 2, w / 2], [0, -h - t / 2, w / 2]]
    col = p.createCollisionShapeArray([p.GEOM_BOX] * 5, halfExtents=half,
                                      collisionFramePositions=pos, physicsClientId=client)
    vis = p.createVisualShapeArray([p.GEOM_BOX] * 5, halfExtents=half,
                                   visualFramePositions=pos, physicsClientId=client)
    body = p.createMultiBody(0.0, col, vis, [float(xy[0]), float(xy[1]), 0.0],
                             physicsClientId=client)
    p.changeVisualShape(body, -1, rgbaColor=BIN_RGBA, physicsClientId=client)
    return body
