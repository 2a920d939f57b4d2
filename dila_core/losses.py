"""The DiLA objective (paper Eq. 4), term by term.

L = λ_e L_e + λ_s L_s + λ_z (L_z + L_collapse) + λ_norm ‖z‖ + λ_sym L_sym
  (+ the bottleneck's own regulariser, e.g. β·KL for the Gaussian variant), with
- L_e = MSE(ê_{t+1}, e_{t+1}) on the (normalised) encoder tokens;
- L_s = MSE(Δŝ_t, s_{t+1} - s_t), the FDM's predicted update against the true one; both
  sides learn (the target is not detached: with a detached target nothing ties the
  encoded s_{t+1} to ŝ_{t+1} and the structure drifts away from what the FDM predicts);
- L_z = MSE(IDM(Δŝ_t), sg(IDM(Δs_t))), latent consistency of the predicted update;
- L_collapse = a·exp(-k·σ_z), σ_z the per-dimension std of z over batch and time, averaged;
- ‖z‖ = mean over batch and time of the L2 norm of z;
- L_sym = Σ m_t (cos(z_fwd, z_bwd) + 1)² / (Σ m_t + ε), z_fwd = IDM(Δs_t),
  z_bwd = IDM(-Δs_t) on detached s, mask m_t = [rms(Δs_t) > τ].
sg is stop-gradient. rms(Δs_t) is the root mean square over the (h, w, d_s) entries of
one transition, so τ does not depend on the grid or structure size.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from dila_core.config import check_float


@dataclass(frozen=True)
class LossConfig:
    """Term weights (lambda_*), the anti-collapse scale a and sharpness k, the motion threshold τ
    of the symmetry mask and the ε of its normaliser. Paper/reference values as defaults."""

    lambda_e: float = 2.0
    lambda_s: float = 0.03
    lambda_z: float = 0.03
    lambda_norm: float = 0.001
    lambda_sym: float = 0.001
    collapse_scale: float = 0.5
    collapse_sharpness: float = 10.0
    motion_threshold: float = 0.01
    eps: float = 1e-6

    def validate(self, where: str) -> None:
        for name in ("lambda_e", "lambda_s", "lambda_z", "lambda_norm", "lambda_sym", "collapse_scale",
                     "collapse_sharpness", "motion_threshold"):
            check_float(self, where, name, 0.0)
        check_float(self, where, "eps", 1e-12)


def latent_std(z: Tensor) -> Tensor:
    """σ_z: std of z (B, T, d_z) over batch and time, per dimension, averaged over dimensions.
    Population std (no Bessel correction), so a single transition gives 0 rather than NaN."""
    return z.float().flatten(0, -2).std(dim=0, correction=0).mean()


def anti_collapse(z: Tensor, scale: float, sharpness: float) -> Tensor:
    """scale · exp(-sharpness · σ_z): large when all latent actions are alike."""
    return scale * torch.exp(-sharpness * latent_std(z))


def latent_norm(z: Tensor) -> Tensor:
    """Mean L2 norm of z (…, d_z)."""
    return z.float().norm(dim=-1).mean()


def motion_mask(ds: Tensor, threshold: float) -> Tensor:
    """m_t = [rms(Δs_t) > τ] for Δs (B, T, h, w, d_s) -> (B, T) float."""
    rms = ds.float().flatten(2).square().mean(-1).sqrt()
    return (rms > threshold).float()


def symmetry_loss(z_fwd: Tensor, z_bwd: Tensor, mask: Tensor, eps: float) -> Tensor:
    """Σ m (cos(z_fwd, z_bwd) + 1)² / (Σ m + ε): forward and backward actions should be opposite."""
    cos = F.cosine_similarity(z_fwd.float(), z_bwd.float(), dim=-1)    # (B, T)
    return (mask * (cos + 1).square()).sum() / (mask.sum() + eps)
