"""Pixel decoder: normalized patch tokens back to RGB frames, for image grids and SSIM/LPIPS.

Tokens (B, h, w, D), normalized per channel as the world model sees them, go through a
1x1 projection to `width` channels on the token grid and `blocks` residual conv blocks
(GroupNorm + SiLU) there. The grid then has to double `doublings` times to reach the
output size. The last `head_doublings` of them are done by the head: a 3x3 conv to
3 * 4^k channels and a pixel shuffle by 2^k, i.e. every grid cell predicts its own
2^k x 2^k patch of pixels. Any doublings before that are conv stages (bilinear + 3x3 conv,
or 3x3 conv + pixel shuffle) followed by one residual block, halving the channels each time
(never below `min_width`). Keeping the work on the coarse grid is what makes training cheap
on a CPU; on the default 8x8 store grid and 64x64 frames all three doublings are in the head.
Where the grid times a power of two is not the output size, the logits are resized once
(bilinear, antialiased when shrinking); a sigmoid gives frames (B, 3, size, size) in [0, 1].
Frames are decoded independently of each other.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from dila_core.config import check_choice, check_int_tuple, check_ints

UPSAMPLE = ("bilinear", "pixel_shuffle")


@dataclass(frozen=True)
class PixelDecoderConfig:
    """in_dim: token width D; grid: (h, w) token grid; size: output height = width;
    width: channels on the token grid; min_width: floor of the halving channel count;
    blocks: residual blocks on the token grid; upsample: how a conv-stage doubling is done;
    head_doublings: doublings done by the head's pixel shuffle (at most `doublings` are used)."""

    in_dim: int
    grid: tuple[int, int]
    size: int
    width: int = 64
    min_width: int = 16
    blocks: int = 2
    upsample: Literal["bilinear", "pixel_shuffle"] = "pixel_shuffle"
    head_doublings: int = 3

    def validate(self, where: str) -> None:
        check_ints(self, where, "in_dim size width min_width")
        check_ints(self, where, "blocks head_doublings", low=0)
        check_int_tuple(self, where, "grid", length=2)
        check_choice(self, where, "upsample", UPSAMPLE)

    @property
    def doublings(self) -> int:
        """Resolution doublings from the token grid: the fewest that reach `size` on the larger side."""
        return max(0, math.ceil(math.log2(self.size / max(self.grid))))

    def channels(self, stage: int) -> int:
        """Channels at stage i (the grid doubled i times)."""
        return max(self.width // 2**stage, min(self.width, self.min_width))


def _groups(channels: int) -> int:
    return math.gcd(8, channels)


class ResBlock(nn.Module):
    """x + conv(SiLU(GN(conv(SiLU(GN(x)))))) at constant width; x (B, C, H, W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(_groups(channels), channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(_groups(channels), channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class Up(nn.Module):
    """Doubles H and W and maps c_in -> c_out channels: (B, c_in, H, W) -> (B, c_out, 2H, 2W)."""

    def __init__(self, c_in: int, c_out: int, mode: str):
        super().__init__()
        self.mode = mode
        self.act = nn.Sequential(nn.GroupNorm(_groups(c_in), c_in), nn.SiLU())
        out = 4 * c_out if mode == "pixel_shuffle" else c_out
        self.conv = nn.Conv2d(c_in, out, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(x)
        if self.mode == "pixel_shuffle":
            return F.pixel_shuffle(self.conv(x), 2)
        return self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))


class PixelDecoder(nn.Module):
    """Normalized tokens (B, h, w, D) -> frames (B, 3, size, size) in [0, 1]."""

    def __init__(self, cfg: PixelDecoderConfig):
        super().__init__()
        cfg.validate("pixel_decoder")
        self.cfg = cfg
        n, k = cfg.doublings, min(cfg.head_doublings, cfg.doublings)
        self.proj = nn.Conv2d(cfg.in_dim, cfg.channels(0), 1)
        self.body = nn.Sequential(*[ResBlock(cfg.channels(0)) for _ in range(cfg.blocks)])
        stages: list[nn.Module] = []
        for i in range(1, n - k + 1):
            stages += [Up(cfg.channels(i - 1), cfg.channels(i), cfg.upsample), ResBlock(cfg.channels(i))]
        self.up = nn.Sequential(*stages)
        c = cfg.channels(n - k)
        self.head = nn.Sequential(nn.GroupNorm(_groups(c), c), nn.SiLU(), nn.Conv2d(c, 3 * 4**k, 3, padding=1),
                                  nn.PixelShuffle(2**k))

    def forward(self, tokens: Tensor) -> Tensor:
        h, w = self.cfg.grid
        if tokens.shape[1:] != (h, w, self.cfg.in_dim):
            raise ValueError(f"PixelDecoder: expected tokens (B, {h}, {w}, {self.cfg.in_dim}), got {tuple(tokens.shape)}")
        x = self.proj(rearrange(tokens, "b h w d -> b d h w"))     # (B, C0, h, w)
        x = self.head(self.up(self.body(x)))                     # (B, 3, h * 2^n, w * 2^n) logits
        size = (self.cfg.size, self.cfg.size)
        if tuple(x.shape[-2:]) != size:
            shrink = x.shape[-2] > size[0] or x.shape[-1] > size[1]
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)
        return x.sigmoid()                                        # (B, 3, size, size)
