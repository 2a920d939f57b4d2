"""Video decoding: both decoders, frame selection, time ranges, and every failure mode."""
from __future__ import annotations

import av
import numpy as np
import pytest

from pipeline.data.sources import video
from pipeline.data.sources.base import EpisodeError, SourceError
from tests.pipeline.media import (
    COLOR_TOLERANCE,
    color_frames,
    expected_colors,
    mean_colors,
    write_corrupt_video,
    write_empty_file,
    write_truncated_video,
    write_video,
    write_zero_frame_video,
)

DECODERS = ["decord", "pyav"]
N = 14


def assert_colors(frames: np.ndarray, indices, salt: int = 0, size=(32, 32)) -> None:
    assert frames.dtype == np.uint8 and frames.shape[1:] == (*size, 3)
    assert len(frames) == len(indices)
    np.testing.assert_allclose(mean_colors(frames), expected_colors(indices, salt), atol=COLOR_TOLERANCE)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    return {s: write_video(root / f"clip{s}", color_frames(N), gop=4) for s in (".mp4", ".mkv", ".avi", ".webm")}


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".avi", ".webm"])
def test_decodes_every_container_in_order(clips, suffix, decoder):
    got = video.decode(clips[suffix], decoder=decoder)
    assert got.decoder == decoder
    assert got.total == N
    assert_colors(got.frames, range(N))
    assert video.count_frames(clips[suffix], decoder) == N


@pytest.mark.parametrize("decoder", DECODERS)
def test_slices_and_index_sets_equal_the_full_decode(clips, decoder):
    path = clips[".mp4"]
    full = video.decode(path, decoder=decoder).frames
    part = video.decode(path, slice(3, 11, 3), through=False, decoder=decoder)
    assert part.total is None
    np.testing.assert_array_equal(part.frames, full[3:11:3])
    through = video.decode(path, slice(2, None, 4), through=True, decoder=decoder)
    assert through.total == N
    np.testing.assert_array_equal(through.frames, full[2::4])
    picked = video.read_frames(path, [9, 2, 2, 13, 0], decoder=decoder)
    np.testing.assert_array_equal(picked, full[[9, 2, 2, 13, 0]])
    empty = video.decode(path, [], through=False, decoder=decoder)
    assert empty.frames.shape == (0, 32, 32, 3)


@pytest.mark.parametrize("decoder", DECODERS)
def test_index_past_the_end_names_the_file(clips, decoder):
    with pytest.raises(EpisodeError, match="frame 14 was requested") as err:
        video.read_frames(clips[".mkv"], [1, 14], decoder=decoder)
    assert err.value.origin == str(clips[".mkv"])


def window(path, start_s, stop_s, frames=slice(None), **kwargs):
    return video.decode(path, frames, window=video.TimeWindow(start_s, stop_s), **kwargs)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_time_range_selects_the_window(clips, suffix, decoder):
    path = clips[suffix]
    full = video.decode(path, decoder=decoder).frames
    # frames sit at t = i / 10 s; [0.5, 1.2) holds frames 5..11
    win = window(path, 0.5, 1.2, decoder=decoder)
    assert win.total == 7
    np.testing.assert_array_equal(win.frames, full[5:12])
    picked = window(path, 0.5, 1.2, slice(1, 6, 2), decoder=decoder)
    np.testing.assert_array_equal(picked.frames, full[[6, 8, 10]])
    head = window(path, 0.0, 0.3, through=False, frames=slice(0, 2), decoder=decoder)
    np.testing.assert_array_equal(head.frames, full[:2])
    tail = window(path, 1.3, 99.0, decoder=decoder)
    assert tail.total == 1
    np.testing.assert_array_equal(tail.frames, full[13:])
    # slightly rounded boundaries still land on the same frames
    rounded = window(path, 0.4999, 1.2001, decoder=decoder)
    np.testing.assert_array_equal(rounded.frames, full[5:12])


def test_auto_prefers_decord_and_falls_back_to_pyav(tmp_path, monkeypatch):
    good = write_video(tmp_path / "good.mp4", color_frames(8))
    assert video.resolve_decoder(good, "auto") == "decord"
    assert video.decode(good).decoder == "decord"

    def refuse(path):
        raise RuntimeError("unsupported codec")

    monkeypatch.setattr(video, "_decord_reader", refuse)
    other = write_video(tmp_path / "other.mkv", color_frames(8))
    got = video.decode(other, decoder="auto")
    assert got.decoder == "pyav"
    assert_colors(got.frames, range(8))
    with pytest.raises(EpisodeError, match="decord cannot read this file .unsupported codec.; PyAV can") as err:
        video.decode(other, decoder="decord")
    assert err.value.origin == str(other)


