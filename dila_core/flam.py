"""FLAM: a factored latent-action world model (after Wang et al. 2026) on cached tokens
e (B, T, h, w, D): one latent action per scene factor (slot).

Information flow (t indexes frames, k = 1..K slots, d = d_z / K; components in slots.py):

    s_t        = SlotEncoder(e_0..e_t)                  (K, W): slot attention per frame (frame t's
                                                        slots start from frame t-1's), then causal
                                                        time attention along each slot's sequence
    z^k_t      = Bottleneck(IDM(s_t, s^k_{t+1}))        d per slot; IDM shared over slots
    ŝ^k_{t+1}  = s^k_t + FDM(s_t, z^k_t)                FDM shared over slots
    ê_{t+1}    = Decoder(ŝ_{t+1}) (+ e_t)               spatial broadcast, masks softmaxed over slots

Frame t+1 enters the prediction of frame t+1 only through the K actions z^k_t (d each, d_z in
all, so the capacity is that of a monolithic model with d_z), and slot k's next state sees only
its own action; the other slots reach it through attention over the current slots s_t.
`infer_actions` returns the K actions concatenated in slot order: z[..., k*d:(k+1)*d] is slot
k's action. One bottleneck (of size d) is shared by the slots; the regulariser is summed over
slots (for the default gaussian bottleneck, β Σ_k KL(q(z^k) || N(0, I))).

Loss (`objective`, teacher-forced) = MSE(ê_{t+1}, e_{t+1}) (logged as L_e) + the regulariser
(L_reg). `phase2_objective` rolls out from e_0 under actions inferred from the true clip.
Rollouts re-encode each generated frame: its slots are refined by slot attention from the
previous frame's slots and the temporal transformer runs over the whole history, so the FDM always
sees encoder states, as in teacher-forced training (nothing ties ŝ_{t+1} to s_{t+1} in the loss).
Rollout.s holds the predicted slots ŝ (B, steps, K, W). With K = 1 every mask is 1 and FLAM
is a monolithic latent-action model of one state vector per frame (tests check this).
The inference verbs keep the module's mode: call them under `model.eval()` and `torch.no_grad()`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from dila_core.bottleneck import BottleneckConfig, build_bottleneck
from dila_core.config import check_choice, check_int, check_int_tuple, key, require
from dila_core.layers import ResidualMLPConfig
from dila_core.presets import NSVQ_TOKENS, replace_fields
from dila_core.slots import (
    BroadcastDecoder,
    BroadcastDecoderConfig,
    PerSlot,
    PerSlotConfig,
    SlotAttentionConfig,
    SlotEncoder,
    TemporalConfig,
)
from dila_core.world_model import FAMILIES, PREDICTION_LOSS, Capabilities, Rollout, capabilities

VARIANTS = FAMILIES["flam"].variants  # named once in the registry


@dataclass(frozen=True)
class FLAMConfig:
    """grid (h, w) and token_dim D of the input tokens; slots K; encoder: the per-token residual MLP
    (at the slot width, after the linear lift from D and the position embedding); bottleneck: the
    kind and regulariser weights of every slot's bottleneck, d_z the total action size (d_z / K per slot)."""

    grid: tuple[int, ...]
    token_dim: int
    variant: str  # one of VARIANTS
    slots: int
    encoder: ResidualMLPConfig
    slot_attention: SlotAttentionConfig
    temporal: TemporalConfig
    idm: PerSlotConfig
    fdm: PerSlotConfig
    bottleneck: BottleneckConfig
    decoder: BroadcastDecoderConfig

    def validate(self, where: str) -> None:
        check_int_tuple(self, where, "grid", length=2)
        check_int(self, where, "token_dim")
        check_choice(self, where, "variant", VARIANTS)
        check_int(self, where, "slots")
        d_z = self.bottleneck.d_z
        require(d_z % self.slots == 0, where, "slots", self.slots,
                f"a divisor of bottleneck.d_z = {d_z} (each slot gets d_z / slots)")
        if self.bottleneck.kind == "nsvq":
            unit = self.slots * self.bottleneck.code_dim
            require(d_z % unit == 0, where, "bottleneck.d_z", d_z,
                    f"a multiple of slots x bottleneck.code_dim = {unit} (nsvq splits each slot's action "
                    "into codes)")
        for name in ("encoder", "slot_attention", "temporal", "idm", "fdm", "bottleneck", "decoder"):
            getattr(self, name).validate(key(where, name))

    def slot_bottleneck(self) -> BottleneckConfig:
        """The bottleneck every slot's action goes through: the configured one at d_z / K."""
        return dataclasses.replace(self.bottleneck, d_z=self.bottleneck.d_z // self.slots)


class FLAM(nn.Module):
    def __init__(self, cfg: FLAMConfig):
        super().__init__()
        cfg.validate("model")
        self.cfg = cfg
        grid, W, K = tuple(cfg.grid), cfg.slot_attention.width, cfg.slots
        self.d = cfg.bottleneck.d_z // K                                  # one slot's action size
        self.encoder = SlotEncoder(cfg.encoder, cfg.slot_attention, cfg.temporal, grid, cfg.token_dim, K)
        self.bottleneck = build_bottleneck(cfg.slot_bottleneck())
        self.idm = PerSlot(cfg.idm, W, W, self.bottleneck.in_dim)
        self.fdm = PerSlot(cfg.fdm, W, self.d, W, zero_head=True)
        self.decoder = BroadcastDecoder(cfg.decoder, grid, W, cfg.token_dim)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """The parameters by module group, named as DiLA's (per-group learning rates): idm (with
        the bottleneck's), fdm, content (the decoder), structure (the slot encoder)."""
        return {"idm": [*self.idm.parameters(), *self.bottleneck.parameters()], "fdm": list(self.fdm.parameters()),
                "content": list(self.decoder.parameters()), "structure": list(self.encoder.parameters())}

    @property
    def capabilities(self) -> Capabilities:
        return capabilities(self.cfg)

    # -- training (the dila_core.world_model interface) -----------------------------------------
    def forward(self, e: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Teacher-forced objective on a clip e (B, T >= 2, h, w, D): (loss, logs of every term)."""
        self._check(e, "e", 2)
        s = self.encoder(e)[0]                                            # (B, T, K, W)
        z, loss_reg, logs = self._actions(s, sample=True)                 # (B, T-1, K, d)
        e_next = self._decode(self._step(s[:, :-1], z), e[:, :-1])
        loss_e = F.mse_loss(e_next, e[:, 1:])
        loss = loss_e + loss_reg
        return loss, {"loss": loss.detach(), PREDICTION_LOSS: loss_e.detach(), "L_reg": loss_reg.detach(), **logs}

    def objective(self, e: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Phase 1: the teacher-forced objective (`forward`)."""
        return self(e)

    def phase2_objective(self, e: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Phase-2 objective: roll out from e_0 under the actions inferred (sampled) from the whole
        true clip, MSE(rollout, e_{1:T}) plus the bottleneck's regulariser."""
        self._check(e, "e", 2)
        z, loss_reg, logs = self._actions(self.encoder(e)[0], sample=True)
        out = self._rollout(e[:, :1], z, e.shape[1] - 1)
        loss_e = F.mse_loss(out.e, e[:, 1:])
        loss = loss_e + loss_reg
        return loss, {"loss": loss.detach(), "L_e_rollout": loss_e.detach(), "L_reg": loss_reg.detach(), **logs}

    # -- inference verbs ----------------------------------------------------------------------
    def predict(self, e: Tensor) -> Tensor:
        """Teacher-forced predictions ê_1..ê_{T-1} (B, T-1, h, w, D) of a clip e (B, T >= 2, h, w, D)."""
        self._check(e, "e", 2)
        s = self.encoder(e)[0]
        return self._decode(self._step(s[:, :-1], self._actions(s)[0]), e[:, :-1])

    def slots(self, e: Tensor) -> Tensor:
        """The slots s (B, T, K, W) of a clip e (B, T >= 1, h, w, D)."""
        self._check(e, "e", 1)
        return self.encoder(e)[0]

    def slot_masks(self, e: Tensor) -> Tensor:
        """Slot-attention assignment of every token (B, T, K, h, w); sums to 1 over the K slots."""
        self._check(e, "e", 1)
        return rearrange(self.encoder(e)[2], "b t k (h w) -> b t k h w", h=self.cfg.grid[0])

    def slot_actions(self, e: Tensor) -> Tensor:
        """Deterministic per-slot latent actions of a clip: (B, T-1, K, d_z / K)."""
        self._check(e, "e", 2)
        return self._actions(self.encoder(e)[0])[0]

    def infer_actions(self, e: Tensor) -> Tensor:
        """Latent actions of a clip e (B, T >= 2, h, w, D) -> z (B, T-1, d_z), the K slots' actions
        concatenated in slot order (z[..., k*d:(k+1)*d] is slot k's, d = d_z / K)."""
        return rearrange(self.slot_actions(e), "b t k d -> b t (k d)")

    def rollout(self, e_context: Tensor, z: Tensor, steps: int) -> Rollout:
        """Generate `steps` frames after e_context (B, Tc >= 1, h, w, D) under actions z
        (B, steps, d_z), or one action (B, d_z) repeated. Only the last context frame's slots
        (built over the whole context) start the rollout: the FDM steps from the current slots."""
        self._check(e_context, "e_context", 1)
        z = z[:, None].expand(-1, steps, -1) if z.dim() == 2 else z
        want = (e_context.shape[0], steps, self.cfg.bottleneck.d_z)
        if tuple(z.shape) != want:
            raise ValueError(f"FLAM.rollout: z has shape {tuple(z.shape)}; expected {want} or {(want[0], want[2])}")
        return self._rollout(e_context, rearrange(z, "b t (k d) -> b t k d", k=self.cfg.slots), steps)

    def transfer(self, source: Tensor, target: Tensor) -> Tensor:
        """Apply the actions of `source` (B, T, …) to the first frame of `target` (B, ≥1, …):
        the generated continuation (B, T-1, h, w, D)."""
        self._check(target, "target", 1)
        z = self.infer_actions(source)
        return self.rollout(target[:, :1], z, z.shape[1]).e

    # -- internals ------------------------------------------------------------------------------
    def _actions(self, s: Tensor, sample: bool = False) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Per-slot actions of the transitions of s (B, T, K, W): z (B, T-1, K, d), the regulariser
        summed over slots and the bottleneck's logs (training-time z where `sample`, else deterministic)."""
        r = self.idm(s[:, :-1], s[:, 1:])                                 # (B, T-1, K, in_dim)
        # the slots join the batch: one bottleneck shared by all slots, one call per step (nsvq's
        # dead-code counter counts steps). Its loss is a mean over slots, so K x it is the sum over
        # slots: exactly so for gaussian's KL and sparse's L1; sparse's VCM statistics pool the slots
        r = rearrange(r, "b t k c -> (b k) t c")
        if sample:
            z, loss, logs = self.bottleneck(r)
            loss = self.cfg.slots * loss
        else:
            z, loss, logs = self.bottleneck.infer(r), r.new_zeros(()), {}
        return rearrange(z, "(b k) t d -> b t k d", k=self.cfg.slots), loss, logs

    def _step(self, s: Tensor, z: Tensor) -> Tensor:
        """ŝ_{t+1} = s_t + FDM(s_t, z_t): s (B, T, K, W), z (B, T, K, d) -> (B, T, K, W)."""
        return s + self.fdm(s, z)

    def _decode(self, s: Tensor, previous: Tensor) -> Tensor:
        """Tokens (B, T, h, w, D) of slots s (B, T, K, W); `previous` (B, T, h, w, D) is the frame before each."""
        return self.decoder(s, previous)[0]

    def _rollout(self, e_context: Tensor, z: Tensor, steps: int) -> Rollout:
        """Autoregressive rollout under per-slot actions z (B, steps, K, d), re-encoding each generated frame."""
        u = self.encoder.frames(e_context)[0]                            # raw slots (B, Tc, K, W)
        s, e_last = self.encoder.temporal(u)[:, -1:], e_context[:, -1:]  # (B, 1, K, W), (B, 1, h, w, D)
        s_all, e_all = [], []
        for i in range(steps):
            s_next = self._step(s, z[:, i:i + 1])                         # (B, 1, K, W)
            e_last = self._decode(s_next, e_last)                         # (B, 1, h, w, D)
            s_all.append(s_next)
            e_all.append(e_last)
            if i + 1 < steps:
                u = torch.cat([u, self.encoder.frames(e_last, u[:, -1])[0]], dim=1)
                s = self.encoder.temporal(u)[:, -1:]
        return Rollout(e=torch.cat(e_all, 1), s=torch.cat(s_all, 1))

    def _check(self, e: Tensor, name: str, min_frames: int) -> None:
        h, w = self.cfg.grid
        ok = e.dim() == 5 and tuple(e.shape[2:]) == (h, w, self.cfg.token_dim) and e.shape[1] >= min_frames
        if not ok:
            raise ValueError(f"FLAM: {name} has shape {tuple(e.shape)}; expected (B, T, {h}, {w}, "
                             f"{self.cfg.token_dim}) with T >= {min_frames}")



# -- presets ------------------------------------------------------------------------------------
# Per preset: token grid and width, total action size, nsvq code size, slot width W, slot-attention
# (iters, hidden), token MLP (hidden, depth), temporal (depth, heads, head_dim, ffn_hidden), IDM and
# FDM (width, depth, heads, head_dim, ffn_hidden), decoder (hidden, depth, skip).
SIZES: dict[str, dict] = {
    # paper: our choice (the FLAM paper's sizes are not known here), on DiLA's paper tokens and d_z:
    # 11,892,097 parameters with 4 gaussian slots
    "paper": dict(grid=(16, 16), token_dim=768, d_z=256, code_dim=32, width=256, slot_attention=(3, 512),
                  encoder=(768, 2), temporal=(2, 8, 32, 1024), idm=(256, 2, 8, 32, 1024),
                  fdm=(256, 4, 8, 32, 1024), decoder=(512, 3, "none")),
    # small: the CPU demo on 8 x 8 x 384 tokens, 1,268,369 parameters; a training step of 8 clips x 8
    # frames takes ~0.6 x DiLA's small preset's. The decoder adds the previous frame (like DiLA's
    # small first-frame skip), so it starts at "repeat the last frame"
    "small": dict(grid=(8, 8), token_dim=384, d_z=32, code_dim=2, width=128, slot_attention=(3, 256),
                  encoder=(128, 1), temporal=(1, 4, 32, 256), idm=(128, 1, 4, 32, 256),
                  fdm=(128, 2, 4, 32, 256), decoder=(256, 2, "previous_frame")),
    "tiny": dict(grid=(4, 4), token_dim=32, d_z=16, code_dim=2, width=32, slot_attention=(2, 64),
                 encoder=(32, 1), temporal=(1, 2, 16, 64), idm=(32, 1, 2, 16, 64),
                 fdm=(32, 1, 2, 16, 64), decoder=(32, 2, "none")),  # tests: 59,177 parameters
}


def _bottleneck(kind: str, size: dict, slots: int) -> BottleneckConfig:
    if kind == "nsvq":  # DiLA's 16 latent tokens of code_dim, shared out over the slots (rounded up)
        code_dim = size["code_dim"]
        return BottleneckConfig(kind="nsvq", d_z=slots * math.ceil(NSVQ_TOKENS / slots) * code_dim, codebook_size=8,
                                code_dim=code_dim)
    return BottleneckConfig(kind=kind, d_z=size["d_z"], beta=1e-4)


def preset(name: str, variant: str = "flam", bottleneck: str = "gaussian", weights: dict[str, float] | None = None,
           slots: int = 4, **overrides) -> FLAMConfig:
    """The named FLAM configuration with `slots` K, one per-slot `bottleneck` kind (with its
    regulariser `weights`, e.g. {"beta": 1e-3}) and fields replaced (a dict replaces fields of a
    nested config, as in dila_core.presets.preset). Sizes: "paper" (16 x 16 x 768 tokens, d_z 256;
    our choice of widths), "small" (8 x 8 x 384, d_z 32, CPU demo), "tiny" (4 x 4 x 32, tests)."""
    if name not in SIZES:
        raise ValueError(f"preset: unknown name {name!r} (known: {', '.join(SIZES)})")
    size = SIZES[name]
    (iters, slot_hidden), (enc_hidden, enc_depth) = size["slot_attention"], size["encoder"]
    hidden, depth, skip = size["decoder"]
    cfg = FLAMConfig(
        grid=size["grid"], token_dim=size["token_dim"], variant=variant, slots=slots,
        encoder=ResidualMLPConfig(hidden=enc_hidden, depth=enc_depth),
        slot_attention=SlotAttentionConfig(width=size["width"], iters=iters, hidden=slot_hidden),
        temporal=TemporalConfig(*size["temporal"]), idm=PerSlotConfig(*size["idm"]), fdm=PerSlotConfig(*size["fdm"]),
        bottleneck=dataclasses.replace(_bottleneck(bottleneck, size, slots), **(weights or {})),
        decoder=BroadcastDecoderConfig(hidden=hidden, depth=depth, skip=skip),
    )
    cfg = replace_fields(cfg, overrides)
    cfg.validate(f"preset:{name}")
    return cfg
