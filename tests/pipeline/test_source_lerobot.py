"""LeRobotSource on v2.x (one file per episode) and v3.0 (concatenated files) fixtures."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.config import ParamsError, build
from pipeline.data.sources import build_source, params_class
from pipeline.data.sources.base import EpisodeError, LabelSpec, SourceError
from pipeline.data.sources.lerobot import LeRobotParams, LeRobotSource
from stages import prepare
from tests.conftest import make_params
from tests.pipeline.media import (
    COLOR_TOLERANCE,
    expected_colors,
    make_lerobot_v2,
    make_lerobot_v3,
    mean_colors,
)

LENGTHS = (6, 9, 5)
TOP, WRIST = "observation.images.top", "observation.images.wrist"


def source(root, **changes) -> LeRobotSource:
    return LeRobotSource(build(LeRobotParams, {"kind": "lerobot", "path": str(root), **changes}, "datasets.robot"))


@pytest.fixture(scope="module", params=["v2.0", "v2.1", "v3.0"])
def dataset(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param.replace(".", "_"))
    if request.param == "v3.0":
        return make_lerobot_v3(root, LENGTHS, episodes_per_file=2)
    return make_lerobot_v2(root, LENGTHS, version=request.param)


def assert_episode(ep, fixture, e, raw, salt=0):
    ids = fixture.frame_ids[e][raw]
    np.testing.assert_allclose(mean_colors(ep.frames), expected_colors(ids, salt), atol=COLOR_TOLERANCE)
    np.testing.assert_array_equal(ep.actions, fixture.actions[e][raw])
    np.testing.assert_array_equal(ep.actions[:, 0], ids)  # row i goes with frame i
    np.testing.assert_array_equal(ep.labels["observation.state"], fixture.states[e][raw])


def test_params_and_registry(dataset):
    params = build(LeRobotParams, {"kind": "lerobot", "path": str(dataset.root)}, "d")
    assert params_class("lerobot") is LeRobotParams
    assert isinstance(build_source(params), LeRobotSource)
    assert params.camera is None and params.action_key == "action" and params.labels is None  # the usual ones
    with pytest.raises(ParamsError, match="d.labels"):
        build(LeRobotParams, {"kind": "lerobot", "path": "x", "labels": ["action"]}, "d")


def test_refs_and_schema(dataset):
    src = source(dataset.root)
    refs = src.refs()
    assert [r.key for r in refs] == ["episode_000000", "episode_000001", "episode_000002"]
    assert src.camera == TOP  # the first video feature in info.json
    assert all(TOP in r.origin for r in refs)
    schema = src.schema()
    assert schema.action_dim == 2
    assert schema.labels == {"observation.state": LabelSpec((3,), "float32")}
    bare = source(dataset.root, action_key=None, labels=["timestamp"]).schema()
    assert bare.action_dim is None and bare.labels == {"timestamp": LabelSpec((1,), "float32")}


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_episodes_align_frames_actions_and_labels(dataset, decoder):
    src = source(dataset.root, decoder=decoder)
    for e, ref in enumerate(src.refs()):
        ep = src.load(ref)
        assert ep.frames.shape == (LENGTHS[e], 32, 32, 3) and ep.frames.dtype == np.uint8
        assert ep.actions.dtype == np.float32
        assert_episode(ep, dataset, e, np.arange(LENGTHS[e]))
        assert src.count(ref) == LENGTHS[e]


def test_camera_choice(dataset):
    src = source(dataset.root, camera=WRIST)
    ref = src.refs()[1]
    assert WRIST in ref.origin
    assert_episode(src.load(ref), dataset, 1, np.arange(LENGTHS[1]), salt=1)
    with pytest.raises(SourceError, match="'observation.images.side' is not a video feature"):
        source(dataset.root, camera="observation.images.side").refs()
    with pytest.raises(SourceError, match="no feature 'observation.effort'"):
        source(dataset.root, labels=["observation.effort"]).schema()


def test_stride_max_frames_resize_and_slices(dataset):
    src = source(dataset.root, frame_stride=2, max_frames=4, resize=[16, 24])
    ref = src.refs()[1]  # 9 rows: raw 0, 2, 4, 6 kept
    full = src.load(ref)
    assert src.count(ref) == 4
    assert full.frames.shape == (4, 16, 24, 3)
    np.testing.assert_array_equal(full.actions, dataset.actions[1][[0, 2, 4, 6]])
    np.testing.assert_array_equal(full.labels["observation.state"], dataset.states[1][[0, 2, 4, 6]])
    for start, stop in [(0, 4), (1, 3), (3, 4), (0, 1), (2, 2)]:
        part = src.load(ref, start, stop)
        np.testing.assert_array_equal(part.frames, full.frames[start:stop])
        np.testing.assert_array_equal(part.actions, full.actions[start:stop])
        np.testing.assert_array_equal(part.labels["observation.state"], full.labels["observation.state"][start:stop])
    with pytest.raises(EpisodeError, match=r"\[2, 5\) but the episode has 4"):
        src.load(ref, 2, 5)


@pytest.mark.parametrize("version", ["v2.1", "v3.0"])
@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_video_shorter_than_rows_is_a_frame_count_mismatch(tmp_path, version, decoder):
    make = make_lerobot_v3 if version == "v3.0" else make_lerobot_v2
    fixture = make(tmp_path, LENGTHS, video_lengths=(6, 7, 5), cameras=(TOP,))
    src = source(tmp_path, decoder=decoder)
    ok, short = src.refs()[0], src.refs()[1]
    assert src.count(ok) == 6
    for call in (src.count, src.load):
        reason = "frame-count mismatch: .*has 9 rows for episode 1 but 7 frames decode"
        with pytest.raises(EpisodeError, match=reason) as err:
            call(short)
        assert err.value.origin == short.origin and str(fixture.root / "videos") in err.value.origin
        assert "parquet" in str(err.value)
    assert_episode(src.load(short, 0, 7), fixture, 1, np.arange(7))
    with pytest.raises(EpisodeError, match="frame-count mismatch: .*the video ends before frame 7"):
        src.load(short, 5, 9)


def test_dataset_errors_name_the_file(tmp_path):
    with pytest.raises(SourceError, match="LeRobot dataset folder does not exist"):
        source(tmp_path / "absent").refs()
    (tmp_path / "bare").mkdir()
    with pytest.raises(SourceError, match=f"{tmp_path / 'bare' / 'meta' / 'info.json'}: missing"):
        source(tmp_path / "bare").refs()
    make_lerobot_v2(tmp_path / "old", (4,), cameras=(TOP,))
    info_path = tmp_path / "old" / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "codebase_version": "v1.6"}))
    with pytest.raises(SourceError, match=f"{info_path}: unsupported codebase_version 'v1.6'"):
        source(tmp_path / "old").refs()
    make_lerobot_v3(tmp_path / "v3", (4, 3), cameras=(TOP,))
    (tmp_path / "v3" / "meta" / "episodes" / "chunk-000" / "file-000.parquet").unlink()
    with pytest.raises(SourceError, match="no chunk-\\*/file-\\*.parquet"):
        source(tmp_path / "v3").refs()


@pytest.mark.parametrize("version", ["v2.1", "v3.0"])
def test_missing_episode_files_are_episode_errors(tmp_path, version):
    if version == "v3.0":
        fixture = make_lerobot_v3(tmp_path, (4, 5, 3), cameras=(TOP,), episodes_per_file=1)
    else:
        fixture = make_lerobot_v2(tmp_path, (4, 5, 3), cameras=(TOP,))
    src = source(fixture.root)
    refs = src.refs()
    parquet = sorted((fixture.root / "data").rglob("*.parquet"))[1]
    parquet.unlink()
    with pytest.raises(EpisodeError, match="parquet file does not exist") as err:
        src.load(refs[1])
    assert err.value.origin == str(parquet)
    video = sorted((fixture.root / "videos").rglob("*.mp4"))[2]
    video.write_bytes(b"")
    with pytest.raises(EpisodeError, match=r"empty \(0 bytes\)") as err:
        src.count(refs[2])
    assert err.value.origin == str(video)
    assert src.count(refs[0]) == 4


def test_fingerprint(tmp_path):
    make_lerobot_v3(tmp_path, (4, 3))
    first = source(tmp_path).fingerprint()
    assert first == source(tmp_path).fingerprint()
    assert source(tmp_path, camera=WRIST).fingerprint() != first
    parquet = tmp_path / "data" / "chunk-000" / "file-000.parquet"
    parquet.write_bytes(parquet.read_bytes() + b"\0")
    assert source(tmp_path).fingerprint() != first


# -- datasets made elsewhere: episode bounds, key names and path templates that are not ours --------


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_a_to_timestamp_at_the_last_frame_keeps_every_frame_with_its_row(tmp_path, decoder):
    fixture = make_lerobot_v3(tmp_path, LENGTHS, inclusive_to=True, episodes_per_file=3, cameras=(TOP,))
    meta = pq.read_table(tmp_path / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    bounds = [t for r in meta for t in (r[f"videos/{TOP}/from_timestamp"], r[f"videos/{TOP}/to_timestamp"])]
    assert bounds == pytest.approx([0.0, 0.5, 0.6, 1.4, 1.5, 1.9])  # each episode's first and last frame time
    src = source(tmp_path, decoder=decoder)
    refs = src.refs()
    assert [r.origin.split(" (")[1] for r in refs] == ["episode 0, 0.000s to 0.600s)", "episode 1, 0.600s to 1.500s)",
                                                       "episode 2, 1.500s to 2.000s)"]
    for e, ref in enumerate(refs):
        assert src.count(ref) == LENGTHS[e]
        assert_episode(src.load(ref), fixture, e, np.arange(LENGTHS[e]))  # frame i shows row i's index
        assert_episode(src.load(ref, 2, LENGTHS[e]), fixture, e, np.arange(2, LENGTHS[e]))


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_an_episode_lacking_a_frame_mid_file_is_a_mismatch_not_a_shift(tmp_path, decoder):
    # Exclusive bounds, episode 1 one frame short: its window spans 8 intervals for 9 rows, as an inclusive
    # one would, but episode 2 starts where it ends, so it is not extended into episode 2's first frame.
    fixture = make_lerobot_v3(tmp_path, LENGTHS, video_lengths=(6, 8, 5), episodes_per_file=3, cameras=(TOP,))
    src = source(tmp_path, decoder=decoder)
    first, short, last = src.refs()
    with pytest.raises(EpisodeError, match="frame-count mismatch: .*has 9 rows for episode 1 but 8 frames decode"):
        src.count(short)
    assert_episode(src.load(short, 0, 8), fixture, 1, np.arange(8))
    assert src.count(first) == 6 and src.count(last) == 5
    assert_episode(src.load(last), fixture, 2, np.arange(5))


def test_wrong_keys_are_params_errors_listing_what_the_dataset_has(tmp_path):
    make_lerobot_v3(tmp_path, (4, 3), action="actions", cameras=(TOP,))
    columns = "['actions', 'observation.state', 'timestamp', 'frame_index', 'episode_index', 'index', 'task_index']"
    data = tmp_path / "data" / "chunk-000" / "file-000.parquet"
    with pytest.raises(ParamsError) as err:
        source(tmp_path).check_params("datasets.robot")
    assert str(err.value) == ("params: datasets.robot.action_key = 'action' is not allowed: expected null or one of "
                              f"the dataset's columns: {columns} (those of {data})")
    with pytest.raises(ParamsError) as err:
        source(tmp_path, action_key="actions", labels=["observation.effort"]).check_params("datasets.robot")
    assert str(err.value) == ("params: datasets.robot.labels[0] = 'observation.effort' is not allowed: expected one of "
                              f"the dataset's columns: {columns} (those of {data})")
    with pytest.raises(ParamsError) as err:
        source(tmp_path, action_key="actions", camera=WRIST).check_params("datasets.robot")
    assert str(err.value) == (f"params: datasets.robot.camera = '{WRIST}' is not allowed: expected null or one of "
                              f"the dataset's cameras (its video features): ['{TOP}']")
    source(tmp_path, action_key="actions").check_params("datasets.robot")


def test_a_template_that_finds_no_file_shows_what_is_there_and_can_be_overridden(tmp_path):
    fixture = make_lerobot_v3(tmp_path, (4, 3), cameras=(TOP,))
    (tmp_path / "videos").rename(tmp_path / "video")  # published as video/..., templated as videos/...
    with pytest.raises(SourceError) as err:
        source(tmp_path).check_params("datasets.robot")
    assert str(err.value) == (
        f"{tmp_path / 'meta' / 'info.json'}: no file of the dataset matches the video_path template "
        "'videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4': for episode 0 it gives "
        f"videos/{TOP}/chunk-000/file-000.mp4, which does not exist; the dataset folder holds data/, meta/, video/; "
        f"a .mp4 file there: video/{TOP}/chunk-000/file-000.mp4. Set datasets.robot.video_path to the template the "
        "files follow (fields: {video_key}, {chunk_index}, {file_index})")
    fixed = source(tmp_path, video_path="video/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4")
    fixed.check_params("datasets.robot")
    for e, ref in enumerate(fixed.refs()):
        assert ref.origin.startswith(str(tmp_path / "video" / TOP))
        assert_episode(fixed.load(ref), fixture, e, np.arange((4, 3)[e]))
    with pytest.raises(SourceError, match=r"^the data_path param: no file of the dataset matches the data_path "
                                          r"template 'data/\{chunk_index\}.parquet': .* gives data/0.parquet, "
                                          r"which does not exist; data/ holds chunk-000/; a .parquet file there: "
                                          r"data/chunk-000/file-000.parquet\. Set datasets.robot.data_path"):
        source(tmp_path, data_path="data/{chunk_index}.parquet").check_params("datasets.robot")
    with pytest.raises(SourceError, match=r"the video_path param: cannot fill video_path 'v/\{camera\}.mp4'"):
        source(tmp_path, video_path="v/{camera}.mp4").refs()


def test_a_column_missing_from_one_file_is_that_episodes_reason(tmp_path):
    make_lerobot_v2(tmp_path, (4, 3), cameras=(TOP,))
    parquet = tmp_path / "data" / "chunk-000" / "episode_000001.parquet"
    pq.write_table(pq.read_table(parquet).drop(["observation.state"]), parquet)
    src = source(tmp_path)
    src.check_params("datasets.robot")  # the first episode's file has every column
    with pytest.raises(EpisodeError) as err:
        src.count(src.refs()[1])
    assert err.value.origin == str(parquet)
    assert err.value.reason == ("no column(s) ['observation.state'] in this parquet file (its columns: ['action', "
                                "'timestamp', 'frame_index', 'episode_index', 'index', 'task_index'])")


def test_a_dataset_whose_state_is_not_observation_state_prepares_without_it_with_a_note(tmp_path, capsys):
    fixture = make_lerobot_v3(tmp_path / "robot", (4, 3), cameras=(TOP,), state="state")
    src = source(fixture.root)
    src.check_params("datasets.robot")  # labels left unset: the default label it lacks is no error
    note = (f"datasets.robot.labels is not set and {fixture.root / 'meta' / 'info.json'} has no feature "
            "'observation.state': skipped (set datasets.robot.labels to name the features to store as labels)")
    assert src.notes("datasets.robot") == [note]
    assert src.schema().labels == {}
    ep = src.load(src.refs()[1])
    assert ep.labels == {}
    np.testing.assert_array_equal(ep.actions, fixture.actions[1])
    named = source(fixture.root, labels=["state"])  # the label asked for by its own name is read
    named.check_params("datasets.robot")
    assert named.notes("datasets.robot") == []
    np.testing.assert_array_equal(named.load(named.refs()[1]).labels["state"], fixture.states[1])
    params = make_params(tmp_path, "datasets.robot.kind=lerobot", f"datasets.robot.path={fixture.root}")
    manifest = prepare.run(params, "robot", show_progress=False)
    assert [e["frames"] for e in manifest["episodes"]] == [4, 3] and manifest["schema"]["labels"] == {}
    assert capsys.readouterr().out.splitlines().count(f"prepare robot: note: {note}") == 1


def test_a_dataset_with_observation_state_stores_it_without_a_note(dataset):
    src = source(dataset.root)
    assert src.labels == ("observation.state",) and src.notes("datasets.robot") == []
    assert source(dataset.root, labels=[]).schema().labels == {}  # [] asks for none


def test_a_label_asked_for_that_the_dataset_lacks_is_an_error_naming_the_column_and_the_file(tmp_path):
    fixture = make_lerobot_v3(tmp_path / "robot", (4, 3), cameras=(TOP,), state="state")
    data = fixture.root / "data" / "chunk-000" / "file-000.parquet"
    params = make_params(tmp_path, "datasets.robot.kind=lerobot", f"datasets.robot.path={fixture.root}",
                         "datasets.robot.labels=[observation.state]")
    with pytest.raises(ParamsError) as err:
        prepare.run(params, "robot", show_progress=False)
    message = str(err.value)
    assert message.startswith("params: datasets.robot.labels[0] = 'observation.state' is not allowed: expected one "
                              "of the dataset's columns: ['action', 'state', ")
    assert message.endswith(f"(those of {data})")
    with pytest.raises(SourceError, match=r"info.json: no feature 'observation.state'"):
        source(fixture.root, labels=["observation.state"]).schema()
