"""Helpers every source shares: frame selection, resizing, file fingerprints."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.sources import base
from pipeline.data.sources.base import DatasetParams, EpisodeError


def test_kept_raw_raw_slice_and_file_fingerprints(tmp_path):
    params = DatasetParams(kind="video_folder", path=str(tmp_path), frame_stride=3, max_frames=4)
    raw = base.kept_raw(20, params, 1, 3, "here")
    np.testing.assert_array_equal(raw, [3, 6])
    assert base.raw_slice(raw, 3) == slice(3, 7, 3)
    np.testing.assert_array_equal(base.kept_raw(20, params, 2, None, "here"), [6, 9])
    with pytest.raises(EpisodeError, match=r"\[2, 5\) but the episode has 4"):
        base.kept_raw(20, params, 2, 5, "here")
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"1")
    b.write_bytes(b"22")
    first = base.fingerprint_files(params, tmp_path, [a, b])
    assert first == base.fingerprint_files(params, tmp_path, [b, a])
    b.write_bytes(b"333")
    assert base.fingerprint_files(params, tmp_path, [a, b]) != first
    other = DatasetParams(kind="video_folder", path=str(tmp_path), frame_stride=2, max_frames=4)
    assert base.fingerprint_files(other, tmp_path, [a, b]) != base.fingerprint_files(params, tmp_path, [a, b])


def test_kept_indices_apply_stride_then_max_frames():
    params = DatasetParams(kind="video_folder", path="x", frame_stride=2, max_frames=3)
    np.testing.assert_array_equal(base.kept_indices(11, params), [0, 2, 4])
    np.testing.assert_array_equal(base.kept_indices(3, params), [0, 2])


def test_apply_resize_matches_antialiased_bilinear_and_keeps_uint8():
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    frames[:, :, 4:] = 200  # left half black, right half 200
    out = base.apply_resize(frames, DatasetParams(kind="video_folder", path="x", resize=(4, 4)))
    assert out.dtype == np.uint8 and out.shape == (2, 4, 4, 3)
    np.testing.assert_array_equal(out[0, :, 0], 0)
    np.testing.assert_array_equal(out[0, :, 3], 200)
    same = base.apply_resize(frames, DatasetParams(kind="video_folder", path="x", resize=(8, 8)))
    assert same is frames
