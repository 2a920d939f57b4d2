"""Structure pathway: inverse dynamics (IDM) and forward dynamics (FDM) on structure s.

IDM: Δs (B, T-1, h, w, d_s) -> raw latent action r (B, T-1, out_dim). A 3-D conv
ResNet (GroupNorm + SiLU, pre-activation blocks), 3x3x3 kernels with symmetric
temporal padding (bidirectional, no temporal downsampling), stride-2 spatial
downsampling between stages, global spatial mean, then an MLP head per step (`head_dropout`
inside it: the reference's 0.1).
Paper shape: channels 64 -> 128 -> 256 -> 512 -> 512 on 16 -> 8 -> 4 -> 2 -> 1, with
(2, 2, 2, 1, 0) residual blocks per stage and a 512 -> 1024 -> 256 head: 36,022,208
parameters, 896 (0.002%) more than the reference's 36,021,312.

FDM: (s_t, z_t) -> Δŝ_t, so ŝ_{t+1} = s_t + FDM(s_t, z_t). A light ST-Transformer
(layout space-time-ffn) on the projected structure tokens plus one extra token per
frame carrying z; every sublayer is AdaLN-zero conditioned on z. z enters through
two MLPs: one makes the z token, one the AdaLN condition of every sublayer. `z_path` "mlp"
(ours): d_z -> W -> SiLU -> W. "layernorm" (the reference's): Linear(d_z, W) -> LayerNorm ->
Linear -> GELU -> Linear; the LayerNorm all but removes the scale of z (only the first
bias keeps a trace), so z -> 10 z barely moves the update and ‖z‖ cannot switch z off. Here
the last head layer is zero-initialised, so the update is exactly zero at initialisation. The
reference's module is AdaLN-zero too, but its training script re-initialises every
Linear layer with Xavier, so as the reference trains it the FDM is not zero at the start
(README, "Deviations from the reference code").
Paper shape (W 256, depth 4, 8 x 32 heads, GEGLU hidden 1024, head 256 -> 128 -> 32):
8,114,624 parameters, +0.36% on the reference's 8,085,416; with z_path "layernorm" 8,247,232
(+2.0%: each z path 197,888 against 131,584).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from einops import rearrange, reduce
from torch import Tensor, nn

from dila_core.config import check_choice, check_float, check_int, check_int_tuple, check_ints, require
from dila_core.st_transformer import STConfig, STTransformer

Z_PATHS = ("mlp", "layernorm")


@dataclass(frozen=True)
class IDMConfig:
    """channels[i] and blocks[i]: width and residual blocks of stage i (stage i works at grid / 2^i);
    groups: GroupNorm groups (divides every channel count); head_hidden: hidden size of the head;
    head_dropout: dropout after the head's hidden activation."""

    channels: tuple[int, ...]
    blocks: tuple[int, ...]
    groups: int
    head_hidden: int
    head_dropout: float = 0.0

    def validate(self, where: str) -> None:
        check_int_tuple(self, where, "channels")
        check_int_tuple(self, where, "blocks", len(self.channels), low=0)
        check_ints(self, where, "groups head_hidden")
        check_float(self, where, "head_dropout", 0.0, 1.0, high_open=True)
        require(all(c % self.groups == 0 for c in self.channels), where, "groups", self.groups,
                f"a divisor of every entry of channels = {self.channels}")


class ResBlock3d(nn.Module):
    """x + conv(SiLU(GN(conv(SiLU(GN(x)))))) at constant width; x (B, C, T, h, w)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv3d(channels, channels, 3, padding=1),
            nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv3d(channels, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class IDM(nn.Module):
    """Inverse dynamics: Δs (B, T-1, h, w, d_s) -> r (B, T-1, out_dim); bidirectional in time."""

    def __init__(self, cfg: IDMConfig, d_s: int, out_dim: int):
        super().__init__()
        ch, g = cfg.channels, cfg.groups
        layers: list[nn.Module] = [nn.Conv3d(d_s, ch[0], 3, padding=1)]
        for i, (width, n) in enumerate(zip(ch, cfg.blocks, strict=True)):
            layers += [ResBlock3d(width, g) for _ in range(n)]
            layers += [nn.Conv3d(width, ch[i + 1], 3, stride=(1, 2, 2), padding=1)] if i + 1 < len(ch) else []
        self.body = nn.Sequential(*layers, nn.GroupNorm(g, ch[-1]), nn.SiLU())
        # the dropout shares index 1 with the activation, so checkpoints keep their keys
        act = nn.Sequential(nn.SiLU(), nn.Dropout(cfg.head_dropout) if cfg.head_dropout else nn.Identity())
        self.head = nn.Sequential(nn.Linear(ch[-1], cfg.head_hidden), act, nn.Linear(cfg.head_hidden, out_dim))

    def forward(self, ds: Tensor) -> Tensor:
        v = self.body(rearrange(ds, "b t h w c -> b c t h w"))         # (B, C, T-1, h', w')
        return self.head(reduce(v, "b c t h w -> b t c", "mean"))      # (B, T-1, out_dim)


@dataclass(frozen=True)
class FDMConfig:
    """st: the light ST-Transformer; head_hidden: hidden size of the output head (W -> hidden -> d_s);
    z_path: how z enters (module docstring)."""

    st: STConfig
    head_hidden: int
    z_path: Literal["mlp", "layernorm"] = "mlp"

    def validate(self, where: str) -> None:
        self.st.validate(f"{where}.st")
        check_int(self, where, "head_hidden")
        check_choice(self, where, "z_path", Z_PATHS)


def z_embedding(kind: str, d_z: int, width: int) -> nn.Module:
    """z (…, d_z) -> (…, W) by the `z_path` kind."""
    if kind == "layernorm":
        return nn.Sequential(nn.Linear(d_z, width), nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(),
                             nn.Linear(width, width))
    return nn.Sequential(nn.Linear(d_z, width), nn.SiLU(), nn.Linear(width, width))


class FDM(nn.Module):
    """Forward dynamics: s (B, T, h, w, d_s), z (B, T, d_z) -> Δŝ (B, T, h, w, d_s), causal in time."""

    def __init__(self, cfg: FDMConfig, grid: tuple[int, int], d_s: int, d_z: int):
        super().__init__()
        W = cfg.st.width
        cfg.st.check_input(d_s, "fdm.st")
        self.proj_in = nn.Linear(d_s, W) if cfg.st.proj_in else nn.Identity()
        self.z_token = z_embedding(cfg.z_path, d_z, W)
        self.z_cond = z_embedding(cfg.z_path, d_z, W)
        self.st = STTransformer(cfg.st, grid, extra=1, cond_dim=W)
        self.head = nn.Sequential(nn.Linear(W, cfg.head_hidden), nn.GELU(), nn.Linear(cfg.head_hidden, d_s))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, s: Tensor, z: Tensor) -> Tensor:
        h = s.shape[2]
        x = rearrange(self.proj_in(s), "b t h w d -> b t (h w) d")     # (B, T, N, W)
        x = torch.cat([x, self.z_token(z)[:, :, None]], dim=2)         # (B, T, N+1, W)
        x = self.st(x, self.z_cond(z))[:, :, :-1]                      # (B, T, N, W)
        return rearrange(self.head(x), "b t (h w) d -> b t h w d", h=h)