def test_auto_reads_av1_the_lerobot_v3_default_codec(tmp_path):
    try:
        path = write_video(tmp_path / "av1.mp4", color_frames(10, size=(64, 64)), codec="libsvtav1")
    except (av.FFmpegError, ValueError) as err:
        pytest.skip(f"no AV1 encoder in this PyAV build: {err}")
    got = video.decode(path, decoder="auto")
    assert got.total == 10
    assert_colors(got.frames, range(10), size=(64, 64))
    part = window(path, 0.3, 0.7, decoder="auto")
    np.testing.assert_array_equal(part.frames, got.frames[3:7])


def test_without_decord_auto_uses_pyav_and_forcing_decord_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(video, "_decord", lambda: None)
    path = write_video(tmp_path / "a.avi", color_frames(6))
    assert video.resolve_decoder(path, "auto") == "pyav"
    assert_colors(video.decode(path).frames, range(6))
    with pytest.raises(SourceError, match="decord"):
        video.decode(path, decoder="decord")


def test_unknown_decoder_is_rejected(clips):
    with pytest.raises(ValueError, match="decoder must be one of"):
        video.decode(clips[".mp4"], decoder="opencv")


def _failures(root):
    frames = color_frames(20)
    return {
        "missing": (root / "nope.mp4", "does not exist"),
        "empty": (write_empty_file(root / "empty.mp4"), r"empty \(0 bytes\)"),
        "corrupt": (write_corrupt_video(root / "corrupt.mp4"), "cannot open the video"),
        "zero_mp4": (write_zero_frame_video(root / "zero.mp4"), "no frames|no video stream"),
        "zero_avi": (write_zero_frame_video(root / "zero.avi"), "no decodable frames"),
        "zero_mkv": (write_zero_frame_video(root / "zero.mkv"), "no frames"),
        "cut": (write_truncated_video(root / "cut.mp4", frames, keep=10), "frame-count mismatch.* 20 .* 10 decode"),
        "torn": (write_truncated_video(root / "torn.mp4", frames, keep=10, mid_packet=True), "corrupt or truncated"),
    }


@pytest.mark.parametrize("decoder", ["auto", *DECODERS])
def test_every_failure_is_an_episode_error_naming_the_file(tmp_path, decoder):
    for name, (path, reason) in _failures(tmp_path).items():
        with pytest.raises(EpisodeError, match=reason) as err:
            video.count_frames(path, decoder)
        assert err.value.origin == str(path), name
        assert str(path) in str(err.value), name


@pytest.mark.parametrize("decoder", DECODERS)
def test_truncated_file_reads_its_intact_head(tmp_path, decoder):
    path = write_truncated_video(tmp_path / "cut.mp4", color_frames(20), keep=10)
    assert video.header_frame_count(path) == 20
    head = video.decode(path, slice(0, 6), through=False, decoder=decoder)
    assert_colors(head.frames, range(6))
    with pytest.raises(EpisodeError, match="frame 15 was requested"):
        video.read_frames(path, [15], decoder=decoder)


@pytest.mark.parametrize("decoder", ["auto", *DECODERS])
def test_decord_logs_nothing_to_stderr(tmp_path, decoder, capfd):
    for name, (path, reason) in _failures(tmp_path).items():
        with pytest.raises(EpisodeError, match=reason):
            video.count_frames(path, decoder)
    assert capfd.readouterr().err == ""  # decord writes "ERROR opening: ..." to fd 2 for the corrupt file


def test_what_decord_logs_is_its_reason(tmp_path, monkeypatch):
    corrupt = write_corrupt_video(tmp_path / "corrupt.mp4")
    with pytest.raises(RuntimeError) as err:  # decord's own exception says only "Error reading <path>..."
        video._decord_reader(corrupt)
    assert str(err.value) == f"ERROR opening: {corrupt}, Invalid data found when processing input"
    # Where PyAV reads a file decord cannot, decord's complaint is the reason (PyAV is made to succeed here).
    monkeypatch.setattr(video, "_pyav_decode", lambda *args, **kwargs: ({}, 20, (32, 32)))
    monkeypatch.setattr(video, "_check_total", lambda path, total: None)
    with pytest.raises(EpisodeError) as err:
        video.decode(corrupt, decoder="decord")
    assert err.value.reason == (f"decord cannot read this file (ERROR opening: {corrupt}, Invalid data found when "
                                "processing input); PyAV can: use decoder 'auto' or 'pyav'")


def test_a_frame_size_change_inside_a_video_is_its_reason(tmp_path):
    parts = [write_video(tmp_path / "a.ts", color_frames(4, (32, 32)), codec="libx264"),
             write_video(tmp_path / "b.ts", color_frames(3, (48, 64)), codec="libx264")]
    joined = tmp_path / "joined.ts"  # MPEG-TS streams concatenate byte for byte
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    with pytest.raises(EpisodeError) as err:
        video.decode(joined, decoder="pyav")
    assert err.value.reason == "the frame size changes inside the video (32x32, 48x64, height x width)"
