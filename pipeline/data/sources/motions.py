"""The motion model of the synthetic source: motion families and the simulated object poses.

A pose is (x, y, log_scale, angle) per object (conventions in `synthetic`). Per-step actions
follow a unit AR(1) process (`persistence`) scaled per family by `translate_step`, `scale_step`
and `rotate_step`; positions reflect at the image borders and log_scale at +-scale_range, never
growing past the nearest border, and the recorded action is the step actually applied.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from pipeline.data.sources.synthetic import SyntheticParams

MOTIONS = ("translate", "scale", "rotate", "compose")
MotionName = Literal["translate", "scale", "rotate", "compose"]

# Which pose components (x, y, log_scale, angle) each motion family moves.
_FAMILY_MASK = np.array([[1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [1, 1, 1, 1]], dtype=np.float64)


@dataclass(frozen=True, eq=False)
class Motion:
    """Structure of an episode: motion family id and raw poses (S + 1, n, 4) float32.

    Raw step s moves the objects from poses[s] to poses[s + 1]; `actions` are those
    differences. poses are stored read-only.
    """

    family: int
    poses: np.ndarray

    def __post_init__(self) -> None:
        poses = np.array(self.poses, dtype=np.float32)
        if poses.ndim != 3 or poses.shape[2] != 4 or poses.shape[0] < 2:
            raise ValueError(f"motion poses must be (steps + 1 >= 2, objects, 4), got {poses.shape}")
        if not 0 <= int(self.family) < len(MOTIONS):
            raise ValueError(f"motion family {self.family} is not an index into {MOTIONS}")
        poses.setflags(write=False)
        object.__setattr__(self, "family", int(self.family))
        object.__setattr__(self, "poses", poses)

    @property
    def actions(self) -> np.ndarray:
        """(S, n, 4) float32 raw per-step pose changes."""
        return np.diff(self.poses, axis=0)

    @classmethod
    def from_actions(cls, family: int, initial: np.ndarray, actions: np.ndarray) -> Motion:
        """Poses reached from `initial` (n, 4) by raw `actions` (S, n, 4), without border handling."""
        initial = np.asarray(initial, dtype=np.float64)
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 3 or actions.shape[1:] != initial.shape:
            raise ValueError(f"actions {actions.shape} do not match initial poses {initial.shape}")
        poses = np.concatenate([initial[None], initial[None] + np.cumsum(actions, axis=0)])
        return cls(family, poses)


def reflect(value: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`value` mirrored back into [low, high] (then clamped); also where it was outside."""
    out = np.where(value > high, 2 * high - value, value)
    out = np.where(out < low, 2 * low - out, out)
    return np.clip(out, low, high), (value > high) | (value < low)


def simulate(params: SyntheticParams, rng: np.random.Generator, family: int, n: int) -> np.ndarray:
    """Raw poses (frames + frame_stride, n, 4) float32 of n objects moving under `family`."""
    steps = params.frames - 1 + params.frame_stride
    size0, bound = params.object_size, params.scale_range
    log_scale = rng.uniform(-bound / 2, bound / 2, n)
    radius = size0 * np.exp(log_scale)
    x, y = rng.uniform(radius, 1 - radius), rng.uniform(radius, 1 - radius)
    poses = np.empty((steps + 1, n, 4))
    poses[0] = np.stack([x, y, log_scale, rng.uniform(-math.pi, math.pi, n)], axis=1)
    # Drawn last, step-major: a longer episode extends the same noise sequence.
    noise = rng.standard_normal((steps, n, 4))
    scales = np.array([params.translate_step, params.translate_step, params.scale_step, params.rotate_step])
    scales = scales * _FAMILY_MASK[family]
    rho = params.persistence
    velocity = noise[0].copy()
    for t in range(steps):
        if t:
            velocity = rho * velocity + math.sqrt(1 - rho * rho) * noise[t]
        cur, nxt = poses[t], poses[t].copy()
        step = velocity * scales
        if scales[2]:
            room = np.min([cur[:, 0], 1 - cur[:, 0], cur[:, 1], 1 - cur[:, 1]], axis=0)
            high = np.maximum(np.minimum(bound, np.log(room / size0) - 1e-9), -bound)
            nxt[:, 2], flipped = reflect(cur[:, 2] + step[:, 2], -bound, high)
            velocity[:, 2] = np.where(flipped, -velocity[:, 2], velocity[:, 2])
        if scales[0]:
            radius = size0 * np.exp(nxt[:, 2])
            for k in (0, 1):
                nxt[:, k], flipped = reflect(cur[:, k] + step[:, k], radius, 1 - radius)
                velocity[:, k] = np.where(flipped, -velocity[:, k], velocity[:, k])
        nxt[:, 3] = cur[:, 3] + step[:, 3]
        poses[t + 1] = nxt
    return poses.astype(np.float32)
