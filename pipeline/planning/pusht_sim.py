"""Push-T as a simulator: gym-pusht's pymunk scene (a round agent pushing a T-shaped block).

Everything physical comes from the installed gym_pusht (`PushTEnv`): the walls, the agent and
T-block builders (geometry, mass, moment, colours), the PD gains, the control rate and the
drawing; this module only drives them so that a state can be saved and restored exactly.

Conventions (pixels of gym-pusht's 512 x 512 world, y downwards on screen):
- state (10,) float64 = (agent_x, agent_y, block_x, block_y, block_angle, agent_vx, agent_vy,
  block_vx, block_vy, block_spin). The first five are gym-pusht's and the Push-T replay
  buffer's `state`; block (x, y) is the body origin (the middle of the bar's lower edge), the
  angle is in radians and not wrapped.
- action (2,) = the absolute target position of the agent, float32 (as gym-pusht's action
  space), clipped to its bounds [0, 512]. One `step` holds the target for `action_repeat`
  control periods of 0.1 s, each 10 physics steps of PD control, as `PushTEnv.step` does.
- Exact restore: pymunk keeps hidden state between steps (cached contact impulses, the
  broad-phase's pair cache), so every `step` builds a fresh space from the state vector before
  simulating. The scene is then a pure function of the vector: a saved state replays
  identically, whatever ran in between. (Space damping is 0, as in gym-pusht: the block only
  moves while pushed, so its velocities never matter; they are kept for completeness.)
- Frames: gym-pusht's 96 x 96 camera, including its fixed light-green goal T. The benchmark's
  goals are states of other trajectories, not that drawn goal.
- Verdict: coverage = area(T at the state's pose ∩ T at the goal's pose) / area(T);
  success = coverage >= `SUCCESS_COVERAGE`.
"""
from __future__ import annotations

import math
import os

import numpy as np

from pipeline.planning.simulators import Simulator, Task, wrap_angle

# Headless rendering; must be set before pygame (imported by gym_pusht) is.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

SUCCESS_COVERAGE = 0.9  # of the goal T's area; gym-pusht's own task asks 0.95 of its drawn goal
AGENT_WEIGHT = 0.1      # weight of the agent's distance to its goal position in `distance`
STATE_DIM = 10


class SimulatorUnavailable(ImportError):
    """The simulator's package is not installed."""


def gym_pusht_env_module():
    """gym_pusht's environment module, or SimulatorUnavailable naming the extra that installs it."""
    try:
        from gym_pusht.envs import pusht
    except ModuleNotFoundError as err:
        raise SimulatorUnavailable(
            f"the Push-T simulator needs gym-pusht ({err}); install the `sim` extra: pip install -e '.[sim]'"
        ) from err
    return pusht


