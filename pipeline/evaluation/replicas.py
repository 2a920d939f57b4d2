"""A replica (a variant trained again from another seed) scored in memory, exactly as the
rollout and evaluate stages score the main run: the rollout, teacher-forced, probe and held-out sections
on the same held-out clips, the rollout rounded to float16 as the rollout stage stores it, so the
replica of the main seed reproduces the main run's headline numbers.
"""
from __future__ import annotations

from typing import Any

import torch

from pipeline.evaluation.clips import pick, stack
from pipeline.evaluation.held_out import held_out_section, scored_rollouts
from pipeline.evaluation.sections import Context, Latents, probe_section, section, teacher_forced_section
from pipeline.evaluation.seeds import headline
from pipeline.params import Params
from pipeline.training.distributed import device
from pipeline.training.runs import load_final_model, open_windows

NOT_DECODED = "replicas are scored on tokens only (no pixel decoder)"


def replica_headline(params: Params, variant: str) -> tuple[dict[str, float | None], dict[str, str],
                                                              dict[str, list[float]]]:
    """(headline numbers, unavailable reasons, rollout curves) of `variant`'s final model under
    `params` (a replica's paths), from the same clips and with the same seed as the rollout and
    evaluate stages. The curves are the rollout's token MSE per horizon step under the clip's own z
    (`token_mse_per_step`) and another clip's (`other_z_token_mse_per_step`), for the report's seed
    bands; empty for a variant without rollouts."""
    torch.manual_seed(params.seed)
    dev, r = device(), params.rollout
    _, val = open_windows(params)
    _, long = open_windows(params, length=r.context + r.horizon, what="rollout.context + rollout.horizon")
    model, *_ = load_final_model(params, variant, val, dev)
    mean, std = val.mean.numpy(), val.std.numpy()
    clips = stack(val, pick(val, tile=False, limit=r.episodes))                   # as evaluate picks them
    ctx = Context(params, variant, model, dev, mean, std, clips, None, NOT_DECODED, {})
    out: dict[str, Any] = {"probe": {}}
    section(out, "rollout", lambda: scored_rollouts(ctx, long), ctx.unavailable)
    section(out, "teacher_forced", lambda: teacher_forced_section(ctx), ctx.unavailable)
    cache: dict[str, Latents] = {}
    for name in params.evaluate.probe_datasets:
        section(out["probe"], name, lambda: probe_section(ctx, name, cache), ctx.unavailable, f"probe.{name}")
    out["held_out"] = {}
    for name in params.evaluate.held_out:
        section(out["held_out"], name, lambda: held_out_section(ctx, name, val.attrs.get("encoder")),
                ctx.unavailable, f"held_out.{name}")
    rolled = out.get("rollout") or {}
    curves = {} if not rolled else {"token_mse_per_step": rolled["token_mse_per_step"],
                                    "other_z_token_mse_per_step": rolled["other_z"]["token_mse_per_step"]}
    return headline(out, params.evaluate), dict(sorted(ctx.unavailable.items())), curves
