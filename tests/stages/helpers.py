"""Helpers for stage tests: tiny params files, saved tiny models, running the CLI in a subprocess,
comparing stores."""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
import zarr

from dila_core import DiLA, preset
from dila_core.pixel_decoder import PixelDecoder, PixelDecoderConfig
from pipeline import artifacts
from pipeline.params import apply_overrides, read_yaml
from pipeline.training import runs
from pipeline.training.checkpoint import save_checkpoint
from tests.conftest import ROOT, make_params, tiny_overrides

GRID, DIM = (3, 3), 384  # the tiny store: 42 px frames through DINOv2-S


def write_params(tmp: Path, *extra: str) -> Path:
    """A params file for the tiny preset (plus `extra` overrides) in `tmp`."""
    raw = apply_overrides(read_yaml(ROOT / "params.yaml"), tiny_overrides(tmp) + list(extra))
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def cli_env() -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def dila(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"dila {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def arrays(path: Path) -> dict[str, np.ndarray]:
    root = zarr.open_group(path, mode="r")
    return {name: node[:] for name, node in root.members(max_depth=None) if hasattr(node, "shape")}


def assert_same_store(a: Path, b: Path) -> None:
    left, right = arrays(a), arrays(b)
    assert sorted(left) == sorted(right)
    for name in left:
        np.testing.assert_array_equal(left[name], right[name], err_msg=name)
    attrs_a, attrs_b = (dict(zarr.open_group(p, mode="r").attrs["dila"]) for p in (a, b))
    for attrs in (attrs_a, attrs_b):
        attrs.pop("code_version")
    assert attrs_a == attrs_b


def shard_mtimes(path: Path) -> dict[str, int]:
    """Shard files of the tokens array, keyed by their chunk-grid path ("k/0/0/0" for shard k)."""
    shards = path / "tokens" / "c"
    return {str(p.relative_to(shards)): p.stat().st_mtime_ns for p in shards.rglob("*") if p.is_file()}


def stage_params(tmp, *extra):
    return make_params(tmp, f"paths.models={tmp}/models", f"paths.eval={tmp}/eval", f"paths.logs={tmp}/logs",
                       "train.val_fraction=0.34", "train.seq_len=4", "rollout.horizon=3", "rollout.episodes=5", *extra)


def save_model(params, variant, kind="dila", bottleneck="continuous", phase=None) -> DiLA:
    torch.manual_seed(1)
    model = DiLA(preset("tiny", variant=kind, bottleneck=bottleneck, grid=GRID, token_dim=DIM)).eval()
    save_checkpoint(artifacts.final_weights(params, variant, phase or runs.final_phase(params, variant)), model, 5)
    return model


def save_decoder(params, plan):
    torch.manual_seed(0)
    decoder = PixelDecoder(PixelDecoderConfig(in_dim=DIM, grid=GRID, size=8, width=16))
    save_checkpoint(artifacts.pixel_decoder_weights(params), decoder, 1, {"store_plan_sha256": plan})


def private(params, tmp: Path, copy: bool = False):
    """`params` with its models, logs and eval folders moved to `tmp` (copied there with `copy`), so a
    test can write models and evaluations without touching a shared fixture; the manifests and
    feature stores stay shared, and are only read."""
    moved = {}
    for key in ("models", "logs", "eval"):
        src, dst = Path(getattr(params.paths, key)), tmp / key
        if copy and src.exists():
            shutil.copytree(src, dst)
        moved[key] = str(dst)
    return dataclasses.replace(params, paths=dataclasses.replace(params.paths, **moved))
