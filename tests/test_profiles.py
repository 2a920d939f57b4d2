"""profiles/paper.yaml: the paper's recipe, parsed and built without downloading anything, and a
valid params file for dvc.yaml."""
from __future__ import annotations

import shutil

import torch

from dila_core import preset
from dila_core.world_model import build_model
from pipeline.data.encoder import builtin_config
from pipeline.params import load_params
from pipeline.training.runs import model_config
from tests.conftest import ROOT
from tests.test_dvc import GIT, sh

PAPER = ROOT / "profiles" / "paper.yaml"


def test_the_paper_profile_is_the_papers_recipe():
    p = load_params(PAPER)
    assert (p.encoder.model, p.encoder.input_size, p.encoder.weights) == \
        ("facebook/dinov2-with-registers-base", 224, "pretrained")
    cfg = builtin_config(p.encoder.model)  # known offline: nothing is downloaded
    assert (cfg.hidden_size, cfg.num_register_tokens, cfg.patch_size) == (768, 4, 14)
    t = p.train
    assert dict(t.mixture) == {"ssv2": 1.0, "rt1": 1.0, "recon": 1.0, "loopnav": 1.0} and t.mixture_stats == "shared"
    assert (t.seq_len, t.batch_size, t.steps, p.finetune.steps) == (16, 32, 30000, 1000)
    assert (t.optim.lr, t.optim.weight_decay, t.optim.grad_clip) == (1e-4, 1e-5, 6.0)
    assert (p.datasets["rt1"].kind, p.datasets["rt1"].frame_stride) == ("lerobot", 2)
    assert p.datasets["ssv2"].clip_frames == 16 and p.datasets["loopnav"].actions == ".actions.csv"
    assert set(p.evaluate.probe_datasets) == {"rt1", "recon", "loopnav", "pusht"}


def test_the_paper_profile_builds_the_paper_preset():
    p = load_params(PAPER)
    cfg = model_config(p, "dila", (16, 16), 768)
    assert cfg == preset("paper", variant="dila", bottleneck="continuous", grid=(16, 16), token_dim=768)
    with torch.device("meta"):
        model = build_model(cfg)
    assert sum(q.numel() for q in model.parameters()) == 123_005_768


def test_dvc_reads_the_paper_profile_as_params(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    shutil.copy(PAPER, repo / "params.yaml")
    sh(*GIT, "init", "-q", cwd=repo)
    sh("dvc", "init", "-q", cwd=repo)
    stages = sh("dvc", "stage", "list", cwd=repo)
    for name in ("extract@ssv2", "extract@rt1", "extract@recon", "extract@loopnav", "train@dila",
                 "train@gaussian_z", "replicas@dila", "report"):
        assert name in stages
