"""Stage `report`: the ablation table (`table.md`, with the paper comparison) and the plots, over
every variant's evaluation (its details JSON and `latents.npz`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import artifacts
from pipeline.evaluation import report
from pipeline.params import Params


def run(params: Params) -> Path:
    """Write table.md and plots/ under paths.report; returns table.md's path."""
    metrics, found = {}, {}
    for variant in params.variants:
        metrics[variant] = artifacts.read_evaluation(params, variant)
        lat = artifacts.latents_path(params, variant)
        if lat.is_file():
            with np.load(lat) as f:
                found[variant] = {k: f[k] for k in f.files}
    pusht = next((n for n in params.evaluate.probe_datasets if params.dataset(n).kind == "pusht_zarr"), None)
    return report.write_report(artifacts.report_dir(params), metrics, found, pusht)
