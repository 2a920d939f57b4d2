"""Does z get used? A toy where the answer takes seconds: DiLA `tiny` on blob clips.

A clip is one blob on a 4 x 4 torus of 16-d tokens (tests.dila_core.helpers.blob_clips), moving
one cell at random each frame, so the next frame is unpredictable from the past and fully
predictable from the action. Without z the best teacher-forced prediction is the
average of the four moves (own / repeat-last about 0.47); a model that reads z predicts the move.
The paper's objective gives z usage 1.00 here as on the `plain` store (BENCHMARKS.md), so the toy
screens training settings (model-config overrides, as `variants.<name>.config`; per-group learning
rates, as `train.optim.lr_scale`) over many seeds before the slow runs on `plain`.

Per (setting, seed): train `--steps` updates of 32 clips x `--frames` frames with AdamW (constant
lr), then on 64 fresh clips report the teacher-forced usage (other-z / own-z MSE, z of clip i - 1)
and own / repeat-last. One JSON line per run to --out; `--table FILE` prints a table of a file.

    OMP_NUM_THREADS=1 python benchmarks/z_toy.py --setting noreg \\
        --config '{"loss": {"lambda_z": 0, "lambda_norm": 0, "lambda_sym": 0, "collapse_scale": 0}}' \\
        --seeds 0 1 2 3 --out data/bench/z_toy.jsonl
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dila_core.model import DiLA, other_clips
from dila_core.presets import preset
from pipeline.params import OptimParams
from pipeline.training.trainer import build_optimizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests/
from tests.dila_core.helpers import blob_clips  # noqa: E402  (the toy the model tests learn on)

GRID, DIM = 4, 16


def run(config: dict, lr_scale: dict, seed: int, steps: int, frames: int, reference: bool = False,
        lr: float = 3e-3) -> dict[str, float]:
    """Train one model on the toy and measure it (module docstring)."""
    torch.manual_seed(seed)
    model = DiLA(preset("tiny", reference=reference, grid=(GRID, GRID), token_dim=DIM, **config))
    opt, _ = build_optimizer(model, OptimParams(lr=lr, schedule="constant", lr_scale=lr_scale), steps)
    g = torch.Generator().manual_seed(1000 + seed)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss, _ = model(blob_clips(32, frames, g))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 6.0)
        opt.step()
    model.eval()
    e = blob_clips(64, frames, torch.Generator().manual_seed(99))
    with torch.no_grad():
        own = F.mse_loss(model.predict(e), e[:, 1:])
        other = F.mse_loss(model.predict(e, other=other_clips(len(e), e.device)), e[:, 1:])
    repeat = F.mse_loss(e[:, :-1], e[:, 1:])
    return {"usage": float(other / own), "own_repeat": float(own / repeat), "seconds": time.perf_counter() - t0}


def table(path: Path) -> None:
    groups: dict[str, list[dict]] = defaultdict(list)
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            groups[f"{r['setting']} ({r['steps']} steps)"].append(r)
    print("| setting | seeds | usage per seed | seeds with usage >= 1.3 | own / repeat-last (mean) |")
    print("|---|---|---|---|---|")
    for name, rs in groups.items():
        rs.sort(key=lambda r: r["seed"])
        usage = ", ".join(f"{r['usage']:.2f}" for r in rs)
        used = sum(r["usage"] >= 1.3 for r in rs)
        print(f"| {name} | {len(rs)} | {usage} | {used} / {len(rs)} | {np.mean([r['own_repeat'] for r in rs]):.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--setting", default="paper")
    ap.add_argument("--config", default="{}", help="JSON: model-config overrides (as variants.<name>.config)")
    ap.add_argument("--lr-scale", default="{}", help="JSON: per-group LR factors (as train.optim.lr_scale)")
    ap.add_argument("--reference", action="store_true", help="every switch of the reference code on")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--out", type=Path, default=Path("data/bench/z_toy.jsonl"))
    ap.add_argument("--table", type=Path)
    args = ap.parse_args()
    if args.table:
        return table(args.table)
    config, lr_scale = json.loads(args.config), json.loads(args.lr_scale)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        row = {"setting": args.setting, "config": config, "lr_scale": lr_scale, "reference": args.reference,
               "seed": seed, "steps": args.steps, "frames": args.frames,
               **{k: round(v, 4) for k, v in run(config, lr_scale, seed, args.steps, args.frames, args.reference).items()}}
        print(json.dumps(row), flush=True)
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
