"""Push-T episodes generated in gym-pusht's simulator by a scripted policy (`kind: gym_pusht`).

Episode `index` is drawn from `np.random.default_rng([seed, index])` alone: its start state
first (gym-pusht's start distribution, see `PushTSim.reset`), then one policy draw per step, so
an episode never depends on how many exist, and a longer one extends a shorter one. Physics,
frames and state conventions are `pipeline.planning.pusht_sim.PushTSim`'s; generating needs the
`sim` extra (`pip install -e '.[sim]'`).

Per kept frame t (T = min(frames, max_frames)):
- frames (T, 96, 96, 3) uint8: gym-pusht's camera (then `resize`, if set).
- actions (T, 2) float32: the agent's absolute target, held for `frame_stride` control periods
  of 0.1 s, from kept frame t to t + 1 (so frame_stride slows the policy, it drops no action).
  The last frame's action is the policy's next target: the one a longer episode applies there.
- labels: "state" (5,) float32 = (agent_x, agent_y, block_x, block_y, block_angle), the Push-T
  replay buffer's layout (angle not wrapped); "sim_state" (10,) float64, the simulator's full
  state: `PushTSim.set_state(sim_state[t])` then `step(actions[t])` gives exactly frame t + 1.

Policies:
- "random_walk": the target wanders as a smooth random walk, velocity an AR(1) process
  (persistence `_PERSISTENCE`, steps of `_STEP` px), and is pulled each step by a fraction
  `_PULL` of its offset from the block's centre, so the agent keeps running into the block.
  On 16 episodes of 64 frames (seed 0) the block moves (by > 0.5 px or 0.005 rad) in 70 % of
  the transitions (measured with `moving_fraction`), by a median 111 px over 25 steps.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline.config import check, to_dict
from pipeline.data.sources.base import (
    DatasetParams,
    Episode,
    EpisodeError,
    EpisodeRef,
    LabelSpec,
    Schema,
    Source,
    SourceError,
    apply_resize,
)

POLICIES = ("random_walk",)
_PERSISTENCE, _STEP, _PULL, _MARGIN = 0.8, 15.0, 0.3, 20.0  # random_walk: AR(1) coefficient, px, -, px
_KEY = re.compile(r"episode_(\d{6,})")
_PACKAGES = ("gym-pusht", "pymunk", "shapely", "pygame", "opencv-python")  # what the frames depend on


@dataclass(frozen=True)
class GymPushTParams(DatasetParams):
    """The generator (one `datasets:` entry with `kind: gym_pusht`).

    episodes: number of episodes; frames: kept frames per episode (max_frames may cut it);
    policy: the scripted policy (see the module docstring); seed: of every random draw.
    frame_stride: control periods (0.1 s) each action is held; path: this module.
    """

    kind: str = "gym_pusht"
    path: str = "pipeline/data/sources/gym_pusht.py"
    episodes: int = 32
    frames: int = 64
    policy: Literal["random_walk"] = "random_walk"
    seed: int = 0

    def validate(self, where: str) -> None:
        super().validate(where)
        rules = [
            ("kind", self.kind == "gym_pusht", "'gym_pusht'"),
            ("episodes", self.episodes >= 1, "an integer >= 1"),
            ("frames", self.frames >= 2, "an integer >= 2"),
            ("policy", self.policy in POLICIES, f"one of {', '.join(POLICIES)}"),
            ("seed", self.seed >= 0, "an integer >= 0"),
        ]
        for name, ok, allowed in rules:
            check(ok, f"{where}.{name}", getattr(self, name), allowed)


class _RandomWalk:
    """The "random_walk" policy: a smooth random walk of the target, pulled towards the block."""

    def __init__(self, sim, rng: np.random.Generator):
        self.sim, self.rng = sim, rng
        self.target = sim.state()[0:2]
        self.velocity = np.zeros(2)

    def act(self, state: np.ndarray) -> np.ndarray:
        noise = self.rng.standard_normal(2)
        self.velocity = _PERSISTENCE * self.velocity + math.sqrt(1 - _PERSISTENCE**2) * _STEP * noise
        pull = _PULL * (self.sim.block_centre(state) - self.target)
        low, high = self.sim.action_low + _MARGIN, self.sim.action_high - _MARGIN
        self.target = np.clip(self.target + self.velocity + pull, low, high)
        return self.target.astype(np.float32)


class GymPushTSource(Source):
    """Scripted-policy episodes simulated in gym-pusht (see the module docstring)."""

    def __init__(self, params: GymPushTParams):
        self.params = params
        self._sim_cache = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_sim_cache": None}  # workers build their own simulator

    def _simulator(self):
        """A PushTSim at this source's action repeat, or SourceError when gym-pusht is missing."""
        from pipeline.planning.pusht_sim import PushTSim, SimulatorUnavailable

        try:
            return PushTSim(action_repeat=self.params.frame_stride)
        except SimulatorUnavailable as err:
            raise SourceError(f"gym_pusht source: {err}") from err

    def _sim(self):
        if self._sim_cache is None:
            self._sim_cache = self._simulator()
        return self._sim_cache

    def refs(self) -> list[EpisodeRef]:
        self._sim()
        seed, n = self.params.seed, self.params.episodes
        return [EpisodeRef(f"episode_{i:06d}", f"gym_pusht episode {i} (seed {seed})") for i in range(n)]

    def schema(self) -> Schema:
        return Schema(action_dim=2, labels={"state": LabelSpec((5,), "float32"),
                                            "sim_state": LabelSpec((10,), "float64")})

    def metadata_count(self, ref: EpisodeRef) -> int:
        return self.count(ref)  # counted from params or the index, nothing decoded

    def count(self, ref: EpisodeRef) -> int:
        self._index(ref)
        p = self.params
        return p.frames if p.max_frames is None else min(p.frames, p.max_frames)  # stride holds actions longer

    def fingerprint(self) -> str:
        """sha256 of the params that shape the episodes, of the generating code and of the
        versions of the packages that simulate and draw them."""
        shaping = {k: v for k, v in to_dict(self.params).items() if k not in ("path", "strict")}
        digest = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode())
        from pipeline.planning import pusht_sim, simulators

        for module in (__file__, pusht_sim.__file__, simulators.__file__):
            digest.update(Path(module).read_bytes())
        for package in _PACKAGES:
            try:
                digest.update(f"{package}=={importlib.metadata.version(package)}\n".encode())
            except importlib.metadata.PackageNotFoundError:
                raise SourceError(f"gym_pusht source: {package} is not installed; install the `sim` extra: "
                                  "pip install -e '.[sim]'") from None
        return digest.hexdigest()

    def load(self, ref: EpisodeRef, start: int = 0, stop: int | None = None) -> Episode:
        index, n = self._index(ref), self.count(ref)
        stop = n if stop is None else stop
        if not 0 <= start < stop <= n:
            raise EpisodeError(ref.origin, f"frames [{start}, {stop}) requested, episode has {n} kept frames")
        states, actions, frames = self._generate(index, stop, render_from=start)
        labels = {"state": states[start:, :5].astype(np.float32), "sim_state": states[start:]}
        return Episode(ref.key, apply_resize(frames, self.params), actions[start:], labels)

    def _generate(self, index: int, n: int, render_from: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Kept frames 0..n-1 of episode `index`: sim states (n, 10) float64, actions (n, 2)
        float32, and the frames (n - render_from, 96, 96, 3) of frames render_from..n-1."""
        sim = self._sim()
        rng = np.random.default_rng([self.params.seed, index])
        sim.reset(int(rng.integers(2**31)))
        policy = _RandomWalk(sim, rng)
        states, actions, frames = np.empty((n, 10)), np.empty((n, 2), np.float32), []
        for t in range(n):
            states[t] = sim.state()
            if t >= render_from:
                frames.append(sim.frame())
            actions[t] = policy.act(states[t])
            if t + 1 < n:                    # the last frame's action is drawn, not needed to step
                sim.step(actions[t])
        return states, actions, np.stack(frames) if frames else np.empty((0, 96, 96, 3), np.uint8)

    def simulator_at(self, ref: EpisodeRef, frame: int):
        """A new PushTSim (one step = one kept transition) in the exact state of kept frame `frame`
        of `ref`: e.g. a planning start, with the goal `load(ref).labels["sim_state"][frame + k]`."""
        index, n = self._index(ref), self.count(ref)
        if not 0 <= frame < n:
            raise EpisodeError(ref.origin, f"frame {frame} requested, episode has {n} kept frames")
        states, _, _ = self._generate(index, frame + 1, render_from=frame + 1)  # no frame needed
        sim = self._simulator()
        sim.set_state(states[frame])
        return sim

    # -- ground truth ----------------------------------------------------------------------------
    def probe_targets(self, actions: np.ndarray | None, labels: dict[str, np.ndarray]) -> np.ndarray | None:
        """The true action (absolute agent target, px) of every transition: (N, T-1, 2) float64."""
        return None if actions is None else actions[:, :-1].astype(np.float64)

    def _index(self, ref: EpisodeRef) -> int:
        match = _KEY.fullmatch(ref.key)
        if match is None or int(match.group(1)) >= self.params.episodes:
            last = f"episode_{self.params.episodes - 1:06d}"
            raise EpisodeError(ref.origin, f"{ref.key!r} is not one of episode_000000..{last}")
        return int(match.group(1))


def moving_fraction(sim_states: np.ndarray, position: float = 0.5, angle: float = 0.005) -> float:
    """Fraction of the transitions of sim_states (..., T, 10) in which the block moved by more than
    `position` px or turned by more than `angle` radians."""
    change = np.diff(sim_states, axis=-2)
    moved = (np.hypot(change[..., 2], change[..., 3]) > position) | (np.abs(change[..., 4]) > angle)
    return float(moved.mean())
