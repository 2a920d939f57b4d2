"""Where every stage writes, and how its outputs are read back: the one module that knows.

Each stage's headline file (metrics.json, summary.json) holds a handful of numbers with the same
keys for every variant; everything else it measures goes to a details JSON beside it. The
run's one DVC `metrics:` file is the report's metrics.json, which puts every variant's "did it
learn" numbers (rollout / repeat-last, z usage, planning success) in one row, so `dvc metrics
show` and `dvc exp show` stay narrow. The DVC plots are dvc.yaml's top-level `plots:`, drawn from
the report's curves/ (every variant overlaid, with the template in .dvc/plots/).

Every path comes from `params.paths` (written once in params.yaml). A stage writes its
outputs through these functions and reads its inputs through the readers below, so no
stage imports another. A reader of a missing input raises `MissingInput`, whose message
names the file and the command that makes it.

    <paths.prepared>/<dataset>.json                      prepare: the manifest
    <paths.features>/<dataset>.zarr                      extract: the feature store
    <paths.features>/<dataset>.failures.json             extract: episodes that failed to decode
    <paths.models>/pixel_decoder/{model.safetensors, samples.png, metrics.json, details.json}
    <paths.models>/pixel_decoder.resume/state.safetensors   pixel_decoder: resume state (while unfinished)
    <paths.models>/<variant>/<phase>/model.safetensors   train/finetune: final weights
    <paths.models>/<variant>/<phase>/model.json          ... and what made them
    <paths.models>/<variant>/<phase>.resume/state.safetensors   resume state (while unfinished)
    <paths.models>/<variant>/finetune/skipped.json       finetune of a model without phase 2
    <paths.logs>/<variant>/<phase>/summary.json          train/finetune: headline numbers
    <paths.logs>/<variant>/<phase>/                      ... and DVCLive: metrics.json, plots/metrics/
    <paths.eval>/rollouts/<variant>/tokens.zarr          rollout: true and predicted tokens
    <paths.eval>/<variant>/{metrics.json, details.json, latents.npz}   evaluate
    <paths.plan>/<variant>.json                          plan: the world-model planner on the tasks
    <paths.plan>/baselines.json                          plan_baselines: random and simulator-as-model
    <paths.replicas>/<variant>.json                      replicas: headline numbers (and rollout
                                                         curves) per training seed
    <paths.replicas>/<variant>/seed<k>/{models,logs}/    ... each replica's runs, laid out as above
    <paths.report>/{metrics.json, seeds.json, table.md, plots/, curves/}   report
    docs/figures/{rollout_error.png, learning.png}       report: the committed pictures (FIGURES)

docs/figures is the one output outside `params.paths`: it is tracked by git (not under data/),
so a fresh clone shows the two most important figures; dvc.yaml names it as the report's
uncached output.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from pipeline.config import to_dict
from pipeline.params import Params

PHASES = ("train", "finetune")
FIGURES = Path("docs/figures")  # the report's committed pictures, relative to the project root
MANIFEST_FORMAT = "dila-manifest/1"


class MissingInput(Exception):
    """A stage's input does not exist (yet) or is stale: the message says which command makes it."""


def _phase(phase: str) -> str:
    if phase not in PHASES:
        raise ValueError(f"phase {phase!r} is not one of {', '.join(PHASES)}")
    return phase


# -- stage one ------------------------------------------------------------------------------------

def manifest_path(params: Params, name: str) -> Path:
    return Path(params.paths.prepared) / f"{name}.json"


def store_path(params: Params, name: str) -> Path:
    return Path(params.paths.features) / f"{name}.zarr"


def failures_path(params: Params, name: str) -> Path:
    return Path(params.paths.features) / f"{name}.failures.json"


def read_manifest(params: Params, name: str) -> dict[str, Any]:
    """The manifest `prepare` wrote for dataset `name`; a clear error when it is missing or stale."""
    path = manifest_path(params, name)
    if not path.is_file():
        raise MissingInput(f"{path}: no manifest for dataset {name!r}; run `dila prepare {name}` first")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != MANIFEST_FORMAT:
        raise MissingInput(f"{path}: not a dila manifest (format {manifest.get('format')!r}); "
                           f"run `dila prepare {name}` again")
    if manifest["source"]["params"] != to_dict(params.dataset(name)):
        raise MissingInput(f"{path}: written for other settings of datasets.{name}; run `dila prepare {name}` again")
    if not manifest["episodes"]:
        raise MissingInput(f"{path}: none of the episodes of dataset {name!r} could be read (the manifest lists each "
                           f"with its reason); fix the data or datasets.{name} and run `dila prepare {name}` again")
    return manifest


# -- models ---------------------------------------------------------------------------------------

def pixel_decoder_dir(params: Params) -> Path:
    return Path(params.paths.models) / "pixel_decoder"


def pixel_decoder_weights(params: Params) -> Path:
    return pixel_decoder_dir(params) / "model.safetensors"


def pixel_decoder_state(params: Params) -> Path:
    return Path(params.paths.models) / "pixel_decoder.resume" / "state.safetensors"


def pixel_decoder_metrics(params: Params) -> Path:
    return pixel_decoder_dir(params) / "metrics.json"


def pixel_decoder_details(params: Params) -> Path:
    return pixel_decoder_dir(params) / "details.json"


