"""The one attention implementation, its position schemes, and space/time adapters.

`Attention` is multi-head attention with QK-normalisation (RMSNorm of queries
and keys per head) and scaled-dot-product kernels. Where positions come from is
a swappable module with one signature, ``position(q, k) -> (q, k, bias)``:

- `SpatialBias`: a continuous relative position bias over an (h, w) token grid
  (log-spaced offsets -> small MLP -> one bias per head, as in Swin-V2) minus a
  learnable per-head slope times the Euclidean offset length (an ALiBi-style
  locality prior; slopes 4, 2, 1, ... at initialisation). Without the prior, a
  decoder learning to read e_0 or c^mem at the same grid position through
  cross-attention sat on the mean-prediction plateau for 100+ steps; with it, it
  starts learning within ~50 steps (8x8 grid, lr 1e-3). Tokens appended after
  the grid (the FDM's z token) get zero bias.
- `Rotary`: 1-D rotary embeddings over time; used with `causal=True`.
- `NoPosition`: no position information (a set of keys, or a cross-attention without bias).

`similarity` chooses how queries meet keys: ``dot`` (RMSNorm of q and k per head, logits
q·k / sqrt(head_dim)) or ``cosine`` (the reference ST-Transformer's cosine-similarity
attention: q and k scaled to unit length, times learned per-channel gains, logits
COSINE_SCALE · q̂·k̂, so every logit lies within COSINE_SCALE · max|g_q| · max|g_k| whatever
the inputs; the gains are inferred from the reference's parameter count, which they match
exactly, and the temperature 8 is an assumption). The two differ in the temperature,
sqrt(head_dim) against a fixed 8: at head_dim 64 they agree up to the normalisers' epsilon.
`null_kv` > 0 prepends that many learned key/value slots to every context (the reference's
decoder: 2), so a query can put its weight on "nothing" rather than on the least bad real key.

`SpaceAttention` and `TimeAttention` are thin einops adapters that fold a
(B, T, N, D) token tensor into attention over the N tokens of each frame or over
the T frames of each token position.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


class SpatialBias(nn.Module):
    """Relative position bias (continuous MLP + per-head distance slope) for an (h, w) grid
    plus `extra` trailing tokens."""

    def __init__(self, grid: tuple[int, int], heads: int, hidden: int, extra: int = 0):
        super().__init__()
        h, w = grid
        self.extra = extra
        dy, dx = torch.meshgrid(torch.arange(1 - h, h), torch.arange(1 - w, w), indexing="ij")
        offsets = torch.stack([dy / max(h - 1, 1), dx / max(w - 1, 1)], dim=-1) * 8  # (2h-1, 2w-1, 2)
        table = torch.sign(offsets) * torch.log2(offsets.abs() + 1) / math.log2(8)
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        ys, xs = ys.flatten(), xs.flatten()                                         # (N,)
        index = (ys[:, None] - ys[None] + h - 1) * (2 * w - 1) + (xs[:, None] - xs[None] + w - 1)
        distance = ((ys[:, None] - ys[None]) ** 2 + (xs[:, None] - xs[None]) ** 2).float().sqrt()
        self.register_buffer("table", table.reshape(-1, 2), persistent=False)      # (R, 2)
        self.register_buffer("index", index, persistent=False)                     # (N, N)
        self.register_buffer("distance", distance, persistent=False)               # (N, N)
        self.mlp = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, heads, bias=False))
        self.slopes = nn.Parameter(4.0 * 2.0 ** -torch.arange(heads, dtype=torch.float32))

    def forward(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        bias = self.mlp(self.table)[self.index].permute(2, 0, 1)                   # (heads, N, N)
        bias = bias - self.slopes[:, None, None] * self.distance
        bias = F.pad(bias, (0, self.extra, 0, self.extra))                         # (heads, N+E, N+E)
        return q, k, bias.to(q.dtype)


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the two halves of the last axis of x by the given angles."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Rotary(nn.Module):
    """1-D rotary embeddings along the sequence axis of (…, L, head_dim) queries and keys."""

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)               # (head_dim/2,)

    def forward(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor, None]:
        t = torch.arange(q.shape[-2], device=q.device, dtype=torch.float32)
        angles = torch.outer(t, self.inv_freq)                                     # (L, head_dim/2)
        cos, sin = angles.cos().to(q.dtype), angles.sin().to(q.dtype)
        return rotate(q, cos, sin), rotate(k, cos, sin), None


class NoPosition(nn.Module):
    """No position information: queries and keys pass unchanged, no bias."""

    def forward(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor, None]:
        return q, k, None


COSINE_SCALE = 8.0  # logit temperature of cosine attention (assumed; sqrt of the reference's head size 64)
SIMILARITIES = ("dot", "cosine")


class CosineNorm(nn.Module):
    """Unit L2 length along the last axis, times a learned per-channel gain (initially 1)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1) * self.weight


class NoNullSlots(nn.Module):
    def forward(self, k: Tensor, v: Tensor, bias: Tensor | None, k_norm: nn.Module):
        return k, v, bias


