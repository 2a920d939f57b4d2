"""Stage `finetune@<variant>`: phase 2, latent-rollout fine-tuning (`model.rollout_loss`: roll
out from frame 0 with the actions inferred from the true clip) starting from phase 1's final
weights, with its own optimizer and schedule (`finetune.optim`) and `finetune.steps` steps.
Windows, split, batch size, validation and logging as in phase 1 (stages/train.py); outputs
under <paths.models>/<variant>/finetune/ and <paths.logs>/<variant>/finetune/.

A "no_latent_action" variant has no actions to roll out, so phase 2 does not apply: its
stage writes `skipped.json` (why, and which phase-1 weights stand as its final model) in
place of weights, and an empty curve directory, so `finetune@<variant>` stays a stage of
the foreach like every other and later stages read the phase-1 weights (stages.rollout.final_phase).
"""
from __future__ import annotations

import json
from pathlib import Path

from pipeline import distributed
from pipeline.checkpoint import load_checkpoint
from pipeline.config import to_dict
from pipeline.params import Params
from pipeline.trainer import seed_everything
from stages.train import (file_sha256, final_record, final_weights, fit, log_dir, model_config, model_dir, open_windows,
                          spec_for)


NOT_APPLICABLE = ("variant 'no_latent_action' has no latent actions to roll out; phase 2 applies to "
                  "variants 'dila' and 'no_content', and phase 1's weights are this variant's final model")


def check_phase1(params: Params, variant: str, store_plan: str | None) -> Path:
    """Phase 1's final weights for `variant`, checked to exist and to come from the current store."""
    weights, record = final_weights(params, variant, "train"), final_record(params, variant, "train")
    if not weights.is_file() or not record.is_file():
        raise FileNotFoundError(f"{weights}: no phase-1 weights for variant {variant!r}; "
                                f"run `dila train {variant}` first")
    trained_on = json.loads(record.read_text())["store"]["plan_sha256"]
    if trained_on != store_plan:
        raise ValueError(f"{record}: phase 1 was trained on another feature store than "
                         f"{params.train.dataset!r} holds now; run `dila train {variant}` again")
    return weights


def run(params: Params, variant: str, show_progress: bool = True) -> Path:
    """Phase 2 for `variant`, from its phase-1 weights; resumes after a kill. Returns the final
    weights' path."""
    d = distributed.init()
    data = open_windows(params)
    init = check_phase1(params, variant, data[0].attrs.get("plan_sha256"))
    if params.variant(variant).variant == "no_latent_action":
        return skip(params, variant, init, d)
    model, _ = load_checkpoint(init)
    want = model_config(params, variant, data[0])
    if to_dict(model.cfg) != to_dict(want):
        raise ValueError(f"{init}: the phase-1 model's config differs from what params give now "
                         f"(model.preset {params.model.preset!r}, variants.{variant}); run `dila train {variant}` again")
    seed_everything(params.seed, d.rank)
    f = params.finetune
    spec = spec_for(params, "rollout", f.steps, f.checkpoint_every, f.optim)
    extra = {"init": {"path": str(init), "sha256": file_sha256(init)}}
    return fit(params, variant, "finetune", model, data, spec, extra, d, show_progress)


def skip(params: Params, variant: str, init: Path, d: distributed.Dist) -> Path:
    """Phase 2 of a variant it does not apply to: the record of why, and no weights."""
    out = model_dir(params, variant, "finetune") / "skipped.json"
    if d.is_main:
        record = {"variant": variant, "skipped": NOT_APPLICABLE,
                  "final_weights": {"path": str(init), "sha256": file_sha256(init)}}
        live = log_dir(params, variant, "finetune")
        (live / "plots" / "metrics").mkdir(parents=True, exist_ok=True)
        (live / "metrics.json").write_text(json.dumps({"skipped": NOT_APPLICABLE}, indent=1) + "\n")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    distributed.barrier(d)
    return out
