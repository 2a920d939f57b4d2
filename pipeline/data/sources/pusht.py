"""The diffusion-policy replay buffer (Push-T and friends), read in place.

A Zarr v2 group on disk: per-frame arrays under `data/` (images `img` as float32
0..255, `action`, `state`, `keypoint`, ...) with all episodes concatenated, and
`meta/episode_ends` holding each episode's exclusive end row. It is opened
read-only with zarr 3; nothing is written. Images become uint8 by rounding and
clipping to [0, 255]; actions become float32; labels keep their stored dtype.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from pipeline.config import check
from pipeline.data.sources.base import (
    DatasetParams,
    Episode,
    EpisodeError,
    EpisodeRef,
    LabelSpec,
    Schema,
    Source,
    SourceError,
    apply_resize,
    fingerprint_files,
    kept_indices,
    kept_raw,
    raw_slice,
)

_METADATA_FILES = {".zarray", ".zgroup", ".zattrs", ".zmetadata", "zarr.json"}
PUSHT_URL = "https://diffusion-policy.cs.columbia.edu/data/training/pusht.zip"  # holds pusht_cchi_v7_replay.zarr


@dataclass(frozen=True)
class PushTParams(DatasetParams):
    """Keys inside the replay buffer.

    image_key: (N, H, W, 3) frames. action_key: (N, a) actions, or null for none.
    label_keys: per-frame arrays stored as labels named by their last path part
        ("data/state" -> "state").
    episode_ends_key: (E,) exclusive end row of each episode.
    """

    image_key: str = "data/img"
    action_key: str | None = "data/action"
    label_keys: tuple[str, ...] = ("data/state", "data/keypoint")
    episode_ends_key: str = "meta/episode_ends"

    def validate(self, where: str) -> None:
        super().validate(where)
        check(self.kind == "pusht_zarr", f"{where}.kind", self.kind, "'pusht_zarr'")
        names = [label_name(k) for k in self.label_keys]
        check(len(set(names)) == len(names), f"{where}.label_keys", self.label_keys, "keys with distinct last parts")


def label_name(key: str) -> str:
    return key.rstrip("/").rsplit("/", 1)[-1]


def absent_store(root: Path, where: str) -> str:
    """The error for a replay buffer that is not at `root` (`where`: the dataset's params key): where
    Push-T's comes from, and every params key to drop the dataset from (those `Params.check_references`
    checks; the default params name it in `datasets:` and `evaluate.probe_datasets` only)."""
    name = where.removeprefix("datasets.")
    return (f"{root}: no replay buffer here (the path {where}.path gives). Push-T's is pusht_cchi_v7_replay.zarr, "
            f"the Push-T demonstrations of the diffusion-policy project (Chi et al., MIT licence), in {PUSHT_URL}: "
            f"unzip it and set {where}.path to the .zarr folder, or put the folder at this path. To run without it, "
            f"remove the `{name}` entry from `datasets:` and `{name}` from `evaluate.probe_datasets` in the params "
            f"file (and from train.dataset, train.mixture, evaluate.held_out and budget.frames where it is named)")


@dataclass(frozen=True)
class _Layout:
    """The opened, checked arrays of one process."""

    pid: int
    images: zarr.Array
    actions: zarr.Array | None
    labels: dict[str, zarr.Array]
    ends: np.ndarray


class PushTSource(Source):
    def __init__(self, params: PushTParams):
        self.params = params
        self.root = Path(params.path)
        self._layout_cache: _Layout | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_layout_cache": None}  # workers open their own arrays

    def _layout(self) -> _Layout:
        """Arrays opened in this process (never reused across a fork) and checked once."""
        cached = self._layout_cache
        if cached is not None and cached.pid == os.getpid():
            return cached
        p, store = self.params, self.root
        if not store.is_dir():
            raise SourceError(f"{store}: replay buffer store does not exist")
        try:
            group = zarr.open_group(str(store), mode="r")
        except Exception as err:  # zarr raises several unrelated types for a bad group
            raise SourceError(f"{store}: not a readable Zarr group ({err})") from err
        images = self._array(group, p.image_key)
        n = images.shape[0]
        if images.ndim != 4 or images.shape[-1] != 3:
            raise SourceError(f"{store}: {p.image_key} has shape {images.shape}, expected (N, H, W, 3)")
        actions = None if p.action_key is None else self._array(group, p.action_key)
        if actions is not None and actions.ndim != 2:
            raise SourceError(f"{store}: {p.action_key} has shape {actions.shape}, expected (N, action_dim)")
        labels = {label_name(k): self._array(group, k) for k in p.label_keys}
        for key, arr in [(p.action_key, actions), *zip(p.label_keys, labels.values())]:
            if arr is not None and (arr.ndim == 0 or arr.shape[0] != n):
                rows = arr.shape[0] if arr.ndim else 0
                raise SourceError(f"{store}: {key} has {rows} rows but {p.image_key} has {n}")
        ends = self._episode_ends(group, n)
        self._layout_cache = _Layout(os.getpid(), images, actions, labels, ends)
        return self._layout_cache

    def _array(self, group, key: str) -> zarr.Array:
        try:
            arr = group[key]
        except KeyError:
            raise SourceError(f"{self.root}: missing key {key} in the replay buffer") from None
        if not isinstance(arr, zarr.Array):
            raise SourceError(f"{self.root}: {key} is a group, expected an array")
        return arr

    def _episode_ends(self, group, n: int) -> np.ndarray:
        key = self.params.episode_ends_key
        raw = self._array(group, key)[...]
        if raw.ndim != 1 or raw.size == 0 or not np.issubdtype(raw.dtype, np.integer):
            raise SourceError(f"{self.root}: {key} must be a non-empty 1-D integer array, got {raw.shape} {raw.dtype}")
        ends = raw.astype(np.int64)
        if ends[0] <= 0 or np.any(np.diff(ends) <= 0):
            raise SourceError(f"{self.root}: {key} must be strictly increasing and positive (empty episodes?)")
        if ends[-1] != n:
            raise SourceError(f"{self.root}: {key} ends at {ends[-1]} but the data arrays have {n} rows")
        return ends

    def _bounds(self, ref: EpisodeRef) -> tuple[int, int]:
        ends = self._layout().ends
        try:
            e = int(ref.key.removeprefix("episode_"))
        except ValueError:
            raise EpisodeError(ref.origin, f"not an episode key of this store: {ref.key!r}") from None
        if not 0 <= e < len(ends):
            raise EpisodeError(ref.origin, f"episode {e} is out of range (the store has {len(ends)})")
        return (0 if e == 0 else int(ends[e - 1])), int(ends[e])

    def check_params(self, where: str) -> None:
        """A store that is not there stops `prepare` saying where the data comes from and how to run
        without it: on a fresh clone the default job's Push-T probe is the one dataset not generated here."""
        if not self.root.exists():
            raise SourceError(absent_store(self.root, where))

    def refs(self) -> list[EpisodeRef]:
        return [EpisodeRef(key=f"episode_{e:06d}", origin=f"{self.root}#episode_{e:06d}")
                for e in range(len(self._layout().ends))]

    def schema(self) -> Schema:
        layout = self._layout()
        action_dim = None if layout.actions is None else int(layout.actions.shape[1])
        labels = {
            name: LabelSpec(tuple(arr.shape[1:]), np.dtype(arr.dtype).name) for name, arr in layout.labels.items()
        }
        return Schema(action_dim=action_dim, labels=labels)

    def metadata_count(self, ref: EpisodeRef) -> int:
        return self.count(ref)  # counted from params or the index, nothing decoded

    def count(self, ref: EpisodeRef) -> int:
        begin, end = self._bounds(ref)
        return len(kept_indices(end - begin, self.params))

    def load(self, ref: EpisodeRef, start: int = 0, stop: int | None = None) -> Episode:
        layout = self._layout()
        begin, end = self._bounds(ref)
        raw = kept_raw(end - begin, self.params, start, stop, ref.origin)
        rows = raw_slice(raw + begin, self.params.frame_stride)
        frames = self._read(ref, self.params.image_key, layout.images, rows)
        if frames.dtype != np.uint8:
            frames = np.clip(np.rint(frames), 0, 255).astype(np.uint8)
        actions = None
        if layout.actions is not None:
            actions = self._read(ref, self.params.action_key, layout.actions, rows).astype(np.float32)
        labels = {
            name: self._read(ref, key, arr, rows)
            for key, (name, arr) in zip(self.params.label_keys, layout.labels.items())
        }
        return Episode(key=ref.key, frames=apply_resize(frames, self.params), actions=actions, labels=labels)

    def _read(self, ref: EpisodeRef, key: str, arr: zarr.Array, rows: slice) -> np.ndarray:
        try:
            return np.asarray(arr[rows])
        except Exception as err:  # codec or storage errors from a damaged chunk
            raise EpisodeError(ref.origin, f"cannot read {key} rows {rows.start}:{rows.stop}: {err}") from err

    def fingerprint(self) -> str:
        if not self.root.is_dir():
            raise SourceError(f"{self.root}: replay buffer store does not exist")
        files = [f for f in self.root.rglob("*") if f.is_file()]
        return fingerprint_files(self.params, self.root, files, contents=lambda f: f.name in _METADATA_FILES)
