"""The appearance catalogue of the synthetic source: shapes and procedural textures.

Object appearance `a` has shape `SHAPES[a % 4]` and pattern `PATTERNS[(a // 4) % 4]`;
background `b` has pattern `PATTERNS[b % 4]`. Colours and pattern waves are drawn
from `np.random.default_rng([seed, 1, a])` (objects) and `[seed, 2, b]` (backgrounds),
so a look depends only on its id and the seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SHAPES = ("disk", "square", "triangle", "cross")
PATTERNS = ("stripes", "checker", "noise", "gradient")
_OBJECT_STREAM, _BACKGROUND_STREAM = 1, 2
_WAVES = 6
_TRIANGLE_NORMALS = np.array([[math.cos(a), math.sin(a)] for a in np.radians([90.0, 210.0, 330.0])])


@dataclass(frozen=True, eq=False)
class Look:
    """How one object (shape one of SHAPES) or background (shape None) is painted.

    colors: (2, 3) float32 RGB mixed by the pattern; waves: (6, 3) float32 rows of
    (frequency x, frequency y, phase), in cycles per object radius (objects) or per
    image size (backgrounds).
    """

    shape: str | None
    pattern: str
    colors: np.ndarray
    waves: np.ndarray

    def shade(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """RGB float32 colour (..., 3) at texture coordinates (u, v)."""
        w = self.waves

        def wave(j: int) -> np.ndarray:
            return np.sin((2 * math.pi) * (float(w[j, 0]) * u + float(w[j, 1]) * v) + float(w[j, 2]))

        if self.pattern == "stripes":
            s = wave(0)
        elif self.pattern == "checker":
            s = 1.5 * wave(0) * wave(1)
        elif self.pattern == "noise":
            s = sum(wave(j) for j in range(_WAVES)) * float(1 / math.sqrt(_WAVES / 2))
        else:
            norm = float(np.hypot(w[0, 0], w[0, 1]))
            s = (float(w[0, 0]) * u + float(w[0, 1]) * v) * (1.0 / norm)
        m = np.clip(0.5 + 0.75 * s, 0.0, 1.0)[..., None]
        c0, c1 = self.colors
        return c0 + m * (c1 - c0)


def _waves(rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    freq = rng.uniform(low, high, _WAVES)
    direction = rng.uniform(0, 2 * math.pi, _WAVES)
    phase = rng.uniform(0, 2 * math.pi, _WAVES)
    waves = np.stack([freq * np.cos(direction), freq * np.sin(direction), phase], axis=1)
    waves[1, :2] = (-waves[0, 1], waves[0, 0])  # the checker's second wave is perpendicular to the first
    return waves.astype(np.float32)


def object_look(seed: int, appearance: int) -> Look:
    """The look of object appearance id `appearance` under `seed`."""
    rng = np.random.default_rng([seed, _OBJECT_STREAM, appearance])
    first = rng.uniform(0, 255, 3)
    second = np.clip(255 - first + rng.uniform(-40, 40, 3), 0, 255)
    colors = np.stack([first, second]).astype(np.float32)
    shape = SHAPES[appearance % len(SHAPES)]
    pattern = PATTERNS[(appearance // len(SHAPES)) % len(PATTERNS)]
    return Look(shape, pattern, colors, _waves(rng, 0.6, 1.5))


def background_look(seed: int, background: int, contrast: float = 1.0) -> Look:
    """The look of background id `background` under `seed` (muted, lower contrast); `contrast`
    scales the difference of its two colours (0: a flat colour, 1: the full pattern)."""
    rng = np.random.default_rng([seed, _BACKGROUND_STREAM, background])
    first = rng.uniform(50, 200, 3)
    second = np.clip(first + rng.uniform(-60, 60, 3), 0, 255)
    if contrast != 1.0:  # skipped at 1 so the default's colours stay bit-identical to earlier stores
        second = first + contrast * (second - first)
    colors = np.stack([first, second]).astype(np.float32)
    return Look(None, PATTERNS[background % len(PATTERNS)], colors, _waves(rng, 1.5, 5.0))


def signed_distance(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Approximate signed distance (negative inside) to `shape` in object units (radius 1)."""
    if shape == "disk":
        return np.hypot(u, v) - 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - float(1 / math.sqrt(2))
    if shape == "triangle":  # equilateral, circumradius 1, one vertex pointing up
        n = _TRIANGLE_NORMALS
        edges = [float(n[k, 0]) * u + float(n[k, 1]) * v for k in range(3)]
        return np.maximum(np.maximum(edges[0], edges[1]), edges[2]) - 0.5
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        bar_h = np.maximum(au - 0.9, av - 0.3)
        bar_v = np.maximum(au - 0.3, av - 0.9)
        return np.minimum(bar_h, bar_v)
    raise ValueError(f"unknown shape {shape!r}: expected one of {', '.join(SHAPES)}")
