"""Stage `report`: the ablation table (`table.md`, with the paper comparison and the planning
table) and the plots, over every variant's evaluation (its details JSON and `latents.npz`) and
planning results (`<paths.plan>/`), and the seeds table (`seeds.json`) over the main run and each
variant's replicas (`<paths.replicas>/`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import artifacts
from pipeline.evaluation import report
from pipeline.evaluation.seeds import headline, seed_table
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
    plans = {"baselines": _plan(params, None), "variants": {v: _plan(params, v) for v in params.variants}}
    seeds = _seeds(params, metrics)
    return report.write_report(artifacts.report_dir(params), metrics, found, pusht, params.seed, plans, seeds)


def _seeds(params: Params, metrics: dict[str, dict]) -> dict:
    """The seeds table over the main run (seed `seed`) and each variant's replicas; a variant whose
    replicas are missing or stale keeps its main run alone, and the table says why."""
    runs, missing = {}, {}
    for variant, details in metrics.items():
        runs[variant] = {params.seed: headline(details, params.evaluate)}
        try:
            found = artifacts.read_replicas(params, variant)
        except artifacts.MissingInput as err:
            missing[variant] = str(err)
            continue
        runs[variant].update({int(seed): numbers for seed, numbers in found["seeds"].items()})
    return {"table": seed_table(runs), "missing": missing}


def _plan(params: Params, variant: str | None) -> dict:
    """A plan stage's file, or the reason it is missing (planning is reported, never required)."""
    try:
        return artifacts.read_plan(params, variant)
    except artifacts.MissingInput as err:
        return {"success_rate": None, "unavailable": str(err)}
