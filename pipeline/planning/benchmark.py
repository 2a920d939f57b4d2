"""Planning benchmarks in a simulator: closed-loop MPPI toward a goal state, the
simulator-as-model (oracle) cost, a random-action baseline, and the verdict.

The loop is independent of where a cost comes from. `closed_loop` asks a *cost builder* for a
fresh cost at every replanning, handing it the current `Observation` (frame and state):

    make_cost(obs) -> cost,   cost(candidates (K, H, a) true actions) -> (K,) costs

- the oracle (`simulator_cost`) rolls every candidate out in a simulator from `obs.state` and
  returns the `distance` of the rolled-out states to the goal state;
- a world-model cost (the later pipeline) encodes `obs.frame`, rolls the candidates out in the
  model and compares with the goal frame's tokens; it must not read `obs.state`.

MPPI searches normalised actions u in [-1, 1]^a (a = mid + half_range * u), so one noise_std
suits every action space. The verdict (`Simulator.success` / `score`) is only ever called by
`evaluate`, after a run (see `pipeline.planning.simulators`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from pipeline.config import check
from pipeline.planning.mppi import MPPIConfig, plan, shift
from pipeline.planning.simulators import Dynamics, Simulator, Task

Cost = Callable[[Tensor], Tensor]                       # (K, H, a) actions -> (K,) costs
Distance = Callable[[np.ndarray, np.ndarray], float]    # (state, goal) -> task-space distance


@dataclass(frozen=True)
class Observation:
    """What a cost builder is shown at a replanning: the camera frame (H, W, 3) uint8, the
    simulator state (for the simulator-as-model oracle only) and every frame of the episode so
    far, the current one last (a world model's context: consecutive frames, whatever the
    replanning interval)."""

    frame: np.ndarray
    state: np.ndarray
    history: tuple[np.ndarray, ...] = ()


CostBuilder = Callable[[Observation], Cost]


@dataclass(frozen=True)
class PlanningConfig:
    """max_steps actions executed per episode; a new plan every replan_every of them (the rest of
    the old plan, shifted, warm-starts the next); mppi: the planner (noise_std in normalised units)."""

    max_steps: int = 30
    replan_every: int = 1
    mppi: MPPIConfig = field(default_factory=lambda: MPPIConfig(noise_std=0.1))

    def validate(self, where: str = "planning") -> None:
        check(isinstance(self.max_steps, int) and self.max_steps >= 1, f"{where}.max_steps", self.max_steps,
              "an integer >= 1")
        horizon = self.mppi.horizon
        check(isinstance(self.replan_every, int) and 1 <= self.replan_every <= horizon, f"{where}.replan_every",
              self.replan_every, f"an integer in 1..mppi.horizon ({horizon})")
        self.mppi.validate()


@dataclass(frozen=True)
class Trajectory:
    """states (T + 1, *state) from the start, actions (T, a) as executed (clipped)."""

    states: np.ndarray
    actions: np.ndarray

    @property
    def final(self) -> np.ndarray:
        return self.states[-1]


def _action_map(env: Simulator) -> tuple[Tensor, Tensor]:
    """(mid, half_range), each (a,) float32, of the map from normalised u to true actions."""
    low, high = torch.from_numpy(env.action_low).float(), torch.from_numpy(env.action_high).float()
    return (low + high) / 2, (high - low) / 2


def closed_loop(env: Simulator, make_cost: CostBuilder, cfg: PlanningConfig, generator: torch.Generator,
                before: tuple[np.ndarray, ...] = ()) -> Trajectory:
    """Run MPPI in closed loop in `env` from its current state for cfg.max_steps actions; `before`
    are frames (H, W, 3) seen before the start, which open every observation's history."""
    cfg.validate()
    mid, half = _action_map(env)
    safe_half = torch.where(half > 0, half, torch.ones_like(half))           # fixed dimensions map to u = 0
    idle = (torch.from_numpy(env.idle_action()).float() - mid) / safe_half
    u = idle.clamp(-1, 1).expand(cfg.mppi.horizon, -1).clone()                # (H, a) normalised plan
    states, actions, frames = [env.state()], [], [*before, env.frame()]
    while len(actions) < cfg.max_steps:
        cost = make_cost(Observation(frames[-1], env.state(), tuple(frames)))
        u = plan(lambda cand: cost(mid + half * cand), u, cfg.mppi, generator, -1.0, 1.0)
        n = min(cfg.replan_every, cfg.max_steps - len(actions))
        for action in (mid + half * u[:n]).double().numpy():
            env.step(action)
            actions.append(env.clip(action))
            states.append(env.state())
            frames.append(env.frame())
        u = shift(u, n)
    return Trajectory(np.stack(states), np.stack(actions))


