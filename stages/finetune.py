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

from pathlib import Path

from pipeline.params import Params
from pipeline.training import distributed
from pipeline.training.runs import phase2


def run(params: Params, variant: str, show_progress: bool = True) -> Path:
    """Phase 2 for `variant`, from its phase-1 weights; resumes after a kill. Returns the final
    weights' path (or skipped.json's where phase 2 does not apply)."""
    return phase2(params, variant, params.seed, distributed.init(), show_progress, __name__)
