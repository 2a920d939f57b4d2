"""Stages train (phase 1) and finetune (phase 2): outputs and their record, phase 2 starts from
phase 1's weights, the tiny model learns on the tiny store."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dila_core.model import DiLA
from pipeline import artifacts
from pipeline.config import to_dict
from pipeline.provenance import code_hash, code_version
from pipeline.training import runs
from pipeline.training.checkpoint import load_checkpoint
from stages import extract, finetune, prepare, train
from tests.conftest import make_params, with_variants

STAGE = ["model.preset=tiny", "train.seq_len=4", "train.batch_size=4", "train.val_every=15",
         "train.val_batches=2", "train.log_every=5", "train.checkpoint_every=10", "train.workers=0",
         "train.optim.lr=0.003", "finetune.steps=4", "finetune.checkpoint_every=2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Params of a tiny run, with phase 1 of variant dila done (30 steps)."""
    tmp = tmp_path_factory.mktemp("train")
    params = make_params(tmp, f"paths.models={tmp}/models", f"paths.logs={tmp}/logs", "train.steps=30", *STAGE)
    prepare.run(params, "synthetic", show_progress=False)
    extract.run(params, "synthetic", show_progress=False)
    train.run(params, "dila", show_progress=False)
    return params


def test_phase_1_writes_weights_record_and_metrics(trained):
    weights = artifacts.final_weights(trained, "dila", "train")
    assert weights == Path(trained.paths.models) / "dila" / "train" / "model.safetensors"
    model, step = load_checkpoint(weights)
    data = runs.open_windows(trained)
    assert step == 30 and to_dict(model.cfg) == to_dict(runs.model_config(trained, "dila", data[0].grid, data[0].dim))
    assert model.cfg.grid == (3, 3) and model.cfg.token_dim == 384  # from the store, not the preset
    record = json.loads(artifacts.final_record(trained, "dila", "train").read_text())
    store = artifacts.store_path(trained, "synthetic")
    assert record["store"]["path"] == str(store) and record["encoder_weights"] == "random-init (seed 0)"
    assert record["store"]["encoder"]["weights"] == "random-init (seed 0)"
    assert record["code_sha256"] == code_hash("stages.train") and record["code_version"] == code_version()
    assert record["config"] == to_dict(model.cfg) and record["spec"]["objective"] == "teacher_forcing"
    assert set(record["split"]["val_episodes"]).isdisjoint(record["split"]["train_episodes"])
    assert not artifacts.resume_state(trained, "dila", "train").parent.exists()
    live = json.loads((artifacts.log_dir(trained, "dila", "train") / "metrics.json").read_text())
    assert live["step"] == 30 and live["val"]["L_e"] == pytest.approx(record["val"]["L_e"])
    summary = json.loads(artifacts.summary_path(trained, "dila", "train").read_text())
    assert summary == {"step": 30, "val_L_e": record["val"]["L_e"]}


def test_the_tiny_model_learns_on_the_tiny_store(trained):
    model, _ = load_checkpoint(artifacts.final_weights(trained, "dila", "train"))
    torch.manual_seed(trained.seed)
    untrained = DiLA(model.cfg)
    _, val = runs.open_windows(trained)
    e = torch.stack([val[i]["e"] for i in range(len(val))])                # (N, T, h, w, D)
    with torch.no_grad():
        before, after = (float(torch.nn.functional.mse_loss(m.eval().predict(e), e[:, 1:])) for m in (untrained, model))
    assert after < 0.75 * before


def test_phase_2_starts_from_phase_1(trained, tmp_path):
    # with a vanishing learning rate, phase 2 ends where it starts: at phase 1's weights
    params = make_params(tmp_path, f"paths.features={trained.paths.features}", f"paths.models={trained.paths.models}",
                         f"paths.logs={tmp_path}/logs", *STAGE, "finetune.optim.lr=1.0e-12", "finetune.optim.weight_decay=0")
    out = finetune.run(params, "dila", show_progress=False)
    assert out == artifacts.final_weights(params, "dila", "finetune")
    start, end = load_file(artifacts.final_weights(params, "dila", "train")), load_file(out)
    for name in start:
        np.testing.assert_allclose(end[name].numpy(), start[name].numpy(), atol=1e-8, err_msg=name)
    fresh = DiLA(load_checkpoint(out)[0].cfg).state_dict()
    assert any(not torch.allclose(fresh[k].float(), start[k].float()) for k in start)
    record = json.loads(artifacts.final_record(params, "dila", "finetune").read_text())
    assert record["init"]["sha256"] == runs.file_sha256(artifacts.final_weights(params, "dila", "train"))
    assert record["spec"]["objective"] == "phase2" and record["spec"]["steps"] == 4
    assert "L_e_rollout" in record["val"] and "L_e" in record["val"]


def test_phase_2_learns_and_needs_phase_1(trained, tmp_path):
    params = make_params(tmp_path, f"paths.features={trained.paths.features}", f"paths.models={trained.paths.models}",
                         f"paths.logs={tmp_path}/logs", *STAGE, "finetune.steps=20", "finetune.optim.lr=0.001")
    finetune.run(params, "dila", show_progress=False)
    _, val = runs.open_windows(params)
    e = torch.stack([val[i]["e"] for i in range(len(val))])                # (N, T, h, w, D)
    with torch.no_grad():
        before, after = (float(load_checkpoint(artifacts.final_weights(params, "dila", phase))[0].eval().phase2_objective(e)[1]
                               ["L_e_rollout"]) for phase in ("train", "finetune"))
    assert after < 0.9 * before
    with pytest.raises(artifacts.MissingInput, match="run `dila train no_content` first"):
        finetune.run(make_params(tmp_path, f"paths.features={trained.paths.features}",
                                 f"paths.models={trained.paths.models}", *STAGE,
                                 *with_variants("no_content")), "no_content", show_progress=False)
    ablation = make_params(tmp_path, f"paths.features={trained.paths.features}", *STAGE,
                           "variants={x: {variant: no_latent_action}}")
    with pytest.raises(artifacts.MissingInput, match="run `dila train x` first"):
        finetune.run(ablation, "x", show_progress=False)


def test_phase_2_of_a_model_without_latent_actions_records_why_and_keeps_phase_1(trained, tmp_path):
    params = make_params(tmp_path, f"paths.features={trained.paths.features}", f"paths.models={tmp_path}/models",
                         f"paths.logs={tmp_path}/logs", *STAGE, "train.steps=2",
                         "variants={x: {variant: no_latent_action}}")
    weights = train.run(params, "x", show_progress=False)
    before = weights.read_bytes()
    out = finetune.run(params, "x", show_progress=False)
    assert out == artifacts.model_dir(params, "x", "finetune") / "skipped.json"
    assert sorted(p.name for p in out.parent.iterdir()) == ["skipped.json"]   # no weights of its own
    record = json.loads(out.read_text())
    assert "no latent actions to roll out" in record["skipped"]
    assert record["final_weights"] == {"path": str(weights), "sha256": runs.file_sha256(weights)}
    live = artifacts.log_dir(params, "x", "finetune")
    assert json.loads((live / "metrics.json").read_text()) == {}
    summary = json.loads(artifacts.summary_path(params, "x", "finetune").read_text())
    assert summary == {"step": None, "val_L_e": None}  # the same keys as every variant's
    assert (live / "plots" / "metrics").is_dir()
    assert weights.read_bytes() == before
