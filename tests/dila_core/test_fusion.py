import dataclasses

import pytest
import torch

from dila_core.fusion import DecoderConfig, FusionDecoder

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
