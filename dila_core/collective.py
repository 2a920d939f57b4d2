"""Batch statistics over every torch.distributed rank; plain identities in a single process.

Under DistributedDataParallel each rank sees a slice of the global batch. The terms of
the objective that are statistics of the whole batch (σ_z of the anti-collapse term, the
Σ m normaliser of the symmetry term) and the NSVQ codebook bookkeeping must see the
whole batch too, or N ranks optimise a different objective than one process does. The
model calls these helpers; it never sets up a process group itself.

Gradients: `gather` is differentiable. Every rank computes the same global statistic; the
backward of the gather sums the ranks' gradients for each local slice (N times the
single-process gradient), and DDP's mean over ranks divides by N again, so the update
equals the single-process one.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import Tensor


def world_size() -> int:
    """Ranks in the default process group; 1 without one."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather(x: Tensor) -> Tensor:
    """Every rank's x (B, …) concatenated along dim 0 in rank order (N·B, …); differentiable.
    All ranks must call it with the same shape."""
    if world_size() == 1:
        return x
    return torch.cat(dist_nn.all_gather(x), dim=0)


@torch.no_grad()
def total(x: Tensor) -> Tensor:
    """Sum of x over the ranks (no gradient): counts, histograms."""
    if world_size() == 1:
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x


@torch.no_grad()
def from_first_rank(x: Tensor) -> Tensor:
    """Rank 0's x on every rank (no gradient): one random choice shared by all."""
    if world_size() == 1:
        return x
    x = x.contiguous().clone()
    dist.broadcast(x, src=0)
    return x
