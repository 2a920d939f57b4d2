"""The synthetic source's scene as a simulator: textured primitives moved by pose changes.

Conventions (those of `pipeline.data.sources.synthetic`; K = params.max_objects, n <= K the
objects of the appearance):
- state (n, 4) float64: per object (x, y, log_scale, angle), positions as fractions of the
  image, angle in radians, not wrapped.
- action (4K,): per object the pose change (dx, dy, dlog_scale, dangle) of one step, the
  source's action layout; the dimensions of absent objects (beyond 4n) have bounds [0, 0].
  Bounds are +-`action_scale` (3) standard deviations of the source's per-step actions
  (translate_step, translate_step, scale_step, rotate_step).
- step: pose + clipped action, then log_scale clamped to +-scale_range and the position clamped
  so the object stays inside the image (the generator reflects instead; a planner never needs
  to cross a border).
- frames: drawn by `SyntheticSource.render` of the same params, exactly as `load` draws an
  episode with this appearance at these poses.
- verdict: every object within `POSITION_TOLERANCE` (fraction of the image),
  `SCALE_TOLERANCE` (log-scale) and `ANGLE_TOLERANCE` (radians, wrapped) of its goal pose.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from pipeline.data.sources.synthetic import Appearance, Motion, SyntheticParams, SyntheticSource
from pipeline.planning.simulators import Simulator, Task, wrap_angle

POSITION_TOLERANCE = 0.02  # 1.3 px of a 64 px frame
SCALE_TOLERANCE = 0.05     # 5 % of the radius
ANGLE_TOLERANCE = 0.1      # radians (5.7 degrees)
_COMPOSE = 3               # the motion family that moves all four pose components


class SyntheticSim(Simulator):
    """Objects of `appearance` (default: one striped square on background 0) under `params`."""

    def __init__(self, params: SyntheticParams | None = None, appearance: Appearance | None = None,
                 action_scale: float = 3.0):
        params = SyntheticParams() if params is None else params
        appearance = Appearance(0, (1,)) if appearance is None else appearance
        if not 1 <= len(appearance.objects) <= params.max_objects:
            raise ValueError(f"{len(appearance.objects)} objects: expected 1..{params.max_objects} (max_objects)")
        if not action_scale > 0:
            raise ValueError(f"action_scale = {action_scale!r}: expected a number > 0")
        self.params, self.appearance = params, appearance
        # Stride 1 and every frame kept: kept frame t shows exactly pose t of a motion.
        self.source = SyntheticSource(dataclasses.replace(params, frame_stride=1, max_frames=None))
        n, k = len(appearance.objects), params.max_objects
        self.step_std = np.array([params.translate_step, params.translate_step, params.scale_step,
                                  params.rotate_step], dtype=np.float64)             # (4,)
        bound = np.zeros((k, 4))
        bound[:n] = action_scale * self.step_std
        self.action_low, self.action_high = -bound.reshape(-1), bound.reshape(-1)     # (4K,)
        self._n = n
        self._state = np.zeros((n, 4))
        self.reset(0)
        self.frame()  # the renderer checks the appearance against the params

    @classmethod
    def at_episode(cls, source: SyntheticSource, index: int, frame: int, **kwargs) -> SyntheticSim:
        """A simulator showing episode `index` of `source` at kept frame `frame`."""
        spec = source.spec(index)
        sim = cls(source.params, spec.appearance, **kwargs)
        raw = frame * source.params.frame_stride
        sim.set_state(spec.motion.poses[raw].astype(np.float64))
        return sim

    def reset(self, seed: int) -> None:
        """Poses drawn as the generator draws an episode's first pose (inside the image)."""
        rng = np.random.default_rng(seed)
        p, n = self.params, self._n
        log_scale = rng.uniform(-p.scale_range / 2, p.scale_range / 2, n)
        radius = p.object_size * np.exp(log_scale)
        x, y = rng.uniform(radius, 1 - radius), rng.uniform(radius, 1 - radius)
        self._state = np.stack([x, y, log_scale, rng.uniform(-math.pi, math.pi, n)], axis=1)

    def state(self) -> np.ndarray:
        return self._state.copy()

    def set_state(self, state: np.ndarray) -> None:
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (self._n, 4) or not np.all(np.isfinite(state)):
            raise ValueError(f"SyntheticSim: state must be ({self._n}, 4) finite, got {state.shape}")
        self._state = state.copy()

    def step(self, action: np.ndarray) -> None:
        p = self.params
        change = self.clip(action).reshape(-1, 4)[: self._n]                         # (n, 4)
        pose = self._state + change
        pose[:, 2] = np.clip(pose[:, 2], -p.scale_range, p.scale_range)
        radius = p.object_size * np.exp(pose[:, 2])
        pose[:, 0:2] = np.clip(pose[:, 0:2], radius[:, None], 1 - radius[:, None])
        self._state = pose

    def frame(self) -> np.ndarray:
        poses = np.repeat(self._state[None], 2, axis=0)                              # (2, n, 4)
        return self.source.render(self.appearance, Motion(_COMPOSE, poses), 0, 1).frames[0]

    def idle_action(self) -> np.ndarray:
        return np.zeros(self.action_dim)

    def errors(self, state: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """(n, 3) per object: position error, |log_scale error|, |wrapped angle error|."""
        diff = np.asarray(state, dtype=np.float64) - np.asarray(goal, dtype=np.float64)
        return np.stack([np.hypot(diff[:, 0], diff[:, 1]), np.abs(diff[:, 2]),
                         np.abs(wrap_angle(diff[:, 3]))], axis=1)

    def distance(self, state: np.ndarray, goal: np.ndarray) -> float:
        """Root of the summed squared pose errors, each in units of its per-step standard deviation."""
        err = self.errors(state, goal) / self.step_std[1:]                           # (n, 3)
        return float(np.sqrt(np.square(err).sum()))

    def score(self, state: np.ndarray, goal: np.ndarray) -> dict[str, float]:
        worst = self.errors(state, goal).max(axis=0)                                 # (3,) over objects
        return {"position_error": float(worst[0]), "scale_error": float(worst[1]), "angle_error": float(worst[2])}

    def success(self, state: np.ndarray, goal: np.ndarray) -> bool:
        worst = self.errors(state, goal).max(axis=0)
        return bool(np.all(worst <= [POSITION_TOLERANCE, SCALE_TOLERANCE, ANGLE_TOLERANCE]))

    def easy_goal(self, seed: int) -> Task:
        """3-5 steps of the generator's kind of motion (a unit AR(1) in time with persistence
        `params.persistence`, scaled by the per-step standard deviations) from a `reset(seed)`
        start; draws that leave the goal already reached at the start are redrawn."""
        rng = np.random.default_rng([seed, 1])
        rho, k = self.params.persistence, self.params.max_objects
        for _ in range(100):
            self.reset(int(rng.integers(2**31)))
            start = self.state()
            velocity = rng.standard_normal((k, 4))
            for t in range(int(rng.integers(3, 6))):
                if t:
                    velocity = rho * velocity + math.sqrt(1 - rho * rho) * rng.standard_normal((k, 4))
                self.step((velocity * self.step_std).reshape(-1))
            goal = self.state()
            if not self.success(start, goal):
                self.set_state(start)
                return Task(start, goal)
        raise RuntimeError(f"easy_goal({seed}): every draw was already at its goal")