class NullSlots(nn.Module):
    """Learned key/value slots prepended to every context, with zero position bias; the keys
    go through the attention's key normaliser like the real ones."""

    def __init__(self, heads: int, slots: int, head_dim: int):
        super().__init__()
        self.kv = nn.Parameter(torch.randn(2, heads, slots, head_dim))

    def forward(self, k: Tensor, v: Tensor, bias: Tensor | None, k_norm: nn.Module):
        """k, v (N, H, S, d) -> (N, H, slots + S, d); bias (…, L, S) -> (…, L, slots + S)."""
        null_k, null_v = self.kv.unsqueeze(1).expand(-1, k.shape[0], -1, -1, -1)  # (N, H, slots, d) each
        k, v = torch.cat([k_norm(null_k), k], dim=2), torch.cat([null_v, v], dim=2)
        return k, v, None if bias is None else F.pad(bias, (self.kv.shape[2], 0))


class Attention(nn.Module):
    """Multi-head attention of x (N, L, dim) over context (N, S, context_dim), QK-normalised
    (`similarity` "dot") or cosine (`similarity` "cosine"), with `null_kv` null slots."""

    def __init__(self, dim: int, heads: int, head_dim: int, position: nn.Module, *,
                 context_dim: int | None = None, causal: bool = False, dropout: float = 0.0,
                 similarity: str = "dot", null_kv: int = 0):
        super().__init__()
        if similarity not in SIMILARITIES:
            raise ValueError(f"Attention: similarity {similarity!r} is not one of {SIMILARITIES}")
        if causal and null_kv:
            raise ValueError(f"Attention: null_kv = {null_kv} with causal = True (null slots need a non-causal "
                             "attention: the slots would shift the causal mask)")
        inner = heads * head_dim
        self.heads, self.causal, self.dropout = heads, causal, dropout
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim if context_dim is None else context_dim, 2 * inner, bias=False)
        norm = CosineNorm if similarity == "cosine" else nn.RMSNorm
        self.q_norm = norm(head_dim)
        self.k_norm = norm(head_dim)
        self.scale = COSINE_SCALE if similarity == "cosine" else None  # None: 1 / sqrt(head_dim)
        self.position = position
        self.to_out = nn.Linear(inner, dim)
        self.null = NullSlots(heads, null_kv, head_dim) if null_kv else NoNullSlots()

    def project(self, x: Tensor, context: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """Normalised, positioned q (N, H, L, d), k and v (N, H, S', d) with the null slots, and the
        additive bias (…, L, S'): the logits are scale · q kᵀ + bias."""
        q = rearrange(self.to_q(x), "n l (h d) -> n h l d", h=self.heads)
        k, v = rearrange(self.to_kv(context), "n s (two h d) -> two n h s d", two=2, h=self.heads)
        q, k, bias = self.position(self.q_norm(q), self.k_norm(k))
        k, v, bias = self.null(k, v, bias, self.k_norm)
        return q, k, v, bias

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        q, k, v, bias = self.project(x, context)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=self.causal, scale=self.scale,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.to_out(rearrange(out, "n h l d -> n l (h d)"))                  # (N, L, dim)


class SpaceAttention(nn.Module):
    """Attention among the tokens of each frame: x (B, T, N, D), context (B, T, S, C)."""

    def __init__(self, attention: Attention):
        super().__init__()
        self.attention = attention

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        x_frames, c_frames = (rearrange(a, "b t n d -> (b t) n d") for a in (x, context))
        return rearrange(self.attention(x_frames, c_frames), "(b t) n d -> b t n d", b=x.shape[0])


class TimeAttention(nn.Module):
    """Attention along time at each token position: x (B, T, N, D), context (B, S, N, C)."""

    def __init__(self, attention: Attention):
        super().__init__()
        self.attention = attention

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        x_series, c_series = (rearrange(a, "b t n d -> (b n) t d") for a in (x, context))
        return rearrange(self.attention(x_series, c_series), "(b n) t d -> b t n d", b=x.shape[0])


def space_attention(dim: int, heads: int, head_dim: int, grid: tuple[int, int], bias_hidden: int, *,
                    extra: int = 0, context_dim: int | None = None, dropout: float = 0.0,
                    similarity: str = "dot", null_kv: int = 0, position_bias: bool = True) -> SpaceAttention:
    """Spatial (self or cross) attention on an (h, w) grid, with the relative position bias unless
    `position_bias` is False."""
    position = SpatialBias(grid, heads, bias_hidden, extra) if position_bias else NoPosition()
    return SpaceAttention(Attention(dim, heads, head_dim, position, context_dim=context_dim, dropout=dropout,
                                    similarity=similarity, null_kv=null_kv))


def time_attention(dim: int, heads: int, head_dim: int, dropout: float = 0.0,
                   similarity: str = "dot") -> TimeAttention:
    """Causal temporal self-attention with rotary embeddings."""
    return TimeAttention(Attention(dim, heads, head_dim, Rotary(head_dim), causal=True, dropout=dropout,
                                   similarity=similarity))
