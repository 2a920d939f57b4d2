"""Stage `train@<variant>`: phase 1, training one model variant with its family's (teacher-forced)
objective on the cached tokens of `train.dataset` (no encoder forward per step).

The model is built through the model-family registry from `model.preset`, `variants.<variant>`
and the store's token grid and width (`pipeline.training.runs`). Windows come from the train
side of the shared episode split; validation uses fixed windows of the held-out episodes.
Outputs (paths in `pipeline.artifacts`): the final weights and their record, the DVCLive
metrics and curves; a resume state exists only while a run is unfinished (killed). Under
torchrun every rank trains on its slice of the global batch; rank 0 writes.
"""
from __future__ import annotations

from pathlib import Path

from dila_core.world_model import build_model
from pipeline.params import Params
from pipeline.training import distributed
from pipeline.training.runs import (
    check_variant,
    fit,
    model_config,
    open_windows,
    spec_for,
)
from pipeline.training.trainer import seed_everything


def run(params: Params, variant: str, show_progress: bool = True) -> Path:
    """Phase 1 for `variant` (a key of `variants:`) from a seeded initialisation; resumes after a
    kill. Returns the final weights' path."""
    check_variant(params, variant)
    d = distributed.init()
    data = open_windows(params)
    seed_everything(params.seed)  # the same initial weights on every rank
    model = build_model(model_config(params, variant, data[0].grid, data[0].dim))
    seed_everything(params.seed, d.rank)
    spec = spec_for(params, "teacher_forcing", params.train.steps, params.train.checkpoint_every, params.train.optim)
    return fit(params, variant, "train", model, data, spec, {}, d, show_progress, __name__)
