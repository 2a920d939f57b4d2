"""Learning curves of DiLA and its z bottlenecks on a synthetic feature store.

For each bottleneck (continuous = DiLA, nsvq = discrete z, gaussian = Gaussian z) and seed, train the
`small` preset teacher-forced (AdamW, linear warm-up then cosine decay, the paper's loss weights)
and at every checkpoint measure on held-out clips (the shared episode split):

  own        teacher-forced validation token MSE with the clip's own z
  other      the same with z taken from another clip (a fixed permutation of the clips)
  repeat     the repeat-the-last-frame baseline on the same frames
  usage      other / own (1.00: z is ignored; the default run must reach 1.5 on rollouts)
  R²         ridge probe of z to the true (dx, dy), fitted on half of the clips, scored on the rest

One JSON line per checkpoint goes to --out (appended, so runs can be split over processes);
`--table` turns such a file into the Markdown table and plot of BENCHMARKS.md.

    OMP_NUM_THREADS=1 python benchmarks/learning.py --store data/features/plain.zarr \\
        --bottleneck continuous --seed 0 --steps 600 --every 200 --out data/bench/learning.jsonl
    python benchmarks/learning.py --table data/bench/learning.jsonl --plot data/bench/learning.png
"""
from __future__ import annotations

import argparse
import json
import math
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from dila_core.model import DiLA
from dila_core.presets import preset
from pipeline.data.split import split_episodes
from pipeline.data.store import open_store
from pipeline.data.windows import StepBatches, Windows, loader
from pipeline.evaluation.metrics import linear_probe

SEQ, BATCH, WARMUP = 8, 8, 50


class Permuted(torch.nn.Module):
    """The IDM, with its outputs permuted across clips when `perm` is set (z of another clip)."""

    def __init__(self, idm: torch.nn.Module):
        super().__init__()
        self.idm, self.perm = idm, None

    def forward(self, ds: torch.Tensor) -> torch.Tensor:
        r = self.idm(ds)
        return r if self.perm is None or r.shape[0] != len(self.perm) else r[self.perm]


def held_out(store: Path, clips: int) -> tuple[Windows, torch.Tensor, torch.Tensor]:
    n = open_store(store)["episode_ends"].shape[0]
    train_eps, val_eps = split_episodes(n, 0.125, 0)
    val = Windows(store, val_eps, SEQ, 1)
    pick = np.linspace(0, len(val) - 1, min(clips, len(val))).astype(int)
    items = [val[int(i)] for i in pick]
    return Windows(store, train_eps, SEQ, 1), torch.stack([i["e"] for i in items]), \
        torch.stack([i["actions"] for i in items])


@torch.no_grad()
def measure(model: DiLA, e: torch.Tensor, actions: torch.Tensor) -> dict[str, float]:
    model.eval()
    target = e[:, 1:]
    own = float((model.predict(e) - target).square().mean())
    idm = model.dynamics.idm
    idm.perm = torch.randperm(len(e), generator=torch.Generator().manual_seed(0))
    other = float((model.predict(e) - target).square().mean())
    idm.perm = None
    z = model.infer_actions(e).numpy()                                   # (N, T-1, d_z)
    y = actions[:, :-1, :2].numpy()                                      # true (dx, dy) of each transition
    half = len(z) // 2
    flat = lambda a: a.reshape(-1, a.shape[-1])
    probe = linear_probe(flat(z[:half]), flat(y[:half]), flat(z[half:]), flat(y[half:]), alpha=1.0)
    model.train()
    return {"own": own, "other": other, "repeat": float((e[:, :-1] - target).square().mean()),
            "usage": other / own, "r2": float(probe["r2"])}


def train(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    windows, e, actions = held_out(args.store, args.clips)
    model = DiLA(preset("small", bottleneck=args.bottleneck, grid=windows.grid, token_dim=windows.dim))
    model.dynamics.idm = Permuted(model.dynamics.idm)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-5)
    cosine = lambda k: 0.5 * (1 + math.cos(math.pi * min(1.0, (k - WARMUP) / max(1, args.steps - WARMUP))))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: (k + 1) / WARMUP if k < WARMUP else cosine(k))
    batches = StepBatches(len(windows), BATCH, args.seed, 0, args.steps)
    t0, model = time.time(), model.train()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for k, batch in enumerate(loader(windows, batches, 0, torch.device("cpu")), start=1):
        loss, _ = model(batch["e"])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 6.0)
        opt.step()
        sched.step()
        if k % args.every == 0:
            row = {"bottleneck": args.bottleneck, "seed": args.seed, "step": k, "seconds": round(time.time() - t0),
                   **{name: round(v, 5) for name, v in measure(model, e, actions).items()}}
            print(json.dumps(row), flush=True)
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")


def table(path: Path, plot: Path | None) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["bottleneck"], r["step"])].append(r)
    print("| z | step | seeds | own-z MSE | other-z MSE | repeat-last | own / repeat | usage (other / own) | probe R² |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (bn, step), rs in sorted(groups.items()):
        m = {k: np.mean([r[k] for r in rs]) for k in ("own", "other", "repeat", "usage", "r2")}
        sd = np.std([r["own"] for r in rs])
        print(f"| {bn} | {step} | {len(rs)} | {m['own']:.4f} ± {sd:.4f} | {m['other']:.4f} | {m['repeat']:.4f} | "
              f"{m['own'] / m['repeat']:.2f} | {m['usage']:.3f} | {m['r2']:.2f} |")
    if plot is not None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        for bn in sorted({b for b, _ in groups}):
            steps = sorted(s for b, s in groups if b == bn)
            for ax, key in zip(axes, ("own", "usage", "r2")):
                mean = [np.mean([r[key] for r in groups[(bn, s)]]) for s in steps]
                ax.plot(steps, mean, marker="o", label=bn)
        repeat = np.mean([r["repeat"] for r in rows])
        axes[0].axhline(repeat, color="k", ls="--", label="repeat-last")
        axes[1].axhline(1.5, color="k", ls=":", label="target 1.5")
        axes[2].axhline(0.8, color="k", ls=":", label="target 0.8")
        for ax, title in zip(axes, ("val token MSE (own z)", "z usage: other-z / own-z MSE", "probe R² (dx, dy)")):
            ax.set_title(title)
            ax.set_xlabel("step")
            ax.legend(fontsize=7)
        fig.tight_layout()
        plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(plot, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", type=Path, default=Path("data/features/synthetic.zarr"))
    ap.add_argument("--bottleneck", default="continuous", choices=("continuous", "nsvq", "gaussian"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--every", type=int, default=200)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--clips", type=int, default=128)
    ap.add_argument("--out", type=Path, default=Path("data/bench/learning.jsonl"))
    ap.add_argument("--table", type=Path, help="print the table of a results file instead of training")
    ap.add_argument("--plot", type=Path, help="with --table: also write the curves to this PNG")
    args = ap.parse_args()
    table(args.table, args.plot) if args.table else train(args)


if __name__ == "__main__":
    main()
