"""VideoFolderSource on a folder of tiny videos in several containers."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from pipeline.config import ParamsError, build
from pipeline.data.sources import build_source, params_class
from pipeline.data.sources.base import EpisodeError, Schema, SourceError
from pipeline.data.sources.video_folder import VideoFolderParams, VideoFolderSource
from tests.pipeline.media import (
    COLOR_TOLERANCE,
    color_frames,
    expected_colors,
    make_video_folder,
    mean_colors,
    write_corrupt_video,
    write_empty_file,
    write_truncated_video,
    write_video,
    write_zero_frame_video,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    specs = make_video_folder(root, n=3, frames=10)
    return root, specs


def source(root, **changes) -> VideoFolderSource:
    params = build(VideoFolderParams, {"kind": "video_folder", "path": str(root), **changes}, "datasets.clips")
    return VideoFolderSource(params)


def test_params_parse_and_registry(folder):
    root, _ = folder
    params = build(VideoFolderParams, {"kind": "video_folder", "path": str(root), "decoder": "pyav"}, "d")
    assert params.extensions == (".mp4", ".webm", ".avi", ".mkv", ".mov") and params.decoder == "pyav"
    assert params_class("video_folder") is VideoFolderParams
    assert isinstance(build_source(params), VideoFolderSource)
    with pytest.raises(ParamsError, match="d.decoder"):
        build(VideoFolderParams, {"kind": "video_folder", "path": "x", "decoder": "cv2"}, "d")
    with pytest.raises(ParamsError, match="d.extensions"):
        build(VideoFolderParams, {"kind": "video_folder", "path": "x", "extensions": ["mp4"]}, "d")
    with pytest.raises(ParamsError, match="d.kind"):
        build(VideoFolderParams, {"kind": "lerobot", "path": "x"}, "d")


def test_refs_are_sorted_relative_paths_and_skip_other_files(folder):
    root, specs = folder
    refs = source(root).refs()
    assert [r.key for r in refs] == [s.rel for s in specs]
    assert [r.key for r in refs] == ["clip_00.mp4", "sub/clip_01.mkv", "sub/deeper/clip_02.avi"]
    assert all(r.origin == str(root / r.key) for r in refs)
    assert source(root).schema() == Schema()
    only_mkv = source(root, extensions=[".MKV"]).refs()
    assert [r.key for r in only_mkv] == ["sub/clip_01.mkv"]


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_load_every_episode_in_order(folder, decoder):
    root, specs = folder
    src = source(root, decoder=decoder)
    for ref, spec in zip(src.refs(), specs):
        ep = src.load(ref)
        assert ep.key == spec.rel and ep.actions is None and ep.labels == {}
        assert ep.frames.shape == (spec.n_frames, 32, 32, 3) and ep.frames.dtype == np.uint8
        np.testing.assert_allclose(mean_colors(ep.frames), expected_colors(range(spec.n_frames), spec.salt),
                                   atol=COLOR_TOLERANCE)
        assert src.count(ref) == spec.n_frames
        assert src.decoder_for(ref) == decoder


def test_stride_max_frames_resize_and_slices(folder):
    root, specs = folder
    src = source(root, frame_stride=3, max_frames=3, resize=[16, 24])
    ref, spec = src.refs()[1], specs[1]  # 11 frames: raw 0, 3, 6 kept (9 cut by max_frames)
    full = src.load(ref)
    assert src.count(ref) == 3
    assert full.frames.shape == (3, 16, 24, 3)
    np.testing.assert_allclose(mean_colors(full.frames), expected_colors([0, 3, 6], spec.salt), atol=COLOR_TOLERANCE)
    for start, stop in [(0, 3), (1, 3), (0, 1), (2, 3), (1, 1)]:
        np.testing.assert_array_equal(src.load(ref, start, stop).frames, full.frames[start:stop])
    np.testing.assert_array_equal(src.load(ref, 1).frames, full.frames[1:])
    with pytest.raises(EpisodeError, match="max_frames is 3"):
        src.load(ref, 0, 4)
    no_cap = source(root, frame_stride=4)
    assert no_cap.count(no_cap.refs()[2]) == 3  # 12 frames: raw 0, 4, 8
    with pytest.raises(EpisodeError, match=r"\[2, 4\) but the video ends after 1") as err:
        no_cap.load(no_cap.refs()[2], 2, 4)
    assert err.value.origin == str(root / "sub/deeper/clip_02.avi")
    with pytest.raises(EpisodeError, match="from 5 but the video has 3"):
        no_cap.load(no_cap.refs()[2], 5)


def test_source_errors_name_the_path(tmp_path):
    with pytest.raises(SourceError, match=f"{tmp_path / 'absent'}: video folder does not exist"):
        source(tmp_path / "absent").refs()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no videos here")
    write_video(tmp_path / "empty" / ".hidden" / "x.mp4", color_frames(4))
    with pytest.raises(SourceError, match=f"{tmp_path / 'empty'}: no video files"):
        source(tmp_path / "empty").refs()
    afile = write_video(tmp_path / "one.mp4", color_frames(4))
    with pytest.raises(SourceError, match="not a directory"):
        source(afile).refs()


def test_bad_files_are_episode_errors_naming_the_file(tmp_path):
    write_video(tmp_path / "a_good.mp4", color_frames(8))
    bad = {
        "b_empty.mp4": (write_empty_file(tmp_path / "b_empty.mp4"), "0 bytes"),
        "c_corrupt.mkv": (write_corrupt_video(tmp_path / "c_corrupt.mkv"), "cannot open"),
        "d_cut.mp4": (write_truncated_video(tmp_path / "d_cut.mp4", color_frames(16), keep=8), "frame-count mismatch"),
        "e_zero.avi": (write_zero_frame_video(tmp_path / "e_zero.avi"), "no decodable frames"),
    }
    src = source(tmp_path)
    refs = {r.key: r for r in src.refs()}
    assert sorted(refs) == ["a_good.mp4", *sorted(bad)]
    assert src.count(refs["a_good.mp4"]) == 8
    for key, (path, reason) in bad.items():
        for call in (src.count, src.load):
            with pytest.raises(EpisodeError, match=reason) as err:
                call(refs[key])
            assert err.value.origin == str(path)
    vanished = refs["a_good.mp4"]
    os.remove(tmp_path / "a_good.mp4")
    with pytest.raises(EpisodeError, match="does not exist"):
        src.load(vanished)


def test_fingerprint_tracks_files_and_params(tmp_path):
    make_video_folder(tmp_path, n=2, frames=6)
    src = source(tmp_path)
    first = src.fingerprint()
    assert first == source(tmp_path).fingerprint()
    assert source(tmp_path, frame_stride=2).fingerprint() != first
    assert source(tmp_path, decoder="pyav").fingerprint() != first
    write_video(tmp_path / "sub" / "new.webm", color_frames(5))
    assert src.fingerprint() != first


# -- actions sidecar (LoopNav-style: per-frame discrete actions beside each video) ----------------


def write_csv_sidecar(path, names, rows) -> None:
    lines = [",".join(names)] + [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def write_json_sidecar(path, names, rows) -> None:
    path.write_text(json.dumps({"names": list(names), "actions": [list(r) for r in rows]}))


def frame_rows(n: int) -> np.ndarray:
    """(n, 3) row k = (discrete action id k % 4, k, 10 k): identifies the raw frame it belongs to."""
    k = np.arange(n)
    return np.stack([k % 4, k, 10 * k], axis=1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two videos (11 and 8 frames, salts 0 and 1) with CSV and JSON sidecars."""
    root = tmp_path_factory.mktemp("loopnav")
    for stem, n, salt in [("run_000", 11, 0), ("sub/run_001", 8, 1)]:
        video = write_video(root / f"{stem}.mp4", color_frames(n, salt=salt))
        names = ("action_id", "frame", "ten_frames")
        write_csv_sidecar(video.with_name(video.stem + ".actions.csv"), names, frame_rows(n))
        write_json_sidecar(video.with_name(video.stem + ".actions.json"), names, frame_rows(n).tolist())
    return root


