"""Building blocks shared by the transformers: feed-forward, residual sublayers, AdaLN-zero,
the causal convolutional position generator, and the per-token residual MLP.

A *sublayer* is one pre-norm residual branch, x + gate(f(norm(x))). Unconditioned
it is plain pre-LN (affine LayerNorm, no gate). Conditioned on a per-frame vector
(the FDM's latent action) it is AdaLN-zero: the LayerNorm has no affine, its shift
and scale and the branch's gate come from the condition through zero-initialised
linear maps, so every conditioned sublayer is the identity at initialisation.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from dila_core.config import check_ints


class GEGLU(nn.Module):
    """Gated-GELU feed-forward: width -> 2 x hidden -> (a * gelu(g)) -> width."""

    def __init__(self, width: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.proj_in = nn.Linear(width, 2 * hidden)
        self.drop = nn.Dropout(dropout)
        self.proj_out = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        a, g = self.proj_in(x).chunk(2, dim=-1)
        return self.proj_out(self.drop(a * F.gelu(g)))


class SelfBranch(nn.Module):
    """Adapts a (x, context) attention to a one-argument branch: attends x to itself."""

    def __init__(self, attention: nn.Module):
        super().__init__()
        self.attention = attention

    def forward(self, x: Tensor) -> Tensor:
        return self.attention(x, x)


class Norm(nn.Module):
    """Affine LayerNorm; ignores the condition."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)

    def forward(self, x: Tensor, cond: Tensor | None) -> Tensor:
        return self.norm(x)


class AdaNorm(nn.Module):
    """LayerNorm without affine, shifted and scaled per frame by cond (B, T, C); zero-initialised."""

    def __init__(self, width: int, cond_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.proj = nn.Linear(cond_dim, 2 * width)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:  # x (B, T, N, W), cond (B, T, C)
        shift, scale = self.proj(F.silu(cond)).unsqueeze(2).chunk(2, dim=-1)  # (B, T, 1, W) each
        return torch.addcmul(shift, self.norm(x), 1 + scale)


class NoGate(nn.Module):
    def forward(self, y: Tensor, cond: Tensor | None) -> Tensor:
        return y


class ZeroGate(nn.Module):
    """Scales a branch per frame and channel by a zero-initialised linear map of cond (B, T, C)."""

    def __init__(self, width: int, cond_dim: int):
        super().__init__()
        self.proj = nn.Linear(cond_dim, width)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, y: Tensor, cond: Tensor) -> Tensor:  # y (B, T, N, W), cond (B, T, C)
        return y * self.proj(F.silu(cond)).unsqueeze(2)


def make_norm(width: int, cond_dim: int) -> nn.Module:
    """Norm when cond_dim == 0, else AdaNorm."""
    return AdaNorm(width, cond_dim) if cond_dim else Norm(width)


class Sublayer(nn.Module):
    """x + gate(branch(norm(x))): pre-LN when cond_dim == 0, AdaLN-zero otherwise."""

    def __init__(self, width: int, branch: nn.Module, cond_dim: int = 0):
        super().__init__()
        self.norm = make_norm(width, cond_dim)
        self.branch = branch
        self.gate = ZeroGate(width, cond_dim) if cond_dim else NoGate()

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        return x + self.gate(self.branch(self.norm(x, cond)), cond)


class CausalPEG(nn.Module):
    """Depthwise 3x3x3 convolutional position generator, causal in time (sees frames t-2..t).

    Acts on the h*w grid tokens of x (B, T, N, W); trailing extra tokens pass through.
    """

    def __init__(self, width: int, grid: tuple[int, int]):
        super().__init__()
        self.grid = grid
        self.conv = nn.Conv3d(width, width, kernel_size=3, groups=width)

    def forward(self, x: Tensor) -> Tensor:
        h, w = self.grid
        tokens, extra = x[:, :, : h * w], x[:, :, h * w:]
        v = rearrange(tokens, "b t (h w) d -> b d t h w", h=h, w=w)
        v = self.conv(F.pad(v, (1, 1, 1, 1, 2, 0)))                   # (B, W, T, h, w)
        tokens = tokens + rearrange(v, "b d t h w -> b t (h w) d")
        return torch.cat([tokens, extra], dim=2)


@dataclass(frozen=True)
class ResidualMLPConfig:
    """Per-token residual MLP: `depth` pre-LN blocks (in -> hidden -> in), then LN and in -> out."""

    hidden: int
    depth: int

    def validate(self, where: str) -> None:
        check_ints(self, where, "hidden depth")


class ResidualMLP(nn.Module):
    """(…, d_in) -> (…, d_out), applied independently to every token."""

    def __init__(self, cfg: ResidualMLPConfig, d_in: int, d_out: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(d_in), nn.Linear(d_in, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, d_in))
            for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(d_in)
        self.proj_out = nn.Linear(d_in, d_out)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = x + block(x)
        return self.proj_out(self.norm(x))
