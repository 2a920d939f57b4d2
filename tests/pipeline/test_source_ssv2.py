"""SSv2Source on a tiny Something-Something v2 layout: VP9 webm clips, labels.json, train.json, a split file."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import ParamsError, build
from pipeline.data.sources import build_source, params_class
from pipeline.data.sources.base import EpisodeError, LabelSpec, Schema, SourceError
from pipeline.data.sources.ssv2 import SSv2Params, SSv2Source, sample_indices
from tests.pipeline.media import COLOR_TOLERANCE, closest_index, color_frames, expected_colors, mean_colors, write_video

SIZE = (24, 32)
# id -> (raw frames, colour salt, template); "99" has no webm, "555" has a webm but no annotation
CLIPS = {
    "3": (24, 0, "Putting [something] on a surface"),
    "7": (6, 2, "Holding [something] next to [something]"),
    "12": (20, 1, "Pushing [something] from left to right"),
    "40": (10, 3, "Putting [something] on a surface"),  # shorter than clip_frames=16
    "61": (18, 4, "Spinning [something] so it continues spinning"),  # template not in our labels.json
    "99": (None, None, "Holding [something] next to [something]"),
}
CLASSES = {"Putting something on a surface": "109", "Holding something next to something": "19",
           "Pushing something from left to right": "93"}
SPLIT = "# DiLA cleaned subset: one clip id per line\n12\n\n  3  \n7\n99\n555\n"


@pytest.fixture(scope="module")
def ssv2(tmp_path_factory):
    base = tmp_path_factory.mktemp("ssv2")
    clips = base / "20bn-something-something-v2"
    for clip_id, (n, salt, _) in CLIPS.items():
        if n is not None:
            write_video(clips / f"{clip_id}.webm", color_frames(n, SIZE, salt), fps=12, codec="libvpx-vp9")
    write_video(clips / "555.webm", color_frames(18, SIZE, 5), fps=12, codec="libvpx-vp9")
    labels = base / "labels"
    labels.mkdir()
    entries = [{"id": i, "label": t.replace("[something]", "a cup").lower(), "template": t,
                "placeholders": ["a cup"] * t.count("[")} for i, (_, _, t) in CLIPS.items()]
    (labels / "train.json").write_text(json.dumps(entries))
    (labels / "labels.json").write_text(json.dumps(CLASSES))
    (labels / "dila_train.txt").write_text(SPLIT)
    return base


def params(base, **changes) -> dict:
    """The release's layout below `base` (the clips at the default `videos`)."""
    return {"kind": "ssv2", "path": str(base), "annotations": "labels/train.json", "labels": "labels/labels.json",
            "split": "labels/dila_train.txt", **changes}


def own_root(tmp_path, ssv2) -> Path:
    """A private SSv2 folder in tmp_path: the fixture's clips linked in, its label files copied."""
    root = tmp_path / "ssv2"
    root.mkdir()
    (root / "20bn-something-something-v2").symlink_to(ssv2 / "20bn-something-something-v2")
    shutil.copytree(ssv2 / "labels", root / "labels")
    return root


def source(base, **changes) -> SSv2Source:
    return SSv2Source(build(SSv2Params, params(base, **changes), "datasets.ssv2"))


def refs_by_key(src):
    return {r.key: r for r in src.refs()}


def test_params_and_registry(ssv2):
    p = build(SSv2Params, params(ssv2), "d")
    assert p.clip_frames == 16 and p.decoder == "auto" and p.frame_stride == 1 and p.max_frames is None
    assert params_class("ssv2") is SSv2Params and isinstance(build_source(p), SSv2Source)
    default = build(SSv2Params, {"kind": "ssv2", "path": "x"}, "d")  # the release's layout below path
    assert (default.videos, default.annotations, default.labels, default.split) == \
        ("20bn-something-something-v2", "labels/train.json", None, None)
    for key, value in [("annotations", "/elsewhere/train.json"), ("split", "../ids.txt"), ("videos", ""),
                       ("labels", "a/../../labels.json")]:
        with pytest.raises(ParamsError, match=rf"d.{key} = .*relative to d.path and inside it.*DVC tracks path"):
            build(SSv2Params, params(ssv2, **{key: value}), "d")
    assert SSv2Source(build(SSv2Params, params(ssv2, videos="."), "d")).root == ssv2
    with pytest.raises(ParamsError, match=r"d.frame_stride = 2 .*instead of striding; change clip_frames"):
        build(SSv2Params, params(ssv2, frame_stride=2), "d")
    with pytest.raises(ParamsError, match=r"d.max_frames = 8 .*exactly clip_frames"):
        build(SSv2Params, params(ssv2, max_frames=8), "d")
    for key, value in [("clip_frames", 1), ("decoder", "cv2"), ("kind", "video_folder")]:
        with pytest.raises(ParamsError, match=f"d.{key}"):
            build(SSv2Params, params(ssv2, **{key: value}), "d")


