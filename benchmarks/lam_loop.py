"""The latent-action loop alone, on structure maps whose motion is known exactly.

DiLA's structure pathway learns z_t = Bottleneck(IDM(Δs_t)) only through the FDM's use
of it: ŝ_{t+1} = s_t + FDM(s_t, z_t). This script isolates that loop from the encoder,
the backbone and the decoder, to ask whether the objective discovers a z that carries
the motion and whether a linear probe can read the motion from it.

Data: s (B, T, g, g, d_s) is zero except for one token per frame holding an appearance
vector v (the same v for every clip with --appearance fixed, a fresh one per clip with
random); between frames the token moves by one of (0,0), (0,±1), (±1,0) drawn i.i.d.,
clamped to the grid, so the motion is never predictable from the past. The preset's own
IDM, bottleneck and FDM (grid and d_s from the preset) train on the preset's objective
with λ_s = 1 (s is data here, so nothing else ties ŝ to s) and the other terms chosen by
--terms: paper (the paper's weights), none (L_s alone), no-collapse (paper without the
anti-collapse term). --oracle feeds the true move as z to the FDM instead (no IDM).

Printed (JSON): the FDM's error on held-out clips with its own z, with z shuffled across
clips and for a zero update; and the ridge-probe R² of z to the true move (dx, dy).

Usage (from the project root):
    python benchmarks/lam_loop.py [--preset small] [--steps 800] [--appearance random]
                                  [--terms paper] [--oracle]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch
import torch.nn.functional as F

from dila_core.dynamics import LatentDynamics
from dila_core.presets import preset
from pipeline.evaluation.metrics import linear_probe

MOVES = torch.tensor([[0, 0], [0, 1], [0, -1], [1, 0], [-1, 0]])
FRAMES, BATCH = 6, 16
TERMS = {"paper": {}, "none": dict(lambda_z=0.0, lambda_norm=0.0, lambda_sym=0.0, collapse_scale=0.0),
         "no-collapse": dict(collapse_scale=0.0)}


def clips(n: int, grid: int, d_s: int, fixed: torch.Tensor | None, g: torch.Generator):
    """s (n, T, grid, grid, d_s) and the true moves (n, T-1, 2)."""
    pos = [torch.randint(0, grid, (n, 2), generator=g)]
    for k in torch.randint(0, len(MOVES), (FRAMES - 1, n), generator=g):
        pos.append((pos[-1] + MOVES[k]).clamp(0, grid - 1))
    pos = torch.stack(pos, 1)                                                      # (n, T, 2)
    v = fixed if fixed is not None else torch.randn(n, 1, d_s, generator=g)       # (n | 1, 1, d_s)
    s = torch.zeros(n, FRAMES, grid, grid, d_s)
    s[torch.arange(n)[:, None], torch.arange(FRAMES)[None], pos[..., 0], pos[..., 1]] = v.expand(n, FRAMES, d_s)
    return s, (pos[:, 1:] - pos[:, :-1]).float()


def true_z(moves: torch.Tensor, d_z: int) -> torch.Tensor:
    return F.pad(moves, (0, d_z - moves.shape[-1]))                                # (n, T-1, d_z)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--appearance", choices=("fixed", "random"), default="random")
    ap.add_argument("--terms", choices=tuple(TERMS), default="paper")
    ap.add_argument("--oracle", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    cfg = preset(a.preset)
    loss = dataclasses.replace(cfg.loss, lambda_s=1.0, **TERMS[a.terms])
    grid, d_s, d_z = cfg.grid[0], cfg.d_s, cfg.bottleneck.d_z
    dyn = LatentDynamics(cfg.idm, cfg.fdm, cfg.bottleneck, loss, tuple(cfg.grid), d_s)
    fixed = torch.randn(1, 1, d_s, generator=torch.Generator().manual_seed(a.seed + 7)) \
        if a.appearance == "fixed" else None
    opt = torch.optim.AdamW(dyn.parameters(), lr=a.lr, weight_decay=1e-5)
    g, start = torch.Generator().manual_seed(a.seed + 1), time.perf_counter()
    for _ in range(a.steps):
        s, moves = clips(BATCH, grid, d_s, fixed, g)
        if a.oracle:
            objective = F.mse_loss(dyn.predict(s[:, :-1], true_z(moves, d_z)), s[:, 1:] - s[:, :-1])
        else:
            objective = dyn(s)[1]
        opt.zero_grad()
        objective.backward()
        opt.step()
    seconds = time.perf_counter() - start
    dyn.eval()
    with torch.no_grad():
        test = torch.Generator().manual_seed(a.seed + 2)
        (s, moves), (s2, moves2) = (clips(256, grid, d_s, fixed, test) for _ in range(2))
        z = true_z(moves, d_z) if a.oracle else dyn.infer(s)                       # (n, T-1, d_z)
        ds = s[:, 1:] - s[:, :-1]
        err = {name: float(F.mse_loss(dyn.predict(s[:, :-1], zz), ds))
               for name, zz in (("own_z", z), ("shuffled_z", z[torch.randperm(len(z))]))}
        out = {"preset": a.preset, "steps": a.steps, "appearance": a.appearance, "terms": a.terms,
               "oracle": a.oracle, "train_s": round(seconds, 1), "fdm_mse": err,
               "zero_update_mse": float(ds.square().mean())}
        if not a.oracle:
            probe = linear_probe(z.flatten(0, 1).numpy(), moves.flatten(0, 1).numpy(),
                                 dyn.infer(s2).flatten(0, 1).numpy(), moves2.flatten(0, 1).numpy(), 1.0)
            out["probe_r2_dx_dy"] = probe["r2_per_dim"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
