"""Stage `evaluate@<variant>`: every evaluation of one variant, as a DVC metrics file (the
`report` stage tabulates them over all variants).

Token errors are on normalized tokens (the model's space). A "clip" is `train.seq_len` frames
`train.frame_skip` apart from the first frame of one of the first `rollout.episodes` held-out
episodes of `train.dataset`. Sections of `<paths.eval>/<variant>/details.json` (metrics.json
holds the headline numbers of `headline`):

- rollout: from the rollout stage's tokens; token MSE and cosine per horizon step and their
  means, also for the "repeat the last context frame" baseline; SSIM (LPIPS) of decoded
  rollouts vs decoded true tokens (the pixel decoder's own error cancels); other_z: token
  MSE of rollouts under the next clip's actions instead of their own (if it equals the
  true-z error, the model ignores z).
- cycle_transfer: clip i's motion onto clip i+1's first frame and back onto clip i's
  (`pipeline.evaluation.metrics.cycle_transfer`); token MSE to clip i (baseline: its first frame
  repeated), SSIM where the pixel decoder exists.
- teacher_forced: phase 1's final validation L_e and its step, from the trainer's record.
- probe.<dataset>: ridge probe z -> true actions (`evaluate.probe_alpha`), fit on the train
  episodes' clips tiling each episode, scored on the validation episodes'; on synthetic data
  the target is the pose change between the two frames (= the action when frame_skip is 1)
  and r2_translation is the mean R² of the (dx, dy) dimensions.
- objects.<dataset>: per-object probes, slot -> object matching and DCI on probe datasets with
  several objects per episode (`pipeline.evaluation.objects`).
- motion_isolation: structure frozen at s_0 (`isolate_motion`); drift = mean squared change
  of the output from its first frame, beside the same for the true clip (reference).
- ground_truth (synthetic train.dataset): the renderer draws the exact answer, encoded
  with the store's own frozen encoder: action_transfer (clip i's motion on clip i+1's first
  frame vs clip i+1's appearance rendered under clip i's pose changes) and rebinding
  (structure of clip i, content of clip i+1 vs clip i+1's appearance at clip i's poses);
  reencode_mse checks that re-rendering and encoding a true clip reproduces the store.
- latent_space: the shape of z (effective rank, per-dimension variance, active dimensions,
  inverse consistency, codebook use), see `pipeline.evaluation.manifold`.
- future_leakage: one-step predictions under z from the true next frame and from a shuffled
  future (another frame of the same clip); ratio = shuffled / true error, see
  `pipeline.evaluation.manifold`.
- probe.<dataset>.groups: the same probe scored per motion family (R² per transform family).
- held_out.<dataset>: the rollout section on the held-out episodes of each store in
  `evaluate.held_out`, in memory, plus ratio = rollout / repeat token MSE
  (`pipeline.evaluation.held_out`).
- unavailable: "section[.metric]" -> why it could not be computed (never a made-up value).

`latents.npz` beside it holds z of the validation clips of train.dataset with their motion
family (-1 where unknown) and the norm of their true action (NaN where unknown), for the
latent-manifold plots (no rows for a variant without z).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from dila_core.world_model import family_of
from pipeline import artifacts
from pipeline.evaluation.clips import pick, stack
from pipeline.evaluation.held_out import held_out_section
from pipeline.evaluation.manifold import future_leakage_section, manifold_section
from pipeline.evaluation.objects import objects_section
from pipeline.evaluation.pixels import load_decoder
from pipeline.evaluation.seeds import headline
from pipeline.evaluation.sections import (
    Context,
    Latents,
    cycle_section,
    ground_truth_section,
    isolation_section,
    latents_file,
    probe_section,
    rollout_section,
    section,
    teacher_forced_section,
)
from pipeline.params import Params
from pipeline.training.distributed import device
from pipeline.training.runs import load_final_model, open_windows

FORMAT = "dila-metrics/1"


def run(params: Params, variant: str) -> Path:
    """Evaluate `variant`'s final model; writes details.json (every section), metrics.json (the
    headline numbers) and latents.npz; returns metrics.json's path."""
    torch.manual_seed(params.seed)
    dev = device()
    _, val = open_windows(params)
    model, phase, step, weights = load_final_model(params, variant, val, dev)
    clips = stack(val, pick(val, tile=False, limit=params.rollout.episodes))
    decode, why = load_decoder(params, val.attrs.get("plan_sha256"), dev)
    ctx = Context(params, variant, model, dev, val.mean.numpy(), val.std.numpy(), clips, decode, why, {})
    encoder = val.attrs.get("encoder") or {}
    out: dict[str, Any] = {
        "format": FORMAT, "variant": variant, "dataset": params.train.dataset,
        "encoder_weights": encoder.get("weights"), "encoder": encoder,
        "model": {"path": str(weights), "phase": phase, "step": step, "family": family_of(model),
                  "variant": model.cfg.variant, "bottleneck": model.cfg.bottleneck.kind},
        "clips": {"count": len(clips["e"]), "frames": params.train.seq_len, "frame_skip": params.train.frame_skip},
    }
    gone = ctx.unavailable
    section(out, "rollout", lambda: rollout_section(ctx), gone)
    section(out, "cycle_transfer", lambda: cycle_section(ctx), gone)
    section(out, "teacher_forced", lambda: teacher_forced_section(ctx), gone)
    cache: dict[str, Latents] = {}
    out["probe"] = {}
    out["objects"] = {}
    for name in params.evaluate.probe_datasets:
        section(out["probe"], name, lambda: probe_section(ctx, name, cache), gone, f"probe.{name}")
        section(out["objects"], name, lambda: objects_section(ctx, name, cache), gone, f"objects.{name}")
    out["held_out"] = {}
    for name in params.evaluate.held_out:
        section(out["held_out"], name, lambda: held_out_section(ctx, name, encoder), gone, f"held_out.{name}")
    section(out, "motion_isolation", lambda: isolation_section(ctx), gone)
    section(out, "ground_truth", lambda: ground_truth_section(ctx, val.attrs), gone)
    section(out, "latent_space", lambda: manifold_section(ctx, cache), gone)
    section(out, "future_leakage", lambda: future_leakage_section(ctx), gone)
    latents_file(ctx, cache)
    out["unavailable"] = dict(sorted(ctx.unavailable.items()))
    details = artifacts.details_path(params, variant)
    details.parent.mkdir(parents=True, exist_ok=True)
    details.write_text(json.dumps(out, indent=1, allow_nan=False) + "\n")
    path = artifacts.metrics_path(params, variant)
    path.write_text(json.dumps(headline(out, params.evaluate), indent=1, allow_nan=False) + "\n")
    return path
