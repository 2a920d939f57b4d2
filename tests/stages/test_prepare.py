"""Stage prepare: manifests, bad episodes skipped and reported (or fatal with strict), errors name files."""
from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from pipeline import artifacts
from pipeline.artifacts import MissingInput
from pipeline.config import ParamsError
from pipeline.data.inspect import verify
from pipeline.data.sources import EpisodeError, SourceError
from stages import extract, prepare
from tests.conftest import make_params
from tests.pipeline import media


def test_manifest_lists_episodes_with_exact_counts(tiny):
    manifest = prepare.run(tiny, "synthetic", show_progress=False)
    assert [e["frames"] for e in manifest["episodes"]] == [10] * 6
    assert manifest["episodes"][0]["key"] == "episode_000000" and manifest["failures"] == []
    assert manifest["schema"]["action_dim"] == 4 and "pose" in manifest["schema"]["labels"]
    on_disk = json.loads(artifacts.manifest_path(tiny, "synthetic").read_text())
    assert on_disk == manifest and artifacts.read_manifest(tiny, "synthetic") == manifest


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
    report = json.loads(artifacts.failures_path(params, "clips").read_text())
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
    assert not artifacts.manifest_path(params, "clips").exists()


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
    assert not artifacts.store_path(params, "clips").exists()


def test_parallel_checking_gives_the_same_manifest(tmp_path):
    bad_folder(tmp_path)
    serial = prepare.run(folder_params(tmp_path, "decode.workers=0"), "clips", show_progress=False)
    parallel = prepare.run(folder_params(tmp_path, "decode.workers=2"), "clips", show_progress=False)
    assert serial["episodes"] == parallel["episodes"] and serial["failures"] == parallel["failures"]


def robot_params(tmp_path, *extra):
    return make_params(tmp_path, "datasets.robot.kind=lerobot", f"datasets.robot.path={tmp_path / 'robot'}", *extra)


def test_a_wrong_action_key_stops_prepare_once_naming_the_key(tmp_path):
    media.make_lerobot_v3(tmp_path / "robot", (4, 3), action="actions", cameras=("observation.images.top",))
    params = robot_params(tmp_path)
    with pytest.raises(ParamsError, match=r"^params: datasets.robot.action_key = 'action' is not allowed: expected "
                                          r"null or one of the dataset's columns: \['actions', 'observation.state',"):
        prepare.run(params, "robot", show_progress=False)
    assert not artifacts.manifest_path(params, "robot").exists()
    manifest = prepare.run(robot_params(tmp_path, "datasets.robot.action_key=actions"), "robot", show_progress=False)
    assert [e["frames"] for e in manifest["episodes"]] == [4, 3] and manifest["schema"]["action_dim"] == 2


def test_when_no_episode_reads_the_manifest_and_the_error_list_every_reason(tmp_path):
    media.make_lerobot_v3(tmp_path / "robot", (6, 9, 5), video_lengths=(5, 8, 4), episodes_per_file=1,
                          cameras=("observation.images.top",))
    params = robot_params(tmp_path)
    with pytest.raises(SourceError) as err:
        prepare.run(params, "robot", show_progress=False)
    path = artifacts.manifest_path(params, "robot")
    manifest = json.loads(path.read_text())
    assert manifest["episodes"] == []
    data = tmp_path / "robot" / "data" / "chunk-000"
    reasons = [f"frame-count mismatch: {data}/file-00{e}.parquet has {n} rows for episode {e} but {n - 1} frames decode"
               for e, n in enumerate((6, 9, 5))]
    assert [f["reason"] for f in manifest["failures"]] == reasons
    assert [f["key"] for f in manifest["failures"]] == ["episode_000000", "episode_000001", "episode_000002"]
    assert str(err.value) == (f"dataset 'robot' ({tmp_path / 'robot'}): none of its 3 episodes could be read; each is "
                              f"listed with its reason in {path}:" +
                              "".join(f"\n  {f['origin']}: {f['reason']}" for f in manifest["failures"]))
    with pytest.raises(MissingInput, match="none of the episodes of dataset 'robot' could be read"):
        extract.run(params, "robot", show_progress=False)


def test_mixed_resolutions_without_resize_stop_prepare_asking_for_resize(tmp_path):
    media.write_video(tmp_path / "videos" / "a.mp4", media.color_frames(6, (32, 32)))
    media.write_video(tmp_path / "videos" / "b.mp4", media.color_frames(5, (48, 64)))
    media.write_video(tmp_path / "videos" / "c.mp4", media.color_frames(4, (32, 32)))
    params = folder_params(tmp_path)
    with pytest.raises(ParamsError) as err:
        prepare.run(params, "clips", show_progress=False)
    videos = tmp_path / "videos"
    assert str(err.value) == (
        "params: datasets.clips.resize = None is not allowed for this dataset: its episodes decode at 2 sizes "
        f"(height x width: 32x32 (2 episodes, e.g. {videos / 'a.mp4'}), 48x64 (1 episode, e.g. {videos / 'b.mp4'})); "
        "set datasets.clips.resize to one [height, width], e.g. [32, 32] (the first episode's), and every frame is "
        "resized to it")
    assert not artifacts.manifest_path(params, "clips").exists()
    resized = folder_params(tmp_path, "datasets.clips.resize=[32, 32]")
    assert [e["frames"] for e in prepare.run(resized, "clips", show_progress=False)["episodes"]] == [6, 5, 4]
    assert verify(extract.run(resized, "clips", show_progress=False)) == []


def test_the_progress_bar_ends_at_the_total_when_episodes_are_skipped(tmp_path, capsys):
    bad_folder(tmp_path)
    prepare.run(folder_params(tmp_path), "clips", show_progress=True)
    bar = [line for line in capsys.readouterr().out.splitlines() if line.startswith("prepare: checking episodes")]
    assert len(bar) == 1 and " 6/6 " in bar[0]
