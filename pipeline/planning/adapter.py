"""The action adapter: a small MLP from true actions a to a world model's latent actions z
(the paper's a -> 256 -> d_z), fit by regression on (a, z) pairs of N trajectories, so a planner
can search over true actions through a model that only understands z."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class AdapterConfig:
    action_dim: int
    d_z: int
    hidden: int = 256
    steps: int = 2000
    lr: float = 1e-3
    batch_size: int = 256


class ActionAdapter(nn.Module):
    """a (..., action_dim) -> z (..., d_z); inputs standardised with the fitting set's statistics."""

    def __init__(self, cfg: AdapterConfig):
        super().__init__()
        self.cfg = cfg
        self.net = nn.Sequential(nn.Linear(cfg.action_dim, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, cfg.d_z))
        self.register_buffer("a_mean", torch.zeros(cfg.action_dim))
        self.register_buffer("a_std", torch.ones(cfg.action_dim))

    def forward(self, a: Tensor) -> Tensor:
        return self.net((a - self.a_mean) / self.a_std)


def fit_adapter(a: Tensor, z: Tensor, cfg: AdapterConfig, generator: torch.Generator) -> tuple[ActionAdapter, float]:
    """An adapter fit on pairs a (M, action_dim), z (M, d_z) by MSE with AdamW: (adapter in eval mode,
    final training MSE)."""
    if a.shape[0] != z.shape[0] or a.shape[1:] != (cfg.action_dim,) or z.shape[1:] != (cfg.d_z,):
        raise ValueError(f"fit_adapter: a {tuple(a.shape)} and z {tuple(z.shape)} do not match "
                         f"(M, {cfg.action_dim}) and (M, {cfg.d_z})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        adapter = ActionAdapter(cfg)
    adapter.a_mean.copy_(a.mean(0))
    adapter.a_std.copy_(a.std(0).clamp_min(1e-6))
    opt = torch.optim.AdamW(adapter.parameters(), lr=cfg.lr, weight_decay=0.0)
    for _ in range(cfg.steps):
        idx = torch.randint(0, len(a), (min(cfg.batch_size, len(a)),), generator=generator)
        loss = F.mse_loss(adapter(a[idx]), z[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = float(F.mse_loss(adapter(a), z))
    return adapter.eval(), final
