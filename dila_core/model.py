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
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dila_core.bottleneck import BottleneckConfig
from dila_core.config import check_bool, check_choice, check_int_tuple, check_ints, key
from dila_core.content import ContentPathway, MemoryConfig, NoContent, scan
from dila_core.dynamics import LatentDynamics, NoLatentAction, transitions
from dila_core.fusion import DecoderConfig, FusionDecoder
from dila_core.layers import ResidualMLP, ResidualMLPConfig
from dila_core.losses import LossConfig, gate_scale, motion_weighted_mse, usage_hinge
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
    init: Literal["default", "xavier"] = "default"  # xavier: the reference script's re-init of every Linear
    phase2: Literal["rollout", "full"] = "rollout"   # full: the reference's whole objective beside rollout L_e
    rollout_history: bool = True                     # False: the FDM steps from ŝ_t alone (the reference)

    def validate(self, where: str) -> None:
        check_int_tuple(self, where, "grid", length=2)
        check_ints(self, where, "token_dim d_s d_c")
        check_choice(self, where, "variant", VARIANTS)
        check_choice(self, where, "init", ("default", "xavier"))
        check_choice(self, where, "phase2", ("rollout", "full"))
        check_bool(self, where, "rollout_history")
        self.st.check_input(self.token_dim, key(where, "st"))
        self.decoder.check_output(self.token_dim, key(where, "decoder"))
        for name in ("st", "structure_encoder", "content_encoder", "memory", "idm", "fdm", "bottleneck",
                     "decoder", "loss"):
            getattr(self, name).validate(f"{where}.{name}" if where else name)


class Pass(NamedTuple):
    """One teacher-forced pass: ê_{1:T}, the weighted structure-side loss and its logs, and what a
    second decoding under other latent actions reuses (s, the memory, z; z None without actions)."""

    e_next: Tensor             # (B, T-1, h, w, D)
    loss: Tensor
    logs: dict[str, Tensor]
    s: Tensor                  # (B, T, h, w, d_s)
    memory: list[Tensor]       # [(B, T-1, h, w, d_c)]
    z: Tensor | None           # (B, T-1, d_z)


