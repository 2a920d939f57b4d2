"""The slot components of FLAM (dila_core/flam.py): encoder, per-slot dynamics, decoder.

Axes: B batch, T frames, N = h*w tokens of a frame, K slots, W slot width, C a block's width.

- `SlotEncoder`: e (B, T, h, w, D) -> slots s (B, T, K, W). Each token is lifted to W, given a
  learned position embedding (so slots can bind to places) and passed through a residual MLP
  (so what a token holds and where it is mix before slots pool them), then `SlotAttention` splits
  each frame into K slots. Frame 0 starts from K learned vectors; frame t starts from frame t-1's
  slots, so slot k tracks the same factor from frame to frame (SAVi's recurrence, without its
  predictor). A causal temporal transformer then mixes each slot's own
  sequence (time attention with rotary positions), so s_t depends on frames <= t only.
- `PerSlot`: one network shared by all slots. Slot k's query is a linear map of
  [s^k_t, its own input] (the IDM: s^k_{t+1}; the FDM: the action z^k_t); blocks of attention
  from the K queries to all K slots of frame t, then a GEGLU FFN. With K = 1 the attention over a
  single key is a linear map of that slot, so it reduces to a per-frame MLP.
- `BroadcastDecoder`: spatial-broadcast decoding. Every slot is broadcast to the h x w grid
  (slot map + position embedding), an MLP gives D token values and one mask logit per slot and
  position, and the masks are softmaxed over slots: ê = Σ_k α_k ⊙ content_k. Chosen over grid
  queries cross-attending to the slots because each slot then explains its own region of the
  frame (a slot's action moves what that slot paints), the masks α are a decoder-side assignment
  to compare with the encoder's, and with K = 1 it is a plain per-position MLP of one vector.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from einops import rearrange
from torch import Tensor, nn

from dila_core.attention import Attention, NoPosition, time_attention
from dila_core.config import check_choice, check_ints, require
from dila_core.layers import GEGLU, ResidualMLP, ResidualMLPConfig, SelfBranch, Sublayer

DECODER_SKIPS = ("none", "previous_frame")


@dataclass(frozen=True)
class SlotAttentionConfig:
    """width W of the lifted tokens and of the slots; iters: refinements per frame; hidden: the
    slot MLP's hidden size."""

    width: int
    iters: int
    hidden: int

    def validate(self, where: str) -> None:
        check_ints(self, where, "width iters hidden")


@dataclass(frozen=True)
class TemporalConfig:
    """depth blocks of [causal time attention (heads x head_dim, rotary) + GEGLU FFN (ffn_hidden)]."""

    depth: int
    heads: int
    head_dim: int
    ffn_hidden: int

    def validate(self, where: str) -> None:
        check_ints(self, where, "heads head_dim ffn_hidden")
        check_ints(self, where, "depth", low=0)
        require(self.head_dim % 2 == 0, where, "head_dim", self.head_dim, "an even integer (rotary embeddings)")


@dataclass(frozen=True)
class PerSlotConfig:
    """width C, depth blocks of [attention over the slots (heads x head_dim) + GEGLU FFN (ffn_hidden)]."""

    width: int
    depth: int
    heads: int
    head_dim: int
    ffn_hidden: int

    def validate(self, where: str) -> None:
        check_ints(self, where, "width heads head_dim ffn_hidden")
        check_ints(self, where, "depth", low=0)


@dataclass(frozen=True)
class BroadcastDecoderConfig:
    """hidden size and depth (hidden layers) of the per-slot, per-position MLP; skip =
    "previous_frame" adds e_t to the decoded ê_{t+1} (the output layer is zero-initialised, so an untrained
    decoder then repeats the last frame); "none" decodes the frame from the slots alone."""

    hidden: int
    depth: int
    skip: Literal["none", "previous_frame"] = "none"

    def validate(self, where: str) -> None:
        check_ints(self, where, "hidden depth")
        check_choice(self, where, "skip", DECODER_SKIPS)