def test_actions_param_is_a_csv_or_json_suffix():
    assert build(VideoFolderParams, {"kind": "video_folder", "path": "x"}, "d").actions is None
    assert build(VideoFolderParams, {"kind": "video_folder", "path": "x", "actions": ".act.JSON"}, "d").actions
    for bad in ["actions.csv", ".actions.txt", ""]:
        with pytest.raises(ParamsError, match="d.actions"):
            build(VideoFolderParams, {"kind": "video_folder", "path": "x", "actions": bad}, "d")


@pytest.mark.parametrize("suffix", [".actions.csv", ".actions.json"])
def test_sidecar_actions_follow_the_kept_frames(runs, suffix):
    src = source(runs, actions=suffix, frame_stride=2)
    assert src.schema() == Schema(action_dim=3)
    ref0, ref1 = src.refs()
    assert [ref0.key, ref1.key] == ["run_000.mp4", "sub/run_001.mp4"]
    ep = src.load(ref0)  # 11 raw frames: kept raw 0, 2, 4, 6, 8, 10
    assert ep.actions.dtype == np.float32 and src.count(ref0) == 6
    np.testing.assert_array_equal(ep.actions, frame_rows(11)[[0, 2, 4, 6, 8, 10]])
    np.testing.assert_allclose(mean_colors(ep.frames), expected_colors([0, 2, 4, 6, 8, 10]), atol=COLOR_TOLERANCE)
    part = src.load(ref0, 1, 3)
    np.testing.assert_array_equal(part.actions, frame_rows(11)[[2, 4]])
    np.testing.assert_array_equal(src.load(ref0, 4).actions, frame_rows(11)[[8, 10]])
    np.testing.assert_array_equal(src.load(ref1).actions, frame_rows(8)[[0, 2, 4, 6]])
    capped = source(runs, actions=suffix, frame_stride=2, max_frames=3)
    np.testing.assert_array_equal(capped.load(ref0).actions, frame_rows(11)[[0, 2, 4]])
    clips = np.stack([ep.actions[:4], src.load(ref1).actions])  # (2, 4, 3)
    np.testing.assert_array_equal(src.probe_targets(clips, {}), clips[:, :3])


