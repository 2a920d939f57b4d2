"""The Zarr v3 feature store: layout, shard writes, exact stats, resume bookkeeping, verify."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import zarr

from pipeline import store
from pipeline.inspect import info, verify
from pipeline.params import StoreParams

PARAMS = StoreParams(chunk_mb=0.0007, shard_frames=8, codec="zstd", clevel=3)
ATTRS = {"plan_sha256": "x", "dataset": "d", "source": {"fingerprint": "f"}, "encoder": {"model": "m"},
         "frame_stride": 1, "episodes": ["a", "b", "c"], "skipped": [], "code_version": {}}


def build(tmp_path, n=21, grid=(2, 3), dim=16, seed=0):
    layout = store.plan_layout(n, grid, dim, PARAMS)
    ends = np.array([5, 12, n], dtype=np.int64)
    path = tmp_path / "s.zarr"
    store.create_store(path, layout, ends, 2, {"pose": ((1, 4), "float32"), "motion": ((), "int32")}, PARAMS, ATTRS)
    rng = np.random.default_rng(seed)
    tokens = rng.normal(size=(n, *grid, dim)).astype(np.float16)
    actions = rng.normal(size=(n, 2)).astype(np.float32)
    labels = {"pose": rng.normal(size=(n, 1, 4)).astype(np.float32), "motion": np.arange(n, dtype=np.int32)}
    return path, layout, tokens, actions, labels


def write_all(path, layout, tokens, actions, labels, order=None):
    root = store.open_store(path, mode="r+")
    for k in order or range(layout.n_shards):
        a, b = layout.shard_range(k)
        store.write_shard(path, root, layout, k, tokens[a:b], actions[a:b], {n: v[a:b] for n, v in labels.items()})


def test_layout_chunks_whole_frames_and_shards_whole_chunks():
    layout = store.plan_layout(1000, (16, 16), 768, StoreParams(chunk_mb=1.0, shard_frames=250))
    frame_bytes = 16 * 16 * 768 * 2
    assert layout.chunk_frames == math.ceil(1e6 / frame_bytes) == 3
    assert layout.shard_frames % layout.chunk_frames == 0 and layout.shard_frames >= 250
    assert layout.n_shards == math.ceil(1000 / layout.shard_frames)
    assert layout.shard_range(layout.n_shards - 1)[1] == 1000
    with pytest.raises(store.StoreError, match="no readable frames"):
        store.plan_layout(0, (2, 2), 4, PARAMS)


def test_round_trip_and_exact_stats_in_any_write_order(tmp_path):
    path, layout, tokens, actions, labels = build(tmp_path)
    write_all(path, layout, tokens, actions, labels, order=list(reversed(range(layout.n_shards))))
    store.finalize(path, layout)
    root = store.open_store(path)
    np.testing.assert_array_equal(root["tokens"][:], tokens)
    np.testing.assert_array_equal(root["actions"][:], actions)
    np.testing.assert_array_equal(root["labels/pose"][:], labels["pose"])
    np.testing.assert_array_equal(root["labels/motion"][:], labels["motion"])
    flat = tokens.reshape(-1, 16).astype(np.float64)
    np.testing.assert_allclose(root["stats/mean"][:], flat.mean(0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(root["stats/std"][:], flat.std(0), rtol=1e-5)
    assert store.store_attrs(root)["complete"] and not (path / store.PROGRESS).exists()
    assert root["tokens"].shards[0] == layout.shard_frames and root["tokens"].chunks[0] == layout.chunk_frames
    assert root["tokens"].metadata.zarr_format == 3
    assert verify(path) == []


def test_shard_files_match_shards_not_chunks(tmp_path):
    path, layout, tokens, actions, labels = build(tmp_path, n=40)
    write_all(path, layout, tokens, actions, labels)
    shard_files = [p for p in (path / "tokens" / "c").rglob("*") if p.is_file()]
    assert len(shard_files) == layout.n_shards < math.ceil(40 / layout.chunk_frames)


def test_progress_records_are_the_commit_point(tmp_path):
    path, layout, tokens, actions, labels = build(tmp_path)
    write_all(path, layout, tokens, actions, labels, order=[0, 2])
    assert store.done_shards(path) == {0, 2}
    with pytest.raises(store.StoreError, match=r"shards not written: \[1\]"):
        store.finalize(path, layout)
    (path / "tokens" / "c" / "1.partial").write_bytes(b"junk")
    assert store.remove_partials(path) == 1 and not (path / "tokens" / "c" / "1.partial").exists()


def test_write_shard_checks_frame_count(tmp_path):
    path, layout, tokens, actions, labels = build(tmp_path)
    with pytest.raises(store.StoreError, match="shard 0 expects 8 frames, got 3"):
        store.write_shard(path, store.open_store(path, "r+"), layout, 0, tokens[:3], None, {})


def test_verify_reports_each_problem(tmp_path):
    path, layout, tokens, actions, labels = build(tmp_path)
    write_all(path, layout, tokens, actions, labels, order=[0, 1])
    assert any("incomplete: 2/3 shards" in p for p in verify(path))
    write_all(path, layout, tokens, actions, labels, order=[2])
    store.finalize(path, layout)
    root = zarr.open_group(path, mode="r+")
    root["tokens"][3] = np.nan
    assert any("NaN/Inf (first at frame 3)" in p for p in verify(path))
    root["tokens"][3] = 0
    root["episode_ends"][:] = [5, 4, 21]
    assert any("strictly increasing" in p for p in verify(path))
    root["episode_ends"][:] = [5, 12, 20]
    assert any("must end at the frame count 21" in p for p in verify(path))
    root["episode_ends"][:] = [5, 12, 21]
    assert verify(path) == []
    del root["stats/std"]
    assert verify(path) == ["array stats/std is missing"]


def test_verify_and_open_reject_what_is_not_a_store(tmp_path):
    assert "no feature store here" in verify(tmp_path / "missing.zarr")[0]
    zarr.open_group(tmp_path / "other.zarr", mode="w")
    assert "not a dila feature store" in verify(tmp_path / "other.zarr")[0]
    (tmp_path / "junk.zarr").mkdir()
    (tmp_path / "junk.zarr" / "zarr.json").write_text("{not json")
    assert "not a readable Zarr v3 group" in verify(tmp_path / "junk.zarr")[0]


def test_info_reports_sizes_and_provenance(tmp_path):
    path, layout, tokens, actions, labels = build(tmp_path)
    write_all(path, layout, tokens, actions, labels)
    store.finalize(path, layout)
    summary = info(path)
    assert summary["frames"] == 21 and summary["episodes"] == 3 and summary["complete"] is True
    assert summary["actions"] == "(21, 2)" and "labels/pose" in summary["labels"]
    assert summary["encoder"] == "m" and summary["source fingerprint"] == "f"
    assert json.loads(json.dumps(summary))  # plain values only
