"""Stage prepare: manifests, bad episodes skipped and reported (or fatal with strict), errors name files."""
from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from pipeline.inspect import verify
from pipeline.sources import EpisodeError, SourceError
from stages import extract, prepare
from tests.conftest import make_params
from tests.pipeline import media


def test_manifest_lists_episodes_with_exact_counts(tiny):
    manifest = prepare.run(tiny, "synthetic", show_progress=False)
    assert [e["frames"] for e in manifest["episodes"]] == [10] * 6
    assert manifest["episodes"][0]["key"] == "episode_000000" and manifest["failures"] == []
    assert manifest["schema"]["action_dim"] == 4 and "pose" in manifest["schema"]["labels"]
    on_disk = json.loads(prepare.manifest_path(tiny, "synthetic").read_text())
    assert on_disk == manifest and prepare.read_manifest(tiny, "synthetic") == manifest


def test_stride_and_max_frames_reach_the_manifest(tmp_path):
    params = make_params(tmp_path, "datasets.synthetic.frame_stride=3", "datasets.synthetic.max_frames=3")
    manifest = prepare.run(params, "synthetic", show_progress=False)
    assert [e["frames"] for e in manifest["episodes"]] == [3] * 6


def bad_folder(root):
    good = media.make_video_folder(root / "videos", n=2, frames=6, size=(28, 28), suffixes=(".mp4", ".mkv"))
    media.write_corrupt_video(root / "videos/b_corrupt.mp4")
    media.write_empty_file(root / "videos/c_empty.mp4")
    media.write_truncated_video(root / "videos/d_truncated.mp4", media.color_frames(12, (32, 32)), keep=4)
    media.write_zero_frame_video(root / "videos/e_zero.mkv")
    return good


def folder_params(tmp_path, *extra):
    return make_params(tmp_path, "datasets.clips.kind=video_folder", f"datasets.clips.path={tmp_path / 'videos'}",
                       *extra)


def test_bad_videos_are_skipped_listed_and_never_stored(tmp_path):
    good = bad_folder(tmp_path)
    params = folder_params(tmp_path)
    manifest = prepare.run(params, "clips", show_progress=False)
    assert [e["key"] for e in manifest["episodes"]] == [g.rel for g in good]
    assert [e["frames"] for e in manifest["episodes"]] == [g.n_frames for g in good]
    failed = {f["key"]: f for f in manifest["failures"]}
    assert sorted(failed) == ["b_corrupt.mp4", "c_empty.mp4", "d_truncated.mp4", "e_zero.mkv"]
    for key, f in failed.items():
        assert f["origin"].endswith(key) and f["reason"]
    assert "empty" in failed["c_empty.mp4"]["reason"].lower()
    path = extract.run(params, "clips", show_progress=False)
    report = json.loads(extract.failures_path(params, "clips").read_text())
    assert sorted(f["key"] for f in report["skipped"]) == sorted(failed)
    root = zarr.open_group(path, mode="r")
    assert root["episode_ends"][:].tolist() == np.cumsum([g.n_frames for g in good]).tolist()
    assert root.attrs["dila"]["skipped"] == manifest["failures"] and "actions" not in root
    assert verify(path) == []


def test_strict_stops_at_the_first_bad_file(tmp_path):
    bad_folder(tmp_path)
    params = folder_params(tmp_path, "datasets.clips.strict=true")
    with pytest.raises(EpisodeError) as info:
        prepare.run(params, "clips", show_progress=False)
    assert info.value.origin.endswith("b_corrupt.mp4") and "b_corrupt.mp4" in str(info.value)
    assert not prepare.manifest_path(params, "clips").exists()


def test_missing_source_path_is_named(tmp_path):
    params = make_params(tmp_path, "datasets.clips.kind=video_folder", f"datasets.clips.path={tmp_path}/nowhere")
    with pytest.raises(SourceError, match=f"{tmp_path}/nowhere"):
        prepare.run(params, "clips", show_progress=False)


def test_a_source_with_no_readable_episode_is_an_error(tmp_path):
    media.write_corrupt_video(tmp_path / "videos/x.mp4")
    with pytest.raises(SourceError, match="none of its 1 episodes could be read"):
        prepare.run(folder_params(tmp_path), "clips", show_progress=False)


def test_a_file_changed_after_prepare_stops_extract_naming_the_source(tmp_path):
    good = bad_folder(tmp_path)
    params = folder_params(tmp_path)
    prepare.run(params, "clips", show_progress=False)
    (tmp_path / "videos" / good[0].rel).write_bytes(b"")
    with pytest.raises(SourceError, match="source changed since `dila prepare clips`"):
        extract.run(params, "clips", show_progress=False)
    assert not extract.store_path(params, "clips").exists()


def test_parallel_checking_gives_the_same_manifest(tmp_path):
    bad_folder(tmp_path)
    serial = prepare.run(folder_params(tmp_path, "decode.workers=0"), "clips", show_progress=False)
    parallel = prepare.run(folder_params(tmp_path, "decode.workers=2"), "clips", show_progress=False)
    assert serial["episodes"] == parallel["episodes"] and serial["failures"] == parallel["failures"]
