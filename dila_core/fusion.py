"""Fusion decoder: (ŝ_{t+1}, e_0, c^mem_t) -> ê_{t+1}, each frame decoded on its own by default.

ŝ is lifted per token to the decoder width by an MLP (d_s -> W -> W). Each block is
spatial self-attention, cross-attention to every context (first-frame tokens e_0,
then the content memory c^mem when the model has one), and a GEGLU FFN, all
pre-LN residual, all spatial attentions with the relative position bias (queries and
keys lie on the same grid). `fusion` chooses how the cross-attentions combine:
``sequential`` (paper: x += CA_e0(x); x += CA_mem(x)) or ``parallel`` (reference
code: x += CA_e0(x) + CA_mem(x)). Both have the same parameters, so a checkpoint
loads in either mode. `skip` = "first_frame" adds the first-frame tokens to the output
(ê = e_0 + Dec(…), output projection zero-initialised, so an untrained decoder repeats
e_0): not in the paper, used by the `small` CPU preset (see presets.py); "none" is the
paper's decoder.

Switches for the reference code's decoder (defaults: ours): `position` = "causal_peg" puts
a causal depthwise 3-D conv position generator at the start of every block, so frame t is
decoded from ŝ_{t-2D..t} (D blocks; `history` frames of the past), not from ŝ_t alone;
`null_kv` learned null key/value slots in each cross-attention (attention.py); `cross_bias`
= False drops the relative position bias from the cross-attentions; `output` = "norm" makes
the output the final LayerNorm itself, without a projection (then width = token_dim);
`attention_dropout` = False keeps `dropout` to the FFNs.

Paper shape (W 768, 3 blocks, 8 x 32 heads, GEGLU hidden 2048): 21,752,712 parameters; with
the structure and content encoders (residual MLPs, 2 blocks of hidden 768) and the memory,
27,765,928 (reference 27,769,448, -0.01%). With the reference's switches the decoder has
21,198,936 and the group 27,212,152 (-2.0%): mostly the position-bias MLP the reference shares
across its self-attentions (599,048; ours are 5,640 each), see tests/dila_core/test_presets.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from einops import rearrange
from torch import Tensor, nn

from dila_core.attention import space_attention
from dila_core.config import check_bool, check_choice, check_float, check_int, check_ints, require
from dila_core.layers import GEGLU, CausalPEG, SelfBranch, Sublayer

FUSIONS = ("sequential", "parallel")
SKIPS = ("none", "first_frame")
POSITIONS = ("none", "causal_peg")
OUTPUTS = ("projection", "norm")


@dataclass(frozen=True)
class DecoderConfig:
    """width, depth (blocks), heads x head_dim, ffn_hidden (GEGLU), bias_hidden (position-bias MLP),
    dropout, how the cross-attentions combine (fusion), whether the output is a residual on the
    first-frame tokens (skip), and the reference's switches (module docstring)."""

    width: int
    depth: int
    heads: int
    head_dim: int
    ffn_hidden: int
    bias_hidden: int
    dropout: float
    fusion: Literal["sequential", "parallel"]
    skip: Literal["none", "first_frame"] = "none"
    position: Literal["none", "causal_peg"] = "none"
    null_kv: int = 0
    cross_bias: bool = True
    output: Literal["projection", "norm"] = "projection"
    attention_dropout: bool = True

    def validate(self, where: str) -> None:
        check_ints(self, where, "width depth heads head_dim ffn_hidden bias_hidden")
        check_float(self, where, "dropout", 0.0, 1.0, high_open=True)
        check_choice(self, where, "fusion", FUSIONS)
        check_choice(self, where, "skip", SKIPS)
        require(self.head_dim % 2 == 0, where, "head_dim", self.head_dim, "an even integer")
        check_choice(self, where, "position", POSITIONS)
        check_int(self, where, "null_kv", low=0)
        check_bool(self, where, "cross_bias")
        check_bool(self, where, "attention_dropout")
        check_choice(self, where, "output", OUTPUTS)
        require(self.output == "projection" or self.skip == "none", where, "output", self.output,
                "'projection' with skip = 'first_frame' (the skip starts from a zero-initialised projection)")

    def check_output(self, token_dim: int, where: str) -> None:
        """The output is the final norm itself only when the decoder works at the token width."""
        require(self.output == "projection" or self.width == token_dim, where, "output", self.output,
                f"'projection' when width ({self.width}) differs from token_dim ({token_dim})")

    @property
    def attention_drop(self) -> float:
        return self.dropout if self.attention_dropout else 0.0