def test_episodes_follow_the_split_file_or_sorted_ids(ssv2):
    src = source(ssv2)
    refs = src.refs()
    assert [r.key for r in refs] == ["12", "3", "7", "99", "555"]
    assert refs[0].origin == str(ssv2 / "20bn-something-something-v2" / "12.webm")
    every = source(ssv2, split=None).refs()
    assert [r.key for r in every] == ["3", "7", "12", "40", "61", "99"]  # numeric, not text order


def test_sampling_rule():
    np.testing.assert_array_equal(sample_indices(24, 16, "x"),
                                  [0, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 23])
    np.testing.assert_array_equal(sample_indices(6, 5, "x"), [0, 1, 2, 4, 5])  # 2.5 rounds to even
    np.testing.assert_array_equal(sample_indices(16, 16, "x"), np.arange(16))
    with pytest.raises(EpisodeError, match="has 15 frames, fewer than clip_frames=16"):
        sample_indices(15, 16, "x")


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_frames_are_sampled_uniformly_over_the_whole_clip(ssv2, decoder):
    src = source(ssv2, decoder=decoder)
    refs = refs_by_key(src)
    for clip_id, picked in [("3", [0, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 23]),
                            ("12", [0, 1, 3, 4, 5, 6, 8, 9, 10, 11, 13, 14, 15, 16, 18, 19])]:
        n, salt, _ = CLIPS[clip_id]
        ep = src.load(refs[clip_id])
        assert ep.key == clip_id and ep.actions is None
        assert ep.frames.shape == (16, *SIZE, 3) and ep.frames.dtype == np.uint8
        assert [closest_index(f, range(n), salt) for f in ep.frames] == picked
        np.testing.assert_allclose(mean_colors(ep.frames), expected_colors(picked, salt), atol=COLOR_TOLERANCE)
        assert src.count(refs[clip_id]) == len(ep.frames) == 16
    short = source(ssv2, decoder=decoder, clip_frames=5)
    ep = short.load(refs_by_key(short)["7"])
    assert [closest_index(f, range(6), 2) for f in ep.frames] == [0, 1, 2, 4, 5]
    assert short.count(refs_by_key(short)["7"]) == 5


def test_labels_are_the_class_index_of_the_template(ssv2):
    src = source(ssv2, clip_frames=5)
    assert src.schema() == Schema(labels={"class": LabelSpec((), "int32")})
    refs = refs_by_key(src)
    for clip_id, index in [("3", 109), ("12", 93), ("7", 19)]:
        label = src.load(refs[clip_id]).labels["class"]
        assert label.dtype == np.int32 and label.tolist() == [index] * 5
    unlabelled = source(ssv2, labels=None)
    assert unlabelled.schema() == Schema() and unlabelled.load(refs["3"]).labels == {}


def test_slices_and_resize(ssv2):
    src = source(ssv2, resize=[12, 16])
    ref = refs_by_key(src)["3"]
    full = src.load(ref)
    assert full.frames.shape == (16, 12, 16, 3)
    for start, stop in [(0, 1), (2, 5), (15, 16), (4, 4)]:
        part = src.load(ref, start, stop)
        np.testing.assert_array_equal(part.frames, full.frames[start:stop])
        assert part.labels["class"].tolist() == [109] * (stop - start)
    np.testing.assert_array_equal(src.load(ref, 10).frames, full.frames[10:])
    assert src.frame_size(ref) == (12, 16)
    with pytest.raises(EpisodeError, match=r"\[0, 17\) but clip_frames is 16"):
        src.load(ref, 0, 17)