class SlotAttention(nn.Module):
    """Slot attention (Locatello et al. 2020) of K slots over the N tokens of one frame. Unlike
    `dila_core.attention.Attention`, the softmax runs over the slots (the queries), so slots compete
    for tokens; each slot then takes the attention-weighted mean of the values and updates with a
    GRU and a residual MLP."""

    def __init__(self, cfg: SlotAttentionConfig, slots: int):
        super().__init__()
        W = cfg.width
        self.iters, self.scale, self.eps = cfg.iters, W ** -0.5, 1e-8
        self.init = nn.Parameter(torch.randn(slots, W) * W ** -0.5)  # frame 0's slots (deterministic)
        self.norm_x = nn.LayerNorm(W)
        self.to_k = nn.Linear(W, W, bias=False)
        self.to_v = nn.Linear(W, W, bias=False)
        self.norm_s = nn.LayerNorm(W)
        self.to_q = nn.Linear(W, W, bias=False)
        self.gru = nn.GRUCell(W, W)
        self.mlp = nn.Sequential(nn.LayerNorm(W), nn.Linear(W, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, W))

    def keys_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of tokens x (…, N, W), computed once for all iterations."""
        x = self.norm_x(x)
        return self.to_k(x) * self.scale, self.to_v(x)

    def forward(self, k: Tensor, v: Tensor, slots: Tensor) -> tuple[Tensor, Tensor]:
        """Refine slots (B, K, W) on one frame's keys and values (B, N, W): (slots, attn (B, K, N))."""
        for _ in range(self.iters):
            q = self.to_q(self.norm_s(slots))
            attn = torch.einsum("bkw,bnw->bkn", q, k).softmax(dim=1)                # each token sums to 1 over K
            weights = (attn + self.eps) / (attn + self.eps).sum(-1, keepdim=True)   # mean over tokens
            updates = torch.einsum("bkn,bnw->bkw", weights, v)
            slots = self.gru(updates.flatten(0, 1), slots.flatten(0, 1)).view_as(slots)
            slots = slots + self.mlp(slots)
        return slots, attn


class Temporal(nn.Module):
    """Causal mixing of each slot's sequence over time: u (B, T, K, W) -> s (B, T, K, W)."""

    def __init__(self, cfg: TemporalConfig, width: int):
        super().__init__()
        self.sublayers = nn.ModuleList()
        for _ in range(cfg.depth):
            self.sublayers.append(Sublayer(width, SelfBranch(time_attention(width, cfg.heads, cfg.head_dim))))
            self.sublayers.append(Sublayer(width, GEGLU(width, cfg.ffn_hidden)))
        self.norm = nn.LayerNorm(width)

    def forward(self, u: Tensor) -> Tensor:
        for sublayer in self.sublayers:
            u = sublayer(u)  # time attention folds the K slots into the batch: slot k sees only slot k
        return self.norm(u)


