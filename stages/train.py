"""Stage `train@<variant>`: phase 1, training one model variant with its family's (teacher-forced)
objective on the cached tokens of `train.dataset` (no encoder forward per step).

The model is built through the model-family registry from `model.preset`, `variants.<variant>`
and the store's token grid and width (`pipeline.training.runs`). Windows come from the train
side of the shared episode split; validation uses fixed windows of the held-out episodes.
Initial weights and batch order come from `seed`. Outputs (paths in `pipeline.artifacts`): the
final weights and their record, the DVCLive metrics and curves; a resume state exists only while
a run is unfinished (killed). Under torchrun every rank trains on its slice of the global batch;
rank 0 writes.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.params import Params
from pipeline.training import distributed
from pipeline.training.runs import phase1


def run(params: Params, variant: str, show_progress: bool = True) -> Path:
    """Phase 1 for `variant` (a key of `variants:`) from a seeded initialisation; resumes after a
    kill. Returns the final weights' path."""
    return phase1(params, variant, params.seed, distributed.init(), show_progress, __name__)
