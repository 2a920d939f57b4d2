"""Latent-action bottlenecks: what the IDM's raw output r becomes as the latent action z.

All variants share one interface (r: (B, T, in_dim), z: (B, T, d_z)):
- `forward(r) -> (z, loss, logs)`: training-time z (noisy where the variant is),
  the variant's own regulariser (already weighted) and its logged statistics;
- `infer(r) -> z`: deterministic z for inference (mean, hard code);
- `features(r) -> z`: deterministic and differentiable, used by the latent
  consistency, norm and symmetry terms of the objective.

Variants: `continuous` (DiLA: z = r), `gaussian` (beta-VAE: r = (mu, log var),
KL to N(0, I) weighted by beta; Garrido et al.'s "noisy z"), `sparse` (Garrido et al.'s
"sparse z": z = r with an L1 term weighted by l1 and a VICReg-style variance-covariance-mean
term weighted by vcm, which keeps every dimension alive so sparsity cannot be met by shrinking
or concentrating the norm), `nsvq` (noise-substitution VQ: z is split into
d_z / code_dim tokens, each snapped to the nearest of codebook_size codes; in
training the quantisation error is replaced by noise of the same norm so
gradients reach both encoder and codebook; codes unused for `dead_after`
training steps are reset to random encoder outputs; under DDP usage is counted over all
ranks and the replacements are drawn once, so every rank keeps the same codebook).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor, nn

from dila_core.collective import from_first_rank, gather, total
from dila_core.config import check_choice, check_float, check_ints, require


@dataclass(frozen=True)
class BottleneckConfig:
    """kind; d_z: latent action size; beta: KL weight (gaussian); l1, vcm: sparsity and
    variance-covariance-mean weights (sparse); codebook_size, code_dim, dead_after: codebook
    entries, size of one latent token, steps before a code is reset (nsvq)."""

    kind: str  # a key of BOTTLENECKS
    d_z: int
    beta: float = 1e-4
    l1: float = 1e-2
    vcm: float = 1e-2
    codebook_size: int = 8
    code_dim: int = 32
    dead_after: int = 100

    def validate(self, where: str) -> None:
        check_choice(self, where, "kind", tuple(BOTTLENECKS))
        check_ints(self, where, "d_z codebook_size code_dim dead_after")
        for name in ("beta", "l1", "vcm"):
            check_float(self, where, name, 0.0)
        if self.kind == "nsvq":
            require(self.d_z % self.code_dim == 0, where, "d_z", self.d_z,
                    f"a multiple of code_dim = {self.code_dim} (nsvq splits z into tokens)")


class Continuous(nn.Module):
    """z = r: the DiLA latent action."""

    def __init__(self, cfg: BottleneckConfig):
        super().__init__()
        self.in_dim = cfg.d_z

    def forward(self, r: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        return r, r.new_zeros(()), {}

    def infer(self, r: Tensor) -> Tensor:
        return r

    def features(self, r: Tensor) -> Tensor:
        return r


class Gaussian(nn.Module):
    """beta-VAE latent: r = (mu, log var); z ~ N(mu, var) in training, mu otherwise."""

    def __init__(self, cfg: BottleneckConfig):
        super().__init__()
        self.in_dim = 2 * cfg.d_z
        self.beta = cfg.beta

    def forward(self, r: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        mu, logvar = r.float().chunk(2, dim=-1)
        logvar = logvar.clamp(-30.0, 20.0)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(-1).mean()
        return z.to(r.dtype), self.beta * kl, {"kl": kl.detach()}

    def infer(self, r: Tensor) -> Tensor:
        return r.chunk(2, dim=-1)[0]

    def features(self, r: Tensor) -> Tensor:
        return r.chunk(2, dim=-1)[0]


def vcm_terms(z: Tensor, eps: float = 1e-4) -> dict[str, Tensor]:
    """VICReg-style terms of z (…, d) over all leading axes as samples: `variance`, the mean
    hinge max(0, 1 - std) per dimension (a dead dimension costs 1); `covariance`, the squared
    off-diagonal covariances / d (dimensions carry different information); `mean`, ‖E z‖² / d
    (the batch is centred, so the L1 term cannot be met by a shared offset)."""
    flat = z.reshape(-1, z.shape[-1]).float()                                       # (N, d)
    n, d = flat.shape
    centred = flat - flat.mean(0)
    var = centred.square().sum(0) / max(n - 1, 1)                                   # (d,)
    cov = centred.T @ centred / max(n - 1, 1)                                       # (d, d)
    off = cov - torch.diag_embed(torch.diagonal(cov))
    return {"variance": torch.relu(1 - (var + eps).sqrt()).mean(), "covariance": off.square().sum() / d,
            "mean": flat.mean(0).square().sum() / d}


class Sparse(nn.Module):
    """z = r, regularised towards sparse but alive: l1 * E|z| + vcm * (variance + covariance + mean).
    The terms are computed per rank (under DDP each rank's batch is its own sample)."""

    def __init__(self, cfg: BottleneckConfig):
        super().__init__()
        self.in_dim = cfg.d_z
        self.l1, self.vcm = cfg.l1, cfg.vcm

    def forward(self, r: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        terms = vcm_terms(r)
        l1 = r.float().abs().mean()
        loss = self.l1 * l1 + self.vcm * (terms["variance"] + terms["covariance"] + terms["mean"])
        active = (r.detach().abs() > 1e-2).float().mean()  # the fraction of z entries not (near) zero
        return r, loss, {"l1": l1.detach(), "active": active, **{f"vcm_{k}": v.detach() for k, v in terms.items()}}

    def infer(self, r: Tensor) -> Tensor:
        return r

    def features(self, r: Tensor) -> Tensor:
        return r


def code_statistics(codes: Tensor, codebook_size: int) -> dict[str, Tensor]:
    """Fraction of codes used and perplexity exp(H(p)) of the code histogram of `codes` (any shape)."""
    p = torch.bincount(codes.flatten(), minlength=codebook_size).float() / codes.numel()
    entropy = -(p * p.clamp_min(1e-12).log()).sum()
    return {"codebook_usage": (p > 0).float().mean(), "perplexity": entropy.exp()}


class NSVQ(nn.Module):
    """Noise-substitution vector quantisation of z as d_z / code_dim tokens of code_dim."""

    def __init__(self, cfg: BottleneckConfig):
        super().__init__()
        self.in_dim = cfg.d_z
        self.code_dim, self.dead_after = cfg.code_dim, cfg.dead_after
        self.codebook = nn.Parameter(torch.randn(cfg.codebook_size, cfg.code_dim) / cfg.code_dim ** 0.5)
        self.register_buffer("idle_steps", torch.zeros(cfg.codebook_size, dtype=torch.long))

    def _nearest(self, tokens: Tensor) -> Tensor:
        """Index of the nearest code for each token (…, code_dim) -> (…); distances in float32."""
        flat = tokens.detach().reshape(-1, self.code_dim).float()
        return torch.cdist(flat, self.codebook.detach().float()).argmin(-1).reshape(tokens.shape[:-1])

    @torch.no_grad()
    def _reset_dead_codes(self, tokens: Tensor) -> None:
        """Replace codes idle for dead_after steps by random tokens of the (global) batch; under
        DDP rank 0 draws them, so every rank keeps the same codebook. idle_steps counts usage over
        all ranks, so every rank takes the early return together (no collective is left waiting)."""
        dead = self.idle_steps >= self.dead_after                                   # (K,)
        if not dead.any():
            return
        flat = gather(tokens.detach().reshape(-1, self.code_dim))                   # (N, code_dim)
        pick = from_first_rank(flat[torch.randint(len(flat), (len(dead),), device=flat.device)])
        self.codebook.copy_(torch.where(dead[:, None], pick.to(self.codebook.dtype), self.codebook))
        self.idle_steps.masked_fill_(dead, 0)

    def forward(self, r: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        tokens = rearrange(r, "b t (n d) -> b t n d", d=self.code_dim)
        if self.training:
            self._reset_dead_codes(tokens)
        codes = self._nearest(tokens)                                              # (B, T, n)
        q = self.codebook[codes].to(tokens.dtype)                                  # (B, T, n, d)
        if self.training:
            used = total(torch.bincount(codes.flatten(), minlength=len(self.idle_steps))) > 0
            self.idle_steps.add_(1).masked_fill_(used, 0)
            noise = torch.randn_like(tokens)
            error = (tokens - q).norm(dim=-1, keepdim=True)                        # (B, T, n, 1)
            q = tokens + error * noise / noise.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        logs = code_statistics(codes, len(self.idle_steps))
        return rearrange(q, "b t n d -> b t (n d)"), r.new_zeros(()), logs

    def infer(self, r: Tensor) -> Tensor:
        tokens = rearrange(r, "b t (n d) -> b t n d", d=self.code_dim)
        q = self.codebook[self._nearest(tokens)].to(r.dtype)
        return rearrange(q, "b t n d -> b t (n d)")

    def features(self, r: Tensor) -> Tensor:
        return r


BOTTLENECKS: dict[str, type[nn.Module]] = {"continuous": Continuous, "gaussian": Gaussian, "sparse": Sparse,
                                              "nsvq": NSVQ}


def build_bottleneck(cfg: BottleneckConfig) -> nn.Module:
    """The bottleneck module for cfg.kind."""
    return BOTTLENECKS[cfg.kind](cfg)
