"""Fusion decoder: (ŝ_{t+1}, e_0, c^mem_t) -> ê_{t+1}, each frame decoded on its own.

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
paper's decoder. Paper shape (W 768, 3 blocks, 8 x 32 heads, GEGLU hidden 2048):
21,752,712 parameters; with the structure and content encoders (residual MLPs,
2 blocks of hidden 768) and the memory, 27,765,928 (reference 27,769,448, -0.01%).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from einops import rearrange
from torch import Tensor, nn

from dila_core.attention import space_attention
from dila_core.config import check_choice, check_float, check_ints, require
from dila_core.layers import GEGLU, SelfBranch, Sublayer

FUSIONS = ("sequential", "parallel")
SKIPS = ("none", "first_frame")


@dataclass(frozen=True)
class DecoderConfig:
    """width, depth (blocks), heads x head_dim, ffn_hidden (GEGLU), bias_hidden (position-bias MLP),
    dropout, how the cross-attentions combine (fusion), and whether the output is a residual on the
    first-frame tokens (skip)."""

    width: int
    depth: int
    heads: int
    head_dim: int
    ffn_hidden: int
    bias_hidden: int
    dropout: float
    fusion: Literal["sequential", "parallel"]
    skip: Literal["none", "first_frame"] = "none"

    def validate(self, where: str) -> None:
        check_ints(self, where, "width depth heads head_dim ffn_hidden bias_hidden")
        check_float(self, where, "dropout", 0.0, 1.0, high_open=True)
        check_choice(self, where, "fusion", FUSIONS)
        check_choice(self, where, "skip", SKIPS)
        require(self.head_dim % 2 == 0, where, "head_dim", self.head_dim, "an even integer")


class CrossAttention(nn.Module):
    """Branch output (no residual) of x (B, T, N, W) attending to a context (B, T, N, C)."""

    def __init__(self, cfg: DecoderConfig, grid: tuple[int, int], context_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(cfg.width)
        self.context_norm = nn.LayerNorm(context_dim)
        self.attention = space_attention(cfg.width, cfg.heads, cfg.head_dim, grid, cfg.bias_hidden,
                                         context_dim=context_dim, dropout=cfg.dropout)

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
        attention = space_attention(W, cfg.heads, cfg.head_dim, grid, cfg.bias_hidden, dropout=cfg.dropout)
        self.self_attention = Sublayer(W, SelfBranch(attention))
        combine = {"sequential": Sequential, "parallel": Parallel}[cfg.fusion]
        self.cross = combine([CrossAttention(cfg, grid, dim) for dim in context_dims])
        self.ffn = Sublayer(W, GEGLU(W, cfg.ffn_hidden, cfg.dropout))

    def forward(self, x: Tensor, contexts: list[Tensor]) -> Tensor:
        return self.ffn(self.cross(self.self_attention(x), contexts))


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
        W = cfg.width
        self.lift = nn.Sequential(nn.Linear(d_s, W), nn.GELU(), nn.Linear(W, W))
        self.blocks = nn.ModuleList(FusionBlock(cfg, grid, context_dims) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(W)
        self.proj_out = nn.Linear(W, token_dim)
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
