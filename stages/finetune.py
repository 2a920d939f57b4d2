"""Stage `finetune@<variant>`: phase 2, the family's phase-2 objective (for DiLA: roll out from
frame 0 with the actions inferred from the true clip) starting from phase 1's final weights,
with its own optimizer and schedule (`finetune.optim`) and `finetune.steps` steps. Windows,
split, batch size, validation and logging as in phase 1 (stages/train.py).

A variant whose model has no phase-2 objective (`capabilities.phase2` false, e.g. DiLA's
"no_latent_action" ablation) writes `skipped.json` (why, and which phase-1 weights stand as
its final model) in place of weights, and an empty curve directory, so `finetune@<variant>`
stays a stage of the foreach like every other and later stages read the phase-1 weights
(`pipeline.training.runs.final_phase`).
"""
from __future__ import annotations

import json
from pathlib import Path

from pipeline import artifacts
from pipeline.config import to_dict
from pipeline.params import Params
from pipeline.training import distributed
from pipeline.training.checkpoint import load_checkpoint
from pipeline.training.runs import (
    check_variant,
    file_sha256,
    fit,
    model_config,
    open_windows,
    spec_for,
    write_summary,
)
from pipeline.training.trainer import seed_everything


def check_phase1(params: Params, variant: str, store_plan: str | None) -> Path:
    """Phase 1's final weights for `variant`, checked to exist and to come from the current store."""
    weights = artifacts.final_weights(params, variant, "train")
    record = artifacts.read_record(params, variant, "train")
    if not weights.is_file():
        raise artifacts.MissingInput(f"{weights}: no phase-1 weights for variant {variant!r}; "
                                     f"run `dila train {variant}` first")
    if record["store"]["plan_sha256"] != store_plan:
        raise artifacts.MissingInput(f"{artifacts.final_record(params, variant, 'train')}: phase 1 was trained on "
                                     f"another feature store than {params.train.dataset!r} holds now; "
                                     f"run `dila train {variant}` again")
    return weights


def run(params: Params, variant: str, show_progress: bool = True) -> Path:
    """Phase 2 for `variant`, from its phase-1 weights; resumes after a kill. Returns the final
    weights' path (or skipped.json's where phase 2 does not apply)."""
    check_variant(params, variant)
    d = distributed.init()
    data = open_windows(params)
    init = check_phase1(params, variant, data[0].attrs.get("plan_sha256"))
    model, _ = load_checkpoint(init)
    if not model.capabilities.phase2:
        return skip(params, variant, init, d)
    if to_dict(model.cfg) != to_dict(model_config(params, variant, data[0].grid, data[0].dim)):
        raise artifacts.MissingInput(f"{init}: the phase-1 model's config differs from what params give now "
                                     f"(model.preset {params.model.preset!r}, variants.{variant}); "
                                     f"run `dila train {variant}` again")
    seed_everything(params.seed, d.rank)
    f = params.finetune
    spec = spec_for(params, "phase2", f.steps, f.checkpoint_every, f.optim)
    extra = {"init": {"path": str(init), "sha256": file_sha256(init)}}
    return fit(params, variant, "finetune", model, data, spec, extra, d, show_progress, __name__)


def skip(params: Params, variant: str, init: Path, d: distributed.Dist) -> Path:
    """Phase 2 of a variant it does not apply to: the record of why, and no weights."""
    out = artifacts.skipped_record(params, variant)
    why = (f"variant {variant!r} ({params.variant(variant).family}/{params.variant(variant).variant}) has no "
           "phase-2 objective (no latent actions to roll out); phase 1's weights are its final model")
    if d.is_main:
        record = {"variant": variant, "skipped": why, "final_weights": {"path": str(init), "sha256": file_sha256(init)}}
        live = artifacts.log_dir(params, variant, "finetune")
        (live / "plots" / "metrics").mkdir(parents=True, exist_ok=True)
        (live / "metrics.json").write_text("{}\n")  # DVCLive's summary: nothing was logged
        write_summary(params, variant, "finetune", None, {})
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    distributed.barrier(d)
    return out
