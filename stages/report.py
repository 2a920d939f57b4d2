"""Stage `report`: the ablation table (`table.md`, with the paper comparison) and the plots over
every variant's `metrics.json` (and `latents.npz`) from the evaluate stage."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.artifacts import MissingInput, latents_path, metrics_path, report_dir
from pipeline.evaluation import report
from pipeline.params import Params


def run(params: Params) -> Path:
    """Write table.md and plots/ under paths.report; returns table.md's path."""
    metrics, found = {}, {}
    for variant in params.variants:
        path = metrics_path(params, variant)
        if not path.is_file():
            raise MissingInput(f"{path}: no metrics for variant {variant!r}; run `dila evaluate {variant}` first")
        metrics[variant] = json.loads(path.read_text())
        lat = latents_path(params, variant)
        if lat.is_file():
            with np.load(lat) as f:
                found[variant] = {k: f[k] for k in f.files}
    pusht = next((n for n in params.evaluate.probe_datasets if params.dataset(n).kind == "pusht_zarr"), None)
    return report.write_report(report_dir(params), metrics, found, pusht)
