"""Diagnose why a latent action z does (not) encode motion, on a synthetic feature store.

Two measurements on the validation episodes of the shared split:
  supervised   the small preset's IDM on Δs of a per-token MLP structure encoder, trained for
               --steps steps with the true (dx, dy) as regression targets: the R² it reaches says
               whether the tokens carry the motion at all
  checkpoint   (with --weights) a trained DiLA: teacher-forced token MSE with its own z, with z
               set to zero and with z shuffled across clips (equal errors: the decoder ignores z)

Usage (from the project root, after `dvc repro` or `dila extract synthetic`):
    python benchmarks/z_usage.py [--store data/features/synthetic.zarr] [--steps 400]
                                 [--weights data/models/dila/finetune/model.safetensors]
"""
from __future__ import annotations

import argparse
import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dila_core.presets import preset
from dila_core.structure import IDM
from pipeline.data.split import split_episodes
from pipeline.data.store import open_store
from pipeline.data.windows import Windows
from pipeline.training.checkpoint import load_checkpoint

SEQ = 8


def windows(store: Path) -> tuple[Windows, Windows]:
    n = open_store(store)["episode_ends"].shape[0]
    train, val = split_episodes(n, 0.125, 0)
    return Windows(store, train, SEQ, 1), Windows(store, val, SEQ, 1)


def clips(data: Windows, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized tokens (B, T, h, w, D) and per-transition (dx, dy) (B, T-1, 2) of windows idx."""
    items = [data[int(i)] for i in idx]
    pose = torch.stack([torch.as_tensor(np.asarray(it["labels"]["pose"]))[:, 0, :2] for it in items]).float()
    return torch.stack([it["e"] for it in items]), pose[:, 1:] - pose[:, :-1]


def r2(pred: torch.Tensor, y: torch.Tensor) -> list[float]:
    pred, y = pred.reshape(-1, y.shape[-1]), y.reshape(-1, y.shape[-1])
    return (1 - (pred - y).square().mean(0) / y.var(0, correction=0)).tolist()


def supervised(train: Windows, val: Windows, steps: int) -> list[float]:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = preset("small", grid=train.grid, token_dim=train.dim)
    d_s = cfg.d_s
    enc = nn.Sequential(nn.Linear(train.dim, 96), nn.GELU(), nn.Linear(96, d_s))
    idm, head = IDM(cfg.idm, d_s, 32), nn.Linear(32, 2)
    net = nn.ModuleList([enc, idm, head])
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    _, y_some = clips(train, rng.integers(len(train), size=256))
    scale = y_some.reshape(-1, 2).std(0)                                           # targets in std units

    def predict(e: torch.Tensor) -> torch.Tensor:
        s = enc(e)                                                                 # (B, T, h, w, d_s)
        return head(idm(s[:, 1:] - s[:, :-1]))                                     # (B, T-1, 2)

    for _ in range(steps):
        e, y = clips(train, rng.integers(len(train), size=8))
        loss = (predict(e) - y / scale).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        e, y = clips(val, np.arange(len(val)))
        return r2(predict(e), y / scale)


@contextmanager
def replaced_z(model, how: str):
    """Inside: the bottleneck's training-path z is zeroed or shuffled across clips."""
    bottleneck = model.dynamics.bottleneck
    original = bottleneck.forward

    def forward(r: torch.Tensor):
        z, loss, logs = original(r)
        z = torch.zeros_like(z) if how == "zero" else z[torch.randperm(len(z), generator=torch.Generator().manual_seed(0))]
        return z, loss, logs

    bottleneck.forward = forward
    try:
        yield
    finally:
        bottleneck.forward = original


def checkpoint(weights: Path, val: Windows) -> dict[str, float]:
    model, _ = load_checkpoint(weights)
    model.eval()
    e, _ = clips(val, np.arange(len(val)))
    out = {}
    with torch.no_grad():
        out["own_z"] = float((model.predict(e) - e[:, 1:]).square().mean())
        for how in ("zero", "shuffled"):
            with replaced_z(model, how):
                out[f"{how}_z"] = float((model.predict(e) - e[:, 1:]).square().mean())
        out["repeat_last_frame"] = float((e[:, :-1] - e[:, 1:]).square().mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", type=Path, default=Path("data/features/synthetic.zarr"))
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--weights", type=Path, default=None)
    a = ap.parse_args()
    train, val = windows(a.store)
    report = {"store": str(a.store), "supervised_idm_r2_dx_dy": supervised(train, val, a.steps), "steps": a.steps}
    if a.weights is not None:
        report["teacher_forced_mse"] = checkpoint(a.weights, val)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
