"""PushTSource: the diffusion-policy replay buffer (fixture and, when present, the real store)."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.config import ParamsError, build
from pipeline.data.sources import build_source, params_class
from pipeline.data.sources.base import EpisodeError, LabelSpec, SourceError
from pipeline.data.sources.pusht import PushTParams, PushTSource
from tests.pipeline.media import make_pusht_zarr

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pusht_cchi_v7_replay.zarr"
LENGTHS = (5, 7, 4)


def source(path, **changes) -> PushTSource:
    return PushTSource(build(PushTParams, {"kind": "pusht_zarr", "path": str(path), **changes}, "datasets.pusht"))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("pusht") / "replay.zarr"
    return path, make_pusht_zarr(path, LENGTHS, size=16)


def as_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def test_params_and_registry(store):
    path, _ = store
    assert params_class("pusht_zarr") is PushTParams
    src = build_source(build(PushTParams, {"kind": "pusht_zarr", "path": str(path)}, "d"))
    assert isinstance(src, PushTSource)
    assert src.params.label_keys == ("data/state", "data/keypoint") and src.params.action_key == "data/action"
    with pytest.raises(ParamsError, match="d.label_keys"):
        build(PushTParams, {"kind": "pusht_zarr", "path": "x", "label_keys": ["data/state", "other/state"]}, "d")


def test_refs_schema_and_count(store):
    path, _ = store
    src = source(path)
    refs = src.refs()
    assert [r.key for r in refs] == ["episode_000000", "episode_000001", "episode_000002"]
    assert refs[1].origin == f"{path}#episode_000001"
    schema = src.schema()
    assert schema.action_dim == 2
    assert schema.labels == {"state": LabelSpec((5,), "float32"), "keypoint": LabelSpec((9, 2), "float32")}
    assert [src.count(r) for r in refs] == list(LENGTHS)
    assert source(path, action_key=None, label_keys=[]).schema().action_dim is None


def test_episodes_round_trip(store):
    path, arrays = store
    src = source(path)
    begin = 0
    for ref, length in zip(src.refs(), LENGTHS):
        ep = src.load(ref)
        rows = slice(begin, begin + length)
        assert ep.frames.dtype == np.uint8 and ep.frames.shape == (length, 16, 16, 3)
        np.testing.assert_array_equal(ep.frames, as_uint8(arrays["data/img"][rows]))
        assert ep.actions.dtype == np.float32
        np.testing.assert_array_equal(ep.actions, arrays["data/action"][rows])
        np.testing.assert_array_equal(ep.actions[:, 0], np.arange(begin, begin + length))
        np.testing.assert_array_equal(ep.labels["state"], arrays["data/state"][rows])
        np.testing.assert_array_equal(ep.labels["keypoint"], arrays["data/keypoint"][rows])
        begin += length
    assert tuple(src.load(src.refs()[0]).frames[0, 0, 0]) == (0, 255, 255)  # -2, 255.6, 300 clipped
    clone = pickle.loads(pickle.dumps(src))  # as shipped to a worker: reopens its arrays
    assert clone._layout_cache is None
    np.testing.assert_array_equal(clone.load(clone.refs()[2]).frames, src.load(src.refs()[2]).frames)


def test_stride_max_frames_resize_and_slices(store):
    path, arrays = store
    src = source(path, frame_stride=2, max_frames=3, resize=[8, 12], label_keys=["data/n_contacts"])
    ref = src.refs()[1]  # rows 5..11: kept raw 0, 2, 4 -> rows 5, 7, 9
    full = src.load(ref)
    assert src.count(ref) == 3
    assert full.frames.shape == (3, 8, 12, 3)
    np.testing.assert_array_equal(full.actions[:, 0], [5, 7, 9])
    np.testing.assert_array_equal(full.labels["n_contacts"], arrays["data/n_contacts"][[5, 7, 9]])
    for start, stop in [(0, 3), (1, 3), (0, 1), (2, 3), (2, 2)]:
        part = src.load(ref, start, stop)
        np.testing.assert_array_equal(part.frames, full.frames[start:stop])
        np.testing.assert_array_equal(part.actions, full.actions[start:stop])
    with pytest.raises(EpisodeError, match=r"\[1, 4\) but the episode has 3") as err:
        src.load(ref, 1, 4)
    assert err.value.origin == f"{path}#episode_000001"


def _broken(tmp_path, name, key, value):
    path = tmp_path / name
    make_pusht_zarr(path, LENGTHS, size=8)
    group = zarr.open_group(str(path), mode="a")
    parent, leaf = key.rsplit("/", 1)
    group[parent].create_array(leaf, shape=value.shape, dtype=value.dtype, overwrite=True)[...] = value
    return path


def test_layout_errors_name_the_store_and_key(tmp_path):
    with pytest.raises(SourceError, match=f"{tmp_path / 'absent.zarr'}: replay buffer store does not exist"):
        source(tmp_path / "absent.zarr").refs()
    (tmp_path / "plain").mkdir()
    with pytest.raises(SourceError, match="not a readable Zarr group"):
        source(tmp_path / "plain").refs()
    good = tmp_path / "good.zarr"
    make_pusht_zarr(good, LENGTHS, size=8)
    with pytest.raises(SourceError, match=f"{good}: missing key data/pixels"):
        source(good, image_key="data/pixels").schema()
    cases = [
        ("short.zarr", "data/action", np.zeros((10, 2), np.float32), "data/action has 10 rows but data/img has 16"),
        ("order.zarr", "meta/episode_ends", np.array([7, 5, 16]), "strictly increasing"),
        ("ends.zarr", "meta/episode_ends", np.array([5, 12, 15]), "ends at 15 but the data arrays have 16"),
        ("float.zarr", "meta/episode_ends", np.array([5.0, 12.0, 16.0]), "integer"),
    ]
    for name, key, value, reason in cases:
        path = _broken(tmp_path, name, key, value)
        with pytest.raises(SourceError, match=reason) as err:
            source(path).refs()
        assert str(path) in str(err.value) and key in str(err.value)


def test_damaged_chunk_is_an_episode_error(tmp_path):
    path = tmp_path / "damaged.zarr"
    make_pusht_zarr(path, LENGTHS, size=8)
    (path / "data" / "img" / "0.0.0.0").write_bytes(b"not a blosc frame")
    src = source(path)
    ref = src.refs()[0]
    with pytest.raises(EpisodeError, match="cannot read data/img") as err:
        src.load(ref)
    assert err.value.origin == f"{path}#episode_000000"
    assert src.load(src.refs()[2]).frames.shape == (4, 8, 8, 3)  # rows 12..15 live in other chunks


def test_fingerprint(tmp_path):
    path = tmp_path / "fp.zarr"
    make_pusht_zarr(path, LENGTHS, size=8)
    first = source(path).fingerprint()
    assert first == source(path).fingerprint()
    assert source(path, frame_stride=2).fingerprint() != first
    chunk = path / "data" / "action" / "0.0"
    chunk.write_bytes(chunk.read_bytes() + b"\0")
    assert source(path).fingerprint() != first


@pytest.mark.skipif(not REAL.exists(), reason=f"real Push-T store not found at {REAL}")
def test_real_pusht_store_read_in_place():
    before = {f: f.stat().st_mtime_ns for f in REAL.rglob("*") if f.is_file()}
    src = source(REAL)
    fingerprint = src.fingerprint()
    refs = src.refs()
    ends = zarr.open_group(str(REAL), mode="r")["meta/episode_ends"][...]
    assert len(refs) == 206 == len(ends)
    schema = src.schema()
    assert schema.action_dim == 2
    assert schema.labels["state"] == LabelSpec((5,), "float32")
    assert schema.labels["keypoint"] == LabelSpec((9, 2), "float32")
    assert src.count(refs[0]) == int(ends[0])
    ep = src.load(refs[0])
    assert ep.frames.shape == (int(ends[0]), 96, 96, 3) and ep.frames.dtype == np.uint8
    assert ep.actions.shape == (int(ends[0]), 2) and ep.actions.dtype == np.float32
    raw = zarr.open_group(str(REAL), mode="r")["data/img"][0:3]
    np.testing.assert_array_equal(ep.frames[:3], as_uint8(raw))
    last = src.load(refs[-1], 0, 4)
    actions = zarr.open_group(str(REAL), mode="r")["data/action"]
    np.testing.assert_array_equal(last.actions, actions[ends[-2] : ends[-2] + 4])
    assert src.fingerprint() == fingerprint
    assert before == {f: f.stat().st_mtime_ns for f in REAL.rglob("*") if f.is_file()}


def test_an_absent_store_stops_prepare_saying_where_push_t_comes_from_and_how_to_drop_it(tmp_path):
    absent = tmp_path / "pusht_cchi_v7_replay.zarr"
    with pytest.raises(SourceError) as err:
        source(absent).check_params("datasets.pusht")
    message = str(err.value)
    assert message.startswith(f"{absent}: no replay buffer here (the path datasets.pusht.path gives)")
    for needed in ("pusht_cchi_v7_replay.zarr", "diffusion-policy", "MIT licence", "pusht.zip",
                   "set datasets.pusht.path to the .zarr folder", "remove the `pusht` entry from `datasets:`",
                   "and `pusht` from `evaluate.probe_datasets`"):
        assert needed in message, needed
    make_pusht_zarr(absent, LENGTHS, size=8)
    source(absent).check_params("datasets.pusht")  # there: nothing to say


def test_the_advice_to_drop_push_t_is_complete_for_the_default_job():
    """Removing pusht where the error says is all the default params need (every other key that names a
    dataset leaves it out), and dvc.yaml names no dataset: its per-dataset stages come from `datasets:`."""
    import yaml

    from pipeline.params import parse_params

    root = Path(__file__).resolve().parents[2]
    raw = yaml.safe_load((root / "params.yaml").read_text())
    del raw["datasets"]["pusht"]
    raw["evaluate"]["probe_datasets"].remove("pusht")
    params = parse_params(raw)
    assert "pusht" not in params.datasets and params.train.dataset != "pusht"
    named = [*params.train.mixture, *params.budget.frames, *params.evaluate.held_out]
    assert "pusht" not in named
    dvc = (root / "dvc.yaml").read_text().replace("pusht_sim.py", "")
    assert "pusht" not in dvc
