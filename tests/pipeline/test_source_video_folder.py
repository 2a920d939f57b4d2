"""VideoFolderSource on a folder of tiny videos in several containers."""
from __future__ import annotations

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
