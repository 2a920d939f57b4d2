"""Content pathway: per-token content encoder c_t, then a Mamba memory over time.

The memory runs independently at each spatial position (h*w folded into the batch):
`layers` pre-norm residual Mamba layers, then a pre-norm residual MLP, so
c^mem_t depends on c_0..c_t only. It has a full-sequence form (`forward`) and a
step-wise form with explicit state (`init_state` / `step`), used by rollouts;
both give the same result. Paper shape (d_c 256, 2 layers, d_state 32, d_conv 4,
expand 2, MLP hidden 256): 1,057,792 parameters.

`ContentPathway` and `NoContent` (the "w/o content" ablation) share one interface:
they turn the ST-Transformer output x into the list of decoder contexts they
contribute ([c^mem] or []).
"""
from __future__ import annotations

from dataclasses import dataclass

from einops import rearrange
from torch import Tensor, nn

from dila_core.config import check_ints
from dila_core.layers import ResidualMLP, ResidualMLPConfig
from dila_core.mamba import Mamba, MambaConfig, MambaState

MemoryState = tuple[MambaState, ...]


@dataclass(frozen=True)
class MemoryConfig:
    """layers: stacked Mamba layers; d_state, d_conv, expand: Mamba sizes; mlp_hidden: residual MLP."""

    layers: int
    d_state: int
    d_conv: int
    expand: int
    mlp_hidden: int

    def validate(self, where: str) -> None:
        check_ints(self, where, "layers d_state d_conv expand mlp_hidden")


class ContentMemory(nn.Module):
    """c (B, T, h, w, d_c) -> c^mem (B, T, h, w, d_c), causal in time, per spatial position."""

    def __init__(self, cfg: MemoryConfig, d_c: int):
        super().__init__()
        mamba = MambaConfig(d_model=d_c, d_state=cfg.d_state, d_conv=cfg.d_conv, expand=cfg.expand)
        self.norms = nn.ModuleList(nn.LayerNorm(d_c) for _ in range(cfg.layers))
        self.layers = nn.ModuleList(Mamba(mamba) for _ in range(cfg.layers))
        self.mlp = nn.Sequential(nn.LayerNorm(d_c), nn.Linear(d_c, cfg.mlp_hidden), nn.GELU(),
                                 nn.Linear(cfg.mlp_hidden, d_c))

    def forward(self, c: Tensor) -> Tensor:
        b, _, h, w, _ = c.shape
        x = rearrange(c, "b t h w d -> (b h w) t d")
        for norm, layer in zip(self.norms, self.layers, strict=True):
            x = x + layer(norm(x))
        x = x + self.mlp(x)
        return rearrange(x, "(b h w) t d -> b t h w d", b=b, h=h, w=w)

    def init_state(self, batch: int, grid: tuple[int, int], device=None, dtype=None) -> MemoryState:
        """Zero state for `batch` clips on an (h, w) grid (one sequence per spatial position)."""
        n = batch * grid[0] * grid[1]
        return tuple(layer.init_state(n, device=device, dtype=dtype) for layer in self.layers)

    def step(self, c_t: Tensor, state: MemoryState) -> tuple[Tensor, MemoryState]:
        """One frame c_t (B, h, w, d_c) -> c^mem_t (B, h, w, d_c) and the new state (state is not mutated)."""
        b, h, w, _ = c_t.shape
        x = rearrange(c_t, "b h w d -> (b h w) d")
        new_state = []
        for norm, layer, s in zip(self.norms, self.layers, state, strict=True):
            y, s = layer.step(norm(x), s)
            x = x + y
            new_state.append(s)
        x = x + self.mlp(x)
        return rearrange(x, "(b h w) d -> b h w d", b=b, h=h, w=w), tuple(new_state)


class ContentPathway(nn.Module):
    """x (B, T, h, w, W) -> [c^mem (B, T, h, w, d_c)]: content encoder then memory."""

    def __init__(self, encoder: ResidualMLPConfig, memory: MemoryConfig, width: int, d_c: int):
        super().__init__()
        self.context_dims = [d_c]
        self.encoder = ResidualMLP(encoder, width, d_c)
        self.memory = ContentMemory(memory, d_c)

    def forward(self, x: Tensor) -> list[Tensor]:
        return [self.memory(self.encoder(x))]

    def init_state(self, x: Tensor) -> MemoryState:
        """Zero state matching the batch, grid, device and dtype of x (B, T, h, w, W)."""
        b, _, h, w, _ = x.shape
        return self.memory.init_state(b, (h, w), device=x.device, dtype=x.dtype)

    def step(self, x_t: Tensor, state: MemoryState) -> tuple[list[Tensor], MemoryState]:
        """One frame x_t (B, h, w, W) -> [c^mem_t (B, h, w, d_c)] and the new state."""
        c_mem, state = self.memory.step(self.encoder(x_t), state)
        return [c_mem], state


class NoContent(nn.Module):
    """The "w/o content" ablation: contributes no context to the decoder."""

    def __init__(self):
        super().__init__()
        self.context_dims: list[int] = []

    def forward(self, x: Tensor) -> list[Tensor]:
        return []

    def init_state(self, x: Tensor) -> tuple:
        return ()

    def step(self, x_t: Tensor, state: tuple) -> tuple[list[Tensor], tuple]:
        return [], state


def scan(pathway: nn.Module, x: Tensor) -> tuple[list[Tensor], MemoryState]:
    """Step `pathway` through x (B, T, h, w, W) from a zero state: last contexts and final state."""
    state, contexts = pathway.init_state(x), []
    for t in range(x.shape[1]):
        contexts, state = pathway.step(x[:, t], state)
    return contexts, state

