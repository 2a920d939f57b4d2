"""Spatio-temporal Transformer over a (T, h, w) token grid, causal in time.

A block is: causal depthwise-conv position generator, then a sequence of pre-norm
residual sublayers given by `layout`:
- ``space-ffn-time-ffn``: 4 interleaved blocks of [spatial attention + FFN, temporal
  attention + FFN] for the paper's "4 spatial + 4 temporal layers". This is not the
  reference's layout: it runs its 4 spatial layers first, then its 4 temporal layers,
  with no input projection and cosine-similarity attention (README, "Deviations from
  the reference code");
- ``space-time-ffn``: one FFN per block (the FDM's lighter layout).
Spatial attention uses the continuous relative position bias; temporal attention
is causal with rotary embeddings; both are QK-normalised. With `cond_dim > 0` every
sublayer and the final norm are AdaLN-zero conditioned on a per-frame vector.

Nothing at frame t depends on frames > t (causal attention, causal position conv,
per-frame conditioning), which tests check.

Paper shape: proj_in 768 -> 768; 4 blocks of [spatial attention + FFN, temporal
attention + FFN]; attention 8 heads x 64 (inner 512; q, k, v without bias, output
with bias); GEGLU hidden 2048 (2/3 x 4 x 768, the usual size of a gated FFN of
mult 4); position-bias MLP hidden 512: 51,103,008 parameters (reference 51,129,864, -0.05%).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from einops import rearrange
from torch import Tensor, nn

from dila_core.attention import space_attention, time_attention
from dila_core.config import check_choice, check_float, check_ints, require
from dila_core.layers import GEGLU, CausalPEG, SelfBranch, Sublayer, make_norm

LAYOUTS = ("space-ffn-time-ffn", "space-time-ffn")


@dataclass(frozen=True)
class STConfig:
    """width: token width; depth: number of blocks; heads x head_dim: attention inner size;
    ffn_hidden: GEGLU hidden size; bias_hidden: hidden size of the relative-position-bias MLP."""

    width: int
    depth: int
    heads: int
    head_dim: int
    ffn_hidden: int
    bias_hidden: int
    dropout: float
    layout: Literal["space-ffn-time-ffn", "space-time-ffn"]

    def validate(self, where: str) -> None:
        check_ints(self, where, "width depth heads head_dim ffn_hidden bias_hidden")
        require(self.head_dim % 2 == 0, where, "head_dim", self.head_dim, "an even integer (rotary embeddings)")
        check_float(self, where, "dropout", 0.0, 1.0, high_open=True)
        check_choice(self, where, "layout", LAYOUTS)


class STBlock(nn.Module):
    """One spatio-temporal block on x (B, T, N + extra, W), optionally conditioned on cond (B, T, C)."""

    def __init__(self, cfg: STConfig, grid: tuple[int, int], extra: int = 0, cond_dim: int = 0):
        super().__init__()
        W, H, d = cfg.width, cfg.heads, cfg.head_dim
        branches = {
            "space": lambda: SelfBranch(space_attention(W, H, d, grid, cfg.bias_hidden, extra=extra,
                                                        dropout=cfg.dropout)),
            "time": lambda: SelfBranch(time_attention(W, H, d, dropout=cfg.dropout)),
            "ffn": lambda: GEGLU(W, cfg.ffn_hidden, cfg.dropout),
        }
        self.peg = CausalPEG(W, grid)
        self.sublayers = nn.ModuleList(Sublayer(W, branches[kind](), cond_dim) for kind in cfg.layout.split("-"))

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        x = self.peg(x)
        for sublayer in self.sublayers:
            x = sublayer(x, cond)
        return x


class STTransformer(nn.Module):
    """A stack of STBlocks and a final norm: (B, T, N + extra, W) -> same shape."""

    def __init__(self, cfg: STConfig, grid: tuple[int, int], extra: int = 0, cond_dim: int = 0):
        super().__init__()
        self.blocks = nn.ModuleList(STBlock(cfg, grid, extra, cond_dim) for _ in range(cfg.depth))
        self.norm = make_norm(cfg.width, cond_dim)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        for block in self.blocks:
            x = block(x, cond)
        return self.norm(x, cond)


class SpatioTemporalEncoder(nn.Module):
    """The model's ST-Transformer on encoder tokens: e (B, T, h, w, D) -> x (B, T, h, w, W).

    x_t depends on e_0..e_t only. Both the structure and the content encoder read x.
    """

    def __init__(self, cfg: STConfig, grid: tuple[int, int], token_dim: int):
        super().__init__()
        self.proj_in = nn.Linear(token_dim, cfg.width)
        self.st = STTransformer(cfg, grid)

    def forward(self, e: Tensor) -> Tensor:
        h = e.shape[2]
        x = rearrange(self.proj_in(e), "b t h w d -> b t (h w) d")
        return rearrange(self.st(x), "b t (h w) d -> b t h w d", h=h)
