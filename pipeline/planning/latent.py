"""Planning with a world model's latent actions: the action adapter's training pairs, the world-model
cost, and the held-out tasks of a dataset's simulator.

A world model understands latent actions z, a simulator true actions a. The adapter (fit on
(a_t, z_t) pairs of training episodes, z inferred by the model) lets MPPI search over true
actions through the model:

    cost(U) = mean_h ‖ model.rollout(e_context, adapter(U), H).e[:, h] - e_goal ‖²   U (K, H, a)

on normalized tokens: the context is the encoded last `context` frames the camera saw, the goal
the encoded goal frame. The mean over the horizon (not the last step alone) matches the
simulator-as-model oracle's default cost (`benchmark.simulator_cost`, "mean"), so the two
planners differ only in their model. The cost never reads the simulator state.

Tasks come from held-out episodes of the training dataset: start at kept frame `start` of an
episode, goal = the true state `goal_offset` kept frames later (the source's `simulator_at`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.data.sources import EpisodeRef, Source
from pipeline.data.windows import Windows
from pipeline.evaluation.clips import batched, pick, stack
from pipeline.params import PlanParams
from pipeline.planning.benchmark import Cost, Observation
from pipeline.planning.simulators import Task

Encode = Callable[[np.ndarray], np.ndarray]  # frames (n, H, W, 3) uint8 -> normalized tokens (n, h, w, D)


class NoPlanning(Exception):
    """Planning is impossible for this dataset or variant; the message says why."""


def adapter_pairs(model: nn.Module, windows: Windows, trajectories: int,
                  dev: torch.device) -> tuple[Tensor, Tensor, int]:
    """(a (M, action_dim), z (M, d_z), episodes used): every transition of the clips tiling the
    first `trajectories` episodes of `windows`, its stored action and the model's z. The action
    of transition t -> t+1 is actions[t] (the sources' convention)."""
    if windows.actions is None:
        raise NoPlanning(f"{windows.path}: the store has no actions to fit an action adapter on")
    if windows.frame_skip != 1:
        raise NoPlanning(f"planning needs train.frame_skip = 1 (one model step = one simulator step), "
                         f"not {windows.frame_skip}")
    idx = pick(windows, tile=True, limit=trajectories)
    clips = stack(windows, idx)
    z = batched(model.infer_actions, clips["e"], dev=dev)                          # (n, T-1, d_z)
    a = clips["actions"][:, :-1]                                                   # (n, T-1, a)
    used = len(np.unique(clips["episode"]))
    return (torch.from_numpy(a.reshape(-1, a.shape[-1])).float(), torch.from_numpy(z.reshape(-1, z.shape[-1])),
            used)


@dataclass
class WorldModelCost:
    """The world-model cost builder (see the module docstring); call it with an Observation."""

    model: nn.Module
    adapter: nn.Module
    encode: Encode
    goal: Tensor                  # (h, w, D) normalized goal tokens
    context: int
    dev: torch.device

    def __call__(self, obs: Observation) -> Cost:
        frames = np.stack(obs.history[-self.context:])                              # (c, H, W, 3)
        e = torch.from_numpy(self.encode(frames)).float().to(self.dev)[None]        # (1, c, h, w, D)
        goal = self.goal.to(self.dev)

        @torch.no_grad()
        def cost(candidates: Tensor) -> Tensor:                                     # (K, H, a) -> (K,)
            k, h = candidates.shape[:2]
            z = self.adapter(candidates.float().to(self.dev))                       # (K, H, d_z)
            out = self.model.rollout(e.expand(k, *e.shape[1:]), z, h).e             # (K, H, h, w, D)
            return (out - goal).square().mean(dim=(2, 3, 4)).mean(1).cpu()

        return cost


@dataclass(frozen=True)
class HeldOutTask:
    """A task from a held-out episode `ref`: start and goal states, and the goal's frame."""

    ref: EpisodeRef
    task: Task
    goal_frame: np.ndarray        # (H, W, 3) uint8


def simulator_at(source: Source, ref: EpisodeRef, frame: int):
    """A simulator in the exact state of kept frame `frame` of `ref`, or None: the source's own
    (gym_pusht generates its episodes in one), or the synthetic renderer driven by pose changes
    (kept here so the data stages do not depend on planning code)."""
    if source.params.kind != "synthetic":
        return source.simulator_at(ref, frame)
    from pipeline.planning.synthetic_sim import SyntheticSim

    if source.params.frame_stride != 1:
        raise NoPlanning(f"the synthetic simulator needs frame_stride 1 (one step per kept frame), "
                         f"not {source.params.frame_stride}")
    n = source.count(ref)
    if not 0 <= frame < n:
        raise NoPlanning(f"{ref.origin}: frame {frame} requested, the episode has {n} kept frames")
    return SyntheticSim.at_episode(source, int(ref.key.rsplit("_", 1)[1]), frame)


def held_out_tasks(source: Source, keys: list[str], cfg: PlanParams) -> list[HeldOutTask]:
    """One task per episode key (the first `cfg.goals` that are long enough): start at kept
    frame cfg.start, goal = the state cfg.goal_offset kept frames later."""
    refs = {r.key: r for r in source.refs()}
    if keys and simulator_at(source, refs[keys[0]], 0) is None:  # before any length check: the first reason
        raise NoPlanning(f"the {source.params.kind!r} source has no simulator to plan in "
                         f"(kinds with one: synthetic, gym_pusht)")
    out = []
    for key in keys:
        ref: EpisodeRef = refs[key]
        goal_at = cfg.start + cfg.goal_offset
        if source.count(ref) <= goal_at:
            continue
        start, goal = simulator_at(source, ref, cfg.start), simulator_at(source, ref, goal_at)
        out.append(HeldOutTask(ref, Task(start.state(), goal.state()), goal.frame()))
        if len(out) == cfg.goals:
            break
    if not out:
        raise NoPlanning(f"no held-out episode has the {cfg.start + cfg.goal_offset + 1} kept frames a task needs "
                         f"(plan.start + plan.goal_offset + 1)")
    return out


def frames_before(source: Source, task: HeldOutTask, cfg: PlanParams) -> tuple[np.ndarray, ...]:
    """The episode's cfg.context - 1 frames before the task's start (a world model's first context)."""
    return tuple(source.load(task.ref, cfg.start - cfg.context + 1, cfg.start).frames)
