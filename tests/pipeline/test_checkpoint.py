import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dila_core.model import DiLA, DiLAConfig
from dila_core.pixel_decoder import PixelDecoder, PixelDecoderConfig
from dila_core.presets import preset
from pipeline.config import build, to_dict
from pipeline.training.checkpoint import (
    FORMAT,
    PIXEL_DECODER,
    CheckpointError,
    load_checkpoint,
    load_weights,
    load_with_meta,
    save_checkpoint,
)


def trained_tiny(bottleneck: str = "nsvq") -> DiLA:
    """A tiny model a few steps away from its initialisation (and with NSVQ buffers in use)."""
    torch.manual_seed(0)
    model = DiLA(preset("tiny", bottleneck=bottleneck, decoder={"fusion": "parallel"}))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    e = torch.randn(2, 3, 4, 4, 32)
    for _ in range(3):
        loss, _ = model(e)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("bottleneck", ["continuous", "nsvq"])
def test_round_trip_is_exact(tmp_path, bottleneck):
    model = trained_tiny(bottleneck)
    path = save_checkpoint(tmp_path / "models" / "dila.safetensors", model, step=1234)
    loaded, step = load_checkpoint(path)
    assert step == 1234 and loaded.cfg == model.cfg
    want, got = model.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    loaded.eval()
    e = torch.randn(1, 3, 4, 4, 32)
    torch.testing.assert_close(loaded.predict(e), model.predict(e), rtol=0, atol=0)
    assert not (tmp_path / "models" / "dila.safetensors.tmp").exists()


def test_metadata_holds_config_json_and_step(tmp_path):
    model = trained_tiny("continuous")
    path = save_checkpoint(tmp_path / "a.safetensors", model, step=7)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == FORMAT and meta["step"] == "7" and meta["family"] == "dila" and meta["meta"] == "{}"
    assert json.loads(meta["config"]) == to_dict(model.cfg)
    assert json.loads(meta["config"])["decoder"]["fusion"] == "parallel"


@pytest.mark.parametrize("name", ["paper", "small", "tiny"])
def test_every_preset_config_round_trips_through_the_params_parser(name):
    for variant in ("dila", "no_content", "no_latent_action"):
        for kind in ("continuous", "gaussian", "nsvq"):
            cfg = preset(name, variant=variant, bottleneck=kind)
            plain = json.loads(json.dumps(to_dict(cfg)))
            assert build(DiLAConfig, plain, "model") == cfg


def rewrite(path, out, edit_tensors=lambda t: t, edit_meta=lambda m: m):
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    save_file(edit_tensors(tensors), str(out), metadata=edit_meta(meta))
    return out


def test_loading_is_strict_and_errors_name_the_file(tmp_path):
    path = save_checkpoint(tmp_path / "good.safetensors", trained_tiny("continuous"), step=1)
    name = "backbone.proj_in.weight"
    missing = rewrite(path, tmp_path / "missing.safetensors", lambda t: {k: v for k, v in t.items() if k != name})
    with pytest.raises(CheckpointError, match=rf"missing\.safetensors: .*missing keys: {name}"):
        load_checkpoint(missing)
    extra = rewrite(path, tmp_path / "extra.safetensors", lambda t: {**t, "head.bias": torch.zeros(3)})
    with pytest.raises(CheckpointError, match=r"extra\.safetensors: .*unexpected keys: head\.bias"):
        load_checkpoint(extra)
    shape = rewrite(path, tmp_path / "shape.safetensors", lambda t: {**t, name: torch.zeros(2, 2)})
    with pytest.raises(CheckpointError, match=rf"shape\.safetensors: .*shape mismatch: {name}"):
        load_checkpoint(shape)


def test_bad_files_and_metadata_are_clear_errors(tmp_path):
    path = save_checkpoint(tmp_path / "good.safetensors", trained_tiny("continuous"), step=1)
    with pytest.raises(CheckpointError, match=r"nope\.safetensors: no such checkpoint file"):
        load_checkpoint(tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=r"junk\.safetensors: not a readable safetensors file"):
        load_checkpoint(tmp_path / "junk.safetensors")
    foreign = rewrite(path, tmp_path / "foreign.safetensors", edit_meta=lambda m: {"format": "other"})
    with pytest.raises(CheckpointError, match=r"foreign\.safetensors: not a dila checkpoint"):
        load_checkpoint(foreign)

    def bad_config(meta):
        cfg = json.loads(meta["config"])
        cfg["d_s"] = 0
        return {**meta, "config": json.dumps(cfg)}

    broken = rewrite(path, tmp_path / "broken.safetensors", edit_meta=bad_config)
    with pytest.raises(CheckpointError, match=r"broken\.safetensors: bad checkpoint metadata: .*d_s = 0"):
        load_checkpoint(broken)


def test_load_weights_into_an_existing_model_and_bad_step(tmp_path):
    model = trained_tiny("continuous")
    fresh = DiLA(model.cfg)
    load_weights(fresh, model.state_dict(), "memory")
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values(), strict=True))
    with pytest.raises(ValueError, match="step = -1 is not allowed"):
        save_checkpoint(tmp_path / "x.safetensors", model, step=-1)


def test_the_same_weights_give_the_same_bytes(tmp_path):
    model = trained_tiny("nsvq")
    files = [save_checkpoint(tmp_path / f"{i}.safetensors", model, step=3).read_bytes() for i in range(5)]
    assert len(set(files)) == 1
    assert save_checkpoint(tmp_path / "other.safetensors", model, step=4).read_bytes() != files[0]


def test_every_model_kind_shares_the_format_and_a_family_mismatch_is_an_error(tmp_path):
    torch.manual_seed(0)
    decoder = PixelDecoder(PixelDecoderConfig(in_dim=32, grid=(4, 4), size=8, width=8))
    path = save_checkpoint(tmp_path / "pd.safetensors", decoder, step=3, meta={"store_plan_sha256": "abc"})
    loaded, step, meta = load_with_meta(path, family=PIXEL_DECODER)
    assert isinstance(loaded, PixelDecoder) and step == 3 and meta == {"store_plan_sha256": "abc"}
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), decoder.state_dict().values(),
                                                  strict=True))
    with pytest.raises(CheckpointError, match=r"pd\.safetensors: holds a 'pixel_decoder' model, expected 'dila'"):
        load_checkpoint(path, family="dila")
    unknown = rewrite(path, tmp_path / "unknown.safetensors", edit_meta=lambda m: {**m, "family": "nope"})
    with pytest.raises(CheckpointError, match=r"unknown\.safetensors: bad checkpoint metadata: unknown model family"):
        load_checkpoint(unknown)
