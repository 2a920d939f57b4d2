"""Stage pixel_decoder: pairs line up with the source, the run learns and writes its artifacts,
the file round-trips exactly and loads strictly, the schedule steps, runs are reproducible."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
import zarr
from safetensors.torch import load_file, save_file

from dila_core.pixel_decoder import PixelDecoder, PixelDecoderConfig
from pipeline import artifacts
from pipeline.data import store
from pipeline.data.encoder import resize_frames
from pipeline.data.sources import build_source
from pipeline.data.split import split_episodes, split_frames
from pipeline.data.windows import EPS, normalize
from pipeline.evaluation import pixels
from pipeline.params import OptimParams
from pipeline.training.checkpoint import CheckpointError, save_checkpoint
from pipeline.training.trainer import build_optimizer, lr_factor
from stages import extract, prepare
from stages import pixel_decoder as stage
from tests.conftest import make_params

# Axes: F stored frames, h x w token grid (3 x 3 here), D token width (384), S output size (16).
SMALL = ("pixel_decoder.size=16", "pixel_decoder.width=16", "pixel_decoder.steps=40",
         "pixel_decoder.batch_size=8", "pixel_decoder.checkpoint_every=15")


def tiny_params(tmp, *extra):
    return make_params(tmp, f"paths.models={tmp}/models", *SMALL, *extra)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny store and one short training run shared by the tests of this file."""
    tmp = tmp_path_factory.mktemp("pd")
    params = tiny_params(tmp)
    prepare.run(params, "synthetic", show_progress=False)
    extract.run(params, "synthetic", show_progress=False)
    path = stage.run(params, show_progress=False)
    return params, path


def test_frames_are_the_source_frames_of_each_stored_token_row(trained):
    params, _ = trained
    pairs, ends, attrs = stage.load_pairs(params, "synthetic")
    assert ends.tolist() == [10, 20, 30, 40, 50, 60] and attrs["complete"]
    assert pairs.tokens.shape == (60, 3, 3, 384) and pairs.frames.shape == (60, 3, 16, 16)
    source = build_source(params.dataset("synthetic"))
    ref = source.refs()[2]
    want = resize_frames(torch.from_numpy(source.load(ref, 3, 7).frames), 16)      # (4, 3, S, S) in [0, 1]
    np.testing.assert_array_equal(pairs.frames[23:27], want.mul(255).round().to(torch.uint8).numpy())
    tokens = zarr.open_group(artifacts.store_path(params, "synthetic"), mode="r")["tokens"]
    np.testing.assert_array_equal(pairs.tokens(np.array([26, 23, 23])), tokens[[26, 23, 23]])


def test_run_learns_and_writes_its_artifacts(trained):
    params, path = trained
    out = artifacts.pixel_decoder_dir(params)
    assert path == out / "model.safetensors" and (out / "samples.png").is_file()
    metrics = json.loads((out / "details.json").read_text())
    headline = json.loads((out / "metrics.json").read_text())
    assert headline == {"psnr": metrics["val_psnr"], "psnr_mean_frame": metrics["baseline_mean_frame_val_psnr"]}
    _, val_eps = split_episodes(6, params.train.val_fraction, params.seed)
    assert metrics["frames"] == {"train": 60 - 10 * len(val_eps), "val": 10 * len(val_eps),
                                 "val_evaluated": 10 * len(val_eps)}
    assert metrics["steps"] == 40 and metrics["size"] == 16
    assert metrics["encoder"]["weights"] == "random-init (seed 0)" and metrics["dataset"] == "synthetic"
    assert metrics["loss_last"] < metrics["loss_first"] / 3
    assert metrics["val_psnr"] > metrics["baseline_mean_frame_val_psnr"]
    assert math.isclose(metrics["val_psnr"], 10 * math.log10(1 / metrics["val_mse"]), abs_tol=3.0)
    assert metrics["lr_last"] == pytest.approx(0.0, abs=1e-12)         # the cosine schedule ran to its end