class CrossAttention(nn.Module):
    """Branch output (no residual) of x (B, T, N, W) attending to a context (B, T, N, C)."""

    def __init__(self, cfg: DecoderConfig, grid: tuple[int, int], context_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(cfg.width)
        self.context_norm = nn.LayerNorm(context_dim)
        self.attention = space_attention(cfg.width, cfg.heads, cfg.head_dim, grid, cfg.bias_hidden,
                                         context_dim=context_dim, dropout=cfg.attention_drop,
                                         null_kv=cfg.null_kv, position_bias=cfg.cross_bias)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        return self.attention(self.norm(x), self.context_norm(context))


class Sequential(nn.Module):
    """Cross-attentions applied one after the other (paper)."""

    def __init__(self, cross: list[CrossAttention]):
        super().__init__()
        self.cross = nn.ModuleList(cross)

    def forward(self, x: Tensor, contexts: list[Tensor]) -> Tensor:
        for attend, context in zip(self.cross, contexts, strict=True):
            x = x + attend(x, context)
        return x


class Parallel(Sequential):
    """Cross-attentions from the same input, summed (reference code)."""

    def forward(self, x: Tensor, contexts: list[Tensor]) -> Tensor:
        return x + sum(attend(x, context) for attend, context in zip(self.cross, contexts, strict=True))


class FusionBlock(nn.Module):
    def __init__(self, cfg: DecoderConfig, grid: tuple[int, int], context_dims: list[int]):
        super().__init__()
        W = cfg.width
        self.position = CausalPEG(W, grid) if cfg.position == "causal_peg" else nn.Identity()
        attention = space_attention(W, cfg.heads, cfg.head_dim, grid, cfg.bias_hidden, dropout=cfg.attention_drop)
        self.self_attention = Sublayer(W, SelfBranch(attention))
        combine = {"sequential": Sequential, "parallel": Parallel}[cfg.fusion]
        self.cross = combine([CrossAttention(cfg, grid, dim) for dim in context_dims])
        self.ffn = Sublayer(W, GEGLU(W, cfg.ffn_hidden, cfg.dropout))

    def forward(self, x: Tensor, contexts: list[Tensor]) -> Tensor:                # x (B, T, N, W)
        return self.ffn(self.cross(self.self_attention(self.position(x)), contexts))


class NoSkip(nn.Module):
    def forward(self, out: Tensor, first: Tensor) -> Tensor:
        return out


class FirstFrameSkip(nn.Module):
    def forward(self, out: Tensor, first: Tensor) -> Tensor:
        return first + out


class FusionDecoder(nn.Module):
    """ŝ (B, T, h, w, d_s) and contexts [(B, T, h, w, C_i)] -> ê (B, T, h, w, token_dim)."""

    def __init__(self, cfg: DecoderConfig, grid: tuple[int, int], d_s: int, token_dim: int,
                 context_dims: list[int]):
        super().__init__()
        cfg.check_output(token_dim, "decoder")
        W = cfg.width
        self.history = 2 * cfg.depth if cfg.position == "causal_peg" else 0  # past frames each frame sees
        self.lift = nn.Sequential(nn.Linear(d_s, W), nn.GELU(), nn.Linear(W, W))
        self.blocks = nn.ModuleList(FusionBlock(cfg, grid, context_dims) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(W)
        self.proj_out = nn.Linear(W, token_dim) if cfg.output == "projection" else nn.Identity()
        self.skip = {"none": NoSkip, "first_frame": FirstFrameSkip}[cfg.skip]()
        if cfg.skip == "first_frame":
            nn.init.zeros_(self.proj_out.weight)
            nn.init.zeros_(self.proj_out.bias)

    def forward(self, s: Tensor, contexts: list[Tensor]) -> Tensor:
        """contexts[0] is the first-frame tokens (what `skip` adds to the output)."""
        h = s.shape[2]
        x, *contexts = (rearrange(a, "b t h w d -> b t (h w) d") for a in (self.lift(s), *contexts))
        for block in self.blocks:
            x = block(x, contexts)
        out = self.skip(self.proj_out(self.norm(x)), contexts[0])                   # (B, T, N, D)
        return rearrange(out, "b t (h w) d -> b t h w d", h=h)
