"""Training windows over one feature store, and the deterministic order they are drawn in.

A window is `seq_len` kept frames `frame_skip` apart inside one episode: frames
f, f + skip, ..., f + (seq_len - 1) * skip with all of them in [start, stop) of the
episode, so a window never crosses an episode boundary. `Windows` lists every window
of a set of episodes (the train or val side of `pipeline.data.split.split_episodes`) and
returns item i as

    e        (T, h, w, D) float32   (tokens - mean) / (std + EPS), the store's per-channel stats
    actions  (T, a) float32         where the store has actions
    labels   {name: (T, ...)}       where the store has labels
    frame, episode                  the window's first frame (global index) and its episode

The tokens array is opened lazily inside each DataLoader worker (`worker_init` drops any
handle a fork copied); actions and labels (small) are read into memory once.

A damaged store stops with a StoreError that names the shard and the fix, raised in the
main process: `Windows` refuses a store whose files have other sizes than were written
(`store.require_intact`, no file read), and a window whose tokens cannot be read is
handed from the worker to the main process as a message (`loader` raises it there), so
the error is never a worker's traceback.

`StepBatches` yields the batches of global steps start..stop-1; the windows of step k
are a function of (seed, k) only: step k takes positions k*B .. k*B + B - 1 of an
endless sequence of seeded permutations (one per epoch over the windows). So a run
resumed at step k reads exactly the batches an uninterrupted run reads, and under DDP
rank r of W takes slice r of each global batch.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import (
    DataLoader,
    Dataset,
    Sampler,
    default_collate,
    get_worker_info,
)

from pipeline.config import ParamsError
from pipeline.data import store
from pipeline.data.split import episode_bounds, split_episodes

EPS = 1e-6  # e = (tokens - mean) / (std + EPS)


def normalize(tokens, mean, std):
    """Store-scale tokens (..., D) -> float32 e = (tokens - mean) / (std + EPS), the model's space; numpy
    in, numpy out, torch in, torch out (the store's stats mean, std (D,) of the same kind)."""
    if isinstance(tokens, torch.Tensor):
        x = tokens.to(torch.float32)
        return (x - mean.to(x.device)) / (std.to(x.device) + EPS)
    return ((np.asarray(tokens, np.float32) - mean) / (std + np.float32(EPS))).astype(np.float32)


def denormalize(e: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """The inverse of `normalize`: model-space tokens (..., D) -> float32 store scale."""
    return (np.asarray(e, np.float32) * (std + np.float32(EPS)) + mean).astype(np.float32)


def window_starts(bounds: np.ndarray, episodes: np.ndarray, seq_len: int, frame_skip: int) -> np.ndarray:
    """(N, 2) [first frame, episode] of every window of `seq_len` frames `frame_skip` apart that
    lies inside one of `episodes` (rows of bounds (E, 2) = [start, stop))."""
    span = (seq_len - 1) * frame_skip + 1
    rows = []
    for ep in np.sort(np.asarray(episodes, dtype=np.int64)):
        start, stop = bounds[ep]
        firsts = np.arange(start, stop - span + 1, dtype=np.int64)
        rows.append(np.stack([firsts, np.full_like(firsts, ep)], axis=1))
    return np.concatenate(rows) if rows else np.zeros((0, 2), dtype=np.int64)


class Windows(Dataset):
    """Every window of `episodes` in the store at `path`, normalized with the store's stats."""

    def __init__(self, path: Path, episodes: np.ndarray, seq_len: int, frame_skip: int):
        self.path, self.seq_len, self.frame_skip = Path(path), seq_len, frame_skip
        root = store.open_store(self.path)
        attrs = store.store_attrs(root)
        if not attrs.get("complete"):
            raise store.StoreError(f"{self.path}: the feature store is incomplete (run `dila extract` to finish it)")
        store.require_intact(self.path)
        self.bounds = episode_bounds(root["episode_ends"][:])                    # (E, 2)
        self.mean, self.std = (torch.from_numpy(a) for a in store.token_stats(root))  # (D,) each
        self.grid, self.dim = tuple(root["tokens"].shape[1:3]), int(root["tokens"].shape[3])
        # per-frame ground truth is small: read once; the tokens are read per window
        self.actions = root["actions"][:] if "actions" in root else None                        # (F, a)
        self.labels = {name: a[:] for name, a in sorted(root["labels"].arrays())} if "labels" in root else {}
        self.attrs = attrs
        self.episodes = np.sort(np.asarray(episodes, dtype=np.int64))
        self.windows = window_starts(self.bounds, self.episodes, seq_len, frame_skip)  # (N, 2)
        if len(self.windows) == 0:
            longest = int((self.bounds[:, 1] - self.bounds[:, 0]).max(initial=0))
            raise ParamsError(f"{self.path}: no window of seq_len={seq_len} frames with frame_skip={frame_skip} "
                             f"(needs {(seq_len - 1) * frame_skip + 1} frames) fits in the selected episodes "
                             f"(longest episode: {longest} frames); lower train.seq_len or train.frame_skip")
        self._tokens = None  # opened lazily in the process that reads, never shared across fork

    def __len__(self) -> int:
        return len(self.windows)

    def close(self) -> None:
        self._tokens = None

    def step_batches(self, batch_size: int, seed: int, start: int, stop: int, rank: int, world: int):
        """The training order over these windows (`StepBatches`); a `Mixture` has its own."""
        return StepBatches(len(self), batch_size, seed, start, stop, rank, world)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self._tokens is None:
            self._tokens = store.open_store(self.path)["tokens"]
        first, episode = (int(v) for v in self.windows[i])
        frames = slice(first, first + (self.seq_len - 1) * self.frame_skip + 1, self.frame_skip)
        try:
            raw = self._tokens[frames.start:frames.stop][::self.frame_skip]                    # (T, h, w, D)
        except Exception as err:  # zarr and its codecs raise several types for unreadable bytes
            message = self._unreadable(frames, err)
            if get_worker_info() is None:
                raise store.StoreError(message) from err
            return {DAMAGED: message}
        e = normalize(torch.from_numpy(raw.astype(np.float32)), self.mean, self.std)         # (T, h, w, D)
        item: dict[str, Any] = {"e": e, "frame": first, "episode": episode}
        if self.actions is not None:
            item["actions"] = torch.from_numpy(self.actions[frames])                            # (T, a)
        if self.labels:
            item["labels"] = {name: torch.from_numpy(v[frames]) for name, v in self.labels.items()}
        return item

    def _unreadable(self, frames: slice, err: Exception) -> str:
        layout = store.layout_of(self.attrs)
        shards = sorted({f // layout.shard_frames for f in (frames.start, frames.stop - 1)})
        ranges = " and ".join(f"shard {k} (frames [{a}, {b}))" for k in shards for a, b in [layout.shard_range(k)])
        return (f"{self.path}: frames [{frames.start}, {frames.stop}) cannot be read from {ranges}: {err}; the store "
                f"is damaged: `dila verify {self.path}` names every damaged shard and "
                f"`dila extract {self.attrs['dataset']}` rewrites them")


def split_windows(path: Path, val_fraction: float, seed: int, length: int, frame_skip: int,
                  what: str = "train.seq_len") -> tuple[Windows, Windows]:
    """(train, val) windows of `length` frames (the setting `what`) `frame_skip` apart over the store
    at `path`, split by episode (`split_episodes`) as every stage-two stage splits them."""
    n_episodes = store.open_store(path)["episode_ends"].shape[0]
    train_eps, val_eps = split_episodes(n_episodes, val_fraction, seed)
    try:
        return Windows(path, train_eps, length, frame_skip), Windows(path, val_eps, length, frame_skip)
    except ParamsError as err:
        raise ParamsError(f"{err} (the window length {length} is {what})") from err


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The seeded permutation of n windows used in `epoch`."""
    return np.random.default_rng([seed, 0x57E95, epoch]).permutation(n)


class StepBatches(Sampler[list[int]]):
    """This rank's window indices for each global step in [start, stop)."""

    def __init__(self, n_windows: int, batch_size: int, seed: int, start: int, stop: int,
                 rank: int = 0, world: int = 1):
        if batch_size % world:
            raise ParamsError(f"global batch size {batch_size} is not divisible by the {world} ranks; "
                             "choose train.batch_size as a multiple of the number of processes")
        self.n, self.batch, self.seed = n_windows, batch_size, seed
        self.start, self.stop, self.rank, self.world = start, stop, rank, world
        self._cached: tuple[int, np.ndarray] | None = None

    def _order(self, epoch: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, epoch_order(self.n, self.seed, epoch))
        return self._cached[1]

    def global_batch(self, k: int) -> np.ndarray:
        """(B,) window indices of global step k: a function of (seed, k) only."""
        positions = k * self.batch + np.arange(self.batch, dtype=np.int64)
        return np.array([self._order(int(p // self.n))[p % self.n] for p in positions], dtype=np.int64)

    def __iter__(self) -> Iterator[list[int]]:
        share = self.batch // self.world
        for k in range(self.start, self.stop):
            yield self.global_batch(k)[self.rank * share:(self.rank + 1) * share].tolist()

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def fixed_windows(n_windows: int, count: int) -> np.ndarray:
    """`count` window indices spread evenly over n_windows (repeating if count > n): the fixed
    validation set."""
    return (np.arange(count, dtype=np.int64) * n_windows) // count if count <= n_windows \
        else np.arange(count, dtype=np.int64) % n_windows


class FixedBatches(Sampler[list[int]]):
    """This rank's slice of each of the fixed global batches `indices` (n_batches, B)."""

    def __init__(self, indices: np.ndarray, rank: int = 0, world: int = 1):
        self.indices, self.rank, self.world = indices, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        share = self.indices.shape[1] // self.world
        for row in self.indices:
            yield row[self.rank * share:(self.rank + 1) * share].tolist()

    def __len__(self) -> int:
        return len(self.indices)


def worker_init(_: int) -> None:
    """Each DataLoader worker opens the store itself and uses one thread."""
    torch.set_num_threads(1)
    info = get_worker_info()
    if info is not None:
        info.dataset.close()


DAMAGED = "damaged"  # the key of the item a worker returns for a window it cannot read


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    return next((item for item in items if DAMAGED in item), None) or default_collate(items)


class _Loader(DataLoader):
    """A DataLoader that raises, in the process iterating it, the StoreError of a damaged window."""

    def __iter__(self):
        for batch in super().__iter__():
            if DAMAGED in batch:
                raise store.StoreError(batch[DAMAGED])
            yield batch


def loader(windows: Windows, batches: Sampler[list[int]], workers: int, device: torch.device) -> DataLoader:
    """Batches of `windows` in the order `batches` gives, read by `workers` processes
    (0 = in this process) with prefetching, pinned on CUDA. The loader draws its worker seeds from
    its own generator, never from the global RNG the model's noise comes from (so when a loader
    is made, e.g. at a resume, does not change the training run)."""
    return _Loader(windows, batch_sampler=batches, num_workers=workers, collate_fn=_collate,
                   prefetch_factor=4 if workers else None, pin_memory=device.type == "cuda",
                   worker_init_fn=worker_init, persistent_workers=False,
                   generator=torch.Generator().manual_seed(0))
