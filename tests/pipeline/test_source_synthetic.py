"""The built-in synthetic source: params, determinism, ground truth and rendering."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

from pipeline.config import ParamsError, build
from pipeline.data.sources import build_source, params_class, synthetic
from pipeline.data.sources.base import EpisodeError, EpisodeRef, apply_resize
from pipeline.data.sources.synthetic import (
    MOTIONS,
    Appearance,
    Motion,
    SyntheticParams,
    SyntheticSource,
)

WHERE = "datasets.synthetic"
SMALL = {"episodes": 8, "frames": 8, "size": 32}


def make(**changes) -> SyntheticSource:
    return SyntheticSource(build(SyntheticParams, {**SMALL, **changes}, WHERE))


def ref_of(index: int) -> EpisodeRef:
    return EpisodeRef(f"episode_{index:06d}", f"synthetic episode {index}")


def assert_same_episode(a, b) -> None:
    assert a.frames.tobytes() == b.frames.tobytes()
    assert a.actions.tobytes() == b.actions.tobytes()
    assert sorted(a.labels) == sorted(b.labels)
    for name in a.labels:
        assert a.labels[name].tobytes() == b.labels[name].tobytes(), name


def empty_like(appearance: Appearance, motion: Motion) -> tuple[Appearance, Motion]:
    """The same background and frame count with no objects."""
    return Appearance(appearance.background, ()), Motion(motion.family, motion.poses[:, :0])


def object_mask(source: SyntheticSource, appearance: Appearance, motion: Motion) -> np.ndarray:
    """(T, H, W) pixels where the render differs from the background alone."""
    frames = source.render(appearance, motion).frames
    background = source.render(*empty_like(appearance, motion)).frames
    return np.any(frames != background, axis=-1)


def centroids(mask: np.ndarray) -> np.ndarray:
    """(T, 2) mask centroid per frame as (column, row) pixel coordinates."""
    rows, cols = np.mgrid[: mask.shape[1], : mask.shape[2]]
    area = mask.sum(axis=(1, 2))
    return np.stack([(mask * cols).sum(axis=(1, 2)) / area, (mask * rows).sum(axis=(1, 2)) / area], axis=1)


def test_defaults_are_valid_and_registered():
    params = build(params_class("synthetic"), {}, WHERE)
    assert params == SyntheticParams()
    assert (params.kind, params.episodes, params.frames, params.size, params.max_objects) == (
        "synthetic", 64, 32, 64, 1)
    assert params.motions == MOTIONS
    assert isinstance(build_source(params), SyntheticSource)


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"episodes": 0}, "episodes"),
        ({"episodes": "many"}, "episodes"),
        ({"frames": 1}, "frames"),
        ({"frames": 2, "frame_stride": 2}, "frames"),
        ({"size": 4}, "size"),
        ({"max_objects": 0}, "max_objects"),
        ({"motions": []}, "motions"),
        ({"motions": ["spin"]}, "motions[0]"),
        ({"motions": ["scale", "scale"]}, "motions"),
        ({"appearances": 0}, "appearances"),
        ({"backgrounds": 0}, "backgrounds"),
        ({"seed": -1}, "seed"),
        ({"object_size": 0.4}, "object_size"),
        ({"scale_range": -0.1}, "scale_range"),
        ({"translate_step": -1.0}, "translate_step"),
        ({"persistence": 1.0}, "persistence"),
        ({"background_contrast": 1.5}, "background_contrast"),
        ({"background_contrast": -0.1}, "background_contrast"),
        ({"kind": "video_folder"}, "kind"),
        ({"frame_stride": 0}, "frame_stride"),
        ({"colour": 1}, "colour"),
    ],
)
def test_bad_values_name_the_key(changes, key):
    with pytest.raises(ParamsError, match=re.escape(f"{WHERE}.{key}")):
        build(SyntheticParams, changes, WHERE)


def test_same_params_give_identical_bytes_and_another_seed_differs():
    a, b, other = make(max_objects=2), make(max_objects=2), make(max_objects=2, seed=1)
    for ref in a.refs()[:3]:
        first = a.load(ref)
        assert_same_episode(first, b.load(ref))
        changed = other.load(ref)
        assert not np.array_equal(first.frames, changed.frames)
        assert not np.array_equal(first.actions, changed.actions)
    assert a.fingerprint() == b.fingerprint() != other.fingerprint()


def test_a_slice_equals_the_same_slice_of_the_full_episode():
    source = make(max_objects=2)
    for ref in source.refs()[:3]:
        full = source.load(ref)
        for start, stop in [(0, 1), (2, 5), (7, 8), (3, None)]:
            part = source.load(ref, start, stop)
            window = slice(start, stop)
            assert part.frames.tobytes() == full.frames[window].tobytes()
            assert np.array_equal(part.actions, full.actions[window])
            for name, values in full.labels.items():
                assert np.array_equal(part.labels[name], values[window]), name


def test_an_episode_depends_only_on_seed_and_index():
    few, many = make(episodes=3), make(episodes=8)
    loaded = {ref.key: many.load(ref) for ref in reversed(many.refs())}
    for ref in few.refs():
        assert_same_episode(few.load(ref), loaded[ref.key])
    assert np.array_equal(few.spec(6).motion.poses, many.spec(6).motion.poses)
    # A longer simulation (for the stride) extends the same motion.
    strided, plain = make(frame_stride=2, max_objects=3), make(max_objects=3)
    objects = set()
    for i in range(6):
        longer, shorter = strided.spec(i).motion.poses, plain.spec(i).motion.poses
        objects.add(shorter.shape[1])
        assert longer.shape[0] == shorter.shape[0] + 1
        assert np.array_equal(longer[: len(shorter)], shorter)
    assert max(objects) > 1


def test_actions_are_exact_pose_differences_and_objects_stay_inside():
    source = make(episodes=16, max_objects=3, frames=12)
    for ref in source.refs():
        episode, spec = source.load(ref), source.spec(int(ref.key[-6:]))
        pose, present = episode.labels["pose"], episode.labels["present"].astype(bool)
        actions = episode.actions.reshape(pose.shape)
        assert np.array_equal(pose[1:] - pose[:-1], actions[:-1])
        n = len(spec.appearance.objects)
        assert np.array_equal(actions[-1, :n], spec.motion.poses[12] - spec.motion.poses[11])
        radius = 0.14 * np.exp(pose[..., 2])[present]
        x, y = pose[..., 0][present], pose[..., 1][present]
        assert np.all(np.minimum.reduce([x, 1 - x, y, 1 - y]) >= radius - 1e-6)
        assert np.all(np.abs(pose[..., 2][present]) <= 0.4 + 1e-6)


def test_translation_steps_are_visible_and_vary_per_step():
    source = make(episodes=16, frames=32, size=64, motions=["translate"])
    steps = np.concatenate([source.spec(i).motion.actions[:, 0, :2] for i in range(16)]) * 64
    mean_pixels = np.abs(steps).mean()
    assert 1.0 < mean_pixels < 5.0
    assert len(np.unique(steps[:, 0])) == len(steps)
    assert np.abs(np.diff(steps, axis=0)).mean() > 0.3


def test_rebinding_renders_content_of_b_with_motion_of_a():
    source = make(episodes=12, max_objects=2)
    specs = [source.spec(i) for i in range(12)]
    a, b = next(
        (x, y) for x in specs for y in specs
        if len(x.appearance.objects) == len(y.appearance.objects)
        and x.appearance != y.appearance and x.motion.family != y.motion.family
    )
    mixed = source.render(b.appearance, a.motion, key="mixed")
    ep_a, ep_b = source.load(ref_of(a.index)), source.load(ref_of(b.index))
    assert np.array_equal(mixed.labels["pose"], ep_a.labels["pose"])
    assert np.array_equal(mixed.actions, ep_a.actions)
    assert np.array_equal(mixed.labels["motion"], ep_a.labels["motion"])
    assert np.array_equal(mixed.labels["content"], ep_b.labels["content"])
    assert not np.array_equal(mixed.frames, ep_a.frames)
    assert not np.array_equal(mixed.frames, ep_b.frames)
    assert_same_episode(source.render(a.appearance, a.motion, key=ep_a.key), ep_a)
    # Away from A's objects the mixed frames show exactly B's background.
    background = source.render(*empty_like(b.appearance, a.motion)).frames
    changed = np.any(mixed.frames != background, axis=-1)
    pose = mixed.labels["pose"][:, : len(a.appearance.objects)]
    rows, cols = (np.mgrid[:32, :32] + 0.5) / 32
    reach = 0.14 * np.exp(pose[..., 2]) + 1.5 / 32
    dist = np.hypot(cols - pose[..., 0, None, None], rows - pose[..., 1, None, None])
    assert not np.any(changed & np.all(dist > reach[..., None, None], axis=1))
    assert np.any(changed)


def test_a_translation_action_moves_the_rendered_centroid_by_that_many_pixels():
    source = make(frames=10, size=64, motions=["translate"], appearances=8)
    for index in range(4):
        spec = source.spec(index)
        mask = object_mask(source, spec.appearance, spec.motion)
        shift = np.diff(centroids(mask), axis=0)
        expected = source.load(ref_of(index)).actions[:-1, :2] * 64
        assert np.abs(shift - expected).max() < 0.3
    steps = [[[0.1, 0.0, 0.0, 0.0]], [[0.0, -0.05, 0.0, 0.0]], [[0.0, 0.0, 0.0, 0.0]]]
    applied = Motion.from_actions(0, [[0.5, 0.5, 0.0, 0.3]], steps)  # three frames, each with its action
    shift = np.diff(centroids(object_mask(source, Appearance(0, (1,)), applied)), axis=0)
    assert np.allclose(shift, [[6.4, 0.0], [0.0, -3.2]], atol=0.3)


def test_scaling_grows_the_object_and_rotation_turns_it_clockwise():
    source = make(size=64, appearances=8)
    appearance = Appearance(2, (1,))  # a square with a checker texture
    grown = Motion.from_actions(1, [[0.5, 0.5, -0.2, 0.4]], [[[0.0, 0.0, 0.3, 0.0]], [[0.0, 0.0, 0.0, 0.0]]])
    area = object_mask(source, appearance, grown).sum(axis=(1, 2))
    assert math.sqrt(area[1] / area[0]) == pytest.approx(math.exp(0.3), rel=0.04)
    turned = Motion.from_actions(2, [[0.5, 0.5, 0.0, 0.4]], [[[0.0, 0.0, 0.0, math.pi / 2]], [[0.0] * 4]])
    frames = source.render(appearance, turned).frames.astype(int)
    mask = object_mask(source, appearance, turned)
    # A quarter turn about the image centre is np.rot90 with k=-1: clockwise on screen.
    assert np.array_equal(np.rot90(mask[0], k=-1), mask[1])
    inside = mask[0].copy()
    for shift, axis in [(2, 0), (-2, 0), (2, 1), (-2, 1)]:
        inside &= np.roll(mask[0], shift, axis)
    assert np.abs(frames[1] - np.rot90(frames[0], k=-1))[np.rot90(inside, k=-1)].max() <= 2
    assert np.abs(frames[1] - frames[0])[inside].max() > 40


def test_every_configured_family_occurs_and_no_other():
    default = make(episodes=24)
    assert {default.spec(i).motion.family for i in range(24)} == {0, 1, 2, 3}
    source = make(episodes=24, motions=["scale", "rotate"])
    families = set()
    for i in range(24):
        motion = source.spec(i).motion
        families.add(motion.family)
        moving = np.any(motion.actions != 0, axis=(0, 1))
        assert moving.tolist() == [False, False, True, False] if motion.family == 1 else [False] * 3 + [True]
    assert families == {1, 2}
    episode = source.load(ref_of(0))
    assert np.all(episode.labels["motion"] == source.spec(0).motion.family)


def test_multi_object_episodes_have_independent_objects_and_present_flags():
    source = make(episodes=12, max_objects=3, frames=10, appearances=16)
    counts = set()
    for ref in source.refs():
        episode = source.load(ref)
        present, content = episode.labels["present"], episode.labels["content"]
        n = int(present[0].sum())
        counts.add(n)
        assert np.all(present == [1] * n + [0] * (3 - n))
        assert np.all(content[:, 1 + n:] == -1) and np.all(content[:, 1: 1 + n] >= 0)
        assert np.all(content == content[0]) and 0 <= content[0, 0] < source.params.backgrounds
        assert len(set(content[0, 1: 1 + n].tolist())) == n
        actions = episode.actions.reshape(10, 3, 4)
        assert not np.any(actions[:, n:]) and not np.any(episode.labels["pose"][:, n:])
        for j in range(n):
            for k in range(j + 1, n):
                assert not np.allclose(actions[:, j], actions[:, k])
    assert counts == {1, 2, 3}


def test_stride_max_frames_and_resize_are_applied():
    plain = make(frames=12)
    reduced = make(frames=12, frame_stride=3, max_frames=3, resize=[16, 24])
    ref = ref_of(1)
    raw, episode = plain.load(ref), reduced.load(ref)
    assert plain.count(ref) == 12 and reduced.count(ref) == 3 == len(episode.frames)
    assert episode.frames.shape == (3, 16, 24, 3)
    assert np.array_equal(episode.frames, apply_resize(raw.frames[[0, 3, 6]], reduced.params))
    pose = raw.labels["pose"]
    assert np.array_equal(episode.labels["pose"], pose[[0, 3, 6]])
    assert np.array_equal(episode.actions.reshape(3, 1, 4), pose[[3, 6, 9]] - pose[[0, 3, 6]])
    summed = raw.actions[:9].reshape(3, 3, 4).sum(axis=1)
    assert np.allclose(episode.actions, summed, atol=1e-6)


def test_schema_matches_loaded_arrays():
    source = make(max_objects=2)
    schema, episode = source.schema(), source.load(ref_of(3))
    assert schema.action_dim == 8 and episode.actions.shape == (8, 8) and episode.actions.dtype == np.float32
    assert sorted(schema.labels) == sorted(episode.labels) == ["content", "motion", "pose", "present"]
    for name, spec in schema.labels.items():
        values = episode.labels[name]
        assert values.shape == (8, *spec.shape) and values.dtype == np.dtype(spec.dtype), name
    assert episode.frames.shape == (8, 32, 32, 3) and episode.frames.dtype == np.uint8


def test_refs_count_and_load_errors():
    source = make(episodes=3)
    refs = source.refs()
    assert [r.key for r in refs] == ["episode_000000", "episode_000001", "episode_000002"]
    assert refs[2].origin == "synthetic episode 2 (seed 0)"
    assert [source.count(r) for r in refs] == [8, 8, 8]
    with pytest.raises(EpisodeError, match=re.escape("synthetic episode 0 (seed 0)")):
        source.load(refs[0], 0, 9)
    with pytest.raises(EpisodeError):
        source.load(refs[0], 4, 4)
    with pytest.raises(EpisodeError, match="episode_000003"):
        source.load(EpisodeRef("episode_000003", "elsewhere"))


def test_render_rejects_pairs_that_do_not_fit():
    source = make(max_objects=2)
    motion = source.spec(0).motion
    n = motion.poses.shape[1]
    with pytest.raises(ValueError, match="objects"):
        source.render(Appearance(0, tuple(range(n + 1))), motion)
    with pytest.raises(ValueError, match="background id 99"):
        source.render(Appearance(99, tuple(range(n))), motion)
    with pytest.raises(ValueError, match="kept frames"):
        source.render(Appearance(0, tuple(range(n))), motion, 0, 9)


def test_fingerprint_tracks_what_shapes_the_data(monkeypatch, tmp_path):
    base = make().fingerprint()
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert make(strict=True).fingerprint() == base
    assert make(size=24).fingerprint() != base
    assert make(motions=["scale"]).fingerprint() != base
    edited = tmp_path / "synthetic.py"
    edited.write_text(open(synthetic.__file__).read() + "\n# edited\n")
    monkeypatch.setattr(synthetic, "__file__", str(edited))
    assert make().fingerprint() != base


def test_background_contrast_flattens_the_background_and_one_keeps_it():
    ref = make().refs()[0]
    full, flat, half = (make(background_contrast=c) for c in (1.0, 0.0, 0.5))
    assert_same_episode(make().load(ref), full.load(ref))            # 1 is the pattern as before
    spec = full.spec(0)
    appearance, motion = spec.appearance, spec.motion
    backgrounds = [s.render(*empty_like(appearance, motion)).frames[0].reshape(-1, 3).astype(float)
                   for s in (full, half, flat)]
    spread = [b.std(axis=0).mean() for b in backgrounds]
    assert spread[2] < 0.5 < spread[1] < spread[0]                 # 0: one flat colour (up to rounding)
    assert spread[1] == pytest.approx(spread[0] / 2, rel=0.1)       # the pattern's contrast scales linearly
    assert make(background_contrast=0.0).fingerprint() != make().fingerprint()
    np.testing.assert_array_equal(flat.load(ref).actions, full.load(ref).actions)  # motion is untouched
