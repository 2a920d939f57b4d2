"""Stage extract: exact tokens, ground truth copied, resume after kill -9, N ranks = 1 rank."""
from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr

from pipeline import artifacts
from pipeline.artifacts import MissingInput
from pipeline.data import store
from pipeline.data.encoder import load_encoder
from pipeline.data.inspect import verify
from pipeline.data.sources import EpisodeRef, build_source
from pipeline.provenance import code_hash
from stages import extract, prepare
from tests.conftest import make_params
from tests.stages.helpers import assert_same_store, cli_env, shard_mtimes, write_params


def run_both(params):
    prepare.run(params, "synthetic", show_progress=False)
    return extract.run(params, "synthetic", show_progress=False)


def test_tokens_equal_direct_encoding_and_ground_truth_is_copied(tiny):
    path = run_both(tiny)
    root = zarr.open_group(path, mode="r")
    source = build_source(tiny.dataset("synthetic"))
    encoder = load_encoder(tiny.encoder, tiny.seed)
    ends = root["episode_ends"][:]
    assert ends.tolist() == [10, 20, 30, 40, 50, 60]
    for i, ref in enumerate(source.refs()):
        episode = source.load(ref)
        a, b = (ends[i - 1] if i else 0), ends[i]
        want = encoder.encode_frames(episode.frames).astype(np.float16)
        np.testing.assert_array_equal(root["tokens"][a:b], want)
        np.testing.assert_array_equal(root["actions"][a:b], episode.actions)
        for name, values in episode.labels.items():
            np.testing.assert_array_equal(root[f"labels/{name}"][a:b], values)
    attrs = root.attrs["dila"]
    assert attrs["encoder"]["weights"] == "random-init (seed 0)"
    assert attrs["encoder"]["model"] == "facebook/dinov2-small" and attrs["encoder"]["input_size"] == 42
    assert attrs["source"]["fingerprint"] == source.fingerprint() and attrs["frame_stride"] == 1
    assert attrs["episodes"] == [r.key for r in source.refs()] and attrs["complete"] is True
    assert attrs["extract_code_sha256"] == code_hash("stages.extract") and "git_commit" in attrs["code_version"]
    assert verify(path) == []
    assert root["tokens"].dtype == np.float16 and root["tokens"].shape == (60, 3, 3, 384)


def test_decode_workers_do_not_change_the_store(tmp_path):
    a = run_both(make_params(tmp_path / "a", "decode.workers=0"))
    b = run_both(make_params(tmp_path / "b", "decode.workers=2"))
    assert_same_store(a, b)


def test_rerun_is_a_no_op_and_another_plan_rebuilds(tiny, tmp_path):
    path = run_both(tiny)
    before = shard_mtimes(path)
    extract.run(tiny, "synthetic", show_progress=False)
    assert shard_mtimes(path) == before
    tokens = zarr.open_group(path, mode="r")["tokens"][:]
    reseeded = dataclasses.replace(tiny, seed=1)
    extract.run(reseeded, "synthetic", show_progress=False)
    root = zarr.open_group(path, mode="r")
    assert root.attrs["dila"]["encoder"]["weights"] == "random-init (seed 1)"
    assert not np.array_equal(root["tokens"][:], tokens) and verify(path) == []


def test_resume_after_kill_equals_an_uninterrupted_run(tmp_path):
    extra = ("datasets.synthetic.episodes=24", "datasets.synthetic.frames=12", "store.shard_frames=8",
             "encoder.input_size=56")
    killed = write_params(tmp_path / "killed", *extra)
    params = make_params(tmp_path / "killed", *extra)
    prepare.run(params, "synthetic", show_progress=False)
    path = artifacts.store_path(params, "synthetic")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "extract", "synthetic", "--params", str(killed),
                             "-q"], env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(store.done_shards(path)) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = store.done_shards(path)
    layout_shards = 24 * 12 // 8
    assert 2 <= len(done) < layout_shards, "the kill must land mid-run"
    kept = {k: v for k, v in shard_mtimes(path).items() if int(k.split("/")[0]) in done}
    extract.run(params, "synthetic", show_progress=False)
    after = shard_mtimes(path)
    assert all(after[k] == v for k, v in kept.items()), "finished shards were rewritten"
    reference = make_params(tmp_path / "reference", *extra)
    assert_same_store(run_both(reference), path)
    assert verify(path) == []


@pytest.mark.slow
def test_two_ranks_equal_one(tmp_path):
    one = make_params(tmp_path / "one")
    run_both(one)
    two_file = write_params(tmp_path / "two")
    two = make_params(tmp_path / "two")
    prepare.run(two, "synthetic", show_progress=False)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "pipeline.cli", "extract", "synthetic", "--params", str(two_file), "-q"],
                          env=cli_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_store(artifacts.store_path(one, "synthetic"), artifacts.store_path(two, "synthetic"))


