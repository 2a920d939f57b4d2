import dataclasses

import pytest
import torch
from torch import nn

from dila_core.attention import NoPosition, NullSlots, SpatialBias
from dila_core.fusion import DecoderConfig, FusionDecoder
from dila_core.layers import CausalPEG
from dila_core.presets import preset

# Axes: B batch, T frames, h x w grid, d_s structure size, D token width, d_c content size.

CFG = DecoderConfig(width=16, depth=2, heads=2, head_dim=8, ffn_hidden=24, bias_hidden=8, dropout=0.0,
                    fusion="sequential")


def make(fusion: str = "sequential", dims=(12, 6), seed: int = 0) -> FusionDecoder:
    torch.manual_seed(seed)
    return FusionDecoder(dataclasses.replace(CFG, fusion=fusion), (3, 2), d_s=4, token_dim=12,
                         context_dims=list(dims)).eval()


def inputs(T: int = 3, dims=(12, 6)):
    torch.manual_seed(1)
    return torch.randn(2, T, 3, 2, 4), [torch.randn(2, T, 3, 2, d) for d in dims]


@pytest.mark.parametrize("dims", [(12, 6), (12,)])
def test_decoder_shapes_with_and_without_content(dims):
    s, contexts = inputs(dims=dims)
    out = make(dims=dims)(s, contexts)
    assert out.shape == (2, 3, 3, 2, 12) and torch.isfinite(out).all()


def test_sequential_and_parallel_share_parameters_and_follow_their_formulas():
    seq, par = make("sequential"), make("parallel")
    assert seq.state_dict().keys() == par.state_dict().keys()
    par.load_state_dict(seq.state_dict(), strict=True)
    block = seq.blocks[0]
    x = torch.randn(2, 3, 6, 16)
    contexts = [c.flatten(2, 3) for c in inputs()[1]]
    first, second = block.cross.cross
    want_seq = x + first(x, contexts[0])
    want_seq = want_seq + second(want_seq, contexts[1])
    want_par = x + first(x, contexts[0]) + second(x, contexts[1])
    torch.testing.assert_close(block.cross(x, contexts), want_seq)
    torch.testing.assert_close(par.blocks[0].cross(x, contexts), want_par)
    assert not torch.allclose(seq(*inputs()), par(*inputs()))


def test_frames_are_decoded_independently():
    decoder = make()
    s, contexts = inputs(T=4)
    base = decoder(s, contexts)
    s2 = s.clone()
    s2[:, 2] += torch.randn_like(s2[:, 2])
    contexts2 = [c.clone() for c in contexts]
    contexts2[1][:, 1] += torch.randn_like(contexts2[1][:, 1])
    for out, frame in ((decoder(s2, contexts), 2), (decoder(s, contexts2), 1)):
        others = [t for t in range(4) if t != frame]
        torch.testing.assert_close(out[:, others], base[:, others], rtol=0, atol=0)
        assert (out[:, frame] - base[:, frame]).abs().max() > 1e-5


def test_decoder_uses_every_context():
    decoder = make()
    s, contexts = inputs()
    base = decoder(s, contexts)
    for i in range(2):
        changed = [c.clone() for c in contexts]
        changed[i] += torch.randn_like(changed[i])
        assert (decoder(s, changed) - base).abs().max() > 1e-5


def test_wrong_number_of_contexts_is_an_error():
    s, contexts = inputs()
    with pytest.raises(ValueError):
        make()(s, contexts[:1])


def test_config_error_names_the_key():
    with pytest.raises(ValueError, match=r"model\.decoder\.fusion = 'sum' is not allowed: expected one of"):
        dataclasses.replace(CFG, fusion="sum").validate("model.decoder")


def test_first_frame_skip_starts_at_e0_and_adds_the_decoder_output():
    torch.manual_seed(0)
    cfg = dataclasses.replace(CFG, skip="first_frame")
    skip = FusionDecoder(cfg, (3, 2), d_s=4, token_dim=12, context_dims=[12, 6]).eval()
    s, contexts = inputs()
    torch.testing.assert_close(skip(s, contexts), contexts[0], rtol=0, atol=0)   # untrained: repeats e_0
    plain = make()
    skip.load_state_dict(plain.state_dict(), strict=True)                         # same parameters
    torch.testing.assert_close(skip(s, contexts), contexts[0] + plain(s, contexts))
    with pytest.raises(ValueError, match=r"model\.decoder\.skip = 'last' is not allowed"):
        dataclasses.replace(CFG, skip="last").validate("model.decoder")


# -- the reference code's switches, on the `tiny` preset's decoder ----------------------------------

def tiny(seed: int = 0, **kw) -> FusionDecoder:
    """The tiny preset's decoder (width = token_dim = 32) on a 3 x 2 grid, d_s 4, contexts (32, 6)."""
    torch.manual_seed(seed)
    cfg = dataclasses.replace(preset("tiny").decoder, **kw)
    return FusionDecoder(cfg, (3, 2), d_s=4, token_dim=32, context_dims=[32, 6]).eval()