def test_saved_decoder_loads_strictly_and_reproduces_the_metrics(trained):
    params, path = trained
    decoder, meta = pixels.load_pixel_decoder(path)
    assert meta["step"] == 40 and meta["norm_eps"] == EPS and meta["dataset"] == "synthetic"
    root = store.open_store(artifacts.store_path(params, "synthetic"))
    assert meta["encoder"] == store.store_attrs(root)["encoder"]
    assert meta["config"] == stage.decoder_config(params.pixel_decoder, (3, 3), 384)
    pairs, ends, _ = stage.load_pairs(params, "synthetic")
    _, val = split_frames(ends, params.train.val_fraction, params.seed)
    metrics = json.loads(artifacts.pixel_decoder_details(params).read_text())
    assert stage.quality(stage.frame_errors(decoder, pairs, val))["mse"] == pytest.approx(metrics["val_mse"], rel=1e-5)


def test_same_params_give_the_same_weights(trained, tmp_path):
    params, path = trained
    again = stage.run(tiny_params(tmp_path, f"paths.prepared={params.paths.prepared}",
                                  f"paths.features={params.paths.features}"), show_progress=False)
    a, b = load_file(str(path)), load_file(str(again))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_save_load_round_trip_is_exact(tmp_path):
    torch.manual_seed(3)
    model = PixelDecoder(PixelDecoderConfig(in_dim=8, grid=(2, 3), size=8, width=8, upsample="bilinear"))
    path = save_checkpoint(tmp_path / "d" / "model.safetensors", model, 7, {"note": "x"})
    loaded, meta = pixels.load_pixel_decoder(path)
    assert meta == {"note": "x", "step": 7, "config": model.cfg} and not loaded.training
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    x = torch.randn(2, 2, 3, 8)
    assert torch.equal(model(x), loaded(x))


def test_loading_is_strict_and_checks_the_format(tmp_path):
    model = PixelDecoder(PixelDecoderConfig(in_dim=8, grid=(2, 2), size=8, width=8))
    path = save_checkpoint(tmp_path / "model.safetensors", model, 1, {})
    with open(path, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    metadata = header["__metadata__"]
    tensors = load_file(str(path))
    extra = {**tensors, "extra.weight": torch.zeros(1)}
    save_file(extra, str(tmp_path / "extra.safetensors"), metadata=metadata)
    with pytest.raises(CheckpointError, match="unexpected keys: extra.weight"):
        pixels.load_pixel_decoder(tmp_path / "extra.safetensors")
    missing = {k: v for k, v in tensors.items() if k != "proj.weight"}
    save_file(missing, str(tmp_path / "missing.safetensors"), metadata=metadata)
    with pytest.raises(CheckpointError, match="missing keys: proj.weight"):
        pixels.load_pixel_decoder(tmp_path / "missing.safetensors")
    save_file(tensors, str(tmp_path / "other.safetensors"), metadata={**metadata, "family": "dila"})
    with pytest.raises(CheckpointError, match="holds a 'dila' model, expected 'pixel_decoder'"):
        pixels.load_pixel_decoder(tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="absent.safetensors: no such checkpoint file"):
        pixels.load_pixel_decoder(tmp_path / "absent.safetensors")


def test_decode_tokens_keeps_leading_axes_and_input(trained):
    _, path = trained
    decoder, _ = pixels.load_pixel_decoder(path)
    e = torch.randn(2, 5, 3, 3, 384)                                   # (B, T, h, w, D)
    before = e.clone()
    frames = pixels.decode_tokens(decoder, e, chunk=3)
    assert frames.shape == (2, 5, 3, 16, 16) and frames.min() >= 0 and frames.max() <= 1
    with torch.no_grad():
        torch.testing.assert_close(frames[1], decoder(e[1]))
    assert torch.equal(e, before)


def test_normalize_uses_the_store_stats_and_keeps_input():
    tokens = np.arange(12, dtype=np.float16).reshape(2, 1, 2, 3)       # (F, h, w, D)
    mean, std = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 0.5, 1.0])
    out = normalize(torch.from_numpy(tokens), mean, std)
    want = (torch.from_numpy(tokens.astype(np.float32)) - mean) / (std + EPS)
    assert out.dtype == torch.float32 and torch.equal(out, want)
    assert np.array_equal(tokens, np.arange(12, dtype=np.float16).reshape(2, 1, 2, 3))


def test_token_rows_read_lazily_when_over_budget(trained):
    params, _ = trained
    tokens = zarr.open_group(artifacts.store_path(params, "synthetic"), mode="r")["tokens"]
    idx = np.array([59, 0, 17, 17, 31])
    lazy, memory = stage.TokenRows(tokens, budget=0), stage.TokenRows(tokens)
    assert not isinstance(lazy.rows, np.ndarray) and isinstance(memory.rows, np.ndarray)
    np.testing.assert_array_equal(lazy(idx), memory(idx))