def test_bad_clips_are_episode_errors_naming_the_id_and_file(ssv2):
    src = source(ssv2, split=None)
    clips, labels = ssv2 / "20bn-something-something-v2", ssv2 / "labels"
    split_src = source(ssv2)
    cases = [
        (split_src, "99", f"clip id 99 is listed in the split file {labels / 'dila_train.txt'} but its video "
                          f"{clips / '99.webm'} does not exist"),
        (src, "99", f"clip id 99 is listed in the annotations file {labels / 'train.json'} but its video"),
        (split_src, "555", f"clip id 555 has no entry in the annotations file {labels / 'train.json'}"),
        (src, "40", "the clip has 10 frames, fewer than clip_frames=16"),
        (src, "61", f"clip id 61: its template 'Spinning [something] so it continues spinning' "
                    f"('Spinning something so it continues spinning') is not a class of the labels file "
                    f"{labels / 'labels.json'}"),
    ]
    for s, clip_id, reason in cases:
        ref = refs_by_key(s)[clip_id]
        for call in (s.count, s.load):
            with pytest.raises(EpisodeError, match=re.escape(reason)) as err:
                call(ref)
            assert err.value.origin == str(clips / f"{clip_id}.webm")
    assert source(ssv2, split=None, labels=None).count(refs_by_key(src)["61"]) == 16


def test_annotations_without_templates_need_labels_null(tmp_path, ssv2):
    root = own_root(tmp_path, ssv2)
    test_json = root / "labels" / "test.json"
    test_json.write_text(json.dumps([{"id": "3"}, {"id": "12"}]))
    src = source(root, annotations="labels/test.json", split=None)
    assert [r.key for r in src.refs()] == ["3", "12"]
    with pytest.raises(EpisodeError, match=f"clip id 3 has no template in the annotations file {test_json}"):
        src.count(src.refs()[0])
    assert source(root, annotations="labels/test.json", split=None, labels=None).count(src.refs()[0]) == 16


def test_dataset_level_problems_are_source_errors_naming_the_path(tmp_path, ssv2):
    root = own_root(tmp_path, ssv2)

    def refs_fail(match, **changes):
        with pytest.raises(SourceError, match=re.escape(match)):
            source(root, **changes).refs()

    refs_fail(f"{root / 'none.json'}: annotations file does not exist", annotations="none.json")
    refs_fail(f"{root / 'none.txt'}: split file does not exist", split="none.txt")
    refs_fail(f"{root / 'l.json'}: labels file does not exist", labels="l.json")
    refs_fail(f"{root / 'clips'}: SSv2 clip folder does not exist", videos="clips")
    bad = root / "bad.json"
    bad.write_text("[{\"id\": ")
    refs_fail(f"{bad}: annotations file is not valid JSON", annotations="bad.json")
    bad.write_text(json.dumps({"id": "3"}))
    refs_fail(f"{bad}: annotations file must be a JSON list", annotations="bad.json")
    bad.write_text(json.dumps([{"id": "3"}, {"template": "x"}]))
    refs_fail(f"{bad}: entry 1 must be an object with a string \"id\"", annotations="bad.json")
    bad.write_text(json.dumps({"Putting something on a surface": "one"}))
    refs_fail(f"{bad}: class index of 'Putting something on a surface' is 'one'", labels="bad.json")
    split = root / "split.txt"
    split.write_text("3\n12\n3\n")
    refs_fail(f"{split}:3: clip id 3 is listed twice (first on line 1)", split="split.txt")
    split.write_text("3\nsub/12\n")
    refs_fail(f"{split}:2: 'sub/12' is not a clip id", split="split.txt")
    split.write_text("# nothing\n\n")
    refs_fail(f"{split}: split file lists no clip ids", split="split.txt")


def test_fingerprint_tracks_clips_metadata_and_params(tmp_path, ssv2):
    root = own_root(tmp_path, ssv2)
    labels = root / "labels" / "labels.json"
    split = root / "split.txt"
    split.write_text("3\n12\n")
    src = source(root, split="split.txt")
    first = src.fingerprint()
    assert first == source(root, split="split.txt").fingerprint()
    assert source(root, split="split.txt", clip_frames=8).fingerprint() != first
    split.write_text("12\n3\n")
    assert src.fingerprint() != first
    split.write_text("3\n12\n")
    assert src.fingerprint() == first
    labels.write_text(json.dumps({**CLASSES, "Putting something on a surface": "7"}))
    assert src.fingerprint() != first
    labels.write_text(json.dumps(CLASSES))
    clip = ssv2 / "20bn-something-something-v2" / "12.webm"
    st = clip.stat()
    os.utime(clip, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    try:
        assert src.fingerprint() != first
    finally:
        os.utime(clip, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert src.fingerprint() == first
