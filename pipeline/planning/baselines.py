"""The planning benchmark's tasks and its two reference planners, which need no world model: the
held-out tasks of train.dataset's simulator, solved by random actions and by MPPI with the
simulator as its model (the oracle cost `distance`: the upper bound that normalises a world
model's score, `pipeline.planning.run`). Every planner is judged by the simulator alone
(`benchmark.evaluate`) and returns {"success_rate", "tasks": [per task: episode, the simulator's
score, success]}. All randomness comes from params.seed.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from pipeline.data.sources import Source, build_source
from pipeline.data.windows import Windows
from pipeline.training.runs import open_windows
from pipeline.params import Params, PlanParams
from pipeline.planning.benchmark import (
    PlanningConfig,
    Trajectory,
    evaluate,
    oracle_controller,
    random_rollout,
    success_rate,
)
from pipeline.planning.latent import HeldOutTask, held_out_tasks, simulator_at
from pipeline.planning.mppi import MPPIConfig
from pipeline.planning.simulators import Simulator

Controller = Callable[[Simulator, HeldOutTask], Trajectory]


def planning_config(p: PlanParams) -> PlanningConfig:
    mppi = MPPIConfig(samples=p.samples, horizon=p.horizon, temperature=p.temperature, beta=p.beta,
                      noise_std=p.noise_std, iterations=p.iterations)
    return PlanningConfig(max_steps=p.max_steps, replan_every=p.replan_every, mppi=mppi)


def setup(params: Params) -> tuple[Source, list[HeldOutTask], tuple[Windows, Windows]]:
    """train.dataset's source, the held-out tasks (validation episodes, in store order) and the
    (train, val) windows of 2 frames, split as every stage-two stage splits them."""
    t = params.train
    data = open_windows(params, t.dataset, 2, "plan (2-frame windows)")  # normalised as the models see tokens
    source = build_source(params.dataset(t.dataset))
    keys = data[1].attrs["episodes"]
    tasks = held_out_tasks(source, [keys[i] for i in data[1].episodes], params.plan)
    return source, tasks, data


def solve(source: Source, tasks: list[HeldOutTask], cfg: PlanParams, controller: Controller) -> dict[str, Any]:
    """The verdict of `controller` on each task, each in a fresh simulator of its own episode."""
    results = []
    for task in tasks:
        sim = simulator_at(source, task.ref, cfg.start)
        results.append({"episode": task.ref.key, **evaluate(sim, controller(sim, task), task.task.goal)})
    return {"success_rate": success_rate(results), "tasks": results}


def baselines(params: Params) -> dict[str, Any]:
    """The random-action and simulator-as-model planners on the run's tasks."""
    source, tasks, _ = setup(params)
    cfg, plan_cfg = params.plan, planning_config(params.plan)
    rng = np.random.default_rng(params.seed)
    generator = torch.Generator().manual_seed(params.seed)
    random = solve(source, tasks, cfg, lambda sim, task: random_rollout(sim, cfg.max_steps, rng))
    oracle = solve(source, tasks, cfg, lambda sim, task: oracle_controller(sim, plan_cfg, generator)(sim, task.task))
    return {"dataset": params.train.dataset, "goals": len(tasks), "random": random, "simulator": oracle}
