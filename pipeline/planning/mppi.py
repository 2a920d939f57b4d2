"""Model-predictive path integral control (MPPI) over action sequences.

Each iteration samples `samples` action sequences around the current mean plan, scores them
with a cost function, and moves the plan to their exponentially weighted mean:

    eps_t   = beta * eps_{t-1} + sqrt(1 - beta^2) * n_t,   n_t ~ N(0, I)   (correlated noise)
    U_k     = clip(U + noise_std * eps_k, low, high)                      (K candidates)
    w_k     = softmax_k(-(c_k - min c) / ((max c - min c) * temperature)) (costs rescaled to [0, 1])
    U      <- sum_k w_k U_k

Costs are rescaled to [0, 1] before the softmax so `temperature` means the same for any cost
scale (0.05, the paper's value: the best candidates dominate). The planner is model-agnostic:
`cost(U)` takes candidates (K, H, a) and returns (K,) costs, e.g. the token distance of a
world model's rollout under the adapted actions to a goal frame.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class MPPIConfig:
    """samples K, horizon H, temperature, beta (noise correlation in time, 0: white), noise_std,
    iterations per plan; the paper's defaults (200 samples, horizon 10, temperature 0.05, β 0.5)."""

    samples: int = 200
    horizon: int = 10
    temperature: float = 0.05
    beta: float = 0.5
    noise_std: float = 1.0
    iterations: int = 3

    def validate(self) -> None:
        for name in ("samples", "horizon", "iterations"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"mppi.{name} = {getattr(self, name)!r}: expected an integer >= 1")
        if not 0 < self.temperature:
            raise ValueError(f"mppi.temperature = {self.temperature!r}: expected a number > 0")
        if not 0 <= self.beta < 1:
            raise ValueError(f"mppi.beta = {self.beta!r}: expected a number in [0, 1)")
        if not 0 < self.noise_std:
            raise ValueError(f"mppi.noise_std = {self.noise_std!r}: expected a number > 0")


def correlated_noise(samples: int, horizon: int, dim: int, beta: float, generator: torch.Generator) -> Tensor:
    """(K, H, a) unit-variance noise, AR(1) in time with coefficient beta."""
    white = torch.randn(samples, horizon, dim, generator=generator)
    out = torch.empty_like(white)
    out[:, 0] = white[:, 0]
    scale = math.sqrt(1.0 - beta * beta)
    for t in range(1, horizon):
        out[:, t] = beta * out[:, t - 1] + scale * white[:, t]
    return out


def plan(cost: Callable[[Tensor], Tensor], init: Tensor, cfg: MPPIConfig, generator: torch.Generator,
         low: Tensor | float | None = None, high: Tensor | float | None = None) -> Tensor:
    """The MPPI plan (H, a) from the initial plan `init` (H, a), within [low, high] where given."""
    cfg.validate()
    mean = init.clone().float()                                               # (H, a)
    for _ in range(cfg.iterations):
        noise = correlated_noise(cfg.samples, *mean.shape, cfg.beta, generator)  # (K, H, a)
        candidates = mean + cfg.noise_std * noise
        if low is not None or high is not None:
            candidates = candidates.clamp(low, high)
        costs = cost(candidates).float()                                      # (K,)
        if costs.shape != (cfg.samples,):
            raise ValueError(f"cost returned shape {tuple(costs.shape)}; expected ({cfg.samples},)")
        spread = (costs.max() - costs.min()).clamp_min(1e-12)
        weights = torch.softmax(-(costs - costs.min()) / (spread * cfg.temperature), dim=0)  # (K,)
        mean = torch.einsum("k,kha->ha", weights, candidates)
    return mean


def shift(plan_: Tensor, steps: int = 1) -> Tensor:
    """The plan for the next replanning: drop the first `steps` actions, repeat the last (warm start)."""
    return torch.cat([plan_[steps:], plan_[-1:].expand(steps, -1)])
