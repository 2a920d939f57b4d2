"""The Zarr v3 feature store: layout, shard writes, exact stats, resume bookkeeping, verify."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import zarr

from pipeline.data import store
from pipeline.data.inspect import info, verify
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


def finished(tmp_path, ends=(5, 12, 21), nan_at=None):
    """A complete store; its episode_ends and a NaN token are written by the writer, as extract would.
    The motion label is 0 (its fill value) in all of shard 0, so zarr writes no file for that chunk."""
    path, layout, tokens, actions, labels = build(tmp_path)
    if nan_at is not None:
        tokens[nan_at] = np.nan
    motion = np.where(np.arange(21) < 8, 0, labels["motion"])
    store.create_store(path, layout, np.array(ends, dtype=np.int64), 2, {"motion": ((), "int32")}, PARAMS, ATTRS)
    write_all(path, layout, tokens, actions, {"motion": motion})
    store.finalize(path, layout)
    return path, layout


def test_verify_reports_each_problem(tmp_path):
    path, layout, tokens, actions, labels = build(tmp_path)
    write_all(path, layout, tokens, actions, labels, order=[0, 1])
    assert any("incomplete: 2/3 shards" in p for p in verify(path))
    write_all(path, layout, tokens, actions, labels, order=[2])
    store.finalize(path, layout)
    assert verify(path) == []
    assert verify(finished(tmp_path / "nan", nan_at=3)[0])[0] == "tokens contain NaN/Inf (first at frame 3)"
    assert any("strictly increasing" in p for p in verify(finished(tmp_path / "order", (5, 4, 21))[0]))
    assert any("must end at the frame count 21" in p for p in verify(finished(tmp_path / "end", (5, 12, 20))[0]))
    root = zarr.open_group(path, mode="r+")
    del root["stats/std"]
    assert verify(path) == [f"damaged: stats/std/{f} is missing; run `dila extract d` to rebuild the store"
                            for f in ("c/0", "zarr.json")]


def test_digests_of_every_written_file_are_kept(tmp_path):
    path, layout = finished(tmp_path, nan_at=None)
    attrs = store.store_attrs(store.open_store(path))
    assert [sorted(files) for files in attrs["shard_files"]] == [
        [f"actions/c/{k}/0", f"labels/motion/c/{k}", f"tokens/c/{k}/0/0/0"] for k in range(3)]
    assert attrs["shard_files"][0]["labels/motion/c/0"] is None and not (path / "labels/motion/c/0").exists()
    assert sorted(attrs["files"]) == ["actions/zarr.json", "episode_ends/c/0", "episode_ends/zarr.json",
                                      "labels/motion/zarr.json", "labels/zarr.json", "stats/mean/c/0",
                                      "stats/mean/zarr.json", "stats/std/c/0", "stats/std/zarr.json", "stats/zarr.json",
                                      "tokens/zarr.json"]
    tokens = path / "tokens" / "c" / "1" / "0" / "0" / "0"
    assert attrs["shard_files"][1]["tokens/c/1/0/0/0"] == store.file_digest(tokens)
    assert store.find_damage(path) == store.Damage({}, [])


def test_damage_is_found_by_size_or_by_content(tmp_path):
    path, layout = finished(tmp_path)
    written = (path / "tokens/c/1/0/0/0").read_bytes()
    (path / "tokens/c/1/0/0/0").write_bytes(written[:100])
    (path / "actions/c/2/0").unlink()
    flipped = bytearray((path / "stats/std/c/0").read_bytes())
    flipped[-1] ^= 1
    (path / "stats/std/c/0").write_bytes(bytes(flipped))
    (path / "labels/motion/c/0").write_bytes(written[:100])  # where zarr wrote nothing (all fill value)
    deep = store.find_damage(path)
    assert deep.shards == {0: ["labels/motion/c/0 exists, but no file was written there"],
                           1: [f"tokens/c/1/0/0/0 has 100 bytes, {len(written)} were written"],
                           2: ["actions/c/2/0 is missing"]}
    assert deep.other == ["stats/std/c/0 has changed since it was written (sha256)"]
    assert store.find_damage(path, deep=False) == store.Damage(deep.shards, [])  # sizes only: the flip is unseen
    assert deep.describe(layout)[1:3] == [f"shard 1 (frames [8, 16)): tokens/c/1/0/0/0 has 100 bytes, "
                                          f"{len(written)} were written", "shard 2 (frames [16, 21)): actions/c/2/0 "
                                          "is missing"]
    with pytest.raises(store.StoreError, match=r"damaged:\n  shard 0 .*\n  shard 1 \(frames \[8, 16\)\).*\n  "
                                               r"shard 2 .*\nrun `dila extract d` to rewrite what is damaged"):
        store.require_intact(path)
    problems = verify(path)
    assert problems[1] == (f"damaged: shard 1 (frames [8, 16)): tokens/c/1/0/0/0 has 100 bytes, {len(written)} were "
                           "written; run `dila extract d` to rewrite it")
    assert problems[3:] == ["damaged: stats/std/c/0 has changed since it was written (sha256); run `dila extract d` "
                            "to rebuild the store"]


def test_a_file_changed_in_place_is_named_by_verify(tmp_path):
    path, layout = finished(tmp_path)
    shard = path / "tokens/c/0/0/0/0"
    damaged = bytearray(shard.read_bytes())
    damaged[-1] ^= 0xFF  # the shard index checksum: same size, unreadable
    shard.write_bytes(bytes(damaged))
    assert verify(path) == ["damaged: shard 0 (frames [0, 8)): tokens/c/0/0/0/0 has changed since it was written "
                            "(sha256); run `dila extract d` to rewrite it"]


def test_reopened_shards_are_rewritten_and_checked_against_their_digests(tmp_path):
    path, layout = finished(tmp_path)
    before = {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    store.reopen_shards(path, layout, {1})
    assert not (path / "tokens/c/1/0/0/0").exists() and store.done_shards(path) == {0, 2}
    assert any("incomplete: 2/3 shards" in p for p in verify(path))
    _, _, tokens, actions, labels = build(tmp_path / "again")
    motion = np.where(np.arange(21) < 8, 0, labels["motion"])
    write_all(path, layout, tokens, actions, {"motion": motion}, order=[1])
    store.finalize(path, layout)
    assert {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()} == before
    store.reopen_shards(path, layout, {2})
    tokens[16] += 1  # not the bytes first written
    write_all(path, layout, tokens, actions, {"motion": motion}, order=[2])
    with pytest.raises(store.StoreError, match="shard 2 was rewritten but its files differ from the first extraction"):
        store.finalize(path, layout)


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


def test_a_damaged_shard_of_an_unfinished_store_is_written_again(tmp_path):
    path, layout, tokens, actions, labels = build(tmp_path)
    write_all(path, layout, tokens, actions, labels, order=[0, 1])
    written = (path / "actions/c/0/0").stat().st_size
    (path / "actions/c/0/0").write_bytes(b"\0")
    assert store.find_damage(path).shards == {0: [f"actions/c/0/0 has 1 bytes, {written} were written"]}
    store.reopen_shards(path, layout, {0})
    assert store.done_shards(path) == {1} and not (path / store.PROGRESS / store.REPAIR).exists()
    assert not (path / "tokens/c/0/0/0/0").exists() and (path / "tokens/c/1/0/0/0").exists()


def test_info_counts_bytes_per_frame_over_the_written_shards_only(tmp_path):
    path, layout, tokens, actions, labels = build(tmp_path)
    key = "token bytes per frame (stored / raw float16)"
    assert info(path)[key] == "n/a (no shard written yet)"
    write_all(path, layout, tokens, actions, labels, order=[0])
    stored = (path / "tokens/c/0/0/0/0").stat().st_size
    assert info(path)[key] == f"{stored / 8:.0f} / 192 (ratio {192 * 8 / stored:.2f}x) over the 8 frames written so far"
    write_all(path, layout, tokens, actions, labels, order=[1, 2])
    store.finalize(path, layout)
    stored = sum((path / f"tokens/c/{k}/0/0/0").stat().st_size for k in range(3))
    assert info(path)[key] == f"{stored / 21:.0f} / 192 (ratio {192 * 21 / stored:.2f}x)"
