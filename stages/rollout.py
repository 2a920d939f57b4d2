"""Stage `rollout@<variant>`: autoregressive latent rollouts of held-out episodes.

For the first `rollout.episodes` validation episodes of `train.dataset` (the shared
seeded split, `pipeline.data.split`) that are long enough, a window of `context + horizon`
kept frames `train.frame_skip` apart is taken from the episode's first frame. The
latent actions z are inferred from the whole true window (`infer_actions`), and the
variant's final model rolls out `horizon` frames after the `context` true frames, in
the model's own state space (`rollout` of dila_core.world_model). Output, under `<paths.eval>/rollouts/<variant>/`:

    tokens.zarr   Zarr v3 group, tokens in the feature store's scale (not normalized):
                  truth      (N, context + horizon, h, w, D) float16  the true window
                  predicted  (N, horizon, h, w, D) float16           the rollout (absent for a
                                                                     variant without latent actions)
                  episodes   (N,) int64                              store episode of each window
                  frames     (N, context + horizon) int64            store frame of each window step
                  attrs["dila_rollout"]: what made it (model, store, encoder, settings)
    episode_EEEE.png  when the pixel decoder exists, decoded by it: a labelled grid (`pixels.rollout_grid`)
                  of the true frames, the rollout under the clip's own z, the rollout under the next
                  clip's z, and the last context frame repeated; context frames marked, steps numbered
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import zarr
from zarr.codecs import BloscCodec

from pipeline import artifacts
from pipeline.config import to_dict
from pipeline.data.windows import denormalize
from pipeline.evaluation.clips import roll_out, rollout_clips
from pipeline.evaluation.pixels import load_decoder, write_grids
from pipeline.params import Params
from pipeline.training.distributed import device
from pipeline.training.runs import load_final_model, open_windows

FORMAT = "dila-rollouts/1"


def _array(group: zarr.Group, name: str, values: np.ndarray) -> None:
    chunks = (1, *values.shape[1:]) if values.ndim > 2 else values.shape
    blosc = BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")
    group.create_array(name, shape=values.shape, dtype=values.dtype, chunks=chunks, compressors=blosc)[...] = values


def run(params: Params, variant: str) -> Path:
    """Roll out the held-out windows with `variant`'s final model; returns the output directory."""
    torch.manual_seed(params.seed)
    dev, r = device(), params.rollout
    length = r.context + r.horizon
    _, val = open_windows(params, length=length, what="rollout.context + rollout.horizon")
    model, phase, step, weights = load_final_model(params, variant, val, dev)
    clips = rollout_clips(model, val, r.episodes, r.context, dev)
    mean, std = val.mean.numpy(), val.std.numpy()
    out = artifacts.rollout_dir(params, variant)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("episode_*.png"):
        old.unlink()
    group = zarr.open_group(artifacts.rollout_store(params, variant), mode="w", zarr_format=3)
    skip = params.train.frame_skip
    _array(group, "truth", clips["truth"])                                         # (N, T, h, w, D)
    _array(group, "episodes", clips["episode"])
    _array(group, "frames", clips["frames"])                                       # (N, T)
    predicted, pixels = clips["predicted"], "unavailable: no rollout"              # (N, H, h, w, D)
    if predicted is not None:
        _array(group, "predicted", denormalize(predicted, mean, std).astype(np.float16))
        decode, reason = load_decoder(params, val.attrs.get("plan_sha256"), dev)
        if decode is None:
            pixels = f"unavailable: {reason}"
        else:  # the grids also show each clip rolled out under the next clip's z
            other = roll_out(model, clips["e"], r.context, dev, np.roll(clips["e"], -1, axis=0))
            grids = write_grids(out, decode, clips["e"], predicted, r.context, clips["episode"], other,
                                f"{variant} on {params.train.dataset}")
            pixels = f"{len(grids)} PNG grids"
    group.attrs["dila_rollout"] = {
        "format": FORMAT, "variant": variant, "dataset": params.train.dataset, "store": str(val.path),
        "store_plan_sha256": val.attrs.get("plan_sha256"), "encoder": val.attrs.get("encoder"),
        "checkpoint": {"path": str(weights), "phase": phase, "step": step}, "context": r.context,
        "horizon": r.horizon, "frame_skip": skip, "seed": params.seed,
        "model": to_dict(model.cfg), "pixels": pixels,
        "predicted": "ok" if predicted is not None else
        f"unavailable: variant {variant!r} has no latent actions to roll out",
    }
    return out
