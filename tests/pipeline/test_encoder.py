"""The frozen DINOv2 encoder: architecture, preprocessing, token layout, weights loading."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.data.encoder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EncoderUnavailable,
    builtin_config,
    load_encoder,
    resize_frames,
)
from pipeline.params import EncoderParams

RANDOM = EncoderParams(weights="random", input_size=28, batch_size=4)


def frames(n=5, size=40, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "model, dim, registers",
    [("facebook/dinov2-small", 384, 0), ("facebook/dinov2-with-registers-small", 384, 4),
     ("facebook/dinov2-base", 768, 0)],
)
@pytest.mark.parametrize("size", [28, 42])
def test_patch_tokens_shape_for_sizes_and_registers(model, dim, registers, size):
    enc = load_encoder(dataclasses.replace(RANDOM, model=model, input_size=size), seed=0)
    tokens = enc.encode_frames(frames(3))
    assert tokens.shape == (3, size // 14, size // 14, dim) and tokens.dtype == np.float32
    assert enc.record.registers == registers and enc.record.dim == dim
    assert enc.record.weights == "random-init (seed 0)"


def test_builtin_architectures_match_published_sizes():
    for name, (hidden, layers, heads) in {
        "facebook/dinov2-small": (384, 12, 6), "facebook/dinov2-base": (768, 12, 12),
        "facebook/dinov2-large": (1024, 24, 16), "facebook/dinov2-with-registers-giant": (1536, 40, 24),
    }.items():
        cfg = builtin_config(name)
        assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (hidden, layers, heads)
        assert cfg.patch_size == 14
    assert builtin_config("facebook/dinov2-with-registers-base").num_register_tokens == 4
    with pytest.raises(EncoderUnavailable, match="no built-in architecture for encoder.model='openai/clip'"):
        builtin_config("openai/clip")


def test_tokens_equal_a_manual_reference_computation():
    """ImageNet normalisation, CLS and register tokens dropped, plain final LayerNorm."""
    enc = load_encoder(dataclasses.replace(RANDOM, model="facebook/dinov2-with-registers-small"), seed=3)
    x = frames(2)
    got = enc.encode_frames(x)
    pixels = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    pixels = F.interpolate(pixels, size=(28, 28), mode="bicubic", antialias=True).clamp(0, 1)
    pixels = (pixels - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    bb = enc.backbone
    with torch.no_grad():
        hidden = bb.embeddings(pixels)
        for layer in bb.encoder.layer:
            hidden = layer(hidden)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        hidden = F.layer_norm(hidden, (384,), eps=bb.config.layer_norm_eps)  # no affine
    want = hidden[:, 5:].reshape(2, 2, 2, 384).numpy()  # drop CLS + 4 registers
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_affine_final_norm_differs_from_plain():
    plain = load_encoder(RANDOM, seed=0)
    affine = load_encoder(dataclasses.replace(RANDOM, final_norm="affine"), seed=0)
    with torch.no_grad():
        affine.backbone.layernorm.weight.mul_(2.0)
    x = frames(2)
    np.testing.assert_allclose(affine.encode_frames(x), 2 * plain.encode_frames(x), rtol=1e-4, atol=1e-5)


def test_random_init_is_seeded_and_batching_does_not_change_tokens():
    a, b, c = (load_encoder(RANDOM, seed=s) for s in (7, 7, 8))
    x = frames(6)
    ta = a.encode_frames(x)
    np.testing.assert_array_equal(ta, b.encode_frames(x))
    assert not np.allclose(ta, c.encode_frames(x))
    per_frame = np.concatenate([a.encode_frames(x[i : i + 1]) for i in range(6)])
    # Not bitwise: on AVX-512 CPUs the GEMM kernels depend on the batch size and round the last
    # bits differently (measured: at most 2.6e-6 here). Extraction never relies on it: its batches
    # are formed inside each shard, so the same frames are always encoded in the same batches.
    np.testing.assert_allclose(ta, per_frame, rtol=0, atol=1e-5)


def test_resize_is_bicubic_to_the_input_size_and_keeps_range():
    x = torch.from_numpy(frames(2, size=50))
    out = resize_frames(x, 28)
    assert out.shape == (2, 3, 28, 28) and out.min() >= 0 and out.max() <= 1
    same = resize_frames(torch.from_numpy(frames(1, size=28)), 28)
    np.testing.assert_allclose(same[0].permute(1, 2, 0).numpy() * 255, frames(1, size=28)[0], atol=1e-4)


def test_pretrained_offline_fails_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    params = EncoderParams(model="facebook/dinov2-with-registers-large", weights="pretrained")
    with pytest.raises(EncoderUnavailable) as info:
        load_encoder(params, seed=0)
    message = str(info.value)
    assert "facebook/dinov2-with-registers-large" in message
    assert "-S encoder.model=models/dinov2-with-registers-large" in message
    assert "-S encoder.weights=random" in message


def test_pretrained_from_a_local_directory(tmp_path):
    """The real loading path, offline: weights saved to a folder load back exactly."""
    source = load_encoder(RANDOM, seed=11)
    source.backbone.save_pretrained(tmp_path / "dinov2-local")
    loaded = load_encoder(dataclasses.replace(RANDOM, model=str(tmp_path / "dinov2-local"), weights="pretrained"), 0)
    assert loaded.record.weights.startswith("pretrained@")
    x = frames(3)
    np.testing.assert_array_equal(loaded.encode_frames(x), source.encode_frames(x))
    again = load_encoder(dataclasses.replace(RANDOM, model=str(tmp_path / "dinov2-local")), seed=11)
    np.testing.assert_array_equal(again.encode_frames(x), source.encode_frames(x))  # random init from its config


def test_local_directory_without_config_is_named(tmp_path):
    params = EncoderParams(model=str(tmp_path), weights="pretrained")
    with pytest.raises(EncoderUnavailable, match=f"{tmp_path}.*without config.json"):
        load_encoder(params, seed=0)


def test_encoder_is_frozen():
    enc = load_encoder(RANDOM, seed=0)
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