class PushTSim(Simulator):
    """gym-pusht's scene with exact save / restore (see the module docstring)."""

    def __init__(self, action_repeat: int = 1):
        if action_repeat < 1:
            raise ValueError(f"action_repeat = {action_repeat!r}: expected an integer >= 1")
        pusht = gym_pusht_env_module()
        import pymunk
        import shapely

        self._pymunk, self._shapely, self._env_class = pymunk, shapely, pusht.PushTEnv
        # The camera: an env whose space is swapped for ours before each drawing.
        self._camera = pusht.PushTEnv(obs_type="state", render_mode="rgb_array")
        env = self._camera
        env._setup()
        self._walls = [(tuple(s.a), tuple(s.b), s.radius) for s in env.space.shapes
                       if isinstance(s, pymunk.Segment)]
        self._agent_radius = next(iter(env.agent.shapes)).radius
        self._damping, self._gravity = env.space.damping, tuple(env.space.gravity)
        # physics steps per `step`: 10 per 0.1 s control period, as PushTEnv.step runs them
        self._steps = int(1 / (env.dt * env.control_hz)) * action_repeat
        self.action_repeat = action_repeat
        self.action_low = env.action_space.low.astype(np.float64)
        self.action_high = env.action_space.high.astype(np.float64)
        # The T at pose (0, 0, 0): its outline, its area, its centre of gravity (body frame).
        parts = [shapely.Polygon([tuple(v) for v in s.get_vertices()]) for s in env.block.shapes]
        outline = shapely.union_all(parts).normalize()
        self._outline = np.asarray(outline.exterior.coords[:-1], dtype=np.float64)  # (V, 2)
        self._area = outline.area
        self._cog = np.asarray(tuple(env.block.center_of_gravity), dtype=np.float64)
        self._state = np.zeros(STATE_DIM)
        self.reset(0)

    # -- the scene ---------------------------------------------------------------------------
    def _build(self, state: np.ndarray):
        """A fresh pymunk space holding `state`: (space, agent body, block body)."""
        pm, env_class = self._pymunk, self._env_class
        space = pm.Space()
        space.gravity, space.damping = self._gravity, self._damping
        space.add(*[env_class.add_segment(space, a, b, r) for a, b, r in self._walls])
        agent = env_class.add_circle(space, (state[0], state[1]), self._agent_radius)
        block, _ = env_class.add_tee(space, (state[2], state[3]), state[4])
        agent.velocity = (state[5], state[6])
        block.velocity = (state[7], state[8])
        block.angular_velocity = state[9]
        return space, agent, block

    @staticmethod
    def _read(agent, block) -> np.ndarray:
        return np.array([*agent.position, *block.position, block.angle,
                         *agent.velocity, *block.velocity, block.angular_velocity], dtype=np.float64)

    def reset(self, seed: int) -> None:
        """gym-pusht's start distribution: agent and block positions uniform on integer pixels
        (agent in [50, 450), block in [100, 400)), block angle uniform in [-pi, pi), at rest."""
        rng = np.random.default_rng(seed)
        agent, block = rng.integers(50, 450, 2), rng.integers(100, 400, 2)
        self.set_state(np.array([*agent, *block, rng.uniform(-math.pi, math.pi), 0, 0, 0, 0, 0], dtype=np.float64))

    def state(self) -> np.ndarray:
        return self._state.copy()

    def set_state(self, state: np.ndarray) -> None:
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (STATE_DIM,) or not np.all(np.isfinite(state)):
            raise ValueError(f"PushTSim: state must be ({STATE_DIM},) finite, got {state.shape}")
        self._state = state.copy()

    def step(self, action: np.ndarray) -> None:
        # float32 like gym-pusht's action space, so stored float32 actions replay exactly.
        target = self.clip(action).astype(np.float32)
        tx, ty = float(target[0]), float(target[1])
        env = self._camera
        kp, kv, dt = env.k_p, env.k_v, env.dt
        space, agent, block = self._build(self._state)
        for _ in range(self._steps):
            (px, py), (vx, vy) = agent.position, agent.velocity
            # PD control of the agent's velocity towards the target (PushTEnv.step's law)
            agent.velocity = (vx + (kp * (tx - px) - kv * vx) * dt, vy + (kp * (ty - py) - kv * vy) * dt)
            space.step(dt)
        self._state = self._read(agent, block)

    def frame(self) -> np.ndarray:
        env = self._camera
        env.space, env.agent, env.block = self._build(self._state)
        return np.ascontiguousarray(env._render(visualize=False))  # (96, 96, 3) uint8

    def idle_action(self) -> np.ndarray:
        return self._state[0:2].copy()  # target = where the agent is

    # -- geometry ------------------------------------------------------------------------------
    def keypoints(self, state: np.ndarray) -> np.ndarray:
        """(V, 2) world positions of the T outline's corners at the block pose of `state`."""
        x, y, angle = state[2], state[3], state[4]
        c, s = math.cos(angle), math.sin(angle)
        return self._outline @ np.array([[c, s], [-s, c]]) + (x, y)

    def block_polygon(self, state: np.ndarray):
        """The T at the block pose of `state`, as a shapely polygon."""
        return self._shapely.Polygon(self.keypoints(state))

    def block_centre(self, state: np.ndarray) -> np.ndarray:
        """(2,) the block's centre of gravity in the world."""
        c, s = math.cos(state[4]), math.sin(state[4])
        return np.array([c * self._cog[0] - s * self._cog[1], s * self._cog[0] + c * self._cog[1]]) + state[2:4]

    # -- cost and verdict ----------------------------------------------------------------------
    def distance(self, state: np.ndarray, goal: np.ndarray) -> float:
        """Mean distance (px) between the T's corners at the two block poses, plus AGENT_WEIGHT
        times the agent's distance to its goal position (it breaks ties while the block is not
        being touched)."""
        block = np.linalg.norm(self.keypoints(state) - self.keypoints(goal), axis=1).mean()
        return float(block + AGENT_WEIGHT * np.linalg.norm(state[0:2] - goal[0:2]))

    def score(self, state: np.ndarray, goal: np.ndarray) -> dict[str, float]:
        here, there = self.block_polygon(state), self.block_polygon(goal)
        return {
            "coverage": float(here.intersection(there).area / self._area),
            "position_error": float(np.linalg.norm(state[2:4] - goal[2:4])),   # px, block origin
            "angle_error": float(abs(wrap_angle(state[4] - goal[4]))),          # radians
        }

    def success(self, state: np.ndarray, goal: np.ndarray) -> bool:
        return self.score(state, goal)["coverage"] >= SUCCESS_COVERAGE

    # -- easy goals ----------------------------------------------------------------------------
    def easy_goal(self, seed: int) -> Task:
        """The agent starts just beside the block (a few px clear of it) and pushes it for 3-5
        steps, aiming at the block's centre along a smoothly wandering direction; the goal is
        where that leaves the scene. Pushes that leave the block near its start are redrawn."""
        rng = np.random.default_rng([seed, 1])
        for _ in range(100):
            start = self._beside_block(rng)
            self.set_state(start)
            aim = self.block_centre(start) - start[0:2]
            heading = math.atan2(aim[1], aim[0])
            speed = rng.uniform(12.0, 25.0)                                # px of target per step
            target = start[0:2].copy()
            for _ in range(int(rng.integers(3, 6))):
                heading += rng.normal(0.0, 0.15)
                target = target + speed * np.array([math.cos(heading), math.sin(heading)])
                self.step(target)
            goal = self.state()
            if not self.success(start, goal):
                self.set_state(start)
                return Task(start, goal)
        raise RuntimeError(f"easy_goal({seed}): no push moved the block in 100 tries")

    def _beside_block(self, rng: np.random.Generator) -> np.ndarray:
        """A start state with the block drawn as in `reset` and the agent at rest beside it."""
        shapely = self._shapely
        block = np.array([*rng.integers(100, 400, 2), rng.uniform(-math.pi, math.pi)], dtype=np.float64)
        state = np.array([0, 0, *block, 0, 0, 0, 0, 0], dtype=np.float64)
        polygon, centre = self.block_polygon(state), self.block_centre(state)
        direction = rng.uniform(-math.pi, math.pi)
        unit = np.array([math.cos(direction), math.sin(direction)])
        clearance = self._agent_radius + rng.uniform(2.0, 10.0)
        for reach in np.arange(0.0, 200.0, 1.0):                          # walk out from the centre
            agent = centre + reach * unit
            if polygon.distance(shapely.Point(agent)) >= clearance:
                break
        state[0:2] = np.clip(agent, self.action_low + 20, self.action_high - 20)
        return state