@pytest.mark.parametrize(("schedule", "warmup"), [("cosine", 0), ("cosine", 4), ("constant", 3)])
def test_schedule_steps_to_its_end(schedule, warmup):
    optim = OptimParams(lr=0.5, schedule=schedule, warmup_steps=warmup)
    def factor(k):
        return lr_factor(optim, 20, k)

    if warmup:
        assert factor(0) == pytest.approx(1 / warmup) and factor(warmup - 1) == pytest.approx(1.0)
    assert factor(warmup) == pytest.approx(1.0)
    model = torch.nn.Linear(2, 1)
    opt, sched = build_optimizer(model, optim, 20)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    end = sched.get_last_lr()[0]
    if schedule == "cosine":
        assert end == pytest.approx(0.0, abs=1e-12) and factor((20 + warmup) // 2) == pytest.approx(0.5)
        assert all(a >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1:]))
    else:
        assert end == 0.5 and lrs[warmup:] == [0.5] * (20 - warmup)


def test_batches_cover_every_frame_once_per_epoch():
    idx = np.array([3, 5, 8, 9, 12, 20])
    gen = stage.batches(np.random.default_rng(0), idx, 4)
    drawn = np.concatenate([next(gen) for _ in range(3)])             # 12 = two epochs
    assert sorted(drawn.tolist()) == sorted(idx.tolist() * 2)
    big = next(stage.batches(np.random.default_rng(0), idx, 10))
    assert len(big) == 10 and set(big.tolist()) == set(idx.tolist()) and np.all(np.diff(big) >= 0)


class Killed(Exception):
    pass


def test_a_killed_run_resumes_from_its_state_and_ends_as_an_uninterrupted_one(trained, tmp_path, monkeypatch):
    params, path = trained
    again = tiny_params(tmp_path, f"paths.prepared={params.paths.prepared}", f"paths.features={params.paths.features}")
    real = stage.Trainer.step

    def dies_at_20(run, batch):
        if run.sched.last_epoch == 20:       # updates 1..20 done, the state of 15 on disk
            raise Killed
        return real(run, batch)

    monkeypatch.setattr(stage.Trainer, "step", dies_at_20)
    with pytest.raises(Killed):
        stage.run(again, show_progress=False)
    state = artifacts.pixel_decoder_state(again)
    assert state.is_file() and not artifacts.pixel_decoder_weights(again).exists()
    updates = []
    monkeypatch.setattr(stage.Trainer, "step", lambda run, batch: (updates.append(1), real(run, batch))[1])
    assert stage.run(again, show_progress=False) == artifacts.pixel_decoder_weights(again)
    assert len(updates) == 40 - 15                                           # resumed at 15, not started over
    assert not state.parent.exists()                                         # dropped once the weights exist
    assert artifacts.pixel_decoder_weights(again).read_bytes() == path.read_bytes()
    want, got = (json.loads(artifacts.pixel_decoder_details(p).read_text()) for p in (params, again))
    assert {k: v for k, v in got.items() if k != "seconds"} == {k: v for k, v in want.items() if k != "seconds"}
    assert artifacts.pixel_decoder_metrics(again).read_bytes() == artifacts.pixel_decoder_metrics(params).read_bytes()


def test_a_store_from_other_episodes_is_refused(trained, tmp_path):
    params, _ = trained
    features = tmp_path / "features"
    shutil.copytree(params.paths.features, features)
    copy = tiny_params(tmp_path, f"paths.prepared={params.paths.prepared}", f"paths.features={features}")
    root = zarr.open_group(artifacts.store_path(copy, "synthetic"), mode="r+")
    attrs = dict(root.attrs["dila"])
    root.attrs["dila"] = {**attrs, "episodes": attrs["episodes"][::-1]}
    with pytest.raises(store.StoreError, match="other episodes than the manifest"):
        stage.load_pairs(copy, "synthetic")
    root.attrs["dila"] = {**attrs, "complete": False}
    with pytest.raises(store.StoreError, match="incomplete"):
        stage.load_pairs(copy, "synthetic")
