"""Training on several feature stores at once, each drawn at a configured ratio, without copying
the stores together (the paper trains on SSv2, RT-1, RECON and LoopNav at 1:1:1:1).

`Mixture` is one dataset over the windows of several `Windows` (one per store, each read in
place); item i of the mixture is item i - offset[s] of store s. `MixtureBatches` yields the
global batches of steps start..stop-1: each position of step k's batch picks its store with the
ratios, from a generator seeded by (seed, k) alone, and takes the next window of that store's
own endless sequence of seeded permutations (one per epoch over its windows). The windows of
step k therefore depend on (seed, k) only, given the stores: a run resumed at step k reads
exactly the batches an uninterrupted run reads, and under DDP rank r of W takes slice r.

Normalisation: `pooled_stats` gives the one shared set of per-channel statistics the reference
uses for every dataset (it normalises with fixed statistics; `train.mixture_stats: shared`,
the default): the mixture's mean and standard deviation with each store weighted by its ratio,
computed exactly from the stores' own statistics. `own` keeps each store's own statistics.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from pipeline.config import ParamsError
from pipeline.data import store
from pipeline.data.windows import Windows

SALT = 0x313E7  # keeps the store-choice stream apart from the window permutations


def store_stats(path) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (D,), std (D,)) per-channel statistics a feature store was written with."""
    mean, std = store.token_stats(store.open_store(path))
    return torch.from_numpy(mean), torch.from_numpy(std)


def pooled_stats(stats: list[tuple[torch.Tensor, torch.Tensor]], ratios) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (D,), std (D,)) of the mixture that draws store s with probability ratios[s], from the
    stores' (mean, std): the ratio-weighted mean of the means, and the square root of the weighted
    second moment minus the squared mean (exact for the stores' population statistics)."""
    ratios = np.asarray(ratios, np.float64)
    w = torch.as_tensor(ratios / ratios.sum(), dtype=torch.float64)[:, None]     # (S, 1)
    means = torch.stack([m.double() for m, _ in stats])                            # (S, D)
    second = torch.stack([sd.double() ** 2 for _, sd in stats]) + means ** 2       # (S, D)
    mean = (w * means).sum(0)
    var = ((w * second).sum(0) - mean ** 2).clamp_min(0)
    return mean.float(), var.sqrt().float()


class Mixture(Dataset):
    """The windows of several stores as one dataset; `names` and `ratios` in the same order, the
    first store the primary one (its path, attrs and episodes stand for the mixture in records)."""

    def __init__(self, parts: dict[str, Windows], ratios: dict[str, float]):
        self.names = list(parts)
        self.parts = [parts[n] for n in self.names]
        self.ratios = np.array([float(ratios[n]) for n in self.names], np.float64)
        first = self.parts[0]
        for name, part in zip(self.names, self.parts):
            if (part.grid, part.dim) != (first.grid, first.dim):
                raise ParamsError(f"train.mixture: store {part.path} holds {part.grid} x {part.dim} tokens, "
                                  f"{first.path} holds {first.grid} x {first.dim}: every store of a mixture must "
                                  f"come from the same encoder and input size (dataset {name!r})")
        sizes = np.array([len(p) for p in self.parts], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])                     # (S + 1,)
        self.path, self.attrs, self.episodes = first.path, first.attrs, first.episodes
        self.grid, self.dim, self.seq_len, self.frame_skip = first.grid, first.dim, first.seq_len, first.frame_skip
        self.mean, self.std = first.mean, first.std

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def close(self) -> None:
        for part in self.parts:
            part.close()

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = int(np.searchsorted(self.offsets, i, side="right") - 1)
        item = self.parts[s][int(i - self.offsets[s])]
        item.pop("actions", None)  # stores differ in their actions and labels: the mixture trains on tokens
        item.pop("labels", None)
        return item

    def step_batches(self, batch_size: int, seed: int, start: int, stop: int, rank: int, world: int):
        sizes = self.offsets[1:] - self.offsets[:-1]
        return MixtureBatches(sizes, self.ratios, batch_size, seed, start, stop, rank, world)

    def describe(self) -> dict[str, Any]:
        """What a record needs to say which stores, ratios and episodes the mixture drew from."""
        return {name: {"path": str(p.path), "ratio": float(r), "plan_sha256": p.attrs.get("plan_sha256"),
                       "train_episodes": p.episodes.tolist()}
                for name, p, r in zip(self.names, self.parts, self.ratios)}


class MixtureBatches(Sampler[list[int]]):
    """This rank's mixture indices for each global step in [start, stop)."""

    def __init__(self, sizes: np.ndarray, ratios: np.ndarray, batch_size: int, seed: int, start: int, stop: int,
                 rank: int = 0, world: int = 1):
        if batch_size % world:
            raise ParamsError(f"global batch size {batch_size} is not divisible by the {world} ranks; "
                              "choose train.batch_size as a multiple of the number of processes")
        self.sizes = np.asarray(sizes, np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)])
        self.p = np.asarray(ratios, np.float64) / np.sum(ratios)
        self.batch, self.seed, self.start, self.stop, self.rank, self.world = batch_size, seed, start, stop, rank, world
        self.drawn = np.zeros(len(self.p), np.int64)  # (S,) windows each store gave before `start`
        for k in range(start):
            self.drawn += self._counts(k)
        self._orders: dict[tuple[int, int], np.ndarray] = {}

    def choices(self, k: int) -> np.ndarray:
        """(B,) store of each position of global step k: a function of (seed, k) only."""
        return np.random.default_rng([self.seed, SALT, k]).choice(len(self.p), size=self.batch, p=self.p)

    def _counts(self, k: int) -> np.ndarray:
        return np.bincount(self.choices(k), minlength=len(self.p))

    def _order(self, s: int, epoch: int) -> np.ndarray:
        if (s, epoch) not in self._orders:
            self._orders = {(s2, e): o for (s2, e), o in self._orders.items() if s2 != s}  # one epoch per store
            self._orders[(s, epoch)] = np.random.default_rng([self.seed, SALT, s, epoch]).permutation(self.sizes[s])
        return self._orders[(s, epoch)]

    def global_batches(self) -> Iterator[np.ndarray]:
        """(B,) mixture indices of each global step start..stop-1, in order."""
        drawn = np.array(self.drawn, np.int64)
        for k in range(self.start, self.stop):
            out = np.empty(self.batch, np.int64)
            for j, s in enumerate(self.choices(k)):
                pos = drawn[s]
                out[j] = self.offsets[s] + self._order(s, int(pos // self.sizes[s]))[pos % self.sizes[s]]
                drawn[s] += 1
            yield out

    def __iter__(self) -> Iterator[list[int]]:
        share = self.batch // self.world
        for batch in self.global_batches():
            yield batch[self.rank * share:(self.rank + 1) * share].tolist()

    def __len__(self) -> int:
        return max(0, self.stop - self.start)