def model_dir(params: Params, variant: str, phase: str) -> Path:
    return Path(params.paths.models) / variant / _phase(phase)


def final_weights(params: Params, variant: str, phase: str) -> Path:
    """The final weights of `variant` after `phase` ("train" or "finetune")."""
    return model_dir(params, variant, phase) / "model.safetensors"


def final_record(params: Params, variant: str, phase: str) -> Path:
    """JSON beside the final weights: store, encoder, split, code version, config, final validation."""
    return model_dir(params, variant, phase) / "model.json"


def skipped_record(params: Params, variant: str) -> Path:
    """Written by finetune in place of weights for a model family without a phase-2 objective."""
    return model_dir(params, variant, "finetune") / "skipped.json"


def resume_state(params: Params, variant: str, phase: str) -> Path:
    return model_dir(params, variant, phase).with_name(f"{phase}.resume") / "state.safetensors"


def log_dir(params: Params, variant: str, phase: str) -> Path:
    """DVCLive directory of one run: metrics.json and plots/metrics/."""
    return Path(params.paths.logs) / variant / _phase(phase)


def curve_path(params: Params, variant: str, phase: str, split: str, name: str) -> Path:
    """DVCLive's curve of logged term `name` on `split` ("train" or "val"): a TSV of step and value."""
    return log_dir(params, variant, phase) / "plots" / "metrics" / split / f"{name}.tsv"


def summary_path(params: Params, variant: str, phase: str) -> Path:
    """The headline numbers of one training run (DVC metrics)."""
    return log_dir(params, variant, phase) / "summary.json"


def read_record(params: Params, variant: str, phase: str) -> dict[str, Any]:
    """The record beside `variant`'s final weights of `phase`."""
    path = final_record(params, variant, phase)
    if not path.is_file():
        raise MissingInput(f"{path}: no {phase} record for variant {variant!r}; run `dila {phase} {variant}` first")
    return json.loads(path.read_text())


# -- evaluation -----------------------------------------------------------------------------------

def rollout_dir(params: Params, variant: str) -> Path:
    return Path(params.paths.eval) / "rollouts" / variant


def rollout_store(params: Params, variant: str) -> Path:
    return rollout_dir(params, variant) / "tokens.zarr"


def metrics_path(params: Params, variant: str) -> Path:
    return Path(params.paths.eval) / variant / "metrics.json"


def details_path(params: Params, variant: str) -> Path:
    return Path(params.paths.eval) / variant / "details.json"


def latents_path(params: Params, variant: str) -> Path:
    return Path(params.paths.eval) / variant / "latents.npz"


def read_evaluation(params: Params, variant: str) -> dict[str, Any]:
    """Everything evaluate wrote for `variant`: its details JSON (the headline metrics are a
    subset of it)."""
    path = details_path(params, variant)
    if not path.is_file():
        raise MissingInput(f"{path}: no evaluation of variant {variant!r}; run `dila evaluate {variant}` first")
    return json.loads(path.read_text())


# -- planning -------------------------------------------------------------------------------------

def plan_path(params: Params, variant: str) -> Path:
    return Path(params.paths.plan) / f"{variant}.json"


def plan_baselines_path(params: Params) -> Path:
    return Path(params.paths.plan) / "baselines.json"


def read_plan(params: Params, variant: str | None = None) -> dict[str, Any]:
    """What plan (`variant`) or plan_baselines (None) wrote."""
    path = plan_baselines_path(params) if variant is None else plan_path(params, variant)
    if not path.is_file():
        command = "dila plan-baselines" if variant is None else f"dila plan {variant}"
        raise MissingInput(f"{path}: no planning results; run `{command}` first")
    return json.loads(path.read_text())


# -- replicas over training seeds -------------------------------------------------------------------

def replica_params(params: Params, variant: str, seed: int) -> Params:
    """params whose models and logs paths lead into the replica of `variant` trained from `seed`,
    so the training and evaluation functions read and write that replica's files alone."""
    root = replicas_dir(params, variant) / f"seed{seed}"
    paths = dataclasses.replace(params.paths, models=str(root / "models"), logs=str(root / "logs"))
    return dataclasses.replace(params, paths=paths)


def replicas_dir(params: Params, variant: str) -> Path:
    """The folder of `variant`'s replicas (one seed<k>/ each), a declared output even when empty."""
    return Path(params.paths.replicas) / variant


def replicas_path(params: Params, variant: str) -> Path:
    return Path(params.paths.replicas) / f"{variant}.json"


def read_replicas(params: Params, variant: str) -> dict[str, Any]:
    """What replicas wrote for `variant`, checked to cover replicas.seeds."""
    path = replicas_path(params, variant)
    if not path.is_file():
        raise MissingInput(f"{path}: no replicas of variant {variant!r}; run `dila replicas {variant}` first")
    found = json.loads(path.read_text())
    if sorted(found["seeds"]) != sorted(str(s) for s in params.replicas.seeds):
        raise MissingInput(f"{path}: holds seeds {sorted(found['seeds'])}, replicas.seeds are "
                           f"{list(params.replicas.seeds)}; run `dila replicas {variant}` again")
    return found


def write_json(path: Path, obj: dict[str, Any]) -> Path:
    """obj as indented JSON at path (its folder made); NaN is refused."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, allow_nan=False) + "\n")
    return path


def report_dir(params: Params) -> Path:
    return Path(params.paths.report)
