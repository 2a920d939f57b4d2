"""DiLA: the disentangled latent-action world model on cached encoder tokens e (B, T, h, w, D).

Information flow (t indexes frames; the decoder for frame t+1 sees e_{t+1} only through z_t):

    x_t      = ST-Transformer(e_0..e_t)            causal in time, shared by both encoders
    s_t      = StructureEncoder(x_t)               per token, d_s
    c_t      = ContentEncoder(x_t)                 per token, d_c
    c^mem_t  = Memory(c_0..c_t)                    Mamba over time at each position
    z_t      = Bottleneck(IDM(s_{t+1} - s_t))      one vector per transition
    ŝ_{t+1}  = s_t + FDM(s_0..s_t, z_0..z_t)
    ê_{t+1}  = Decoder(ŝ_{t+1}; e_0, c^mem_t)

Why this wiring: both encoders read the same causal ST-Transformer features, so s_t
and c_t (and c^mem_t) depend on frames <= t only. The IDM is bidirectional over the
Δs sequence and is the one place where frame t+1 enters a prediction of frame t+1,
through the d_z-sized z_t. The decoder gets the *predicted* structure ŝ_{t+1}
(never s_{t+1}), the first frame and the memory up to t. (The "w/o latent action"
ablation removes exactly this bottleneck: its decoder gets s_{t+1}.) The z_t of
other transitions also carry information about their own frames, but each through
the same bottleneck.

Training (`forward`) is teacher-forced over a clip; `phase2_objective` is the phase-2
objective (roll out from frame 0 with actions inferred from the true clip).
Rollouts are autoregressive in structure space: ŝ is never re-encoded; the
generated frame is re-encoded only to step the content memory. The inference
verbs keep the module's mode: call them under `model.eval()` and `torch.no_grad()`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dila_core.bottleneck import BottleneckConfig
from dila_core.config import check_choice, check_int_tuple, check_ints
from dila_core.content import ContentPathway, MemoryConfig, NoContent, scan
from dila_core.dynamics import LatentDynamics, NoLatentAction
from dila_core.fusion import DecoderConfig, FusionDecoder
from dila_core.layers import ResidualMLP, ResidualMLPConfig
from dila_core.losses import LossConfig
from dila_core.st_transformer import SpatioTemporalEncoder, STConfig
from dila_core.structure import FDMConfig, IDMConfig
from dila_core.world_model import (
    FAMILIES,
    PREDICTION_LOSS,
    Capabilities,
    Rollout,
    capabilities,
)

VARIANTS = FAMILIES["dila"].variants  # DiLA and its pathway ablations, named once in the registry


@dataclass(frozen=True)
class DiLAConfig:
    """grid (h, w) and token_dim D of the input tokens; d_s, d_c: structure and content sizes
    (the latent action size is bottleneck.d_z); variant: DiLA or one of its pathway ablations."""

    grid: tuple[int, ...]
    token_dim: int
    d_s: int
    d_c: int
    variant: str  # one of VARIANTS
    st: STConfig
    structure_encoder: ResidualMLPConfig
    content_encoder: ResidualMLPConfig
    memory: MemoryConfig
    idm: IDMConfig
    fdm: FDMConfig
    bottleneck: BottleneckConfig
    decoder: DecoderConfig
    loss: LossConfig

    def validate(self, where: str) -> None:
        check_int_tuple(self, where, "grid", length=2)
        check_ints(self, where, "token_dim d_s d_c")
        check_choice(self, where, "variant", VARIANTS)
        for name in ("st", "structure_encoder", "content_encoder", "memory", "idm", "fdm", "bottleneck",
                     "decoder", "loss"):
            getattr(self, name).validate(f"{where}.{name}" if where else name)


class DiLA(nn.Module):
    def __init__(self, cfg: DiLAConfig):
        super().__init__()
        cfg.validate("model")
        self.cfg = cfg
        grid, W = tuple(cfg.grid), cfg.st.width
        self.backbone = SpatioTemporalEncoder(cfg.st, grid, cfg.token_dim)
        self.structure = ResidualMLP(cfg.structure_encoder, W, cfg.d_s)
        self.content = NoContent() if cfg.variant == "no_content" else \
            ContentPathway(cfg.content_encoder, cfg.memory, W, cfg.d_c)
        self.dynamics = NoLatentAction() if cfg.variant == "no_latent_action" else \
            LatentDynamics(cfg.idm, cfg.fdm, cfg.bottleneck, cfg.loss, grid, cfg.d_s)
        self.decoder = FusionDecoder(cfg.decoder, grid, cfg.d_s, cfg.token_dim,
                                     [cfg.token_dim, *self.content.context_dims])

    @property
    def capabilities(self) -> Capabilities:
        return capabilities(self.cfg)

    # -- training (the dila_core.world_model interface) -----------------------------------------
    def forward(self, e: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Teacher-forced objective on a clip e (B, T >= 2, h, w, D): (loss, logs of every term)."""
        e_next, loss, logs = self._teacher_forced(e)
        loss_e = F.mse_loss(e_next, e[:, 1:])
        loss = self.cfg.loss.lambda_e * loss_e + loss
        return loss, {"loss": loss.detach(), PREDICTION_LOSS: loss_e.detach(), **logs}

    def objective(self, e: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Phase 1: the teacher-forced objective (`forward`)."""
        return self(e)

    def phase2_objective(self, e: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Phase-2 objective: roll out from e_0 with actions inferred from the whole true clip,
        λ_e · MSE(rollout, e_{1:T}) plus the bottleneck's regulariser."""
        self._check(e, "e", 2)
        x = self.backbone(e)
        s = self.structure(x)
        z, loss, logs = self.dynamics.sample(s)                       # (B, T-1, d_z)
        out = self._rollout(e[:, :1], x[:, :1], s[:, :1], z, e.shape[1] - 1)
        loss_e = F.mse_loss(out.e, e[:, 1:])
        loss = self.cfg.loss.lambda_e * loss_e + loss
        return loss, {"loss": loss.detach(), "L_e_rollout": loss_e.detach(), **logs}

    # -- inference verbs ----------------------------------------------------------------------
    def predict(self, e: Tensor) -> Tensor:
        """Teacher-forced predictions ê_1..ê_{T-1} (B, T-1, h, w, D) of a clip e (B, T >= 2, h, w, D)."""
        return self._teacher_forced(e)[0]

    def infer_actions(self, e: Tensor) -> Tensor:
        """Latent actions of a clip: e (B, T >= 2, h, w, D) -> z (B, T-1, d_z)."""
        self._check(e, "e", 2)
        return self.dynamics.infer(self.structure(self.backbone(e)))

    def rollout(self, e_context: Tensor, z: Tensor, steps: int) -> Rollout:
        """Generate `steps` frames after e_context (B, Tc >= 1, h, w, D) under actions z
        (B, steps, d_z), or one action (B, d_z) repeated. Actions between context frames are
        inferred from the context."""
        self._check(e_context, "e_context", 1)
        z = z[:, None].expand(-1, steps, -1) if z.dim() == 2 else z
        want = (e_context.shape[0], steps, self.cfg.bottleneck.d_z)
        if tuple(z.shape) != want:
            raise ValueError(f"DiLA.rollout: z has shape {tuple(z.shape)}; expected {want} or {(want[0], want[2])}")
        x = self.backbone(e_context)
        s = self.structure(x)
        return self._rollout(e_context, x, s, torch.cat([self.dynamics.infer(s), z], dim=1), steps)

    def transfer(self, source: Tensor, target: Tensor) -> Tensor:
        """Apply the actions of `source` (B, T, …) to the first frame of `target` (B, ≥1, …):
        the generated continuation (B, T-1, h, w, D)."""
        self._check(target, "target", 1)
        z = self.infer_actions(source)
        return self.rollout(target[:, :1], z, z.shape[1]).e

    def rebind(self, structure_from: Tensor, content_from: Tensor) -> Tensor:
        """Frames 1..T-1 decoded from the structure of one clip and the content (e_0 and memory) of
        another, both (B, T, h, w, D): (B, T-1, h, w, D)."""
        self._check(structure_from, "structure_from", 2)
        self._check(content_from, "content_from", 2)
        if structure_from.shape != content_from.shape:
            raise ValueError(f"DiLA.rebind: structure_from {tuple(structure_from.shape)} and content_from "
                             f"{tuple(content_from.shape)} must have the same shape")
        s = self.structure(self.backbone(structure_from))
        memory = [m[:, :-1] for m in self.content(self.backbone(content_from))]
        return self._decode(s[:, 1:], content_from[:, 0], memory)

    def readout(self, e: Tensor) -> tuple[Tensor, Tensor]:
        """Decoder read-out check on a clip e (B, T >= 2, h, w, D): frames 1..T-1 decoded from the
        true next structure s_{t+1} and from the current s_t, each (B, T-1, h, w, D). A decoder that
        reads motion from structure is much closer to the truth from s_{t+1} than from s_t."""
        self._check(e, "e", 2)
        x = self.backbone(e)
        s = self.structure(x)                                         # (B, T, h, w, d_s)
        memory = [m[:, :-1] for m in self.content(x)]
        return self._decode(s[:, 1:], e[:, 0], memory), self._decode(s[:, :-1], e[:, 0], memory)

    def isolate_motion(self, e: Tensor) -> Tensor:
        """Motion isolation: structure frozen at s_0 while the content memory follows the clip
        e (B, T, h, w, D). A disentangled model returns (nearly) static frames (B, T-1, h, w, D)."""
        self._check(e, "e", 2)
        x = self.backbone(e)
        s0 = self.structure(x[:, :1]).expand(-1, e.shape[1] - 1, -1, -1, -1)
        memory = [m[:, :-1] for m in self.content(x)]
        return self._decode(s0, e[:, 0], memory)

    # -- internals ------------------------------------------------------------------------------
    def _teacher_forced(self, e: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """ê_{1:T} (B, T-1, h, w, D), the weighted structure-side loss and its logs."""
        self._check(e, "e", 2)
        x = self.backbone(e)                                          # (B, T, h, w, W)
        s = self.structure(x)                                         # (B, T, h, w, d_s)
        memory = [m[:, :-1] for m in self.content(x)]                 # [(B, T-1, h, w, d_c)]
        s_next, loss, logs = self.dynamics(s)                         # (B, T-1, h, w, d_s)
        return self._decode(s_next, e[:, 0], memory), loss, logs

    def _decode(self, s: Tensor, e0: Tensor, memory: list[Tensor]) -> Tensor:
        """Decoder on s (B, T, h, w, d_s) with e0 (B, h, w, D) and memory [(B, T, h, w, d_c)]."""
        first = e0[:, None].expand(-1, s.shape[1], -1, -1, -1)
        return self.decoder(s, [first, *memory])

    def _rollout(self, e_context: Tensor, x_context: Tensor, s_context: Tensor, z: Tensor,
                 steps: int) -> Rollout:
        """Autoregressive rollout in structure space. z (B, Tc-1+steps, d_z) covers every
        transition from frame 0; x_context, s_context are the context's encodings."""
        memory, state = scan(self.content, x_context)                 # [(B, h, w, d_c)]
        s_all, e_all, tc = s_context, e_context, e_context.shape[1]
        for k in range(steps):
            update = self.dynamics.predict(s_all, z[:, : s_all.shape[1]])[:, -1:]  # (B, 1, h, w, d_s)
            s_next = s_all[:, -1:] + update
            e_next = self._decode(s_next, e_context[:, 0], [m[:, None] for m in memory])
            s_all, e_all = torch.cat([s_all, s_next], 1), torch.cat([e_all, e_next], 1)
            if k + 1 < steps:
                memory, state = self.content.step(self.backbone(e_all)[:, -1], state)
        return Rollout(e=e_all[:, tc:], s=s_all[:, tc:])

    def _check(self, e: Tensor, name: str, min_frames: int) -> None:
        h, w = self.cfg.grid
        ok = e.dim() == 5 and tuple(e.shape[2:]) == (h, w, self.cfg.token_dim) and e.shape[1] >= min_frames
        if not ok:
            raise ValueError(f"DiLA: {name} has shape {tuple(e.shape)}; expected (B, T, {h}, {w}, "
                             f"{self.cfg.token_dim}) with T >= {min_frames}")
