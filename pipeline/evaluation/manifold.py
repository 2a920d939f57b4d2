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
"""
from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.evaluation import latent_stats as S
from pipeline.evaluation.clips import batched
from pipeline.evaluation.sections import Context, Latents, latents
from pipeline.training.runs import open_windows

ACTIVE = 0.01  # a dimension is active at >= 1% of the largest per-dimension variance


def codebook_statistics(z: np.ndarray, code_dim: int, codebook_size: int) -> dict[str, float]:
    """Usage and perplexity of the codes of snapped z (M, n * code_dim): identical tokens are one code."""
    tokens = z.reshape(-1, code_dim)                                                  # (M n, code_dim)
    _, counts = np.unique(tokens, axis=0, return_counts=True)
    p = counts / counts.sum()
    return {"usage": float(len(counts) / codebook_size), "perplexity": float(np.exp(-(p * np.log(p)).sum()))}


def manifold_section(ctx: Context, cache: dict[str, Latents]) -> dict[str, Any]:
    ctx.require_latents("the latent-space statistics")
    name = ctx.params.train.dataset
    if name not in cache:
        cache[name] = latents(ctx, name, open_windows(ctx.params, name)[1])
    z = cache[name].z                                                                 # (M, d_z)
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