def tiny_inputs(T: int = 5):
    torch.manual_seed(1)
    return torch.randn(2, T, 3, 2, 4), [torch.randn(2, T, 3, 2, d) for d in (32, 6)]


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_causal_position_conv_decodes_frame_t_plus_1_from_earlier_structure_too():
    s, contexts = tiny_inputs()
    for position, reach in (("causal_peg", [1, 2, 3]), ("none", [1])):
        decoder = tiny(position=position)                                # 1 block: sees ŝ_{t-2..t}
        assert decoder.history == 2 * (position == "causal_peg")
        assert sum(isinstance(m, CausalPEG) for m in decoder.modules()) == (position == "causal_peg")
        changed = s.clone()
        changed[:, 1] += torch.randn_like(changed[:, 1])                 # ŝ at frame 1
        moved = (decoder(changed, contexts) - decoder(s, contexts)).abs().amax(dim=(0, 2, 3, 4))
        assert [t for t in range(5) if moved[t] > 1e-6] == reach       # never frame 0: causal
        assert torch.all(moved[[t for t in range(5) if t not in reach]] == 0)


def test_null_slots_in_every_cross_attention_and_only_there():
    ours, nulls = tiny(), tiny(null_kv=2)
    slots = [m for m in nulls.modules() if isinstance(m, NullSlots)]
    assert len(slots) == 2 * len(nulls.blocks)                               # e_0 and the memory
    assert all(tuple(m.kv.shape) == (2, 2, 2, 16) for m in slots)           # (k/v, heads, slots, head_dim)
    assert count(nulls) - count(ours) == 2 * (2 * 2 * 2 * 16)                 # 2 cross-attentions
    for block in nulls.blocks:
        assert not any(isinstance(m, NullSlots) for m in block.self_attention.modules())
    s, contexts = tiny_inputs(T=2)
    assert nulls(s, contexts).shape == (2, 2, 3, 2, 32)


def test_cross_attention_without_position_bias_ignores_the_order_of_context_tokens():
    torch.manual_seed(2)
    x, context = torch.randn(2, 3, 6, 32), torch.randn(2, 3, 6, 32)
    perm = torch.randperm(6)
    for cross_bias in (True, False):
        decoder = tiny(cross_bias=cross_bias)
        for block in decoder.blocks:
            positions = [type(c.attention.attention.position) for c in block.cross.cross]
            assert positions == [SpatialBias if cross_bias else NoPosition] * 2
            assert isinstance(block.self_attention.branch.attention.attention.position, SpatialBias)
        attend = decoder.blocks[0].cross.cross[0]
        same = torch.allclose(attend(x, context), attend(x, context[:, :, perm]), rtol=0, atol=1e-5)
        assert same == (not cross_bias)


def test_norm_output_is_the_final_layernorm_with_no_projection():
    ours, normed = tiny(), tiny(output="norm")
    assert isinstance(normed.proj_out, nn.Identity)
    assert not any(name.startswith("proj_out") for name, _ in normed.named_parameters())
    assert count(ours) - count(normed) == 32 * 32 + 32
    out = normed(*tiny_inputs(T=2))                                       # LayerNorm at its initial affine
    torch.testing.assert_close(out.mean(-1), torch.zeros(out.shape[:-1]), rtol=0, atol=1e-5)
    torch.testing.assert_close(out.var(-1, unbiased=False), torch.ones(out.shape[:-1]), rtol=0, atol=1e-3)
    with pytest.raises(ValueError, match=r"decoder\.output = 'norm' is not allowed: expected 'projection' when "
                                         r"width \(16\) differs from token_dim \(12\)"):
        FusionDecoder(dataclasses.replace(CFG, output="norm"), (3, 2), d_s=4, token_dim=12, context_dims=[12])
    with pytest.raises(ValueError, match=r"model\.decoder\.output = 'norm' is not allowed: expected 'projection' "
                                         r"with skip = 'first_frame'"):
        dataclasses.replace(CFG, output="norm", skip="first_frame").validate("model.decoder")


def test_attention_dropout_off_keeps_the_decoder_dropout_to_its_ffns():
    x, contexts = torch.randn(2, 3, 6, 32), [torch.randn(2, 3, 6, d) for d in (32, 6)]
    for attention_dropout in (False, True):
        block = tiny(dropout=0.5, attention_dropout=attention_dropout).train().blocks[0]
        deterministic = [torch.equal(f(), f()) for f in (lambda: block.self_attention(x),
                                                         lambda: block.cross(x, contexts),
                                                         lambda: block.ffn(x))]
        assert deterministic == [not attention_dropout, not attention_dropout, False]


@pytest.mark.parametrize(("field", "value", "message"), [
    ("position", "peg", r"decoder\.position = 'peg' is not allowed: expected one of 'none', 'causal_peg'"),
    ("null_kv", -1, r"decoder\.null_kv = -1 is not allowed: expected an integer >= 0"),
    ("cross_bias", "off", r"decoder\.cross_bias = 'off' is not allowed: expected true or false"),
    ("output", "linear", r"decoder\.output = 'linear' is not allowed: expected one of 'projection', 'norm'"),
])
def test_switch_errors_name_the_key(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(CFG, **{field: value}).validate("decoder")
