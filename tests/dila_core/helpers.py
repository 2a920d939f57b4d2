"""Helpers shared by the model tests: a seeded random clip for a model, moving its
zero-initialised parameters off zero (so tests of information flow see every path), and the
blob toy on which a model must learn to use its latent action (benchmarks/z_toy.py uses it too)."""
import torch
import torch.nn.functional as F
from einops import rearrange


def clip(model: torch.nn.Module, B: int = 2, T: int = 4, seed: int = 1) -> torch.Tensor:
    """(B, T, h, w, D) standard-normal tokens of the model's grid and width."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, *model.cfg.grid, model.cfg.token_dim, generator=g)


def unzero(model: torch.nn.Module) -> None:
    """Move the zero-initialised parameters (AdaLN-zero, FDM heads, decoder outputs, biases) off zero."""
    with torch.no_grad():
        for p in model.parameters():
            if torch.all(p == 0):
                p.normal_(std=0.05)


def blob_clips(n: int, frames: int, g: torch.Generator) -> torch.Tensor:
    """n clips (n, frames, 4, 4, 16): one blob on a 4 x 4 torus moving one cell up, down, left or
    right at random each frame, so the next frame is unpredictable from the past and fully
    predictable from the action; the blob's token is 4 x the one-hot of its cell, every other 0."""
    moves = torch.tensor([[0, 1], [0, -1], [1, 0], [-1, 0]])[torch.randint(0, 4, (n, frames - 1), generator=g)]
    start = torch.randint(0, 4, (n, 1, 2), generator=g)
    pos = torch.cat([start, start + moves.cumsum(1)], 1) % 4                      # (n, frames, 2)
    tokens = 4.0 * F.one_hot(pos[..., 0] * 4 + pos[..., 1], 16).float()           # (n, frames, 16)
    return rearrange(torch.diag_embed(tokens), "n t c (h w) -> n t h w c", h=4)
