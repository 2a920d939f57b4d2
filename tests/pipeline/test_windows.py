"""Training windows: episode boundaries, the shared split, normalization, and the step-keyed order."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from pipeline.data import store
from pipeline.data.split import episode_bounds, split_episodes
from pipeline.data.windows import (
    EPS,
    FixedBatches,
    StepBatches,
    Windows,
    epoch_order,
    fixed_windows,
    loader,
    window_starts,
)
from stages import extract, prepare
from tests.conftest import make_params


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    """6 synthetic episodes of 10 frames, 3x3x384 tokens, actions and labels."""
    params = make_params(tmp_path_factory.mktemp("windows"))
    prepare.run(params, "synthetic", show_progress=False)
    return extract.run(params, "synthetic", show_progress=False)


def test_windows_never_cross_episode_boundaries():
    bounds = episode_bounds(np.array([5, 8, 15, 16]))  # episodes of 5, 3, 7, 1 frames
    got = window_starts(bounds, np.arange(4), seq_len=3, frame_skip=2)  # a window spans 5 frames
    assert got.tolist() == [[0, 0], [8, 2], [9, 2], [10, 2]]
    for seq_len, skip in [(2, 1), (3, 1), (2, 3), (4, 2)]:
        span = (seq_len - 1) * skip + 1
        brute = [[f, ep] for ep, (a, b) in enumerate(bounds) for f in range(a, b) if f + span <= b]
        assert window_starts(bounds, np.arange(4), seq_len, skip).tolist() == brute


def test_windows_keep_to_their_side_of_the_shared_split(tiny_store):
    n = zarr.open_group(tiny_store, mode="r")["episode_ends"].shape[0]
    train_eps, val_eps = split_episodes(n, 0.3, seed=0)
    train, val = Windows(tiny_store, train_eps, 4, 2), Windows(tiny_store, val_eps, 4, 2)
    assert set(train.windows[:, 1]) == set(train_eps.tolist()) and set(val.windows[:, 1]) == set(val_eps.tolist())
    assert len(train) + len(val) == len(Windows(tiny_store, np.arange(n), 4, 2)) == n * (10 - 6)
    for windows in (train, val):
        for i in range(len(windows)):
            item = windows[i]
            start, stop = windows.bounds[item["episode"]]
            assert start <= item["frame"] and item["frame"] + 6 < stop


def test_items_are_normalized_store_slices(tiny_store):
    root = zarr.open_group(tiny_store, mode="r")
    windows = Windows(tiny_store, np.array([1, 4]), seq_len=3, frame_skip=3)
    tokens = root["tokens"][:].astype(np.float32)                               # (F, h, w, D)
    mean, std = root["stats/mean"][:], root["stats/std"][:]
    for i in (0, len(windows) - 1):
        item = windows[i]
        frames = [item["frame"] + 3 * t for t in range(3)]
        assert item["e"].dtype == torch.float32 and item["e"].shape == (3, 3, 3, 384)
        np.testing.assert_allclose(item["e"].numpy(), (tokens[frames] - mean) / (std + EPS), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(item["actions"].numpy(), root["actions"][:][frames])
        np.testing.assert_array_equal(item["labels"]["pose"].numpy(), root["labels/pose"][:][frames])
    every = (tokens - mean) / (std + EPS)                                          # the stats describe the store
    np.testing.assert_allclose(every.reshape(-1, 384).mean(0), 0, atol=1e-3)
    np.testing.assert_allclose(every.reshape(-1, 384).std(0), 1, atol=1e-3)


def test_the_batches_of_step_k_depend_only_on_seed_and_k():
    whole = list(StepBatches(23, 8, seed=3, start=0, stop=12))
    resumed = list(StepBatches(23, 8, seed=3, start=0, stop=5)) + list(StepBatches(23, 8, seed=3, start=5, stop=12))
    assert whole == resumed
    assert list(StepBatches(23, 8, seed=4, start=0, stop=12)) != whole
    flat = np.concatenate(whole)  # 96 draws = 4 epochs of 23 windows, each a seeded permutation, then 4 more
    for epoch in range(4):
        np.testing.assert_array_equal(flat[23 * epoch: 23 * (epoch + 1)], epoch_order(23, 3, epoch))
    assert sorted(flat[:23]) == list(range(23))


def test_ranks_split_each_global_batch():
    one = list(StepBatches(40, 6, seed=0, start=2, stop=9))
    ranks = [list(StepBatches(40, 6, seed=0, start=2, stop=9, rank=r, world=3)) for r in range(3)]
    for k, batch in enumerate(one):
        assert ranks[0][k] + ranks[1][k] + ranks[2][k] == batch
    with pytest.raises(ValueError, match="not divisible by the 4 ranks"):
        StepBatches(40, 6, seed=0, start=0, stop=1, world=4)


def test_fixed_windows_spread_evenly_and_repeat_when_few():
    assert fixed_windows(10, 5).tolist() == [0, 2, 4, 6, 8]
    assert fixed_windows(3, 7).tolist() == [0, 1, 2, 0, 1, 2, 0]
    rows = fixed_windows(12, 8).reshape(2, 4)
    assert list(FixedBatches(rows, rank=1, world=2)) == [rows[0, 2:].tolist(), rows[1, 2:].tolist()]


def test_worker_processes_read_the_same_batches(tiny_store):
    windows = Windows(tiny_store, np.arange(6), seq_len=4, frame_skip=1)
    windows[0]  # a handle opened here must not travel into the forked workers
    order = StepBatches(len(windows), 4, seed=1, start=0, stop=5)
    here = list(loader(windows, order, 0, torch.device("cpu")))
    workers = list(loader(windows, order, 2, torch.device("cpu")))
    assert len(here) == len(workers) == 5
    for a, b in zip(here, workers):
        assert torch.equal(a["e"], b["e"]) and torch.equal(a["frame"], b["frame"])
        assert a["e"].shape == (4, 4, 3, 3, 384) and a["labels"]["content"].shape[:2] == (4, 4)


def test_unusable_stores_and_windows_are_clear_errors(tiny_store, tmp_path):
    with pytest.raises(ValueError, match="no window of seq_len=11 frames"):
        Windows(tiny_store, np.arange(6), seq_len=11, frame_skip=1)
    with pytest.raises(store.StoreError, match="no feature store here"):
        Windows(tmp_path / "missing.zarr", np.arange(6), 2, 1)
    root = zarr.open_group(tiny_store, mode="r+")
    attrs = store.store_attrs(root)
    root.attrs["dila"] = {**attrs, "complete": False}
    try:
        with pytest.raises(store.StoreError, match="incomplete"):
            Windows(tiny_store, np.arange(6), 2, 1)
    finally:
        root.attrs["dila"] = attrs


def damaged_store(tmp_path):
    """A fresh tiny store (4 shards of 18, 18, 18, 6 frames) and the file of its tokens shard 1."""
    params = make_params(tmp_path)
    prepare.run(params, "synthetic", show_progress=False)
    path = extract.run(params, "synthetic", show_progress=False)
    return path, path / "tokens" / "c" / "1" / "0" / "0" / "0"


def test_a_cut_short_shard_stops_windows_naming_it_and_the_fix(tmp_path):
    path, shard = damaged_store(tmp_path)
    written = shard.stat().st_size
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.raises(store.StoreError) as err:
        Windows(path, np.arange(6), 4, 1)
    assert str(err.value) == (f"{path}: the feature store is damaged:\n  shard 1 (frames [18, 36)): tokens/c/1/0/0/0 "
                              f"has 1000 bytes, {written} were written\nrun `dila extract synthetic` to rewrite what "
                              "is damaged")


@pytest.mark.parametrize("workers", [0, 1])
def test_an_unreadable_window_is_a_store_error_in_this_process(tmp_path, workers):
    path, shard = damaged_store(tmp_path)
    damaged = bytearray(shard.read_bytes())
    damaged[-1] ^= 0xFF  # the shard index checksum: the size is unchanged, so only reading finds it
    shard.write_bytes(bytes(damaged))
    windows = Windows(path, np.array([2]), seq_len=4, frame_skip=1)  # episode 2: frames 20..29, in shard 1
    assert len(windows) == 7
    batches = loader(windows, StepBatches(len(windows), 2, seed=0, start=0, stop=3), workers, torch.device("cpu"))
    with pytest.raises(store.StoreError) as err:
        next(iter(batches))
    message = str(err.value)
    assert message.startswith(f"{path}: frames [")
    assert "cannot be read from shard 1 (frames [18, 36)): " in message and "checksum" in message
    assert message.endswith(f"the store is damaged: `dila verify {path}` names every damaged shard and "
                            "`dila extract synthetic` rewrites them")
    assert "Traceback" not in message and "DataLoader worker" not in message
