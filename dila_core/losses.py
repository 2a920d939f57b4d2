"""The DiLA objective (paper Eq. 4), term by term.

L = λ_e L_e + λ_s L_s + λ_z (L_z + L_collapse) + λ_norm ‖z‖ + λ_sym L_sym
  (+ the bottleneck's own regulariser, e.g. β·KL for the Gaussian variant), with
- L_e = MSE(ê_{t+1}, e_{t+1}) on the (normalised) encoder tokens;
- L_s = MSE(Δŝ_t, s_{t+1} - s_t), the FDM's predicted update against the true one; both
  sides learn (the target is not detached: with a detached target nothing ties the
  encoded s_{t+1} to ŝ_{t+1} and the structure drifts away from what the FDM predicts);
- L_z = MSE(IDM(Δŝ_t), sg(IDM(Δs_t))), latent consistency of the predicted update (with
  `lz_target = "both"`, as the reference trains, the target IDM(Δs_t) receives gradient too);
- L_collapse = a·exp(-k·σ_z), σ_z the per-dimension std of z over batch and time, averaged
  (paper); or, with `collapse = "hinge"` (a device of ours), a·mean_d max(0, γ - σ_d), which stops
  paying for variation once every dimension's std reaches γ = `collapse_target`;
- ‖z‖ = mean over batch and time of the L2 norm of z;
- L_sym = Σ m_t (cos(z_fwd, z_bwd) + 1)² / (Σ m_t + ε), z_fwd = IDM(Δs_t),
  z_bwd = IDM(-Δs_t) on detached s, mask m_t = [rms(Δs_t) > τ].
sg is stop-gradient. rms(Δs_t) is the root mean square over the (h, w, d_s) entries of
one transition, so τ does not depend on the grid or structure size.

Training devices of ours (each off by default, i.e. the paper's objective; README, "Deviations
from the reference code"):
- `motion_weight` α: L_e weighted per token by (1 + α·d/mean(d)) / (1 + α), d = ‖e_{t+1} - e_t‖²
  of that token, so the tokens that change (the part only z can predict) weigh more while the
  mean weight stays 1;
- `usage_margin` λ_u with `margin` m: λ_u·max(0, 1 + m - L_e(other z) / sg(L_e(own z))), where
  "other z" are the latent actions of another clip of the batch: rewards a decoder whose
  prediction depends on the clip's own z (usage = other / own >= 1 + m) and no further;
- `reg_gate` g and `reg_ramp`: the z regularisers (λ_z, λ_norm, λ_sym terms; not L_s) are off
  until the running usage on the training batches (other-z / own-z L_e, measured every
  `reg_check_every` updates) reaches g, or until update `reg_after` (whichever comes first;
  0 disables that condition), then ramp in linearly over `reg_ramp` updates;
- `motion_gated`: with a gate, the motion weighting holds while the gate is closed and ramps out
  as the regularisers ramp in (α · (1 - scale)), so training ends on the paper's objective;
- `read_weight` λ_r: λ_r·MSE(Dec(s_{t+1}; e_0, c^mem_t), e_{t+1}), the decoder also fed the true
  next structure (the "w/o latent action" ablation's path, as a training term only): the structure
  must carry where things are in the next frame and the decoder must read it, so that Δs holds
  the motion for the IDM to find. At inference the decoder still sees ŝ_{t+1} only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from dila_core.config import check_bool, check_choice, check_float, check_int, require


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
    lz_target: Literal["detached", "both"] = "detached"
    collapse: Literal["exp", "hinge"] = "exp"
    collapse_target: float = 0.5
    motion_weight: float = 0.0
    usage_margin: float = 0.0
    margin: float = 0.5
    reg_gate: float = 0.0
    reg_after: int = 0
    reg_ramp: int = 0
    reg_check_every: int = 10
    motion_gated: bool = False
    read_weight: float = 0.0

    def validate(self, where: str) -> None:
        for name in ("lambda_e", "lambda_s", "lambda_z", "lambda_norm", "lambda_sym", "collapse_scale",
                     "collapse_sharpness", "motion_threshold", "collapse_target", "motion_weight",
                     "usage_margin", "margin", "reg_gate", "read_weight"):
            check_float(self, where, name, 0.0)
        check_float(self, where, "eps", 1e-12)
        check_choice(self, where, "collapse", ("exp", "hinge"))
        check_choice(self, where, "lz_target", ("detached", "both"))
        check_int(self, where, "reg_after", 0)
        check_int(self, where, "reg_ramp", 0)
        check_int(self, where, "reg_check_every", 1)
        check_bool(self, where, "motion_gated")
        require(not self.motion_gated or self.gated, where, "motion_gated", self.motion_gated,
                "false unless reg_gate or reg_after sets a gate (it ramps the motion weight out as the gate opens)")

    @property
    def gated(self) -> bool:
        """Whether the z regularisers wait for a condition (reg_gate or reg_after) before they start."""
        return self.reg_gate > 0 or self.reg_after > 0


def latent_std(z: Tensor) -> Tensor:
    """σ_z: std of z (B, T, d_z) over batch and time, per dimension, averaged over dimensions.
    Population std (no Bessel correction), so a single transition gives 0 rather than NaN."""
    return z.float().flatten(0, -2).std(dim=0, correction=0).mean()


def anti_collapse(z: Tensor, scale: float, sharpness: float) -> Tensor:
    """scale · exp(-sharpness · σ_z): large when all latent actions are alike."""
    return scale * torch.exp(-sharpness * latent_std(z))


def collapse_hinge(z: Tensor, scale: float, target: float) -> Tensor:
    """scale · mean over dimensions of max(0, target - σ_d): pays for dead dimensions only."""
    std = z.float().flatten(0, -2).std(dim=0, correction=0)
    return scale * torch.relu(target - std).mean()


def collapse_term(z: Tensor, cfg: LossConfig) -> Tensor:
    """The anti-collapse term of cfg.collapse ("exp": the paper's, "hinge": ours)."""
    if cfg.collapse == "hinge":
        return collapse_hinge(z, cfg.collapse_scale, cfg.collapse_target)
    return anti_collapse(z, cfg.collapse_scale, cfg.collapse_sharpness)


def motion_weighted_mse(pred: Tensor, target: Tensor, previous: Tensor, alpha: float) -> Tensor:
    """MSE of pred against target (B, T, h, w, D), each token weighted by (1 + α·d/mean(d)) / (1 + α),
    d = ‖target - previous‖² of that token (data, no gradient): the mean weight is 1, and α = 0
    is the plain MSE."""
    if alpha == 0:
        return F.mse_loss(pred, target)
    d = (target - previous).detach().float().square().sum(-1, keepdim=True)    # (B, T, h, w, 1)
    w = (1 + alpha * d / d.mean().clamp_min(1e-12)) / (1 + alpha)
    return (w * (pred - target).float().square()).mean()


def usage_hinge(own: Tensor, other: Tensor, margin: float) -> Tensor:
    """max(0, 1 + margin - other / sg(own)): zero once the error under another clip's z is
    (1 + margin) times the error under the clip's own z."""
    return torch.relu(1 + margin - other / own.detach().clamp_min(1e-12))


def gate_scale(step: int, on_step: int, ramp: int) -> float:
    """Regulariser scale at update `step` for a gate opened at update `on_step` (-1: still
    closed): 0 before, then a linear ramp over `ramp` updates to 1."""
    if on_step < 0 or step < on_step:
        return 0.0
    return 1.0 if ramp == 0 else min(1.0, (step - on_step) / ramp)


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
