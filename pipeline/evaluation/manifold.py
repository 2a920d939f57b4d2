"""The `latent_space` evaluation section: numbers about the latent-action manifold that need no
eyes (the shape of z, not how well it predicts), from `pipeline.evaluation.latent_stats`.

- effective_rank, dimension_variance, active_dims: of z over the validation clips tiling every
  held-out episode of train.dataset; a dimension is active when its variance is at least 1% of
  the largest one (a collapsed or dead dimension is not);
- inverse_consistency: mean cos(z(t -> t+1), z(t+1 -> t)) over the rollout clips, each
  transition inferred forwards and on the time-reversed clip (-1: the reverse motion gets the
  opposite action; 0: unrelated);
- codebook (nsvq): the fraction of codes in use and the perplexity of the code histogram over
  every latent token, from the snapped z (each token equals one code exactly).

`future_leakage_section` (the `future_leakage` section) asks whether the next frame reaches a
prediction only through z. Each transition t -> t+1 of the rollout clips is predicted one step
from frame t twice: under z inferred from (e_t, e_{t+1}), and under z inferred from (e_t, e_u)
with e_u a shuffled future (a frame of the same clip at another time: same content, other
motion). `ratio` = error with the shuffled z / error with the true z. Above 1: z carries the
true future's motion. About 1 while the one-step error is well below the repeat baseline: the
future reaches the prediction by another route (a leak). About 1 at the baseline: z is ignored.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dila_core.bottleneck import code_statistics
from pipeline.evaluation import latent_stats as S
from pipeline.evaluation import metrics as M
from pipeline.evaluation.clips import batched
from pipeline.evaluation.sections import Context, Latents, Unavailable, validation_latents

ACTIVE = 0.01  # a dimension is active at >= 1% of the largest per-dimension variance


def codebook_statistics(z: np.ndarray, code_dim: int, codebook_size: int) -> dict[str, float]:
    """Usage and perplexity of the codes of snapped z (M, n * code_dim): identical tokens are one code."""
    _, ids = np.unique(z.reshape(-1, code_dim), axis=0, return_inverse=True)         # (M n,) code of each token
    stats = code_statistics(torch.from_numpy(ids.reshape(-1)), codebook_size)
    return {"usage": float(stats["codebook_usage"]), "perplexity": float(stats["perplexity"])}


def manifold_section(ctx: Context, cache: dict[str, Latents]) -> dict[str, Any]:
    ctx.require_latents("the latent-space statistics")
    z = validation_latents(ctx, cache).z                                              # (M, d_z)
    var = S.dimension_variance(z)
    e = ctx.clips["e"]                                                                # (N, T, h, w, D)
    forward = batched(ctx.model.infer_actions, e, dev=ctx.dev)                        # (N, T-1, d_z)
    backward = batched(ctx.model.infer_actions, np.ascontiguousarray(e[:, ::-1]), dev=ctx.dev)[:, ::-1]
    out: dict[str, Any] = {
        "transitions": len(z), "effective_rank": S.effective_rank(z), "d_z": int(z.shape[1]),
        "active_dims": int((var >= ACTIVE * var.max()).sum()) if var.max() > 0 else 0,
        "dimension_variance": [float(v) for v in var],
        "inverse_consistency": S.inverse_consistency(forward, backward),
    }
    b = ctx.model.cfg.bottleneck
    if b.kind == "nsvq":
        out["codebook"] = codebook_statistics(z, b.code_dim, b.codebook_size)
    return out


def future_leakage_section(ctx: Context) -> dict[str, Any]:
    ctx.require_latents("the future-leakage check")
    e = ctx.clips["e"]                                                                # (N, T, h, w, D)
    n, t = e.shape[:2]
    if t < 3:
        raise Unavailable("needs clips of at least 3 frames (train.seq_len >= 3)")
    now = np.arange(t - 1)                                                            # (T-1,) transition t -> t+1
    shuffled = (now + 1 + (t - 1) // 2) % t                                           # another frame of the clip
    shuffled = np.where(shuffled == now + 1, (shuffled + 1) % t, shuffled)
    shuffled = np.where(shuffled == now, (shuffled + 1) % t, shuffled)
    current = e[:, now].reshape(-1, 1, *e.shape[2:])                                  # (N(T-1), 1, h, w, D)
    truth = e[:, now + 1].reshape(-1, 1, *e.shape[2:])
    other = e[:, shuffled].reshape(-1, 1, *e.shape[2:])

    def one_step(frame: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        z = ctx.model.infer_actions(torch.cat([frame, future], dim=1))                # (B, 1, d_z)
        return ctx.model.rollout(frame, z, 1).e                                       # (B, 1, h, w, D)

    own = float(M.token_mse_per_step(batched(one_step, current, truth, dev=ctx.dev), truth).mean())
    foreign = float(M.token_mse_per_step(batched(one_step, current, other, dev=ctx.dev), truth).mean())
    repeat = float(M.token_mse_per_step(current, truth).mean())
    return {"transitions": int(len(current)), "true_z_mse": own, "shuffled_z_mse": foreign,
            "repeat_mse": repeat, "ratio": M.error_ratio(foreign, own)}