Reduce = Literal["final", "min", "mean"]
_REDUCE = {"final": lambda d: d[-1], "min": min, "mean": lambda d: sum(d) / len(d)}


def simulator_cost(model: Dynamics, distance: Distance, goal: np.ndarray, reduce: Reduce = "mean") -> CostBuilder:
    """The simulator-as-model cost: each candidate is rolled out in `model` from the observed
    state; its cost is `distance` to `goal` of the last state ("final"), of the closest state
    along the horizon ("min") or its mean over the horizon ("mean": also rewards getting there
    early, which "final" and "min" do not). The model's own state is restored afterwards, so
    `model` may be the very simulator being controlled. Only `distance` is seen: never the verdict."""
    if reduce not in _REDUCE:
        raise ValueError(f"reduce = {reduce!r}: expected one of {', '.join(_REDUCE)}")
    summary = _REDUCE[reduce]
    goal = np.array(goal, dtype=np.float64)

    def build(obs: Observation) -> Cost:
        start = np.array(obs.state, dtype=np.float64)

        def cost(candidates: Tensor) -> Tensor:                               # (K, H, a) -> (K,)
            saved = model.state()
            out = np.empty(len(candidates))
            try:
                for k, sequence in enumerate(candidates.double().numpy()):
                    model.set_state(start)
                    reached = []
                    for action in sequence:
                        model.step(action)
                        reached.append(distance(model.state(), goal))
                    out[k] = summary(reached)
            finally:
                model.set_state(saved)
            return torch.from_numpy(out)

        return cost

    return build


def random_rollout(env: Simulator, steps: int, rng: np.random.Generator) -> Trajectory:
    """The baseline: `steps` actions drawn uniformly within the bounds, from env's current state."""
    states, actions = [env.state()], []
    for _ in range(steps):
        action = rng.uniform(env.action_low, env.action_high)
        env.step(action)
        actions.append(action)
        states.append(env.state())
    return Trajectory(np.stack(states), np.stack(actions))


def evaluate(env: Simulator, trajectory: Trajectory, goal: np.ndarray) -> dict[str, float | bool]:
    """The verdict on where a run ended: env.score plus success."""
    return {**env.score(trajectory.final, goal), "success": env.success(trajectory.final, goal)}


Controller = Callable[[Simulator, Task], Trajectory]


def oracle_controller(model: Simulator, cfg: PlanningConfig, generator: torch.Generator,
                      reduce: Reduce = "mean") -> Controller:
    """MPPI with the simulator-as-model cost of `model` (another instance, or the env itself)."""
    def control(env: Simulator, task: Task) -> Trajectory:
        return closed_loop(env, simulator_cost(model.dynamics(), model.distance, task.goal, reduce), cfg, generator)
    return control


def random_controller(steps: int, rng: np.random.Generator) -> Controller:
    return lambda env, task: random_rollout(env, steps, rng)


def run_tasks(env: Simulator, tasks: list[Task], controller: Controller) -> list[dict[str, float | bool]]:
    """The verdict of `controller` on each task, each run from the task's start in `env`."""
    results = []
    for task in tasks:
        env.set_state(task.start)
        results.append(evaluate(env, controller(env, task), task.goal))
    return results


def success_rate(results: list[dict[str, float | bool]]) -> float:
    return float(np.mean([bool(r["success"]) for r in results])) if results else 0.0
