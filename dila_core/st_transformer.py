"""Spatio-temporal Transformer over a (T, h, w) token grid, causal in time.

A block is: causal depthwise-conv position generator, then a sequence of pre-norm
residual sublayers given by `layout`:
- ``space-ffn-time-ffn``: `depth` interleaved blocks of [spatial attention + FFN, temporal
  attention + FFN] for the paper's "4 spatial + 4 temporal layers";
- ``space-time-ffn``: one FFN per block (the FDM's lighter layout);
- ``space-then-time`` (the reference code's order): two blocks, `depth` layers of [spatial
  attention + FFN], then `depth` layers of [temporal attention + FFN].
`peg` = "layer" puts a position generator before every attention sublayer instead (the
reference's: one per layer), `proj_in` = False drops the encoder's input projection (the
reference's; then width must equal the token width) and `attention` = "cosine" selects the
reference's cosine-similarity attention (attention.py). `attention_dropout` = False keeps
`dropout` to the FFNs (where the reference documents it).
Spatial attention uses the continuous relative position bias; temporal attention
is causal with rotary embeddings; both are QK-normalised. With `cond_dim > 0` every
sublayer and the final norm are AdaLN-zero conditioned on a per-frame vector.

Nothing at frame t depends on frames > t (causal attention, causal position conv,
per-frame conditioning), which tests check.

Paper shape: proj_in 768 -> 768; 4 blocks of [spatial attention + FFN, temporal
attention + FFN]; attention 8 heads x 64 (inner 512; q, k, v without bias, output
with bias); GEGLU hidden 2048 (2/3 x 4 x 768, the usual size of a gated FFN of
mult 4); position-bias MLP hidden 512: 51,103,008 parameters (reference 51,129,864, -0.05%).
With the reference's switches (presets.reference_switches): 50,598,432 (-1.04%). Less the
biases of the attention outputs and FFNs (-45,056), and with one position-bias MLP
2 -> 768 -> 768 -> 8 shared by the spatial layers (599,048) in place of our per-attention ones
(4 x 5,640), these layers give the reference's count exactly (tests/dila_core/test_presets.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from einops import rearrange
from torch import Tensor, nn

from dila_core.attention import SIMILARITIES, space_attention, time_attention
from dila_core.config import check_bool, check_choice, check_float, check_ints, require
from dila_core.layers import GEGLU, CausalPEG, SelfBranch, Sublayer, make_norm

LAYOUTS = ("space-ffn-time-ffn", "space-time-ffn", "space-then-time")
PEGS = ("block", "layer")
ATTENTIONS = ("space", "time")  # the sublayer kinds that attend (and get a PEG with peg = "layer")


@dataclass(frozen=True)
class STConfig:
    """width: token width; depth: number of blocks ("space-then-time": of layers of each kind);
    heads x head_dim: attention inner size; ffn_hidden: GEGLU hidden size; bias_hidden: hidden size
    of the relative-position-bias MLP; the switches of the module docstring (defaults: ours)."""

    width: int
    depth: int
    heads: int
    head_dim: int
    ffn_hidden: int
    bias_hidden: int
    dropout: float
    layout: Literal["space-ffn-time-ffn", "space-time-ffn", "space-then-time"]
    proj_in: bool = True
    attention: Literal["dot", "cosine"] = "dot"
    peg: Literal["block", "layer"] = "block"
    attention_dropout: bool = True

    def validate(self, where: str) -> None:
        check_ints(self, where, "width depth heads head_dim ffn_hidden bias_hidden")
        require(self.head_dim % 2 == 0, where, "head_dim", self.head_dim, "an even integer (rotary embeddings)")
        check_float(self, where, "dropout", 0.0, 1.0, high_open=True)
        check_choice(self, where, "layout", LAYOUTS)
        check_choice(self, where, "attention", SIMILARITIES)
        check_choice(self, where, "peg", PEGS)
        check_bool(self, where, "proj_in")
        check_bool(self, where, "attention_dropout")

    def check_input(self, d_in: int, where: str) -> None:
        """Without an input projection the tokens must already have the model's width."""
        require(self.proj_in or self.width == d_in, where, "proj_in", self.proj_in,
                f"true when width ({self.width}) differs from the input width ({d_in})")

    @property
    def attention_drop(self) -> float:
        return self.dropout if self.attention_dropout else 0.0


def block_kinds(cfg: STConfig) -> list[tuple[str, ...]]:
    """The sublayer kinds of each block, in order."""
    if cfg.layout == "space-then-time":
        return [("space", "ffn") * cfg.depth, ("time", "ffn") * cfg.depth]
    return [tuple(cfg.layout.split("-"))] * cfg.depth


class STBlock(nn.Module):
    """One spatio-temporal block on x (B, T, N + extra, W), optionally conditioned on cond (B, T, C);
    its sublayers are `kinds` (default: the layout's)."""

    def __init__(self, cfg: STConfig, grid: tuple[int, int], extra: int = 0, cond_dim: int = 0,
                 kinds: tuple[str, ...] | None = None):
        super().__init__()
        W, H, d, sim, drop = cfg.width, cfg.heads, cfg.head_dim, cfg.attention, cfg.attention_drop
        branches = {
            "space": lambda: SelfBranch(space_attention(W, H, d, grid, cfg.bias_hidden, extra=extra,
                                                        dropout=drop, similarity=sim)),
            "time": lambda: SelfBranch(time_attention(W, H, d, dropout=drop, similarity=sim)),
            "ffn": lambda: GEGLU(W, cfg.ffn_hidden, cfg.dropout),
        }
        kinds = kinds or tuple(cfg.layout.split("-"))
        per_layer = cfg.peg == "layer"
        self.peg = nn.Identity() if per_layer else CausalPEG(W, grid)
        self.layer_pegs = nn.ModuleList(CausalPEG(W, grid) if per_layer and kind in ATTENTIONS else nn.Identity()
                                        for kind in kinds)
        self.sublayers = nn.ModuleList(Sublayer(W, branches[kind](), cond_dim) for kind in kinds)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        x = self.peg(x)
        for peg, sublayer in zip(self.layer_pegs, self.sublayers, strict=True):
            x = sublayer(peg(x), cond)
        return x


class STTransformer(nn.Module):
    """A stack of STBlocks and a final norm: (B, T, N + extra, W) -> same shape."""

    def __init__(self, cfg: STConfig, grid: tuple[int, int], extra: int = 0, cond_dim: int = 0):
        super().__init__()
        self.blocks = nn.ModuleList(STBlock(cfg, grid, extra, cond_dim, kinds) for kinds in block_kinds(cfg))
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
        cfg.check_input(token_dim, "st")
        self.proj_in = nn.Linear(token_dim, cfg.width) if cfg.proj_in else nn.Identity()
        self.st = STTransformer(cfg, grid)

    def forward(self, e: Tensor) -> Tensor:
        h = e.shape[2]
        x = rearrange(self.proj_in(e), "b t h w d -> b t (h w) d")                 # (B, T, N, W)
        return rearrange(self.st(x), "b t (h w) d -> b t h w d", h=h)
