"""ReconSource on fixtures written in the RECON release's HDF5 layout (and one other layout)."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")
from PIL import Image  # noqa: E402

from pipeline.config import ParamsError, build  # noqa: E402
from pipeline.data.sources import build_source, params_class  # noqa: E402
from pipeline.data.sources import recon  # noqa: E402
from pipeline.data.sources.base import EpisodeError, LabelSpec, SourceError  # noqa: E402
from pipeline.data.sources.recon import ReconParams, ReconSource  # noqa: E402

PI = math.pi
ARC = "jackal_2019-08-02-16-23-30_0_r00.hdf5"   # RECON's file naming
TURNS = "jackal_2019-08-02-16-23-30_0_r01.hdf5"
R, OMEGA, ARC_FRAMES = 2.0, 0.3, 8              # the arc: radius (m), yaw change per step (rad), frames
# The turns episode, by hand: poses (x, y, yaw) and the robot-frame motion to the next pose.
TURN_POSES = [(0, 0, PI / 2), (0, 1, PI / 2), (-2, 1, PI), (-2, 1, -PI + 0.1), (-5, 1, PI / 2), (-5, -1, -PI / 2)]
TURN_ACTIONS = [
    (1, 0, 0),                                   # 1 m along +y while facing +y: straight ahead
    (0, 2, PI / 2),                              # 2 m along -x while facing +y: to the left; turning left
    (0, 0, 0.1),                                 # yaw pi -> -pi + 0.1: +0.1 across the +-pi seam
    (3 * math.cos(0.1), -3 * math.sin(0.1), -PI / 2 - 0.1),  # 3 m along -x facing -pi + 0.1
    (-2, 0, PI),                                 # 2 m along -y facing +y: backwards; a -pi turn reads +pi
    (0, 0, 0),                                   # the last frame has no next one
]


def source(path, **changes) -> ReconSource:
    params = build(params_class("recon_hdf5"), {"kind": "recon_hdf5", "path": str(path), **changes}, "datasets.recon")
    return build_source(params)


def colors(n: int, salt: int) -> np.ndarray:
    """(n, 3) uint8: a distinct solid colour per frame."""
    t = np.arange(n)
    return np.stack([10 + 25 * t, 220 - 20 * t, np.full(n, 40 + 90 * salt)], axis=1).astype(np.uint8)


def jpeg(color: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.tile(color, (32, 32, 1))).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_recon(path, poses: np.ndarray, salt: int = 0, images: list[bytes] | None = None, drop: str = ""):
    """One trajectory as RECON stores it: JPEG bytes in a fixed-length byte-string dataset,
    position (T, 3) and yaw (T,) float64; `drop` leaves one dataset out."""
    images = images or [jpeg(c) for c in colors(len(poses), salt)]
    n = max(len(b) for b in images)
    data = {
        "images/rgb_left": np.array(images, dtype=f"S{n}"),                        # (T,) |S<n>
        "images/rgb_right": np.array(images, dtype=f"S{n}"),
        "jackal/position": np.column_stack([poses[:, :2], np.zeros(len(poses))]),  # (T, 3)
        "jackal/yaw": poses[:, 2].copy(),                                          # (T,)
        "commands/linear_velocity": np.zeros((len(poses), 1)),
    }
    with h5py.File(path, "w") as f:
        for key, value in data.items():
            if key != drop:
                f[key] = value
    return path


def arc_poses(n: int = ARC_FRAMES, yaw0: float = 1.9) -> np.ndarray:
    """(n, 3) poses of a robot driving a left arc at constant speed, yaw stored wrapped to (-pi, pi]
    (from 1.9 rad on, it crosses the seam between frames 4 and 5)."""
    yaw = yaw0 + OMEGA * np.arange(n)
    x, y = 1.0 + R * np.sin(yaw), -1.0 - R * np.cos(yaw)       # centre (1, -1): heading = yaw
    return np.column_stack([x, y, np.angle(np.exp(1j * yaw))])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("recon_release")
    write_recon(root / ARC, arc_poses(), salt=0)
    write_recon(root / TURNS, np.array(TURN_POSES, dtype=np.float64), salt=1)
    (root / "notes.txt").write_text("not a trajectory")
    (root / ".trash").mkdir()
    write_recon(root / ".trash" / "old.hdf5", arc_poses(3))
    (root / "more").mkdir()
    write_recon(root / "more" / "short.h5", arc_poses(4, yaw0=0.0), salt=2)
    return root


def test_params_and_registry(dataset):
    assert params_class("recon_hdf5") is ReconParams
    src = source(dataset)
    assert isinstance(src, ReconSource)
    p = src.params
    assert (p.image_key, p.position_key, p.yaw_key) == ("images/rgb_left", "jackal/position", "jackal/yaw")
    for changes, key in [({"kind": "recon"}, "kind"), ({"yaw_key": ""}, "yaw_key"),
                         ({"extensions": ["hdf5"]}, "extensions"), ({"frame_stride": 0}, "frame_stride")]:
        with pytest.raises(ParamsError, match=f"datasets.recon.{key}"):
            build(ReconParams, {"kind": "recon_hdf5", "path": "x", **changes}, "datasets.recon")


def test_refs_schema_count_and_size(dataset):
    src = source(dataset)
    refs = src.refs()
    assert [r.key for r in refs] == [ARC, TURNS, "more/short.h5"]  # hidden folders and other files skipped
    assert refs[1].origin == str(dataset / TURNS)
    assert src.schema().action_dim == 3
    assert src.schema().labels == {"position": LabelSpec((2,), "float64"), "yaw": LabelSpec((), "float64")}
    assert [src.count(r) for r in refs] == [8, 6, 4]
    assert src.frame_size(refs[0]) == (32, 32)
    assert source(dataset, resize=[16, 24]).frame_size(refs[0]) == (16, 24)
    one = source(dataset / TURNS)  # one file
    assert [(r.key, r.origin) for r in one.refs()] == [(TURNS, str(dataset / TURNS))]
    assert one.count(one.refs()[0]) == 6


def test_frames_decode_to_the_pixels_written(dataset):
    src = source(dataset)
    for ref, n, salt in zip(src.refs(), (8, 6, 4), (0, 1, 2)):
        ep = src.load(ref)
        assert ep.frames.shape == (n, 32, 32, 3) and ep.frames.dtype == np.uint8
        want = np.broadcast_to(colors(n, salt)[:, None, None], ep.frames.shape).astype(int)
        assert np.abs(ep.frames.astype(int) - want).max() <= 4  # JPEG at quality 95, solid colours


def test_arc_actions_are_the_robot_frame_motion(dataset):
    src = source(dataset)
    ep = src.load(src.refs()[0])
    step = [R * math.sin(OMEGA), R * (1 - math.cos(OMEGA)), OMEGA]  # every step of the arc, seen from the robot
    assert ep.actions.dtype == np.float32 and ep.actions.shape == (8, 3)
    np.testing.assert_allclose(ep.actions[:-1], np.tile(step, (7, 1)), atol=1e-5)
    np.testing.assert_array_equal(ep.actions[-1], [0, 0, 0])
    poses = arc_poses()
    np.testing.assert_array_equal(ep.labels["position"], poses[:, :2])
    np.testing.assert_array_equal(ep.labels["yaw"], poses[:, 2])
    assert ep.labels["yaw"][4] > 3.0 and ep.labels["yaw"][5] < -2.8  # the stored yaw jumps the seam
    two = source(dataset, frame_stride=2).load(src.refs()[0])  # raw 0, 2, 4, 6
    over_two = [R * math.sin(2 * OMEGA), R * (1 - math.cos(2 * OMEGA)), 2 * OMEGA]
    np.testing.assert_allclose(two.actions, [over_two] * 3 + [[0, 0, 0]], atol=1e-5)
    np.testing.assert_array_equal(two.labels["position"], poses[::2, :2])


def test_hand_computed_actions_with_turns_and_the_yaw_seam(dataset):
    src = source(dataset)
    ep = src.load(src.refs()[1])
    np.testing.assert_allclose(ep.actions, TURN_ACTIONS, atol=1e-6)
    assert ep.actions[4, 2] == pytest.approx(PI)  # -pi wraps to +pi: the range is (-pi, pi]
    two = source(dataset, frame_stride=2).load(src.refs()[1])  # raw 0, 2, 4
    np.testing.assert_allclose(two.actions, [(1, 2, PI / 2), (3, 0, -PI / 2), (0, 0, 0)], atol=1e-6)
    targets = src.probe_targets(ep.actions[None], {k: v[None] for k, v in ep.labels.items()})
    assert targets.shape == (1, 5, 3) and targets.dtype == np.float64
    np.testing.assert_allclose(targets[0], TURN_ACTIONS[:5], atol=1e-6)


def test_max_frames_resize_and_slices(dataset):
    src = source(dataset, max_frames=3)
    ref = src.refs()[1]
    short = src.load(ref)
    assert src.count(ref) == 3
    np.testing.assert_allclose(short.actions, [TURN_ACTIONS[0], TURN_ACTIONS[1], (0, 0, 0)], atol=1e-6)
    full = source(dataset, resize=[16, 24]).load(ref)
    assert full.frames.shape == (6, 16, 24, 3)
    sliced = source(dataset, resize=[16, 24])
    for start, stop in [(0, 6), (2, 4), (4, 6), (0, 1), (3, 3)]:
        part = sliced.load(ref, start, stop)
        np.testing.assert_array_equal(part.frames, full.frames[start:stop])
        np.testing.assert_array_equal(part.actions, full.actions[start:stop])  # the action at stop - 1 is kept
        np.testing.assert_array_equal(part.labels["yaw"], full.labels["yaw"][start:stop])
    with pytest.raises(EpisodeError, match=r"\[4, 7\) but the episode has 6") as err:
        sliced.load(ref, 4, 7)
    assert err.value.origin == str(dataset / TURNS)


def test_another_layout_with_raw_arrays(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)  # (T, H, W, 3)
    poses = np.array(TURN_POSES, dtype=np.float64)
    with h5py.File(tmp_path / "run.h5", "w") as f:
        f["camera/rgb"] = pixels
        f["odom/xy"] = poses[:, :2].astype(np.float32)   # (T, 2)
        f["odom/theta"] = poses[:, 2:3]                 # (T, 1)
    src = source(tmp_path, image_key="camera/rgb", position_key="odom/xy", yaw_key="odom/theta")
    src.check_params("datasets.recon")
    ep = src.load(src.refs()[0])
    np.testing.assert_array_equal(ep.frames, pixels)  # stored raw: lossless
    np.testing.assert_allclose(ep.actions, TURN_ACTIONS, atol=1e-6)
    np.testing.assert_array_equal(src.load(src.refs()[0], 1, 4).frames, pixels[1:4])
    assert ep.labels["yaw"].shape == (6,) and ep.labels["position"].dtype == np.float64


def test_dataset_errors(tmp_path, monkeypatch):
    with pytest.raises(SourceError, match=f"{tmp_path / 'absent'}: RECON folder .*does not exist"):
        source(tmp_path / "absent").refs()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("no trajectories")
    with pytest.raises(SourceError, match=r"no HDF5 files \(.h5, .hdf5\) found"):
        source(tmp_path / "empty").refs()
    monkeypatch.setattr(recon, "h5py", None)
    with pytest.raises(SourceError, match=r"pip install -e '\.\[recon\]'"):
        source(tmp_path)


def test_episode_errors_name_the_file_and_the_key(tmp_path):
    poses = arc_poses(6)
    good = write_recon(tmp_path / "a_good.hdf5", poses)
    no_yaw = write_recon(tmp_path / "b_no_yaw.hdf5", poses, drop="jackal/yaw")
    with h5py.File(short := tmp_path / "c_short.hdf5", "w") as f:
        f["images/rgb_left"] = np.array([jpeg(c) for c in colors(6, 0)])
        f["jackal/position"], f["jackal/yaw"] = poses, poses[:5, 2]
    src = source(tmp_path)
    src.check_params("datasets.recon")  # the first file has every configured dataset
    refs = {r.key: r for r in src.refs()}
    with pytest.raises(EpisodeError, match="no dataset 'jackal/yaw' in this file") as err:
        src.load(refs["b_no_yaw.hdf5"])
    assert err.value.origin == str(no_yaw) and str(no_yaw) in str(err.value)
    reason = "frame-count mismatch: images/rgb_left has 6 images but jackal/position has 6 rows and jackal/yaw 5"
    with pytest.raises(EpisodeError, match=reason) as err:
        src.count(refs["c_short.hdf5"])
    assert err.value.origin == str(short)
    with pytest.raises(ParamsError, match=f"datasets.recon.yaw_key = 'jackal/heading'.*a dataset of {good}"):
        source(tmp_path, yaw_key="jackal/heading").check_params("datasets.recon")
    with pytest.raises(EpisodeError, match="no dataset 'camera/rgb'"):
        source(tmp_path, image_key="camera/rgb").load(refs["a_good.hdf5"])
    assert src.count(refs["a_good.hdf5"]) == 6


def test_corrupt_files_are_episode_errors(tmp_path):
    poses = arc_poses(6)
    whole = write_recon(tmp_path / "b_whole.hdf5", poses).read_bytes()
    (broken := tmp_path / "a_broken.hdf5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(200))
    (cut := tmp_path / "c_cut.hdf5").write_bytes(whole[: len(whole) // 2])
    images = [jpeg(c) for c in colors(6, 0)]
    images[3] = images[3][:40]  # a JPEG cut short
    bad_jpeg = write_recon(tmp_path / "d_bad_jpeg.hdf5", poses, images=images)
    src = source(tmp_path)
    src.check_params("datasets.recon")  # skips the unreadable first file, checks b_whole
    refs = {r.key: r for r in src.refs()}
    for path in (broken, cut):
        with pytest.raises(EpisodeError, match="not a readable HDF5 file") as err:
            src.count(refs[path.name])
        assert err.value.origin == str(path)
    with pytest.raises(EpisodeError, match=r"images/rgb_left\[3\] is not a decodable image") as err:
        src.load(refs[bad_jpeg.name])
    assert err.value.origin == str(bad_jpeg)
    assert src.load(refs[bad_jpeg.name], 0, 3).frames.shape == (3, 32, 32, 3)
    assert src.count(refs["b_whole.hdf5"]) == 6


def test_fingerprint(tmp_path):
    write_recon(tmp_path / "a.hdf5", arc_poses(6))
    write_recon(tmp_path / "b.hdf5", arc_poses(5))
    first = source(tmp_path).fingerprint()
    assert first == source(tmp_path).fingerprint()
    assert source(tmp_path, frame_stride=2).fingerprint() != first
    assert source(tmp_path, yaw_key="jackal/heading").fingerprint() != first
    write_recon(tmp_path / "b.hdf5", arc_poses(7))  # the trajectory rewritten, longer
    second = source(tmp_path).fingerprint()
    assert second != first
    write_recon(tmp_path / "c.hdf5", arc_poses(6))  # one more trajectory
    assert source(tmp_path).fingerprint() not in (first, second)
