"""Built-in benchmark data: textured primitives moving over textured backgrounds.

Every episode is drawn from `np.random.default_rng([seed, 0, index])` and from the
params that define pixels and motion, so it never depends on how many episodes
exist or on the order they are loaded. Object appearance `a` is drawn from
`[seed, 1, a]` and background `b` from `[seed, 2, b]`; any (appearance, motion)
pair can be rendered, which gives exact targets for rebinding and action transfer:
`spec(i)` -> EpisodeSpec(appearance, motion); `render(appearance, motion, start,
stop)` -> Episode exactly as `load` gives it (load = render of spec(i));
`Motion.from_actions(family, initial, actions)` applies given raw actions.

Conventions (K = `max_objects`):
- Coordinates are fractions of the image: x to the right, y downwards, pixel
  (row, col) has its centre at ((col + 0.5) / size, (row + 0.5) / size).
- pose (T, K, 4) float32 per object = (x, y, log_scale, angle). The object's
  radius is `object_size * exp(log_scale)` (fraction of the image). angle is in
  radians, not wrapped; a positive angle turns the object clockwise on screen
  (from +x towards +y). Every shape fits in the disk of that radius.
- actions (T, 4K) float32 = for each object (dx, dy, dlog_scale, dangle), the
  pose change from kept frame t to kept frame t + 1, i.e.
  `pose[raw(t) + frame_stride] - pose[raw(t)]` computed in float32, so that
  `pose[t+1] - pose[t] == action[t]` holds exactly. The motion is simulated past
  the last frame, so the last frame has its outgoing action too. Absent objects
  have zero actions and zero poses.
- content (T, K+1) int32 = background id, then appearance id per object (-1 for
  absent). motion (T,) int32 = motion family id (index into `MOTIONS`) of the
  transition. present (T, K) uint8.
- Appearance id `a` has shape `SHAPES[a % 4]` and pattern `PATTERNS[(a // 4) % 4]`;
  background id `b` has pattern `PATTERNS[b % 4]`. Colours and pattern waves are
  drawn from the seed.
- Motion families: translate moves (x, y); scale changes log_scale; rotate
  changes angle; compose changes all four. Per-step actions follow a unit
  AR(1) process (`persistence`) scaled by `translate_step`, `scale_step`,
  `rotate_step`. Objects are kept fully inside the image: positions reflect at
  the borders, log_scale reflects at +-scale_range and never grows past the
  nearest border; the recorded action is the step actually applied.
- All objects of an episode share one motion family but move independently;
  later objects are drawn on top of earlier ones.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import check, to_dict
from pipeline.data.sources import looks, motions
from pipeline.data.sources.base import (
    Counterfactuals,
    DatasetParams,
    Episode,
    EpisodeError,
    EpisodeRef,
    LabelSpec,
    Schema,
    Source,
    apply_resize,
    kept_indices,
)
from pipeline.data.sources.looks import (  # noqa: F401
    PATTERNS,
    SHAPES,
    Look,
    background_look,
    object_look,
    signed_distance,
)
from pipeline.data.sources.motions import MOTIONS, Motion, MotionName, simulate

_EPISODE_STREAM = 0  # looks.py draws objects from stream 1 and backgrounds from stream 2
_KEY = re.compile(r"episode_(\d{6,})")


@dataclass(frozen=True)
class SyntheticParams(DatasetParams):
    """The synthetic generator (one `datasets:` entry with `kind: synthetic`).

    episodes: number of episodes; frames: raw frames per episode (before the stride);
    size: rendered height = width in pixels; max_objects: objects per episode are
    drawn from 1..max_objects; motions: families sampled (one per episode);
    appearances / backgrounds: size of the object / background catalogues;
    object_size: base object radius (fraction of the image); scale_range: bound on
    |log_scale|; translate_step (fraction of the image), scale_step, rotate_step
    (radians): per-step action standard deviations; persistence: AR(1) coefficient
    of the per-step actions in [0, 1); background_contrast: how much of the background's
    pattern shows, from 0 (a flat colour) to 1.
    """

    kind: str = "synthetic"
    path: str = "pipeline/data/sources/synthetic.py"
    episodes: int = 64
    frames: int = 32
    size: int = 64
    max_objects: int = 1
    motions: tuple[MotionName, ...] = MOTIONS
    appearances: int = 16
    backgrounds: int = 8
    seed: int = 0
    object_size: float = 0.14
    scale_range: float = 0.4
    translate_step: float = 0.04
    scale_step: float = 0.08
    rotate_step: float = 0.2
    persistence: float = 0.8
    background_contrast: float = 1.0

    def validate(self, where: str) -> None:
        super().validate(where)
        ratio = self.object_size * math.exp(min(self.scale_range, 10.0))
        kept = len(kept_indices(self.frames, self))
        stride = self.frame_stride
        families = bool(self.motions) and set(self.motions) <= set(MOTIONS)
        rules = [
            ("kind", self.kind == "synthetic", "'synthetic'"),
            ("episodes", self.episodes >= 1, "an integer >= 1"),
            ("frames", self.frames >= 2 and kept >= 2, f"an integer keeping >= 2 at stride {stride}"),
            ("size", self.size >= 8, "an integer >= 8"),
            ("max_objects", 1 <= self.max_objects <= 8, "an integer in 1..8"),
            ("motions", families, f"a non-empty list of {', '.join(MOTIONS)}"),
            ("motions", len(set(self.motions)) == len(self.motions), "no repeated family"),
            ("appearances", self.appearances >= 1, "an integer >= 1"),
            ("backgrounds", self.backgrounds >= 1, "an integer >= 1"),
            ("seed", self.seed >= 0, "an integer >= 0"),
            ("scale_range", self.scale_range >= 0, "a number >= 0"),
            ("object_size", self.object_size > 0 and ratio < 0.5, "a number > 0, below 0.5 / exp(scale_range)"),
            ("translate_step", self.translate_step >= 0, "a number >= 0"),
            ("scale_step", self.scale_step >= 0, "a number >= 0"),
            ("rotate_step", self.rotate_step >= 0, "a number >= 0"),
            ("persistence", 0 <= self.persistence < 1, "a number in [0, 1)"),
            ("background_contrast", 0 <= self.background_contrast <= 1, "a number in [0, 1]"),
        ]
        for name, ok, allowed in rules:
            check(ok, f"{where}.{name}", getattr(self, name), allowed)


@dataclass(frozen=True)
class Appearance:
    """Content of an episode: background id and one appearance id per object."""

    background: int
    objects: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "background", int(self.background))
        object.__setattr__(self, "objects", tuple(int(a) for a in self.objects))


@dataclass(frozen=True)
class EpisodeSpec:
    """Everything that defines episode `index`: its content and its motion."""

    index: int
    appearance: Appearance
    motion: Motion


class SyntheticSource(Source):
    """Procedural episodes of textured primitives under translation, scaling and rotation."""

    def __init__(self, params: SyntheticParams):
        self.params = params
        size = params.size
        centres = (np.arange(size, dtype=np.float32) + 0.5) / size
        self._gy, self._gx = np.meshgrid(centres, centres, indexing="ij")
        self._backgrounds: dict[int, np.ndarray] = {}

    def refs(self) -> list[EpisodeRef]:
        seed, n = self.params.seed, self.params.episodes
        return [EpisodeRef(f"episode_{i:06d}", f"synthetic episode {i} (seed {seed})") for i in range(n)]

    def schema(self) -> Schema:
        k = self.params.max_objects
        return Schema(
            action_dim=4 * k,
            labels={
                "pose": LabelSpec((k, 4), "float32"),
                "content": LabelSpec((k + 1,), "int32"),
                "motion": LabelSpec((), "int32"),
                "present": LabelSpec((k,), "uint8"),
            },
        )

    def metadata_count(self, ref: EpisodeRef) -> int:
        return self.count(ref)  # counted from params or the index, nothing decoded

    def count(self, ref: EpisodeRef) -> int:
        self._index(ref)
        return len(kept_indices(self.params.frames, self.params))

    def fingerprint(self) -> str:
        """sha256 of the params that shape the episodes and of this module's source text."""
        shaping = {k: v for k, v in to_dict(self.params).items() if k not in ("path", "strict")}
        digest = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode())
        for module in (__file__, looks.__file__, motions.__file__):  # the generator's code is part of the data
            digest.update(Path(module).read_bytes())
        return digest.hexdigest()

    def spec(self, index: int) -> EpisodeSpec:
        """Content and motion of episode `index` (any index >= 0, also past `episodes`)."""
        if index < 0:
            raise ValueError(f"episode index must be >= 0, got {index}")
        p = self.params
        rng = np.random.default_rng([p.seed, _EPISODE_STREAM, index])
        n = int(rng.integers(1, p.max_objects + 1))
        background = int(rng.integers(p.backgrounds))
        objects = rng.choice(p.appearances, size=n, replace=p.appearances < n)
        family = MOTIONS.index(p.motions[int(rng.integers(len(p.motions)))])
        motion = Motion(family, simulate(p, rng, family, n))
        return EpisodeSpec(index, Appearance(background, tuple(objects)), motion)

    def load(self, ref: EpisodeRef, start: int = 0, stop: int | None = None) -> Episode:
        index = self._index(ref)
        n = self.count(ref)
        stop = n if stop is None else stop
        if not 0 <= start < stop <= n:
            raise EpisodeError(ref.origin, f"frames [{start}, {stop}) requested, episode has {n} kept frames")
        spec = self.spec(index)
        return self.render(spec.appearance, spec.motion, start, stop, key=ref.key)

    def render(
        self,
        appearance: Appearance,
        motion: Motion,
        start: int = 0,
        stop: int | None = None,
        key: str = "render",
    ) -> Episode:
        """Kept frames [start, stop) of `appearance` moving under `motion`, as `load` gives them.

        Stride, max_frames and resize apply as for loaded episodes; kept frame t shows
        raw pose t * frame_stride and its action reaches raw pose t * frame_stride +
        frame_stride, so the motion must have at least frame_stride + 1 poses.
        """
        p = self.params
        n = self._check_pair(appearance, motion)
        idx = kept_indices(max(len(motion.poses) - p.frame_stride, 0), p)
        stop = len(idx) if stop is None else stop
        if not 0 <= start < stop <= len(idx):
            raise ValueError(f"frames [{start}, {stop}) requested, the motion gives {len(idx)} kept frames")
        idx = idx[start:stop]
        poses = motion.poses[idx]
        t, k = len(idx), p.max_objects
        pose = np.zeros((t, k, 4), np.float32)
        pose[:, :n] = poses
        actions = np.zeros((t, k, 4), np.float32)
        actions[:, :n] = motion.poses[idx + p.frame_stride] - poses
        content = np.full((t, k + 1), -1, np.int32)
        content[:, 0] = appearance.background
        content[:, 1 : n + 1] = appearance.objects
        present = np.zeros((t, k), np.uint8)
        present[:, :n] = 1
        motion_ids = np.full(t, motion.family, np.int32)
        labels = {"pose": pose, "content": content, "motion": motion_ids, "present": present}
        frames = apply_resize(self._paint(appearance, poses), p)
        return Episode(key, frames, actions.reshape(t, 4 * k), labels)

    # -- ground truth ----------------------------------------------------------------------------
    def probe_targets(self, actions: np.ndarray | None, labels: dict[str, np.ndarray]) -> np.ndarray | None:
        """The pose change of every object between the two frames of each transition, (N, T-1, 4K)
        float64 (equal to the stored action when frame_stride is 1)."""
        change = np.diff(labels["pose"].astype(np.float64), axis=1)               # (N, T-1, K, 4)
        return change.reshape(*change.shape[:2], -1)

    def object_targets(self, targets: np.ndarray,
                       labels: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
        """Each object's pose change (N, T-1, K, 4) and whether it exists (N, T-1, K); None for K = 1."""
        present = labels["present"][:, :-1].astype(bool)                           # (N, T-1, K)
        if present.shape[-1] < 2:
            return None
        return targets.reshape(*targets.shape[:2], present.shape[-1], 4), present

    def translation_dims(self, n_dims: int) -> tuple[int, ...]:
        return tuple(d for d in range(n_dims) if d % 4 in (0, 1))                  # (dx, dy) of every object

    def motion_names(self) -> tuple[str, ...]:
        return MOTIONS

    def counterfactuals(self) -> Counterfactuals:
        return _Counterfactuals(SyntheticSource(dataclasses.replace(self.params, frame_stride=1, max_frames=None)))

    def _index(self, ref: EpisodeRef) -> int:
        match = _KEY.fullmatch(ref.key)
        if match is None or int(match.group(1)) >= self.params.episodes:
            last = f"episode_{self.params.episodes - 1:06d}"
            raise EpisodeError(ref.origin, f"{ref.key!r} is not one of episode_000000..{last}")
        return int(match.group(1))

    def _check_pair(self, appearance: Appearance, motion: Motion) -> int:
        p = self.params
        n = len(appearance.objects)
        if motion.poses.shape[1] != n:
            raise ValueError(f"appearance has {n} objects but the motion moves {motion.poses.shape[1]}")
        if n > p.max_objects:
            raise ValueError(f"{n} objects exceed max_objects = {p.max_objects}")
        if not 0 <= appearance.background < p.backgrounds:
            raise ValueError(f"background id {appearance.background} not in 0..{p.backgrounds - 1}")
        if any(not 0 <= a < p.appearances for a in appearance.objects):
            raise ValueError(f"appearance ids {appearance.objects} not all in 0..{p.appearances - 1}")
        return n

    def _background(self, background: int) -> np.ndarray:
        if background not in self._backgrounds:
            look = background_look(self.params.seed, background, self.params.background_contrast)
            self._backgrounds[background] = look.shade(self._gx - 0.5, self._gy - 0.5)
        return self._backgrounds[background]

    def _paint(self, appearance: Appearance, poses: np.ndarray) -> np.ndarray:
        """Frames (T, size, size, 3) uint8 of the objects at `poses` (T, n, 4) over the background."""
        size = self.params.size
        looks = [object_look(self.params.seed, a) for a in appearance.objects]
        base = self._background(appearance.background)
        frames = np.empty((len(poses), size, size, 3), np.uint8)
        for t, frame_poses in enumerate(poses):
            canvas = base.copy()
            for look, pose in zip(looks, frame_poses):
                self._draw(canvas, look, pose)
            frames[t] = np.clip(np.rint(canvas), 0, 255)
        return frames

    def _draw(self, canvas: np.ndarray, look: Look, pose: np.ndarray) -> None:
        """Composite one object at `pose` onto `canvas` (size, size, 3) float32, in place."""
        x, y, log_scale, angle = (float(v) for v in pose)
        radius = self.params.object_size * math.exp(log_scale)
        dx = (self._gx - x) * (1.0 / radius)
        dy = (self._gy - y) * (1.0 / radius)
        cos, sin = math.cos(angle), math.sin(angle)
        u = cos * dx + sin * dy
        v = cos * dy - sin * dx
        distance = signed_distance(look.shape, u, v) * (radius * self.params.size)
        alpha = np.clip(0.5 - distance, 0.0, 1.0)[..., None]
        canvas += alpha * (look.shade(u, v) - canvas)


class _Counterfactuals(Counterfactuals):
    """Renders any stored appearance at any poses: the renderer draws the exact answer."""

    def __init__(self, source: SyntheticSource):
        self.source = source  # frame_stride 1: kept frame t shows exactly the pose it is given

    def compatible(self, a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
        return int(a["present"][0].sum()) == int(b["present"][0].sum())

    def render(self, look: dict[str, np.ndarray], motion: dict[str, np.ndarray],
               start: dict[str, np.ndarray] | None = None) -> np.ndarray:
        n = int(look["present"][0].sum())
        poses = motion["pose"][:, :n]                                                 # (T, n, 4)
        if start is not None:
            poses = start["pose"][0, :n] + (poses - poses[0])
        appearance = Appearance(look["content"][0, 0], look["content"][0, 1:n + 1])
        path = Motion(int(motion["motion"][0]), np.concatenate([poses, poses[-1:]]))  # + the last outgoing pose
        return self.source.render(appearance, path, 0, len(poses)).frames
