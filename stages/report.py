"""Stage `report`: the headline and ablation tables (`table.md`, with the paper comparison and the
planning table), the figures and the curves DVC plots, over every variant's evaluation (its
details JSON and `latents.npz`), planning results (`<paths.plan>/`) and phase-1 validation curve
(`<paths.logs>/`), and the seeds table (`seeds.json`) over the main run and each variant's
replicas (`<paths.replicas>/`). The two main figures also go to docs/figures
(`artifacts.FIGURES`), which git tracks."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import artifacts
from pipeline.evaluation import report
from pipeline.evaluation.seeds import headline, seed_table
from pipeline.params import Params

LOSS = "L_e"  # dila_core.world_model.PREDICTION_LOSS, the logged teacher-forced token MSE (no model code here)


def run(params: Params, figures: Path | None = artifacts.FIGURES) -> Path:
    """Write table.md, metrics.json, seeds.json, curves/ and plots/ under paths.report, and the two
    main figures under `figures` (the project's docs/figures; None: none); returns table.md's path."""
    metrics, found = {}, {}
    for variant in params.variants:
        metrics[variant] = artifacts.read_evaluation(params, variant)
        lat = artifacts.latents_path(params, variant)
        if lat.is_file():
            with np.load(lat) as f:
                found[variant] = {k: f[k] for k in f.files}
    pusht = next((n for n in params.evaluate.probe_datasets if params.dataset(n).kind == "pusht_zarr"), None)
    plans = {"baselines": _plan(params, None), "variants": {v: _plan(params, v) for v in params.variants}}
    seeds, seed_curves = _seeds(params, metrics)
    learning = {v: _learning_curve(params, v) for v in params.variants}
    return report.write_report(artifacts.report_dir(params), metrics, found, pusht, params.seed, plans, seeds,
                               learning, seed_curves, figures)


def _seeds(params: Params, metrics: dict[str, dict]) -> tuple[dict, dict]:
    """The seeds table over the main run (seed `seed`) and each variant's replicas, and the rollout
    curves per seed (for the figure's seed bands); a variant whose replicas are missing or stale
    keeps its main run alone, and the table says why."""
    runs, missing, curves = {}, {}, {}
    for variant, details in metrics.items():
        runs[variant] = {params.seed: headline(details, params.evaluate)}
        rolled = details.get("rollout") or {}
        curves[variant] = {params.seed: {"token_mse_per_step": rolled.get("token_mse_per_step")}}
        try:
            found = artifacts.read_replicas(params, variant)
        except artifacts.MissingInput as err:
            missing[variant] = str(err)
            continue
        runs[variant].update({int(seed): numbers for seed, numbers in found["seeds"].items()})
        curves[variant].update({int(seed): found.get("curves", {}).get(seed, {}) for seed in found["seeds"]})
    return {"table": seed_table(runs), "missing": missing}, curves


def _learning_curve(params: Params, variant: str) -> dict[str, Any]:
    """Phase 1's validation L_e against step from DVCLive's log, or why there is none."""
    path = artifacts.curve_path(params, variant, "train", "val", LOSS)
    if not path.is_file():
        return {"unavailable": f"no validation {LOSS} logged at {path}"}
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return {"step": [int(r["step"]) for r in rows], "value": [float(r[LOSS]) for r in rows]}


def _plan(params: Params, variant: str | None) -> dict:
    """A plan stage's file, or the reason it is missing (planning is reported, never required)."""
    try:
        return artifacts.read_plan(params, variant)
    except artifacts.MissingInput as err:
        return {"success_rate": None, "unavailable": str(err)}
