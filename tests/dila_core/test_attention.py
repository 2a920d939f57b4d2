import math

import pytest
import torch

from dila_core.attention import (
    COSINE_SCALE,
    Attention,
    CosineNorm,
    NoPosition,
    Rotary,
    SpatialBias,
    rotate,
    space_attention,
    time_attention,
)

# Axes: B batch, T time, N tokens per frame, D width, H heads, d head size.


def rms_norm(a, weight):
    return a / a.square().mean(-1, keepdim=True).add(torch.finfo(a.dtype).eps).sqrt() * weight


def reference_attention(attn: Attention, x, context, bias=None, causal=False):
    """Softmax attention written out by hand from the module's weights."""
    H = attn.heads
    q = attn.to_q(x).unflatten(-1, (H, -1)).transpose(1, 2)                   # (n, H, L, d)
    k, v = attn.to_kv(context).chunk(2, dim=-1)
    k, v = (a.unflatten(-1, (H, -1)).transpose(1, 2) for a in (k, v))        # (n, H, S, d)
    q, k = rms_norm(q, attn.q_norm.weight), rms_norm(k, attn.k_norm.weight)
    if isinstance(attn.position, Rotary):
        q, k, _ = attn.position(q, k)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])                 # (n, H, L, S)
    scores = scores + (0 if bias is None else bias)
    if causal:
        L = scores.shape[-1]
        scores = scores.masked_fill(torch.ones(L, L, dtype=torch.bool).triu(1), float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(1, 2).flatten(2)                 # (n, L, H*d)
    return attn.to_out(out)


def test_spatial_attention_matches_hand_written_softmax_with_bias():
    torch.manual_seed(0)
    pos = SpatialBias((3, 4), heads=2, hidden=8)
    attn = Attention(16, 2, 8, pos, context_dim=12).eval()
    x, ctx = torch.randn(5, 12, 16), torch.randn(5, 12, 12)
    _, _, bias = pos(x, x)
    torch.testing.assert_close(attn(x, ctx), reference_attention(attn, x, ctx, bias), rtol=1e-5, atol=1e-5)


def test_causal_rotary_attention_matches_hand_written_softmax():
    torch.manual_seed(1)
    attn = Attention(16, 2, 8, Rotary(8), causal=True).eval()
    x = torch.randn(3, 7, 16)
    torch.testing.assert_close(attn(x, x), reference_attention(attn, x, x, causal=True), rtol=1e-5, atol=1e-5)


def test_spatial_bias_depends_only_on_offset_and_is_zero_for_extra_tokens():
    torch.manual_seed(2)
    h, w = 3, 4
    pos = SpatialBias((h, w), heads=3, hidden=8, extra=1)
    _, _, bias = pos(torch.zeros(1), torch.zeros(1))
    assert bias.shape == (3, h * w + 1, h * w + 1)
    assert torch.all(bias[:, -1] == 0) and torch.all(bias[:, :, -1] == 0)
    coords = [(i // w, i % w) for i in range(h * w)]
    by_offset = {}
    for i, (yi, xi) in enumerate(coords):
        for j, (yj, xj) in enumerate(coords):
            by_offset.setdefault((yi - yj, xi - xj), []).append(bias[:, i, j])
    assert len(by_offset) == (2 * h - 1) * (2 * w - 1)
    for values in by_offset.values():
        for v in values[1:]:
            torch.testing.assert_close(v, values[0])
    distinct = torch.stack([v[0] for v in by_offset.values()])
    assert distinct.std(0).min() > 0  # different offsets get different biases


def test_spatial_bias_starts_local_and_its_slopes_learn():
    torch.manual_seed(6)
    pos = SpatialBias((5, 5), heads=4, hidden=8)
    _, _, bias = pos(torch.zeros(1), torch.zeros(1))
    centre, corner = 12, 0                        # token (2, 2) and token (0, 0), 2*sqrt(2) apart
    assert torch.all(bias[:, centre, centre] > bias[:, centre, corner])
    torch.testing.assert_close(pos.slopes.detach(), torch.tensor([4.0, 2.0, 1.0, 0.5]))
    bias.sum().backward()
    assert pos.slopes.grad.abs().min() > 0


def test_rotary_scores_depend_only_on_relative_time_and_keep_norms():
    rot = Rotary(8)
    q0, k0 = torch.randn(8), torch.randn(8)
    q, k, mask = rot(q0.expand(6, 8), k0.expand(6, 8))
    assert mask is None
    torch.testing.assert_close(q.norm(dim=-1), q0.norm().expand(6))
    scores = q @ k.T                                                          # (6, 6)
    for offset in range(-5, 6):
        diag = torch.diagonal(scores, offset)
        torch.testing.assert_close(diag, diag[:1].expand_as(diag), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(torch.diagonal(scores, 0)[0], torch.diagonal(scores, 1)[0])


def test_rotate_by_zero_is_identity_and_by_pi_negates():
    x = torch.randn(4, 6)
    zeros = torch.zeros(3)
    torch.testing.assert_close(rotate(x, zeros.cos(), zeros.sin()), x)
    pi = torch.full((3,), math.pi)
    torch.testing.assert_close(rotate(x, pi.cos(), pi.sin()), -x, atol=1e-6, rtol=0)


def test_qk_norm_makes_attention_invariant_to_query_and_key_scale():
    torch.manual_seed(3)
    attn = Attention(16, 2, 8, Rotary(8)).eval()
    x = torch.randn(2, 5, 16)
    before = attn(x, x)
    with torch.no_grad():
        attn.to_q.weight.mul_(7.0)
        attn.to_kv.weight[:16].mul_(0.1)  # the key half of the fused projection
    torch.testing.assert_close(attn(x, x), before, rtol=1e-4, atol=1e-5)


def test_time_attention_is_causal_and_space_attention_keeps_frames_apart():
    torch.manual_seed(4)
    B, T, N, D = 2, 5, 6, 16
    time_attn = time_attention(D, 2, 8).eval()
    space_attn = space_attention(D, 2, 8, (2, 3), 8).eval()
    x = torch.randn(B, T, N, D)
    y = x.clone()
    y[:, 3] += torch.randn_like(y[:, 3])
    t_x, t_y = time_attn(x, x), time_attn(y, y)
    torch.testing.assert_close(t_x[:, :3], t_y[:, :3], rtol=0, atol=0)
    assert (t_x[:, 3:] - t_y[:, 3:]).abs().amax(dim=(0, 2, 3)).min() > 1e-4
    s_x, s_y = space_attn(x, x), space_attn(y, y)
    unchanged = [0, 1, 2, 4]
    torch.testing.assert_close(s_x[:, unchanged], s_y[:, unchanged], rtol=0, atol=0)
    assert (s_x[:, 3] - s_y[:, 3]).abs().max() > 1e-4
    assert s_x.shape == t_x.shape == (B, T, N, D)


@pytest.mark.parametrize("grid", [(1, 1), (1, 5), (4, 4)])
def test_spatial_bias_builds_on_any_grid(grid):
    pos = SpatialBias(grid, heads=2, hidden=4)
    _, _, bias = pos(torch.zeros(1), torch.zeros(1))
    n = grid[0] * grid[1]
    assert bias.shape == (2, n, n) and torch.isfinite(bias).all()


def test_attention_dropout_only_in_training():
    torch.manual_seed(5)
    attn = Attention(16, 2, 8, Rotary(8), dropout=0.5)
    x = torch.randn(2, 5, 16)
    attn.eval()
    torch.testing.assert_close(attn(x, x), attn(x, x))
    attn.train()
    assert not torch.allclose(attn(x, x), attn(x, x))


def test_cosine_logits_are_bounded_by_the_scale_and_reach_it_for_aligned_keys():
    torch.manual_seed(7)
    attn = Attention(16, 2, 8, NoPosition(), similarity="cosine").eval()
    assert isinstance(attn.q_norm, CosineNorm) and attn.scale == COSINE_SCALE
    x = 100 * torch.randn(3, 5, 16)                                          # any input scale
    q, k, v, _ = attn.project(x, x)
    logits = attn.scale * q @ k.transpose(-1, -2)                             # (n, H, L, S)
    assert logits.abs().max() <= COSINE_SCALE * (1 + 1e-5)
    with torch.no_grad():
        attn.to_kv.weight[:16].copy_(attn.to_q.weight)                        # keys = queries
    q, k, v, _ = attn.project(x, x)
    aligned = torch.diagonal(attn.scale * q @ k.transpose(-1, -2), dim1=-2, dim2=-1)
    torch.testing.assert_close(aligned, torch.full_like(aligned, COSINE_SCALE))  # dot: sqrt(8) = 2.8
    want = attn.to_out(((attn.scale * q @ k.transpose(-1, -2)).softmax(-1) @ v).transpose(1, 2).flatten(2))
    torch.testing.assert_close(attn(x, x), want, rtol=1e-5, atol=1e-5)
    with torch.no_grad():                                                     # the learned gains set the range
        attn.q_norm.weight.fill_(2.0)
        attn.k_norm.weight.fill_(3.0)
    q, k, _, _ = attn.project(x, x)
    assert (attn.scale * q @ k.transpose(-1, -2)).abs().max() > 6 * COSINE_SCALE * 0.99


def test_null_slots_let_a_cross_attention_attend_to_nothing():
    """Every real key points away from the queries and the null key toward them: the output is the
    null value. Without null slots the same attention can only average the real values."""
    torch.manual_seed(8)
    u = torch.nn.functional.normalize(torch.randn(8), dim=0)
    x = u.expand(2, 3, 8)                                                     # (n, L, dim)
    context = u.expand(2, 5, 8) + 0.01 * torch.randn(2, 5, 8)                 # (n, S, dim)
    outputs = {}
    for slots in (0, 1):
        attn = Attention(8, 1, 8, NoPosition(), null_kv=slots).eval()
        with torch.no_grad():
            attn.to_q.weight.copy_(torch.eye(8))
            attn.to_kv.weight.copy_(torch.cat([-torch.eye(8), torch.eye(8)]))  # keys ≈ -u, values ≈ u
            attn.to_out.weight.copy_(torch.eye(8))
            attn.to_out.bias.zero_()
            attn.k_norm.weight.fill_(10.0)                                    # a sharp softmax
            if slots:
                attn.null.kv[0, 0, 0].copy_(u)                                # null key u
                attn.null.kv[1, 0, 0].copy_(-3 * u)                           # null value -3u
        outputs[slots] = attn(x, context)
        assert sum(p.numel() for p in attn.null.parameters()) == 2 * slots * 8
    torch.testing.assert_close(outputs[1], (-3 * u).expand(2, 3, 8), rtol=0, atol=1e-4)
    torch.testing.assert_close(outputs[0], context.mean(1, keepdim=True).expand(2, 3, 8), rtol=0, atol=1e-4)


def test_null_slots_get_zero_position_bias_and_need_a_non_causal_attention():
    torch.manual_seed(9)
    attn = space_attention(16, 2, 8, (2, 3), 8, null_kv=2).eval()
    x = torch.randn(1, 2, 6, 16)
    q, k, v, bias = attn.attention.project(x[0], x[0])
    assert k.shape == v.shape == (2, 2, 8, 8) and bias.shape == (2, 6, 8)
    assert torch.all(bias[..., :2] == 0) and bias[..., 2:].abs().max() > 0
    assert attn(x, x).shape == x.shape
    with pytest.raises(ValueError, match="null slots need a non-causal attention"):
        Attention(16, 2, 8, Rotary(8), causal=True, null_kv=1)