def test_no_actions_without_the_param(runs):
    src = source(runs)
    assert src.schema() == Schema() and src.load(src.refs()[0]).actions is None


def sidecar_case(tmp_path, name, write):
    """A folder with one good video + sidecar (the reference, sorted first) and video `name`
    (10 frames) whose sidecar `write(path)` makes."""
    good = write_video(tmp_path / "a_good.mp4", color_frames(10))
    write_csv_sidecar(tmp_path / "a_good.actions.csv", ["move", "turn"], frame_rows(10)[:, :2])
    video = write_video(tmp_path / name, color_frames(10))
    sidecar = tmp_path / (video.stem + ".actions.csv")
    write(sidecar)
    return good, video, sidecar


BAD_SIDECARS = {
    "missing": (lambda p: None, "does not exist"),
    "short": (lambda p: write_csv_sidecar(p, ["move", "turn"], frame_rows(9)[:, :2]),
              "has 9 rows but the video has 10"),
    "long": (lambda p: write_csv_sidecar(p, ["move", "turn"], frame_rows(11)[:, :2]),
             "has 11 rows but the video has 10"),
    "text": (lambda p: write_csv_sidecar(p, ["move", "turn"], [[0, 1]] * 4 + [[0, "left"]] + [[0, 1]] * 5),
             r"line 6, column 'turn': 'left' is not a number"),
    "ragged": (lambda p: write_csv_sidecar(p, ["move", "turn"], [[0, 1]] * 3 + [[0, 1, 2]] + [[0, 1]] * 6),
               "line 5: ragged row: 3 values but the header names 2"),
    "other_names": (lambda p: write_csv_sidecar(p, ["turn", "move"], frame_rows(10)[:, :2]),
                    r"names the action dimensions \['turn', 'move'\] "
                    r"but .*a_good.actions.csv names \['move', 'turn'\]"),
    "empty": (lambda p: p.write_text(""), "is empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_SIDECARS))
def test_bad_csv_sidecars_are_episode_errors_naming_video_and_sidecar(tmp_path, case):
    write, reason = BAD_SIDECARS[case]
    good, video, sidecar = sidecar_case(tmp_path, f"b_{case}.mp4", write)
    src = source(tmp_path, actions=".actions.csv")
    refs = {r.key: r for r in src.refs()}
    assert src.count(refs["a_good.mp4"]) == 10 and src.schema().action_dim == 2
    for call in (src.count, src.load):
        with pytest.raises(EpisodeError, match=reason) as err:
            call(refs[video.name])
        assert err.value.origin == str(video)
        assert f"actions sidecar {sidecar}" in err.value.reason


@pytest.mark.parametrize("payload, reason", [
    ({"names": ["move"], "actions": [[0]] * 9}, "has 9 rows but the video has 10"),
    ({"names": ["move"], "actions": [[0]] * 4 + [["1"]] + [[0]] * 5},
     r"actions\[4\]\[0\] \('move'\): '1' is not a number"),
    ({"names": ["move"], "actions": [[0]] * 2 + [[float("nan")]] + [[0]] * 7}, "is not a finite number"),
    ({"names": ["move"], "actions": [[0]] * 2 + [[0, 1]] + [[0]] * 7}, r"actions\[2\]: ragged row: 2 values"),
    ({"actions": [[0]] * 10}, '"names" is a non-empty list'),
    ("{not json", "is not valid JSON"),
])
def test_bad_json_sidecars_are_episode_errors_naming_video_and_sidecar(tmp_path, payload, reason):
    write_video(tmp_path / "a_good.mp4", color_frames(10))
    write_json_sidecar(tmp_path / "a_good.actions.json", ["move"], [[k] for k in range(10)])
    video = write_video(tmp_path / "b_bad.mp4", color_frames(10))
    sidecar = tmp_path / "b_bad.actions.json"
    sidecar.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    src = source(tmp_path, actions=".actions.json")
    ref = src.refs()[1]
    np.testing.assert_array_equal(src.load(src.refs()[0]).actions[:, 0], np.arange(10))
    for call in (src.count, src.load):
        with pytest.raises(EpisodeError, match=reason) as err:
            call(ref)
        assert err.value.origin == str(video) and f"actions sidecar {sidecar}" in err.value.reason


def test_no_readable_sidecar_is_a_source_error(tmp_path):
    write_video(tmp_path / "a.mp4", color_frames(6))
    with pytest.raises(SourceError, match=rf"no video has a readable actions sidecar .*{tmp_path / 'a.actions.csv'}"):
        source(tmp_path, actions=".actions.csv").schema()


def test_fingerprint_tracks_sidecars(tmp_path):
    write_video(tmp_path / "a.mp4", color_frames(6))
    sidecar = tmp_path / "a.actions.csv"
    write_csv_sidecar(sidecar, ["move"], [[k] for k in range(6)])
    src = source(tmp_path, actions=".actions.csv")
    first = src.fingerprint()
    assert source(tmp_path).fingerprint() != first
    write_csv_sidecar(sidecar, ["move"], [[k + 10] for k in range(6)])
    os.utime(sidecar, ns=(1, 1))
    assert src.fingerprint() != first
    os.remove(sidecar)
    assert src.fingerprint() != first
