"""How structure moves from one frame to the next: with a latent action, or (ablation) without.

`LatentDynamics` (DiLA) infers z_t from Δs_t = s_{t+1} - s_t with the IDM, passes it
through the bottleneck and predicts ŝ_{t+1} = s_t + FDM(s_t, z_t); it also computes
the structure-side terms of the objective (see losses.py). `NoLatentAction` is the
"w/o latent action" ablation: no IDM, no FDM, no bottleneck; the decoder gets the
true next structure s_{t+1}, so the model is a structure/content autoencoder and
has no actions to infer or roll out. Both map s (B, T, h, w, d_s) and the scale of the z
regularisers (1: the paper's weights; the model's regulariser gate lowers it, losses.py) to
(ŝ_{t+1} (B, T-1, h, w, d_s), weighted structure loss, logs, z (B, T-1, d_z) or None).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dila_core.bottleneck import BottleneckConfig, build_bottleneck
from dila_core.collective import gather
from dila_core.losses import (
    LossConfig,
    collapse_term,
    latent_norm,
    latent_std,
    motion_mask,
    symmetry_loss,
)
from dila_core.structure import FDM, IDM, FDMConfig, IDMConfig


def transitions(s: Tensor) -> Tensor:
    """Δs_t = s_{t+1} - s_t: (B, T, …) -> (B, T-1, …)."""
    return s[:, 1:] - s[:, :-1]


class LatentDynamics(nn.Module):
    def __init__(self, idm: IDMConfig, fdm: FDMConfig, bottleneck: BottleneckConfig, loss: LossConfig,
                 grid: tuple[int, int], d_s: int):
        super().__init__()
        self.d_z = bottleneck.d_z
        self.bottleneck = build_bottleneck(bottleneck)
        self.idm = IDM(idm, d_s, self.bottleneck.in_dim)
        self.fdm = FDM(fdm, grid, d_s, bottleneck.d_z)
        self.loss = loss

    def forward(self, s: Tensor, reg_scale: float = 1.0) -> tuple[Tensor, Tensor, dict[str, Tensor], Tensor]:
        ds = transitions(s)                                           # (B, T-1, h, w, d_s)
        r = self.idm(ds)                                              # (B, T-1, in_dim)
        z, loss, logs = self.bottleneck(r)                            # (B, T-1, d_z)
        update = self.fdm(s[:, :-1], z)                               # (B, T-1, h, w, d_s)
        loss, terms = self.objective(ds, update, self.bottleneck.features(r), loss, reg_scale)
        return s[:, :-1] + update, loss, {**terms, **logs}, z

    def objective(self, ds: Tensor, update: Tensor, z: Tensor, loss: Tensor, reg_scale: float = 1.0,
                  lz_update: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Structure-side terms of the objective, weighted and added to `loss` (the bottleneck's);
        the z regularisers (everything but L_s) are scaled by `reg_scale`. L_z reads `lz_update`
        (the reference's phase 2: the rollout's Δŝ) where given, else the teacher-forced `update`."""
        cfg, features = self.loss, self.bottleneck.features
        ds_fixed = ds.detach()
        z_fwd, z_bwd = features(self.idm(torch.cat([ds_fixed, -ds_fixed]))).chunk(2)
        mask = motion_mask(ds_fixed, cfg.motion_threshold)
        z_all = gather(z)                                             # the global batch under DDP
        terms = {
            "L_s": F.mse_loss(update, ds),
            "L_z": F.mse_loss(features(self.idm(update if lz_update is None else lz_update)),
                              z if cfg.lz_target == "both" else z.detach()),
            "L_collapse": collapse_term(z_all, cfg),
            "z_norm": latent_norm(z),
            "L_sym": symmetry_loss(gather(z_fwd), gather(z_bwd), gather(mask), cfg.eps),
        }
        z_reg = (cfg.lambda_z * (terms["L_z"] + terms["L_collapse"]) + cfg.lambda_norm * terms["z_norm"]
                 + cfg.lambda_sym * terms["L_sym"])
        loss = loss + cfg.lambda_s * terms["L_s"] + reg_scale * z_reg
        logs = {name: value.detach() for name, value in terms.items()}
        return loss, {**logs, "z_std": latent_std(z_all).detach(), "motion_frac": mask.mean()}

    def infer(self, s: Tensor) -> Tensor:
        """Deterministic latent actions of s (B, T, …) -> (B, T-1, d_z); empty when T == 1."""
        if s.shape[1] < 2:
            return s.new_zeros(s.shape[0], 0, self.d_z)
        return self.bottleneck.infer(self.idm(transitions(s)))

    def sample(self, s: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Training-time latent actions of s, with the bottleneck's loss and logs."""
        return self.bottleneck(self.idm(transitions(s)))

    def predict(self, s: Tensor, z: Tensor) -> Tensor:
        """FDM update Δŝ (B, T, h, w, d_s) for s (B, T, h, w, d_s) under actions z (B, T, d_z)."""
        return self.fdm(s, z)


class NoLatentAction(nn.Module):
    """The "w/o latent action" ablation: the decoder sees the true next structure."""

    def forward(self, s: Tensor, reg_scale: float = 1.0) -> tuple[Tensor, Tensor, dict[str, Tensor], None]:
        return s[:, 1:], s.new_zeros(()), {}, None

    def _none(self, *args) -> Tensor:
        raise ValueError("model variant 'no_latent_action' has no latent actions: infer_actions, rollout, "
                         "phase2_objective and transfer need variant 'dila' or 'no_content'")

    infer = sample = predict = _none
