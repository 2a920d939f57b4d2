import dataclasses

import pytest
import torch
from torch import nn

from dila_core.attention import CosineNorm, SpaceAttention, TimeAttention
from dila_core.layers import GEGLU, CausalPEG, Sublayer
from dila_core.presets import preset, reference_switches
from dila_core.st_transformer import (
    SpatioTemporalEncoder,
    STBlock,
    STConfig,
    STTransformer,
)

# Axes: B batch, T time, h x w grid, N = h*w tokens, D token width, W model width.


def config(**kw) -> STConfig:
    base = dict(width=16, depth=2, heads=2, head_dim=8, ffn_hidden=24, bias_hidden=8, dropout=0.0,
                layout="space-ffn-time-ffn")
    return STConfig(**{**base, **kw})


@pytest.mark.parametrize("grid", [(3, 5), (4, 4), (1, 1)])
@pytest.mark.parametrize("layout", ["space-ffn-time-ffn", "space-time-ffn"])
def test_encoder_shapes_on_any_grid(grid, layout):
    torch.manual_seed(0)
    enc = SpatioTemporalEncoder(config(layout=layout), grid, token_dim=12)
    e = torch.randn(2, 3, *grid, 12)
    x = enc(e)
    assert x.shape == (2, 3, *grid, 16) and torch.isfinite(x).all()
    kinds = [type(s.branch).__name__ for s in enc.st.blocks[0].sublayers]
    assert kinds == {"space-ffn-time-ffn": ["SelfBranch", "GEGLU", "SelfBranch", "GEGLU"],
                     "space-time-ffn": ["SelfBranch", "SelfBranch", "GEGLU"]}[layout]


def test_encoder_is_causal_in_time():
    torch.manual_seed(1)
    enc = SpatioTemporalEncoder(config(), (3, 4), token_dim=12).eval()
    e = torch.randn(2, 6, 3, 4, 12)
    for k in range(6):
        changed = e.clone()
        changed[:, k] += torch.randn_like(changed[:, k])
        before, after = enc(e), enc(changed)
        torch.testing.assert_close(before[:, :k], after[:, :k], rtol=0, atol=0)
        assert (before[:, k:] - after[:, k:]).abs().amax(dim=(0, 2, 3, 4)).min() > 1e-6


def test_position_generator_is_causal_and_leaves_extra_tokens_alone():
    torch.manual_seed(2)
    peg = CausalPEG(4, (2, 3))
    x = torch.randn(1, 5, 6 + 2, 4)
    y = x.clone()
    y[:, 2, :6] += torch.randn_like(y[:, 2, :6])
    out_x, out_y = peg(x), peg(y)
    torch.testing.assert_close(out_x[:, :2], out_y[:, :2], rtol=0, atol=0)
    torch.testing.assert_close(out_x[:, :, 6:], x[:, :, 6:], rtol=0, atol=0)
    # frame t sees frames t-2..t only: the change at frame 2 reaches frames 2, 3, 4 and no further
    assert (out_x[:, 2:, :6] - out_y[:, 2:, :6]).abs().amax(dim=(0, 2, 3)).min() > 0


def test_adaln_zero_sublayers_are_identity_at_init_and_condition_after_training():
    torch.manual_seed(3)
    block = STBlock(config(layout="space-time-ffn"), (2, 2), extra=1, cond_dim=5).eval()
    x, cond = torch.randn(2, 3, 5, 16), torch.randn(2, 3, 5)
    for sublayer in block.sublayers:
        assert isinstance(sublayer, Sublayer)
        torch.testing.assert_close(sublayer(x, cond), x, rtol=0, atol=0)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
    a, b = block(x, cond), block(x, cond + torch.randn_like(cond))
    assert (a - b).abs().max() > 1e-4


def test_conditioned_transformer_is_causal_in_condition_and_tokens():
    torch.manual_seed(4)
    st = STTransformer(config(layout="space-time-ffn"), (2, 2), extra=1, cond_dim=3).eval()
    with torch.no_grad():
        for p in st.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x, cond = torch.randn(1, 4, 5, 16), torch.randn(1, 4, 3)
    cond2 = cond.clone()
    cond2[:, 2] += torch.randn_like(cond2[:, 2])
    a, b = st(x, cond), st(x, cond2)
    torch.testing.assert_close(a[:, :2], b[:, :2], rtol=0, atol=0)
    assert (a[:, 2:] - b[:, 2:]).abs().amax(dim=(0, 2, 3)).min() > 1e-6


