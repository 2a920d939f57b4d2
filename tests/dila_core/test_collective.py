"""Batch statistics over ranks: identities in one process; over two gloo ranks, the gathered
batch in rank order and gradients that DDP's mean turns into the single-process gradient."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dila_core.collective import from_first_rank, gather, total, world_size
from dila_core.losses import latent_std


def batch(rank: int) -> torch.Tensor:
    return torch.arange(6, dtype=torch.float64).reshape(3, 2) * (rank + 1) + rank


def test_single_process_identities():
    x = batch(0)
    assert world_size() == 1
    assert gather(x) is x and total(x) is x and from_first_rank(x) is x


def _worker(rank: int, init: str, out: dict) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        x = batch(rank).requires_grad_(True)
        all_x = gather(x)
        latent_std(all_x[:, None]).backward()
        out[rank] = {"all": all_x.detach(), "grad": x.grad.clone(), "world": world_size(),
                     "total": total(torch.tensor([rank + 1])), "first": from_first_rank(torch.tensor([rank + 7]))}
    finally:
        dist.destroy_process_group()


def test_two_ranks_gather_in_rank_order_with_ddp_consistent_gradients(tmp_path):
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(f"file://{tmp_path / 'rendezvous'}", out), nprocs=2, join=True)
    whole = torch.cat([batch(0), batch(1)]).requires_grad_(True)
    latent_std(whole[:, None]).backward()                          # one process, whole batch
    for rank in (0, 1):
        r = out[rank]
        assert r["world"] == 2 and r["total"].tolist() == [3] and r["first"].tolist() == [7]
        torch.testing.assert_close(r["all"], whole.detach())
        # each rank's gradient is the world size times its slice of the single-process gradient;
        # DDP averages parameter gradients over the ranks, which divides the factor out again
        torch.testing.assert_close(r["grad"], 2 * whole.grad[3 * rank:3 * rank + 3])