def test_extract_needs_a_current_manifest(tiny):
    with pytest.raises(MissingInput, match="run `dila prepare synthetic` first"):
        extract.run(tiny, "synthetic", show_progress=False)
    prepare.run(tiny, "synthetic", show_progress=False)
    changed = make_params(artifacts.store_path(tiny, "x").parents[1], "datasets.synthetic.episodes=5")
    with pytest.raises(MissingInput, match="other settings of datasets.synthetic"):
        extract.run(changed, "synthetic", show_progress=False)


def test_shard_frames_spanning_episodes_are_sliced_exactly(tiny):
    layout = store.plan_layout(60, (3, 3), 384, tiny.store)
    frames = extract.ShardFrames(tiny.dataset("synthetic"), prepare.run(tiny, "synthetic", show_progress=False),
                                 layout, 42)
    start, stop = layout.shard_range(1)
    assert start % 10 and stop % 10  # the shard starts and ends inside episodes
    source = build_source(tiny.dataset("synthetic"))
    everything = np.concatenate([source.load(ref).actions for ref in source.refs()])  # 6 episodes x 10 frames
    item = frames[1]
    np.testing.assert_array_equal(item["actions"], everything[start:stop])
    assert item["pixels"].shape == (stop - start, 3, 42, 42)


def test_a_store_damaged_behind_our_back_is_rebuilt(tiny):
    path = run_both(tiny)
    (path / "zarr.json").write_text("{broken")
    extract.run(tiny, "synthetic", show_progress=False)
    assert verify(path) == []
    shutil.rmtree(path / "tokens")
    assert verify(path) != []


def test_episode_ref_from_manifest_is_what_sources_return(tiny):
    manifest = prepare.run(tiny, "synthetic", show_progress=False)
    refs = build_source(tiny.dataset("synthetic")).refs()
    assert [EpisodeRef(e["key"], e["origin"]) for e in manifest["episodes"]] == refs


def store_bytes(path) -> dict[str, bytes]:
    """Every file of a store, by its path in the store."""
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_damaged_shards_are_named_and_exactly_those_rewritten(tmp_path, capsys):
    clean = run_both(make_params(tmp_path / "clean"))
    params = make_params(tmp_path / "damaged")
    path = run_both(params)
    assert store_bytes(path) == store_bytes(clean)  # two runs write the same bytes
    shard = path / "tokens" / "c" / "1" / "0" / "0" / "0"
    written = len(shard.read_bytes())
    shard.write_bytes(shard.read_bytes()[: written // 2])  # cut short
    (path / "actions" / "c" / "3" / "0").unlink()  # gone: zarr would read zeros in its place
    assert verify(path) == [
        f"damaged: shard 1 (frames [18, 36)): tokens/c/1/0/0/0 has {written // 2} bytes, {written} were written; "
        "run `dila extract synthetic` to rewrite it",
        "damaged: shard 3 (frames [54, 60)): actions/c/3/0 is missing; run `dila extract synthetic` to rewrite it"]
    before = shard_mtimes(path)
    capsys.readouterr()
    extract.run(params, "synthetic", show_progress=False)
    assert capsys.readouterr().out == (
        f"extract synthetic: {path} complete, but 2 of its 4 shards are damaged; rewriting exactly those:\n"
        f"  damaged, rewriting: shard 1 (frames [18, 36)): tokens/c/1/0/0/0 has {written // 2} bytes, {written} were "
        "written\n  damaged, rewriting: shard 3 (frames [54, 60)): actions/c/3/0 is missing\n")
    after = shard_mtimes(path)
    assert sorted(k for k in before if after[k] != before[k]) == ["1/0/0/0", "3/0/0/0"]
    assert store_bytes(path) == store_bytes(clean) and verify(path) == []
    extract.run(params, "synthetic", show_progress=False)
    assert capsys.readouterr().out.endswith("complete: all 4 shards were already written; nothing to do\n")


@pytest.mark.parametrize("written_once", ["stats/std/c/0", "tokens/zarr.json"])
def test_damage_to_what_is_written_once_rebuilds_the_store(tmp_path, capsys, written_once):
    clean = run_both(make_params(tmp_path / "clean"))
    params = make_params(tmp_path / "damaged")
    path = run_both(params)
    file = path / written_once
    written = file.stat().st_size
    file.write_bytes(b"")
    assert verify(path) == [f"damaged: {written_once} has 0 bytes, {written} were written; run `dila extract "
                            "synthetic` to rebuild the store"]
    capsys.readouterr()
    extract.run(params, "synthetic", show_progress=False)
    assert "rebuilt from scratch" in capsys.readouterr().out
    assert store_bytes(path) == store_bytes(clean)
