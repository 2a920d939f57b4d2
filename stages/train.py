"""Stage `train@<variant>`: phase 1, teacher-forced training of one model variant on the cached
tokens of `train.dataset` (no encoder forward per step).

The model is `preset(model.preset, variant, bottleneck)` on the store's token grid and width.
Windows come from the train side of the shared episode split; validation uses fixed
windows of the held-out episodes. Outputs, one directory per variant and phase:

    <paths.models>/<variant>/<phase>/model.safetensors    final weights (pipeline.checkpoint)
    <paths.models>/<variant>/<phase>/model.json           what made them (store, encoder, code, config)
    <paths.models>/<variant>/<phase>.resume/state.safetensors   resume state; exists only while a run
                                                                is unfinished (killed); not an artifact
    <paths.logs>/<variant>/<phase>/metrics.json           DVCLive summary (latest train/val values)
    <paths.logs>/<variant>/<phase>/plots/metrics/{train,val}/*.tsv   DVCLive curves

`fit` is shared with phase 2 (stages/finetune.py). Under torchrun every rank trains on its
slice of the global batch; rank 0 writes.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from torch import nn

from dila_core.model import DiLA, DiLAConfig
from dila_core.presets import preset
from pipeline import distributed
from pipeline.checkpoint import save_checkpoint
from pipeline.config import to_dict
from pipeline.params import OptimParams, Params
from pipeline.provenance import code_version, source_hash
from pipeline.split import split_episodes
from pipeline.store import open_store
from pipeline.trainer import RunFiles, TrainSpec, clear_state, seed_everything, train
from pipeline.windows import Windows
from stages.extract import store_path

PHASES = ("train", "finetune")
# The code a training run's result depends on: a resume state made by other code is not reused.
TRAIN_CODE = ("dila_core", "pipeline/trainer.py", "pipeline/windows.py", "stages/train.py", "stages/finetune.py")


def _phase(phase: str) -> str:
    if phase not in PHASES:
        raise ValueError(f"phase {phase!r} is not one of {', '.join(PHASES)}")
    return phase


def model_dir(params: Params, variant: str, phase: str) -> Path:
    return Path(params.paths.models) / variant / _phase(phase)


def final_weights(params: Params, variant: str, phase: str) -> Path:
    """The final weights of `variant` after `phase` ("train" or "finetune")."""
    return model_dir(params, variant, phase) / "model.safetensors"


def final_record(params: Params, variant: str, phase: str) -> Path:
    """JSON beside the final weights: store, encoder, split, code version, config, final validation."""
    return model_dir(params, variant, phase) / "model.json"


def resume_state(params: Params, variant: str, phase: str) -> Path:
    return model_dir(params, variant, phase).with_name(f"{phase}.resume") / "state.safetensors"


def log_dir(params: Params, variant: str, phase: str) -> Path:
    """DVCLive directory of one run: metrics.json and plots/metrics/."""
    return Path(params.paths.logs) / variant / _phase(phase)


def run_files(params: Params, variant: str, phase: str) -> RunFiles:
    return RunFiles(state=resume_state(params, variant, phase), live=log_dir(params, variant, phase))


def open_windows(params: Params) -> tuple[Windows, Windows]:
    """(train, val) windows of the training store, split by episode as every stage splits them."""
    path = store_path(params, params.train.dataset)
    n_episodes = open_store(path)["episode_ends"].shape[0]
    train_eps, val_eps = split_episodes(n_episodes, params.train.val_fraction, params.seed)
    t = params.train
    return Windows(path, train_eps, t.seq_len, t.frame_skip), Windows(path, val_eps, t.seq_len, t.frame_skip)


def model_config(params: Params, variant: str, data: Windows) -> DiLAConfig:
    """The variant's model on the store's token grid and width."""
    v = params.variant(variant)
    return preset(params.model.preset, variant=v.variant, bottleneck=v.bottleneck, grid=data.grid,
                  token_dim=data.dim)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fit(params: Params, variant: str, phase: str, model: nn.Module, data: tuple[Windows, Windows],
        spec: TrainSpec, extra: dict[str, Any], d: distributed.Dist, show_progress: bool) -> Path:
    """Train `model` per `spec`, then (rank 0) write the final weights, their record, and drop the
    resume state. `extra` joins both the resume plan and the record. Returns the weights' path."""
    train_set, val_set = data
    store = {"path": str(train_set.path), "dataset": params.train.dataset,
             "plan_sha256": train_set.attrs.get("plan_sha256"), "encoder": train_set.attrs.get("encoder")}
    plan = {"phase": phase, "variant": variant, "config": to_dict(model.cfg), "store": store,
            "windows": {"seq_len": train_set.seq_len, "frame_skip": train_set.frame_skip,
                        "val_fraction": params.train.val_fraction, "seed": params.seed},
            "code_sha256": source_hash(TRAIN_CODE), **extra}
    files = run_files(params, variant, phase)
    val = train(model, spec, train_set, val_set, files, plan, d, show_progress=show_progress)
    out = final_weights(params, variant, phase)
    if d.is_main:
        save_checkpoint(out, model, spec.steps)
        record = {**plan, "variant_params": to_dict(params.variant(variant)), "spec": to_dict(spec),
                  "encoder_weights": (store["encoder"] or {}).get("weights"), "world": d.world,
                  "val": val, "code_version": code_version(),
                  "split": {"train_episodes": train_set.episodes.tolist(), "val_episodes": val_set.episodes.tolist()}}
        final_record(params, variant, phase).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        clear_state(files, d)
    distributed.barrier(d)
    return out


def spec_for(params: Params, objective: str, steps: int, checkpoint_every: int, optim: OptimParams) -> TrainSpec:
    t = params.train
    return TrainSpec(objective=objective, steps=steps, batch_size=t.batch_size, optim=optim,
                     checkpoint_every=checkpoint_every, val_every=t.val_every, val_batches=t.val_batches,
                     log_every=t.log_every, workers=t.workers, seed=params.seed)


def run(params: Params, variant: str, show_progress: bool = True) -> Path:
    """Phase 1 for `variant` (a key of `variants:`): teacher forcing from a seeded initialisation;
    resumes after a kill. Returns the final weights' path."""
    d = distributed.init()
    params.variant(variant)
    data = open_windows(params)
    seed_everything(params.seed)  # the same initial weights on every rank
    model = DiLA(model_config(params, variant, data[0]))
    seed_everything(params.seed, d.rank)
    spec = spec_for(params, "teacher_forcing", params.train.steps, params.train.checkpoint_every, params.train.optim)
    return fit(params, variant, "train", model, data, spec, {}, d, show_progress)