@pytest.mark.parametrize(("field", "value", "message"), [
    ("width", 0, "st.width = 0 is not allowed: expected an integer >= 1"),
    ("head_dim", 7, "st.head_dim = 7 is not allowed: expected an even integer"),
    ("dropout", 1.0, "st.dropout = 1.0 is not allowed"),
    ("layout", "time-space", "st.layout = 'time-space' is not allowed: expected one of"),
])
def test_config_errors_name_the_key(field, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        config(**{field: value}).validate("st")


# -- the reference code's switches, on the `tiny` preset's ST-Transformer ----------------------------

def tiny_st(**kw) -> STConfig:
    return dataclasses.replace(preset("tiny").st, **kw)


def units(st: STTransformer) -> list[str]:
    """What x goes through, in order: "peg", "space", "time", "ffn" (identities left out)."""
    def kind(sublayer: Sublayer) -> str:
        branch = getattr(sublayer.branch, "attention", sublayer.branch)
        return {SpaceAttention: "space", TimeAttention: "time", GEGLU: "ffn"}[type(branch)]

    out = []
    for block in st.blocks:
        out += ["peg"] if isinstance(block.peg, CausalPEG) else []
        for peg, sublayer in zip(block.layer_pegs, block.sublayers, strict=True):
            out += (["peg"] if isinstance(peg, CausalPEG) else []) + [kind(sublayer)]
    return out


@pytest.mark.parametrize(("layout", "peg", "want"), [
    ("space-ffn-time-ffn", "block", "peg space ffn time ffn peg space ffn time ffn"),
    ("space-ffn-time-ffn", "layer", "peg space ffn peg time ffn peg space ffn peg time ffn"),
    ("space-then-time", "block", "peg space ffn space ffn peg time ffn time ffn"),
    ("space-then-time", "layer", "peg space ffn peg space ffn peg time ffn peg time ffn"),
    ("space-time-ffn", "layer", "peg space peg time ffn peg space peg time ffn"),
])
def test_layout_and_peg_set_the_order_of_sublayers(layout, peg, want):
    st = STTransformer(tiny_st(depth=2, layout=layout, peg=peg), (2, 2))
    assert units(st) == want.split()
    assert sum(isinstance(m, CausalPEG) for m in st.modules()) == want.split().count("peg")


@pytest.mark.parametrize(("layout", "peg"), [("space-then-time", "layer"), ("space-then-time", "block"),
                                             ("space-ffn-time-ffn", "layer")])
def test_switched_encoder_is_causal_in_time(layout, peg):
    torch.manual_seed(5)
    cfg = tiny_st(depth=2, layout=layout, peg=peg, proj_in=False, attention="cosine")
    enc = SpatioTemporalEncoder(cfg, (2, 3), token_dim=cfg.width).eval()
    e = torch.randn(2, 5, 2, 3, cfg.width)
    for k in range(5):
        changed = e.clone()
        changed[:, k] += torch.randn_like(changed[:, k])
        before, after = enc(e), enc(changed)
        torch.testing.assert_close(before[:, :k], after[:, :k], rtol=0, atol=0)
        assert (before[:, k:] - after[:, k:]).abs().amax(dim=(0, 2, 3, 4)).min() > 1e-6


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_reference_encoder_has_no_input_projection_and_cosine_attention():
    cfg = reference_switches(preset("tiny"))
    torch.manual_seed(6)
    enc = SpatioTemporalEncoder(cfg.st, cfg.grid, cfg.token_dim)
    ours = SpatioTemporalEncoder(preset("tiny").st, cfg.grid, cfg.token_dim)
    assert isinstance(enc.proj_in, nn.Identity)
    assert not any(name.startswith("proj_in") for name, _ in enc.named_parameters())
    norms = [m for m in enc.modules() if isinstance(m, (CosineNorm, nn.RMSNorm))]
    assert len(norms) == 4 * cfg.st.depth and all(isinstance(m, CosineNorm) for m in norms)  # q and k of each
    # the same attentions and FFNs; no input projection; a PEG per attention (2 per depth) for 1 per block
    d, w, peg = cfg.token_dim, cfg.st.width, count(CausalPEG(cfg.st.width, cfg.grid))
    assert count(enc) == count(ours) - (d * w + w) + cfg.st.depth * peg
    with pytest.raises(ValueError, match=r"st\.proj_in = False is not allowed: expected true when width \(16\)"):
        SpatioTemporalEncoder(tiny_st(width=16, proj_in=False), (2, 2), token_dim=32)


def test_attention_dropout_off_keeps_dropout_to_the_ffns():
    torch.manual_seed(7)
    x = torch.randn(2, 3, 4, 32)
    for attention_dropout in (False, True):
        block = STBlock(tiny_st(dropout=0.5, attention_dropout=attention_dropout), (2, 2)).train()
        for sublayer, kind in zip(block.sublayers, ("space", "ffn", "time", "ffn"), strict=True):
            same = torch.equal(sublayer(x), sublayer(x))
            assert same == (kind != "ffn" and not attention_dropout), (kind, attention_dropout)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("attention", "sine", "st.attention = 'sine' is not allowed: expected one of 'dot', 'cosine'"),
    ("peg", "frame", "st.peg = 'frame' is not allowed: expected one of 'block', 'layer'"),
    ("proj_in", 0, "st.proj_in = 0 is not allowed: expected true or false"),
    ("attention_dropout", "no", "st.attention_dropout = 'no' is not allowed: expected true or false"),
])
def test_switch_errors_name_the_key(field, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        tiny_st(**{field: value}).validate("st")