class SlotEncoder(nn.Module):
    """e (B, T, h, w, D) -> slots s (B, T, K, W) and the slot-attention assignment (B, T, K, N)."""

    def __init__(self, tokens: ResidualMLPConfig, cfg: SlotAttentionConfig, temporal: TemporalConfig,
                 grid: tuple[int, int], token_dim: int, slots: int):
        super().__init__()
        self.proj_in = nn.Linear(token_dim, cfg.width)
        # (N, W), small next to what the tokens hold, which it would otherwise drown
        self.position = nn.Parameter(torch.randn(grid[0] * grid[1], cfg.width) * 0.1)
        self.tokens = ResidualMLP(tokens, cfg.width, cfg.width)
        self.attention = SlotAttention(cfg, slots)
        self.temporal = Temporal(temporal, cfg.width)

    def frames(self, e: Tensor, u: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Slot attention frame by frame, each frame starting from the previous frame's slots
        (from `u` (B, K, W), the slots of the frame before e, when given): the raw slots
        (B, T, K, W) and assignments (B, T, K, N)."""
        # position goes in before the token MLP, so what a token holds and where it is mix non-linearly
        x = self.tokens(rearrange(self.proj_in(e), "b t h w c -> b t (h w) c") + self.position)  # (B, T, N, W)
        k, v = self.attention.keys_values(x)
        u = self.attention.init.expand(e.shape[0], -1, -1) if u is None else u
        slots, masks = [], []
        for t in range(e.shape[1]):
            u, attn = self.attention(k[:, t], v[:, t], u)
            slots.append(u)
            masks.append(attn)
        return torch.stack(slots, 1), torch.stack(masks, 1)

    def forward(self, e: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(s (B, T, K, W), raw slots u (B, T, K, W), assignments (B, T, K, N))."""
        u, masks = self.frames(e)
        return self.temporal(u), u, masks


class SlotBlock(nn.Module):
    """Queries x (M, K, C) attend to the slots (M, K, W) of their frame, then a GEGLU FFN; pre-LN residual."""

    def __init__(self, cfg: PerSlotConfig, slot_width: int):
        super().__init__()
        C = cfg.width
        self.norm = nn.LayerNorm(C)
        self.context_norm = nn.LayerNorm(slot_width)
        self.attention = Attention(C, cfg.heads, cfg.head_dim, NoPosition(), context_dim=slot_width)  # a set
        self.ffn = Sublayer(C, GEGLU(C, cfg.ffn_hidden))

    def forward(self, x: Tensor, slots: Tensor) -> Tensor:
        x = x + self.attention(self.norm(x), self.context_norm(slots))
        return self.ffn(x)


class PerSlot(nn.Module):
    """One network shared over slots: s (B, T, K, W) and each slot's own input (B, T, K, d_in) ->
    (B, T, K, d_out). Slot k's query is lift([s^k, own^k]); it attends to all K slots of its frame."""

    def __init__(self, cfg: PerSlotConfig, slot_width: int, d_in: int, d_out: int, zero_head: bool = False):
        super().__init__()
        self.lift = nn.Linear(slot_width + d_in, cfg.width)
        self.blocks = nn.ModuleList(SlotBlock(cfg, slot_width) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, d_out)
        if zero_head:  # the FDM's update is zero at initialisation (ŝ_{t+1} = s_t), as in DiLA's FDM
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, s: Tensor, own: Tensor) -> Tensor:
        x = self.lift(torch.cat([s, own], dim=-1))                                  # (B, T, K, C)
        x, slots = (rearrange(a, "b t k c -> (b t) k c") for a in (x, s))
        for block in self.blocks:
            x = block(x, slots)
        return rearrange(self.head(self.norm(x)), "(b t) k c -> b t k c", b=s.shape[0])


class BroadcastDecoder(nn.Module):
    """Slots ŝ (B, T, K, W) (and the previous frame (B, T, h, w, D) where skip adds it) ->
    tokens (B, T, h, w, D) and decoder masks α (B, T, K, h, w), softmaxed over slots."""

    def __init__(self, cfg: BroadcastDecoderConfig, grid: tuple[int, int], slot_width: int, token_dim: int):
        super().__init__()
        self.grid, self.skip = grid, cfg.skip
        self.slot_in = nn.Linear(slot_width, cfg.hidden)
        # (N, hidden), unit scale: positions are told apart from the first step
        self.position = nn.Parameter(torch.randn(grid[0] * grid[1], cfg.hidden))
        layers: list[nn.Module] = []
        for _ in range(cfg.depth - 1):
            layers += [nn.GELU(), nn.Linear(cfg.hidden, cfg.hidden)]
        # per slot and position: D token values and one mask logit
        self.body = nn.Sequential(*layers, nn.GELU(), nn.Linear(cfg.hidden, token_dim + 1))
        # zero output layer: an untrained decoder predicts 0 (or, with the skip, the previous frame).
        # Random outputs teach the encoder to first flatten its slots (their early noise costs loss);
        # from zero, a toy blob test kept ~5x more variation in s and started decoding ~100 steps earlier
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, s: Tensor, previous: Tensor | None = None) -> tuple[Tensor, Tensor]:
        # broadcast: slot map (B, T, K, 1, hidden) + position (N, hidden); the first layer is split
        # this way so the W -> hidden map runs once per slot, not once per slot and position
        x = self.slot_in(s)[:, :, :, None] + self.position                          # (B, T, K, N, hidden)
        content, logits = self.body(x).split([self.body[-1].out_features - 1, 1], dim=-1)
        alpha = logits.softmax(dim=2)                                               # (B, T, K, N, 1)
        e = (alpha * content).sum(2)                                                # (B, T, N, D)
        h = self.grid[0]
        e = rearrange(e, "b t (h w) d -> b t h w d", h=h)
        if self.skip == "previous_frame":
            e = previous + e
        return e, rearrange(alpha, "b t k (h w) 1 -> b t k h w", h=h)
