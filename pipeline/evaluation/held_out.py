"""Rollouts on other datasets' held-out episodes (`evaluate.held_out`; the paper evaluates on
held-out SSv2 and RT-1): the rollout section of the evaluate stage, computed in memory on another
feature store's validation episodes.

The clips are picked as the rollout stage picks them (the window starting each of the first
`rollout.episodes` validation episodes of that store, split by the same seeded rule, so a store
in train.mixture is scored on exactly the episodes the mixture held out), rolled out rounded to
float16 as the rollout stage stores them, and scored by `rollout_scores` in that store's
normalisation (its own statistics, or the mixture's shared ones). ratio = rollout / repeat-last-
frame token MSE (below 1 beats the trivial baseline). Tokens only: the pixel decoder is trained
on train.dataset's store.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from pipeline.data.windows import Windows, denormalize
from pipeline.evaluation import metrics as M
from pipeline.evaluation.clips import rollout_clips
from pipeline.evaluation.sections import Context, Unavailable, rollout_scores
from pipeline.training.runs import open_windows

NOT_DECODED = "held-out stores are scored on tokens (the pixel decoder is trained on train.dataset)"


def scored_rollouts(ctx: Context, windows: Windows) -> dict[str, Any]:
    """The rollout section of ctx's model on `windows` (context + horizon frames), in memory: the
    rollout stage's clips, rounded to float16 as it stores them, scored by `rollout_scores`."""
    r = ctx.params.rollout
    rolled = rollout_clips(ctx.model, windows, r.episodes, r.context, ctx.dev)
    if rolled["predicted"] is None:
        raise Unavailable(f"variant {ctx.variant!r} has no latent actions to roll out")
    stored = denormalize(rolled["predicted"], ctx.mean, ctx.std).astype(np.float16)  # (N, H, h, w, D)
    return rollout_scores(ctx, rolled["truth"], stored)


def held_out_section(ctx: Context, name: str, encoder: dict[str, Any] | None) -> dict[str, Any]:
    """The rollout scores of ctx's model on dataset `name`'s held-out episodes; `encoder` is the
    encoder record of the store the model was trained on (the tokens must come from the same)."""
    p, r = ctx.params, ctx.params.rollout
    ctx.require_latents("rollouts")
    _, val = open_windows(p, name, length=r.context + r.horizon, what="rollout.context + rollout.horizon")
    try:
        theirs = val.attrs.get("encoder")
        if theirs != encoder:
            raise Unavailable(f"{val.path}: tokens from encoder {theirs}, the model was trained on tokens "
                              f"from {encoder}; extract both with the same encoder")
        cfg = ctx.model.cfg
        if (val.grid, val.dim) != (tuple(cfg.grid), cfg.token_dim):
            raise Unavailable(f"{val.path}: holds a {val.grid} x {val.dim} token grid, the model expects "
                              f"{tuple(cfg.grid)} x {cfg.token_dim}")
        own = dataclasses.replace(ctx, mean=val.mean.numpy(), std=val.std.numpy(), decode=None,
                                  decode_reason=NOT_DECODED, unavailable={})
        out = scored_rollouts(own, val)
    finally:
        val.close()
    for key, why in own.unavailable.items():                                         # "rollout.ssim" -> ...
        ctx.unavailable[f"held_out.{name}.{key.split('.', 1)[1]}"] = why
    out["ratio"] = M.error_ratio(out["token_mse"], out["baseline"]["token_mse"])
    out["store"] = str(val.path)
    return out