def xavier_(model: nn.Module) -> None:
    """Xavier-uniform weights and zero biases on every nn.Linear, with no exemptions (as the
    reference's training script does after building its model): AdaLN-zero modulations and the
    FDM's zero head start non-zero."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def other_clips(batch: int, device: torch.device) -> Tensor:
    """The fixed derangement i -> i - 1 (mod batch) that gives each clip another clip's z."""
    return torch.roll(torch.arange(batch, device=device), 1)


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
        if cfg.init == "xavier":
            xavier_(self)
        if cfg.loss.gated and cfg.variant != "no_latent_action":
            # The z-regulariser gate's state (losses.py): training updates seen, the update it opened
            # at (-1: closed), the running usage. Buffers, so checkpoints and resumes carry them.
            self.register_buffer("gate_updates", torch.zeros((), dtype=torch.long))
            self.register_buffer("gate_open", torch.full((), -1, dtype=torch.long))
            self.register_buffer("gate_usage", torch.ones(()))

    @property
    def capabilities(self) -> Capabilities:
        return capabilities(self.cfg)

    # -- training (the dila_core.world_model interface) -----------------------------------------
    def forward(self, e: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Teacher-forced objective on a clip e (B, T >= 2, h, w, D): (loss, logs of every term)."""
        cfg = self.cfg.loss
        gated = hasattr(self, "gate_open")
        scale = self._reg_scale()
        p = self._teacher_forced(e, scale)
        target = e[:, 1:]
        loss_e = F.mse_loss(p.e_next, target)                        # the plain MSE every family logs
        alpha = cfg.motion_weight * (1 - scale) if cfg.motion_gated else cfg.motion_weight
        fit = motion_weighted_mse(p.e_next, target, e[:, :-1], alpha) if alpha else loss_e
        loss = cfg.lambda_e * fit + p.loss
        logs = {PREDICTION_LOSS: loss_e.detach(), **p.logs}
        if cfg.read_weight > 0 and p.z is not None:
            # The decoder fed the true s_{t+1}: structure must hold the next frame, the decoder read it.
            read = F.mse_loss(self._decode(p.s[:, 1:], e[:, 0], p.memory), target)
            loss = loss + cfg.read_weight * read
            logs["L_read"] = read.detach()
        measure = gated and self.training and int(self.gate_open) < 0 \
            and int(self.gate_updates) % cfg.reg_check_every == 0
        if p.z is not None and e.shape[0] > 1 and (cfg.usage_margin > 0 or measure):
            with torch.set_grad_enabled(torch.is_grad_enabled() and cfg.usage_margin > 0):
                other = F.mse_loss(self._decode_under(p, e, other_clips(e.shape[0], e.device)), target)
            if cfg.usage_margin > 0:  # logged every step (a key only some steps log would be mis-averaged)
                hinge = usage_hinge(loss_e, other, cfg.margin)
                loss = loss + cfg.usage_margin * hinge
                logs.update(L_usage=hinge.detach(), usage=(other / loss_e).detach())
            if measure:
                self._step_gate(float(other.detach() / loss_e.detach()))
        if gated:
            if self.training:
                self.gate_updates += 1
                self._step_gate(None)
            logs.update(reg_scale=torch.tensor(scale), gate_usage=self.gate_usage.clone())
        return loss, {"loss": loss.detach(), **logs}

    def _reg_scale(self) -> float:
        """The z regularisers' weight factor now: the gate's (losses.py) where one is set, else 1."""
        if not hasattr(self, "gate_open"):
            return 1.0
        return gate_scale(int(self.gate_updates), int(self.gate_open), self.cfg.loss.reg_ramp)

    @torch.no_grad()
    def _step_gate(self, usage: float | None) -> None:
        """Fold a usage measurement into the running usage, and open the gate when it reaches
        reg_gate or when reg_after updates are done."""
        cfg = self.cfg.loss
        if int(self.gate_open) >= 0:
            return
        if usage is not None:
            self.gate_usage.mul_(0.8).add_(0.2 * usage)  # a running mean over ~5 measurements
        reached = cfg.reg_gate > 0 and float(self.gate_usage) >= cfg.reg_gate
        late = cfg.reg_after > 0 and int(self.gate_updates) >= cfg.reg_after
        if reached or late:
            self.gate_open.fill_(int(self.gate_updates))

    def objective(self, e: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Phase 1: the teacher-forced objective (`forward`)."""
        return self(e)

    def phase2_objective(self, e: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Phase-2 objective: roll out from e_0 with actions inferred from the whole true clip,
        λ_e · MSE(rollout, e_{1:T}) plus the bottleneck's regulariser; with `phase2 = "full"` (the
        reference) also the structure-side terms: L_s teacher-forced on the true s, L_z on the
        rollout's Δŝ, ‖z‖ and symmetry."""
        self._check(e, "e", 2)
        x = self.backbone(e)
        s = self.structure(x)                                         # (B, T, h, w, d_s)
        dyn = self.dynamics
        if self.cfg.phase2 == "full":
            r = dyn.idm(transitions(s))
            z, loss, logs = dyn.bottleneck(r)                         # (B, T-1, d_z)
        else:
            z, loss, logs = dyn.sample(s)
        out = self._rollout(e[:, :1], x[:, :1], s[:, :1], z, e.shape[1] - 1)
        if self.cfg.phase2 == "full":
            rolled = transitions(torch.cat([s[:, :1], out.s], 1))    # the rollout's Δŝ (B, T-1, h, w, d_s)
            loss, terms = dyn.objective(transitions(s), dyn.fdm(s[:, :-1], z), dyn.bottleneck.features(r), loss,
                                        self._reg_scale(), lz_update=rolled)
            logs = {**terms, **logs}
        loss_e = F.mse_loss(out.e, e[:, 1:])
        loss = self.cfg.loss.lambda_e * loss_e + loss
        return loss, {"loss": loss.detach(), "L_e_rollout": loss_e.detach(), **logs}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """The parameters by module group, for per-group learning rates: idm (with the bottleneck's
        own parameters), fdm, content (content pathway and fusion decoder), structure (ST-Transformer
        and structure encoder); a group the variant lacks is empty. The reference's optimizer has
        three: idm + fdm, content, structure."""
        dyn = self.dynamics
        has_z = isinstance(dyn, LatentDynamics)
        groups = {"idm": [*dyn.idm.parameters(), *dyn.bottleneck.parameters()] if has_z else [],
                  "fdm": list(dyn.fdm.parameters()) if has_z else [],
                  "content": [*self.content.parameters(), *self.decoder.parameters()],
                  "structure": [*self.backbone.parameters(), *self.structure.parameters()]}
        return groups

    # -- inference verbs ----------------------------------------------------------------------
    def predict(self, e: Tensor, other: Tensor | None = None) -> Tensor:
        """Teacher-forced predictions ê_1..ê_{T-1} (B, T-1, h, w, D) of a clip e (B, T >= 2, h, w, D);
        with `other` (B,) indices, each clip i is predicted under the latent actions of clip other[i]."""
        p = self._teacher_forced(e)
        return p.e_next if other is None else self._decode_under(p, e, other)

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
    def _teacher_forced(self, e: Tensor, reg_scale: float = 1.0) -> Pass:
        """ê_{1:T} (B, T-1, h, w, D), the weighted structure-side loss (z regularisers scaled by
        reg_scale) and its logs, with s, the memory and z."""
        self._check(e, "e", 2)
        x = self.backbone(e)                                          # (B, T, h, w, W)
        s = self.structure(x)                                         # (B, T, h, w, d_s)
        memory = [m[:, :-1] for m in self.content(x)]                 # [(B, T-1, h, w, d_c)]
        s_next, loss, logs, z = self.dynamics(s, reg_scale)           # (B, T-1, h, w, d_s)
        return Pass(self._decode(s_next, e[:, 0], memory), loss, logs, s, memory, z)

    def _decode_under(self, p: Pass, e: Tensor, other: Tensor) -> Tensor:
        """The pass's frames decoded again with clip i's transitions driven by clip other[i]'s z."""
        if p.z is None:
            raise ValueError("DiLA: variant 'no_latent_action' has no latent actions to exchange")
        s = p.s[:, :-1]
        return self._decode(s + self.dynamics.predict(s, p.z[other]), e[:, 0], p.memory)

    def _decode(self, s: Tensor, e0: Tensor, memory: list[Tensor]) -> Tensor:
        """Decoder on s (B, T, h, w, d_s) with e0 (B, h, w, D) and memory [(B, T, h, w, d_c)]."""
        first = e0[:, None].expand(-1, s.shape[1], -1, -1, -1)
        return self.decoder(s, [first, *memory])

    def _rollout(self, e_context: Tensor, x_context: Tensor, s_context: Tensor, z: Tensor,
                 steps: int) -> Rollout:
        """Autoregressive rollout in structure space. z (B, Tc-1+steps, d_z) covers every
        transition from frame 0; x_context, s_context are the context's encodings."""
        memory, state = scan(self.content, x_context)                 # [(B, h, w, d_c)]
        # A decoder that mixes frames in time (decoder.position = causal_peg) decodes frame n from
        # ŝ_{n-H..n} and their memories, as in teacher forcing: keep the memory of every frame.
        past = [list(m.unbind(1)) for m in self.content(x_context)] if self.decoder.history else []
        s_all, e_all, tc = s_context, e_context, e_context.shape[1]
        for k in range(steps):
            n = s_all.shape[1]                                        # index of the frame made now
            if self.cfg.rollout_history:
                update = self.dynamics.predict(s_all, z[:, :n])[:, -1:]  # (B, 1, h, w, d_s)
            else:                                                     # one step from ŝ_{n-1} alone
                update = self.dynamics.predict(s_all[:, -1:], z[:, n - 1:n])
            s_all = torch.cat([s_all, s_all[:, -1:] + update], 1)
            e_all = torch.cat([e_all, self._decode_last(s_all, e_context[:, 0], memory, past)], 1)
            if k + 1 < steps:
                memory, state = self.content.step(self.backbone(e_all)[:, -1], state)
                for frames, m in zip(past, memory):
                    frames.append(m)
        return Rollout(e=e_all[:, tc:], s=s_all[:, tc:])

    def _decode_last(self, s_all: Tensor, e0: Tensor, memory: list[Tensor], past: list[list[Tensor]]) -> Tensor:
        """The last frame of s_all (B, n+1, h, w, d_s) decoded (B, 1, h, w, D) with the memory of frame
        n-1; with a temporal decoder, from the window of the H frames before it too (frames >= 1, as
        teacher forcing decodes them; H = decoder.history makes the window exact)."""
        if not past:
            return self._decode(s_all[:, -1:], e0, [m[:, None] for m in memory])
        n = s_all.shape[1] - 1
        lo = max(1, n - self.decoder.history)
        window = [torch.stack(frames[lo - 1:n], 1) for frames in past]  # [(B, n-lo+1, h, w, d_c)]
        return self._decode(s_all[:, lo:], e0, window)[:, -1:]

    def _check(self, e: Tensor, name: str, min_frames: int) -> None:
        h, w = self.cfg.grid
        ok = e.dim() == 5 and tuple(e.shape[2:]) == (h, w, self.cfg.token_dim) and e.shape[1] >= min_frames
        if not ok:
            raise ValueError(f"DiLA: {name} has shape {tuple(e.shape)}; expected (B, T, {h}, {w}, "
                             f"{self.cfg.token_dim}) with T >= {min_frames}")
