"""One Mamba (selective state-space) layer with an explicit, step-able state.

The DiLA content memory runs this layer over time at every spatial position.
Parameter names and shapes follow the `mamba_ssm` package's `Mamba` module
(mamba_simple), so a state_dict saved on either implementation loads strictly
on the other.

Axes: B batch, L time, D d_model, E d_inner (= expand * D), N d_state,
K d_conv, R dt_rank.

Two implementations of the selective scan share one calling convention
(u, delta, A, B, C, D, z=None, delta_bias=None, delta_softplus=False) with
layouts u/delta/z (B, E, L), A (E, N), B/C (B, N, L), D (E,):
- `selective_scan` below: pure PyTorch, a loop over L of vectorised updates,
  state accumulated in float32 (float64 when the inputs are float64);
- `mamba_ssm`'s fused CUDA kernel, used for CUDA inputs when the optional
  `gpu` extra is installed. `scan_for` picks one; nothing else branches.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half/bfloat16/float32 inputs, float64 for float64 inputs."""
    return torch.promote_types(dtype, torch.float32)


def _scan_from(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
               h: Tensor) -> tuple[Tensor, Tensor]:
    """Run h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t, y_t = C_t . h_t from h.

    u, delta: (B, E, L); A: (E, N); B, C: (B, N, L); h: (B, E, N), all in one
    accumulation dtype. Returns y (B, E, L) and the last state (B, E, N).
    """
    ys = []
    for t in range(u.shape[-1]):
        decay = (delta[:, :, t, None] * A).exp_()                      # (B, E, N)
        drive = (delta[:, :, t] * u[:, :, t])[:, :, None] * B[:, None, :, t]  # (B, E, N)
        h = torch.addcmul(drive, decay, h)                              # (B, E, N)
        ys.append(torch.bmm(h, C[:, :, t, None]).squeeze(-1))          # (B, E)
    return torch.stack(ys, dim=-1), h                                   # (B, E, L), (B, E, N)


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
                   z: Tensor | None = None, delta_bias: Tensor | None = None,
                   delta_softplus: bool = False) -> Tensor:
    """Pure-PyTorch selective scan from a zero state, same convention as mamba_ssm's.

    u, delta: (B, E, L); A: (E, N); B, C: (B, N, L); D: (E,); z: (B, E, L) or None
    (gates the output with silu(z)); delta_bias: (E,) or None, added to delta
    before the optional softplus. Returns y (B, E, L) in u's dtype.
    """
    acc = _accumulation_dtype(u.dtype)
    delta = delta.to(acc)
    if delta_bias is not None:
        delta = delta + delta_bias.to(acc)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    h0 = u.new_zeros(u.shape[0], A.shape[0], A.shape[1], dtype=acc)     # (B, E, N)
    u32 = u.to(acc)
    y, _ = _scan_from(u32, delta, A.to(acc), B.to(acc), C.to(acc), h0)  # (B, E, L)
    y = y + D.to(acc)[:, None] * u32
    if z is not None:
        y = y * F.silu(z.to(acc))
    return y.to(u.dtype)


def _load_cuda_scan():
    """mamba_ssm's fused selective scan if the optional extra imports, else ours."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError:
        return selective_scan
    return selective_scan_fn


_CUDA_SCAN = _load_cuda_scan()
HAS_FUSED_SCAN = _CUDA_SCAN is not selective_scan


def scan_for(x: Tensor):
    """The selective-scan implementation for a tensor on x's device."""
    return _CUDA_SCAN if x.is_cuda else selective_scan


@dataclass(frozen=True)
class MambaConfig:
    d_model: int
    d_state: int = 32
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | None = None  # None -> ceil(d_model / 16)

    def validate(self, where: str) -> None:
        names = ["d_model", "d_state", "d_conv", "expand"] + (["dt_rank"] if self.dt_rank is not None else [])
        for name in names:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{where}.{name} = {v!r} is not allowed: expected an integer >= 1"
                                 + (" (or None for ceil(d_model / 16))" if name == "dt_rank" else ""))

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def resolved_dt_rank(self) -> int:
        return self.dt_rank if self.dt_rank is not None else math.ceil(self.d_model / 16)


@dataclass
class MambaState:
    conv: Tensor  # (B, E, K)  last K inputs of the depthwise conv, newest last
    ssm: Tensor   # (B, E, N)  SSM hidden state, float32 (float64 for float64 inputs)


DT_MIN, DT_MAX = 1e-3, 1e-1  # range of the initial step size delta (as in mamba_ssm)


def _inverse_softplus(y: Tensor) -> Tensor:
    return y + torch.log(-torch.expm1(-y))


