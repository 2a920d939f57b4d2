"""Helpers shared by the model tests: a seeded random clip for a model, and moving its
zero-initialised parameters off zero (so tests of information flow see every path)."""
import torch


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
