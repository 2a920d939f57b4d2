"""The world-model planner of the planning benchmark: MPPI over true actions through the action
adapter and a variant's final world model, toward the encoded goal frame
(`latent.WorldModelCost`), on the tasks and with the verdict of `pipeline.planning.baselines`.
Returns {"success_rate", "tasks", "adapter", ...}; all randomness comes from params.seed.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from pipeline.data.encoder import EncoderUnavailable, load_recorded
from pipeline.data.windows import Windows, normalize
from pipeline.params import Params
from pipeline.planning.adapter import AdapterConfig, fit_adapter
from pipeline.planning.baselines import planning_config, setup, solve
from pipeline.planning.benchmark import Trajectory, closed_loop
from pipeline.planning.latent import HeldOutTask, NoPlanning, WorldModelCost, adapter_pairs, frames_before
from pipeline.planning.simulators import Simulator
from pipeline.training.distributed import device
from pipeline.training.runs import load_final_model, variant_capabilities


def _encoder(params: Params, val: Windows, dev: torch.device) -> Callable[[np.ndarray], np.ndarray]:
    """frames (n, H, W, 3) -> normalized tokens (n, h, w, D) with the store's own frozen encoder."""
    try:
        encoder = load_recorded(val.attrs["encoder"], params.encoder).to(dev)
    except EncoderUnavailable as err:
        raise NoPlanning(f"the store's encoder cannot be rebuilt: {err}") from err
    mean, std = val.mean.numpy(), val.std.numpy()
    return lambda frames: normalize(encoder.encode_frames(frames).astype(np.float16), mean, std)


def world_model_planner(params: Params, variant: str) -> dict[str, Any]:
    """MPPI through `variant`'s final model and an adapter fit on its own training episodes."""
    if not variant_capabilities(params, variant).latent_actions:
        raise NoPlanning(f"variant {variant!r} has no latent actions to plan with")
    torch.manual_seed(params.seed)
    dev = device()
    source, tasks, (train, val) = setup(params)
    model, phase, step, weights = load_final_model(params, variant, val, dev)
    cfg = params.plan
    generator = torch.Generator().manual_seed(params.seed)
    a, z, used = adapter_pairs(model, train, cfg.adapter_trajectories, dev)
    adapter_cfg = AdapterConfig(action_dim=a.shape[1], d_z=z.shape[1], hidden=cfg.adapter_hidden,
                                steps=cfg.adapter_steps)
    adapter, adapter_mse = fit_adapter(a, z, adapter_cfg, generator)
    encode, plan_cfg = _encoder(params, val, dev), planning_config(cfg)

    def control(sim: Simulator, task: HeldOutTask) -> Trajectory:
        goal = torch.from_numpy(encode(task.goal_frame[None])[0]).float()          # (h, w, D)
        cost = WorldModelCost(model, adapter.to(dev), encode, goal, cfg.context, dev)
        return closed_loop(sim, cost, plan_cfg, generator, frames_before(source, task, cfg))

    out = solve(source, tasks, cfg, control)
    z_var = float(z.var(0).sum())
    return {"variant": variant, "dataset": params.train.dataset, "goals": len(tasks),
            "model": {"path": str(weights), "phase": phase, "step": step},
            "adapter": {"episodes": used, "pairs": len(a), "train_mse": adapter_mse,
                        "explained": 1.0 - adapter_mse * z.shape[1] / z_var if z_var > 0 else None},
            **out}