class Mamba(nn.Module):
    """Mamba block: in_proj -> causal depthwise conv + silu -> selective SSM, gated by silu(z) -> out_proj."""

    def __init__(self, cfg: MambaConfig):
        super().__init__()
        cfg.validate("MambaConfig")
        self.cfg = cfg
        D, E, N, K, R = cfg.d_model, cfg.d_inner, cfg.d_state, cfg.d_conv, cfg.resolved_dt_rank
        self.in_proj = nn.Linear(D, 2 * E, bias=False)
        self.conv1d = nn.Conv1d(E, E, kernel_size=K, groups=E, padding=K - 1, bias=True)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)
        self.out_proj = nn.Linear(E, D, bias=False)
        # S4D-real: A = -(1..N) on every row, stored as log so A stays negative.
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))
        self.D = nn.Parameter(torch.ones(E))
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        # delta = softplus(dt_proj(.)) starts log-uniform in [DT_MIN, DT_MAX].
        bound = R ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -bound, bound)
        dt = torch.exp(torch.empty(E).uniform_(math.log(DT_MIN), math.log(DT_MAX)))
        with torch.no_grad():
            self.dt_proj.bias.copy_(_inverse_softplus(dt))
        self.dt_proj.bias._no_reinit = True

    def init_state(self, batch: int, device=None, dtype=None) -> MambaState:
        """Zero state; dtype is the input dtype, the SSM state is kept in float32 or wider."""
        device = self.A_log.device if device is None else device
        dtype = self.conv1d.weight.dtype if dtype is None else dtype
        E, N, K = self.cfg.d_inner, self.cfg.d_state, self.cfg.d_conv
        return MambaState(conv=torch.zeros(batch, E, K, device=device, dtype=dtype),
                          ssm=torch.zeros(batch, E, N, device=device, dtype=_accumulation_dtype(dtype)))

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        u, z = self.in_proj(x).chunk(2, dim=-1)                    # (B, L, E) each
        return u.transpose(1, 2), z.transpose(1, 2)                # (B, E, L) each

    def _ssm_inputs(self, xc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """delta without bias (B, E, L), B and C (B, N, L) from the conv output xc (B, E, L)."""
        R, N = self.cfg.resolved_dt_rank, self.cfg.d_state
        dt, Bm, Cm = self.x_proj(xc.transpose(1, 2)).split([R, N, N], dim=-1)  # (B, L, R|N|N)
        delta = F.linear(dt, self.dt_proj.weight)                  # (B, L, E)
        return delta.transpose(1, 2), Bm.transpose(1, 2), Cm.transpose(1, 2)

    def _A(self, acc: torch.dtype) -> Tensor:
        return -torch.exp(self.A_log.to(acc))                      # (E, N)

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, D) -> (B, L, D), causal over L, from a zero state."""
        L = x.shape[1]
        u, z = self._split(x)                                      # (B, E, L)
        xc = F.silu(self.conv1d(u)[..., :L])                       # (B, E, L)
        delta, Bm, Cm = self._ssm_inputs(xc)
        acc = _accumulation_dtype(x.dtype)
        y = scan_for(x)(xc, delta, self._A(acc), Bm, Cm, self.D.to(acc), z=z,
                        delta_bias=self.dt_proj.bias.to(acc), delta_softplus=True)  # (B, E, L)
        return self.out_proj(y.transpose(1, 2))                    # (B, L, D)

    def forward_with_state(self, x: Tensor, state: MambaState) -> tuple[Tensor, MambaState]:
        """Continue from `state` over a whole chunk: (B, L, D) -> (B, L, D) and the new state.

        Equals L calls of `step`; uses the pure-PyTorch scan (the fused kernel
        takes no initial state). Never mutates `state`.
        """
        K = self.cfg.d_conv
        u, z = self._split(x)                                      # (B, E, L)
        window = torch.cat([state.conv[..., 1:], u.to(state.conv.dtype)], dim=-1)  # (B, E, K-1+L)
        xc = F.silu(F.conv1d(window, self.conv1d.weight, self.conv1d.bias, groups=u.shape[1]))  # (B, E, L)
        delta, Bm, Cm = self._ssm_inputs(xc)
        acc, xc32 = state.ssm.dtype, xc.to(state.ssm.dtype)
        delta = F.softplus(delta.to(acc) + self.dt_proj.bias.to(acc)[:, None])  # (B, E, L)
        y, h = _scan_from(xc32, delta, self._A(acc), Bm.to(acc), Cm.to(acc), state.ssm)
        y = ((y + self.D.to(acc)[:, None] * xc32) * F.silu(z.to(acc))).to(x.dtype)  # (B, E, L)
        return self.out_proj(y.transpose(1, 2)), MambaState(conv=window[..., -K:], ssm=h)

    def step(self, x: Tensor, state: MambaState) -> tuple[Tensor, MambaState]:
        """One token: (B, D) -> (B, D) and the new state. Never mutates `state`."""
        u, z = self.in_proj(x).chunk(2, dim=-1)                    # (B, E) each
        window = torch.cat([state.conv[..., 1:], u.to(state.conv.dtype)[..., None]], dim=-1)  # (B, E, K)
        xc = F.silu((window * self.conv1d.weight[:, 0]).sum(-1) + self.conv1d.bias)  # (B, E)
        R, N = self.cfg.resolved_dt_rank, self.cfg.d_state
        dt, Bm, Cm = self.x_proj(xc).split([R, N, N], dim=-1)      # (B, R|N|N)
        acc = state.ssm.dtype
        delta = F.softplus(F.linear(dt, self.dt_proj.weight).to(acc) + self.dt_proj.bias.to(acc))  # (B, E)
        xc32 = xc.to(acc)
        decay = torch.exp(delta[..., None] * self._A(acc))         # (B, E, N)
        h = decay * state.ssm + (delta * xc32)[..., None] * Bm.to(acc)[:, None, :]  # (B, E, N)
        y = torch.einsum("ben,bn->be", h, Cm.to(acc)) + self.D.to(acc) * xc32      # (B, E)
        y = (y * F.silu(z.to(acc))).to(x.dtype)
        return self.out_proj(y), MambaState(conv=window, ssm=h)
