"""Simulators for planning benchmarks: a scene that can be saved, restored, stepped and filmed.

A planning benchmark asks a planner to drive a simulator from a start state to a goal state
taken from another moment or trajectory, then judges where it ended. Two kinds of function
compare states, and they must never be mixed:

- `distance(state, goal)`: a task-space distance (the simulator-as-model planner's *oracle
  cost*). It is the only state comparison any planner cost may use; a world-model planner uses
  none (it compares what its model predicts to the goal frame).
- `success(state, goal)` and `score(state, goal)`: the benchmark's *verdict*. They are called
  once a run has ended, never inside a cost: a planner that optimised the verdict would make the
  benchmark measure nothing.

The code keeps them apart: a cost builder (`benchmark.simulator_cost`) is handed `Dynamics`, a
view with only state / set_state / step, and the `distance` function, never the simulator; the
closed loop (`benchmark.closed_loop`) returns a trajectory and never scores it; only
`benchmark.evaluate` calls the verdict.

Implementations: `pusht_sim.PushTSim` (gym-pusht's pymunk scene, absolute agent targets) and
`synthetic_sim.SyntheticSim` (the built-in renderer, per-step pose changes).
"""
from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Task:
    """Reach `goal` from `start` (two full simulator states, as `Simulator.state` gives them)."""

    start: np.ndarray
    goal: np.ndarray


@dataclass(frozen=True)
class Dynamics:
    """What a model-based cost may touch of a simulator: save, restore, step. No verdict."""

    state: Callable[[], np.ndarray]
    set_state: Callable[[np.ndarray], None]
    step: Callable[[np.ndarray], None]


class Simulator(abc.ABC):
    """A deterministic scene. The state vector is the whole truth: `set_state(s)` followed by the
    same actions always gives the same states and frames, whatever happened before."""

    action_low: np.ndarray   # (a,) float64: actions are clipped into [action_low, action_high]
    action_high: np.ndarray  # (a,) float64

    @property
    def action_dim(self) -> int:
        return len(self.action_low)

    @abc.abstractmethod
    def reset(self, seed: int) -> None:
        """A random start state drawn from `np.random.default_rng(seed)`."""

    @abc.abstractmethod
    def state(self) -> np.ndarray:
        """A copy of the full physical state (enough for `set_state` to restore it exactly)."""

    @abc.abstractmethod
    def set_state(self, state: np.ndarray) -> None:
        """Put the scene exactly into `state` (as `state()` returned it)."""

    @abc.abstractmethod
    def step(self, action: np.ndarray) -> None:
        """Apply one action (a,), clipped into the bounds."""

    @abc.abstractmethod
    def frame(self) -> np.ndarray:
        """(H, W, 3) uint8: what the camera sees now, as the matching data source gives frames."""

    @abc.abstractmethod
    def idle_action(self) -> np.ndarray:
        """(a,) the action that leaves the scene as it is: a planner's first plan repeats it."""

    @abc.abstractmethod
    def distance(self, state: np.ndarray, goal: np.ndarray) -> float:
        """Task-space distance from `state` to `goal` (>= 0): the oracle cost, for planners."""

    @abc.abstractmethod
    def score(self, state: np.ndarray, goal: np.ndarray) -> dict[str, float]:
        """The verdict's measurements (coverage, pose errors, ...). Never part of a cost."""

    @abc.abstractmethod
    def success(self, state: np.ndarray, goal: np.ndarray) -> bool:
        """Whether `state` counts as having reached `goal`. Never part of a cost."""

    @abc.abstractmethod
    def easy_goal(self, seed: int) -> Task:
        """A start and a goal a few (3-5) smooth actions away from it, the goal not already reached
        at the start; the simulator is left at the start."""

    def dynamics(self) -> Dynamics:
        """The save / restore / step view handed to model-based costs."""
        return Dynamics(self.state, self.set_state, self.step)

    def clip(self, action: np.ndarray) -> np.ndarray:
        """(a,) float64 action clipped into the bounds; a wrong shape is an error."""
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (self.action_dim,):
            raise ValueError(f"{type(self).__name__}: action of shape {action.shape}, expected ({self.action_dim},)")
        return np.clip(action, self.action_low, self.action_high)


def wrap_angle(angle: np.ndarray | float) -> np.ndarray:
    """Angles mapped into [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi
