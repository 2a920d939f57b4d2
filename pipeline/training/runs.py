"""One training run of a variant, end to end: its data, its model, the loop, its final files; and
the final model of a variant read back for rollouts and evaluation.

The model of a variant is built through the model-family registry
(`dila_core.world_model.FAMILIES`) from `model.preset` and the store's token grid and width,
so this module, like the trainer, knows no family by name.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dila_core import world_model
from dila_core.bottleneck import BOTTLENECKS
from dila_core.world_model import PREDICTION_LOSS
from pipeline import artifacts
from pipeline.config import ParamsError, to_dict
from pipeline.data.mixture import Mixture, pooled_stats, store_stats
from pipeline.data.windows import Windows, split_windows
from pipeline.params import OptimParams, Params
from pipeline.provenance import code_hash, code_version
from pipeline.training import distributed
from pipeline.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from pipeline.training.trainer import RunFiles, TrainSpec, clear_state, seed_everything, train


def check_variant(params: Params, variant: str) -> world_model.Family:
    """variants.<variant>'s family, variant and bottleneck checked against the registries."""
    v = params.variant(variant)
    where = f"variants.{variant}"
    if v.family not in world_model.FAMILIES:
        raise ParamsError(f"{where}.family: {v.family!r} is not a registered model family "
                          f"(registered: {', '.join(world_model.FAMILIES)})")
    fam = world_model.FAMILIES[v.family]
    if v.variant not in fam.variants:
        raise ParamsError(f"{where}.variant: {v.variant!r} is not a variant of family {v.family!r} "
                          f"(its variants: {', '.join(fam.variants)})")
    if v.bottleneck not in BOTTLENECKS:
        raise ParamsError(f"{where}.bottleneck: {v.bottleneck!r} is not a bottleneck "
                          f"(known: {', '.join(BOTTLENECKS)})")
    return fam


def model_config(params: Params, variant: str, grid: tuple[int, int], dim: int):
    """The variant's model config on a store's token grid and width."""
    v = params.variant(variant)
    fam = check_variant(params, variant)
    weights = {"beta": v.beta, "l1": v.l1, "vcm": v.vcm}  # the bottleneck's regulariser weights
    extra = {name: getattr(v, name) for name in fam.params}  # e.g. FLAM's slots, DiLA's reference
    if v.reference and "reference" not in fam.params:
        raise ParamsError(f"variants.{variant}.reference: family {v.family!r} has no reference setting "
                          "(only family 'dila' does)")
    fixed = sorted(set(v.config) & {"grid", "token_dim", "variant", "bottleneck", *fam.params})
    if fixed:
        raise ParamsError(f"variants.{variant}.config.{fixed[0]}: set by the store or by variants.{variant} "
                          "itself, not by config")
    try:
        return fam.build_config(params.model.preset, v.variant, v.bottleneck, weights, grid=grid, token_dim=dim,
                                **extra, **to_dict(v.config))
    except (ValueError, TypeError) as err:  # a config the family refuses (e.g. slots not dividing d_z)
        raise ParamsError(f"variants.{variant}: {err}") from err


def variant_capabilities(params: Params, variant: str, grid: tuple[int, int] = (1, 1),
                         dim: int = 1) -> world_model.Capabilities:
    """What variant's model can do, from its config alone (no store, no weights needed)."""
    return world_model.capabilities(model_config(params, variant, grid, dim))


def final_phase(params: Params, variant: str) -> str:
    """The phase whose weights are a variant's final model: "finetune" where its family has a
    phase-2 objective, else "train"."""
    return "finetune" if variant_capabilities(params, variant).phase2 else "train"


def open_windows(params: Params, name: str | None = None, length: int | None = None,
                 what: str = "train.seq_len") -> tuple[Windows, Windows]:
    """(train, val) windows of dataset `name`'s store (default train.dataset) of `length` frames
    (default train.seq_len; `what` names the setting in errors), `train.frame_skip` apart, split
    by episode as every stage-two stage splits them; normalised as the models were trained (with
    the mixture's shared statistics where train.mixture and mixture_stats say so)."""
    t = params.train
    pair = split_windows(artifacts.store_path(params, name or t.dataset), t.val_fraction, params.seed,
                         length or t.seq_len, t.frame_skip, what)
    if t.mixture and t.mixture_stats == "shared":
        stats = token_stats(params, name or t.dataset)
        for w in pair:
            w.mean, w.std = stats  # every store in the one space the models were trained in
    return pair


def token_stats(params: Params, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (D,), std (D,)) that normalise dataset `name`'s tokens for the models: the store's own,
    or the mixture's shared ones where train.mixture and train.mixture_stats = shared say so."""
    t = params.train
    if t.mixture and t.mixture_stats == "shared":
        return pooled_stats([store_stats(artifacts.store_path(params, n)) for n in t.mixture], list(t.mixture.values()))
    return store_stats(artifacts.store_path(params, name))


def open_training(params: Params) -> tuple[Windows | Mixture, Windows | Mixture]:
    """(train, val) sets phases 1 and 2 train and validate on: train.dataset's windows, or with
    train.mixture one `Mixture` per side over every store it names (train.dataset first)."""
    t = params.train
    if not t.mixture:
        return open_windows(params)
    names = [t.dataset, *(n for n in t.mixture if n != t.dataset)]
    pairs = {n: open_windows(params, n) for n in names}
    return (Mixture({n: p[0] for n, p in pairs.items()}, t.mixture),
            Mixture({n: p[1] for n, p in pairs.items()}, t.mixture))


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def spec_for(params: Params, objective: str, steps: int, checkpoint_every: int, optim: OptimParams,
             seed: int) -> TrainSpec:
    t = params.train
    return TrainSpec(objective=objective, steps=steps, batch_size=t.batch_size, optim=optim,
                     checkpoint_every=checkpoint_every, val_every=t.val_every, val_batches=t.val_batches,
                     log_every=t.log_every, workers=t.workers, seed=seed)


def phase1(params: Params, variant: str, seed: int, d: distributed.Dist, show_progress: bool, stage: str) -> Path:
    """Phase 1 (teacher forcing) of `variant` from the initial weights and batch order of `seed`;
    resumes after a kill. `stage` is the calling stage's module. Returns the final weights' path."""
    check_variant(params, variant)
    data = open_training(params)
    seed_everything(seed)  # the same initial weights on every rank
    model = world_model.build_model(model_config(params, variant, data[0].grid, data[0].dim))
    seed_everything(seed, d.rank)
    t = params.train
    spec = spec_for(params, "teacher_forcing", t.steps, t.checkpoint_every, t.optim, seed)
    return fit(params, variant, "train", model, data, spec, {}, d, show_progress, stage)


def phase2(params: Params, variant: str, seed: int, d: distributed.Dist, show_progress: bool, stage: str) -> Path:
    """Phase 2 (the family's phase-2 objective) of `variant` from its phase-1 weights, batch order
    from `seed`; resumes after a kill. Returns the final weights' path, or skipped.json's where
    the family has no phase 2."""
    check_variant(params, variant)
    data = open_training(params)
    init = check_phase1(params, variant, data[0].attrs.get("plan_sha256"))
    model, _ = load_checkpoint(init)
    if not model.capabilities.phase2:
        return skip_phase2(params, variant, init, d)
    if to_dict(model.cfg) != to_dict(model_config(params, variant, data[0].grid, data[0].dim)):
        raise artifacts.MissingInput(f"{init}: the phase-1 model's config differs from what params give now "
                                     f"(model.preset {params.model.preset!r}, variants.{variant}); "
                                     f"run `dila train {variant}` again")
    seed_everything(seed, d.rank)
    f = params.finetune
    spec = spec_for(params, "phase2", f.steps, f.checkpoint_every, f.optim, seed)
    extra = {"init": {"path": str(init), "sha256": file_sha256(init)}}
    return fit(params, variant, "finetune", model, data, spec, extra, d, show_progress, stage)


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


def skip_phase2(params: Params, variant: str, init: Path, d: distributed.Dist) -> Path:
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


def fit(params: Params, variant: str, phase: str, model: nn.Module, data: tuple[Windows, Windows],
        spec: TrainSpec, extra: dict[str, Any], d: distributed.Dist, show_progress: bool, stage: str) -> Path:
    """Train `model` per `spec`, then (rank 0) write the final weights, their record, and drop the
    resume state. `extra` joins both the resume plan and the record; `stage` is the calling stage's
    module, whose code (`code_hash`) decides whether a resume state is reused. Returns the weights' path."""
    train_set, val_set = data
    store = {"path": str(train_set.path), "dataset": params.train.dataset,
             "plan_sha256": train_set.attrs.get("plan_sha256"), "encoder": train_set.attrs.get("encoder")}
    plan = {"phase": phase, "variant": variant, "config": to_dict(model.cfg), "store": store,
            "windows": {"seq_len": train_set.seq_len, "frame_skip": train_set.frame_skip,
                        "val_fraction": params.train.val_fraction, "seed": params.seed},
            **({"mixture": {"stats": params.train.mixture_stats, "stores": train_set.describe()}}
               if isinstance(train_set, Mixture) else {}),
            "code_sha256": code_hash(stage), **extra}
    files = RunFiles(state=artifacts.resume_state(params, variant, phase),
                     live=artifacts.log_dir(params, variant, phase))
    val = train(model, spec, train_set, val_set, files, plan, d, show_progress=show_progress)
    out = artifacts.final_weights(params, variant, phase)
    if d.is_main:
        save_checkpoint(out, model, spec.steps)
        record = {**plan, "variant_params": to_dict(params.variant(variant)), "spec": to_dict(spec),
                  "encoder_weights": (store["encoder"] or {}).get("weights"), "world": d.world,
                  "val": val, "code_version": code_version(),
                  "split": {"train_episodes": train_set.episodes.tolist(), "val_episodes": val_set.episodes.tolist()}}
        artifacts.final_record(params, variant, phase).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        write_summary(params, variant, phase, spec.steps, val)
        clear_state(files, d)
    distributed.barrier(d)
    return out


def write_summary(params: Params, variant: str, phase: str, step: int | None, val: dict[str, float]) -> Path:
    """The run's headline numbers, the same keys for every variant and phase: its last step and the
    final validation teacher-forced token MSE (null for a phase that did not run)."""
    path = artifacts.summary_path(params, variant, phase)
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = {"step": step, f"val_{PREDICTION_LOSS}": val.get(PREDICTION_LOSS)}
    path.write_text(json.dumps(summary, indent=1) + "\n")
    return path


def load_final_model(params: Params, variant: str, windows: Windows, dev: torch.device):
    """A variant's final model (`final_phase`), checked against params and the store:
    (model in eval mode, phase, step, path)."""
    phase = final_phase(params, variant)
    path = artifacts.final_weights(params, variant, phase)
    if not path.is_file():
        raise artifacts.MissingInput(f"{path}: no {phase} weights for variant {variant!r}; "
                                     f"run `dila {phase} {variant}` first")
    model, step = load_checkpoint(path, dev)
    v = params.variant(variant)
    got = (world_model.family_of(model), model.cfg.variant, model.cfg.bottleneck.kind)
    if got != (v.family, v.variant, v.bottleneck):
        raise CheckpointError(f"{path}: holds a {'/'.join(got)} model (family/variant/bottleneck), but "
                              f"variants.{variant} is {v.family}/{v.variant}/{v.bottleneck}; train it again")
    if (tuple(model.cfg.grid), model.cfg.token_dim) != (windows.grid, windows.dim):
        raise CheckpointError(f"{path}: model expects a {tuple(model.cfg.grid)} x {model.cfg.token_dim} token grid, "
                              f"the store {windows.path} holds {windows.grid} x {windows.dim}")
    return model.eval(), phase, step, path
