"""Shared fixtures. Tests run on CPU with a seeded random-init DINOv2 (no weights can be
downloaded here); every store they make records that, and the pytest header says so."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on the network in tests
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pipeline.params import Params, apply_overrides, parse_params, read_yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def pytest_report_header(config):
    return "encoder in tests: seeded random-init DINOv2 of the real architecture (weights=random), not pretrained"


def tiny_overrides(tmp: Path) -> list[str]:
    """The tiny preset every pipeline test starts from: 6 short synthetic episodes per store (models
    train on `synthetic`, whose motions exercise every probe group), a 3x3 token grid; Push-T (read
    from ../shared) is only probed where a test asks for it."""
    return [
        f"paths.prepared={tmp}/prepared",
        f"paths.features={tmp}/features",
        f"paths.models={tmp}/models",
        f"paths.logs={tmp}/logs",
        f"paths.eval={tmp}/eval",
        f"paths.plan={tmp}/plan",
        f"paths.replicas={tmp}/replicas",
        f"paths.report={tmp}/report",
        "encoder.weights=random",
        "encoder.input_size=42",
        "encoder.batch_size=8",
        "store.shard_frames=16",
        "store.chunk_mb=0.02",
        "decode.workers=0",
        "train.dataset=synthetic",
        "datasets.plain.episodes=6",
        "datasets.plain.frames=10",
        "datasets.plain.size=32",
        "datasets.synthetic.episodes=6",
        "datasets.synthetic.frames=10",
        "datasets.synthetic.size=32",
        "datasets.objects3.episodes=4",
        "datasets.objects3.frames=10",
        "datasets.objects3.size=32",
        "datasets.pusht_sim.episodes=2",
        "datasets.pusht_sim.frames=6",
        "datasets.pusht.max_frames=5",
        "evaluate.probe_datasets=[synthetic]",
    ]


def commented_variants() -> dict[str, str]:
    """The variants params.yaml leaves out of the default job, each a commented line
    `  # NAME: {...}` under `variants:`: name -> its flow mapping (a `-S variants.NAME=...` value)."""
    text = (ROOT / "params.yaml").read_text()
    block = text[text.index("\nvariants:"):text.index("\ntrain:")]
    return {m[1]: m[2] for m in re.finditer(r"^  # (\w+): +(\{.*\})", block, re.M)}


def with_variants(*names: str) -> list[str]:
    """Overrides that add the named commented-out variants of params.yaml back."""
    entries = commented_variants()
    return [f"variants.{name}={entries[name]}" for name in names]


# Stage two at test size: the tiny model, a handful of steps, 2 held-out episodes.
TINY_STAGE_TWO = [
    "model.preset=tiny", "train.seq_len=4", "train.batch_size=2", "train.steps=4", "train.val_every=2",
    "train.val_batches=1", "train.checkpoint_every=2", "train.log_every=1", "train.workers=0",
    "train.val_fraction=0.34", "finetune.steps=2", "finetune.checkpoint_every=1", "pixel_decoder.size=32",
    "pixel_decoder.width=16", "pixel_decoder.steps=4", "pixel_decoder.batch_size=4",
    "pixel_decoder.checkpoint_every=2", "rollout.horizon=4", "rollout.episodes=2",
    "plan.goals=2", "plan.goal_offset=3", "plan.max_steps=3", "plan.adapter_steps=50", "plan.adapter_hidden=16",
    "plan.samples=8", "plan.horizon=2", "plan.iterations=1", "replicas.seeds=[1]",
]


def make_params(tmp: Path, *extra: str) -> Params:
    raw = apply_overrides(read_yaml(ROOT / "params.yaml"), tiny_overrides(tmp) + list(extra))
    return parse_params(raw)


@pytest.fixture
def tiny(tmp_path) -> Params:
    return make_params(tmp_path)


def requires_shared(path: Path):
    return pytest.mark.skipif(not path.exists(), reason=f"{path} not present (../shared absent)")
