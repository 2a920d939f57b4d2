"""Learning curves: does a DiLA model learn to use its latent action z, and how fast?

Trains the `small` preset teacher-forced on a feature store with the project's own model, loss and
optimizer (AdamW and its schedule from pipeline.training.trainer.build_optimizer), under a named
*setting*: model-config overrides (the training devices of dila_core.losses, `init`, the decoder's
skip, ...; exactly what `variants.<name>.config` takes in params.yaml), optionally on top of the
reference code's setting (`--reference`, as `variants.<name>.reference`), and per-group learning rates
(what `train.optim.lr_scale` takes). At every checkpoint, on held-out clips of the shared episode
split:

  own, other   teacher-forced validation token MSE under the clip's own z, and under the z of
               another clip (the fixed derangement i -> i - 1)
  repeat       the repeat-the-last-frame baseline on the same frames
  usage        other / own (1.00: z is ignored; the target is 1.5)
  r2, r2_dx, r2_dy   ridge probe of z to the true (dx, dy), fitted on half of the clips, scored on
               the rest (r2: both together)
  read_next, read_same   the decoder's MSE from the true next structure s_{t+1} and from the
               current s_t (a decoder that reads motion from structure does much better from s_{t+1})
  z_std        std of z over clips and steps; sec_per_step: wall time of a training update

One JSON line per checkpoint goes to --out (appended, so runs can be split over processes);
`--table` turns such a file into the Markdown table and plot of BENCHMARKS.md.

    OMP_NUM_THREADS=1 python benchmarks/learning.py --store data/features/plain.zarr --setting noreg \\
        --config '{"loss": {"lambda_z": 0, "lambda_norm": 0, "lambda_sym": 0, "collapse_scale": 0}}' \\
        --seed 0 --steps 5000 --every 250 --out data/bench/learning.jsonl
    python benchmarks/learning.py --table data/bench/learning.jsonl --plot data/bench/learning.png
"""
from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from dila_core.model import DiLA, other_clips
from dila_core.presets import preset
from pipeline.data.split import split_episodes
from pipeline.data.store import open_store
from pipeline.data.windows import StepBatches, Windows, loader
from pipeline.evaluation.metrics import linear_probe
from pipeline.params import OptimParams
from pipeline.training.checkpoint import save_checkpoint
from pipeline.training.trainer import build_optimizer

SEQ, BATCH, WARMUP = 8, 8, 50
KEYS = ("own", "other", "repeat", "usage", "r2", "read_next", "read_same")


def held_out(store: Path, clips: int) -> tuple[Windows, torch.Tensor, torch.Tensor]:
    """The training windows of `store`, and `clips` evenly spaced validation clips (tokens, actions)."""
    n = open_store(store)["episode_ends"].shape[0]
    train_eps, val_eps = split_episodes(n, 0.125, 0)
    val = Windows(store, val_eps, SEQ, 1)
    pick = np.linspace(0, len(val) - 1, min(clips, len(val))).astype(int)
    items = [val[int(i)] for i in pick]
    return Windows(store, train_eps, SEQ, 1), torch.stack([i["e"] for i in items]), \
        torch.stack([i["actions"] for i in items])


@torch.no_grad()
def measure(model: DiLA, e: torch.Tensor, actions: torch.Tensor) -> dict[str, float]:
    """The checkpoint's numbers (module docstring) on clips e (N, T, h, w, D) with their actions."""
    model.eval()
    target = e[:, 1:]
    mse = lambda pred: float((pred - target).square().mean())
    own, other = mse(model.predict(e)), mse(model.predict(e, other=other_clips(len(e), e.device)))
    read_next, read_same = (mse(p) for p in model.readout(e))
    z = model.infer_actions(e).numpy()                                   # (N, T-1, d_z)
    y = actions[:, :-1, :2].numpy()                                      # true (dx, dy) of each transition
    half = len(z) // 2
    flat = lambda a: a.reshape(-1, a.shape[-1])
    fit = lambda cols: linear_probe(flat(z[:half]), flat(y[:half][..., cols]), flat(z[half:]),
                                    flat(y[half:][..., cols]), alpha=1.0)["r2"]
    model.train()
    return {"own": own, "other": other, "repeat": mse(e[:, :-1]), "usage": other / own, "r2": float(fit([0, 1])),
            "r2_dx": float(fit([0])), "r2_dy": float(fit([1])), "read_next": read_next, "read_same": read_same,
            "z_std": float(z.reshape(-1, z.shape[-1]).std(0).mean())}


def train(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    windows, e, actions = held_out(args.store, args.clips)
    config = json.loads(args.config)
    model = DiLA(preset("small", bottleneck=args.bottleneck, reference=args.reference, grid=windows.grid,
                        token_dim=windows.dim, **config))
    optim = OptimParams(lr=args.lr, weight_decay=1e-5, grad_clip=6.0, schedule=args.schedule, warmup_steps=WARMUP,
                        lr_scale=json.loads(args.lr_scale))
    opt, sched = build_optimizer(model, optim, args.steps)
    batches = StepBatches(len(windows), BATCH, args.seed, 0, args.steps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    busy, logs = 0.0, {}
    for k, batch in enumerate(loader(windows, batches, 0, torch.device("cpu")), start=1):
        t0 = time.perf_counter()
        loss, logs = model(batch["e"])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
        opt.step()
        sched.step()
        busy += time.perf_counter() - t0
        if k % args.every == 0:
            row = {"setting": args.setting, "reference": args.reference, "config": config,
                   "lr_scale": json.loads(args.lr_scale),
                   "schedule": args.schedule, "seed": args.seed, "step": k, "sec_per_step": round(busy / k, 4),
                   **{n: round(v, 5) for n, v in measure(model, e, actions).items()},
                   **{f"train_{n}": round(float(v), 5) for n, v in logs.items() if n in ("reg_scale", "gate_usage")}}
            print(json.dumps(row), flush=True)
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
    if args.save is not None:
        save_checkpoint(args.save, model, args.steps, {"setting": args.setting, "seed": args.seed})


def rows_of(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for r in rows:  # rows of older files: the bottleneck (this script) or the experiment (z_levers.py) named them
        r.setdefault("setting", r.get("exp") or r.get("bottleneck", "?"))
        r.setdefault("read_next", float("nan"))
        r.setdefault("read_same", float("nan"))
    return rows


def table(path: Path, plot: Path | None) -> None:
    rows = rows_of(path)
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["setting"], r["step"])].append(r)
    print("| setting | step | seeds | own / repeat | usage (other / own) | probe R² | read next / same |"
          " usage per seed |")
    print("|---|---|---|---|---|---|---|---|")
    for (name, step), rs in sorted(groups.items()):
        m = {k: np.mean([r[k] for r in rs]) for k in KEYS}
        per_seed = ", ".join(f"{r['usage']:.2f}" for r in sorted(rs, key=lambda r: r["seed"]))
        print(f"| {name} | {step} | {len(rs)} | {m['own'] / m['repeat']:.3f} | {m['usage']:.3f} | {m['r2']:.2f} | "
              f"{m['read_next'] / m['read_same']:.3f} | {per_seed} |")
    if plot is not None:
        curves(rows, plot)


def run_table(path: Path, steps: tuple[int, ...] = (500, 1000, 1500, 2000, 3000, 4000, 5000)) -> None:
    """One row per run (setting, schedule, seed): z usage at the given steps, then the last checkpoint."""
    runs: dict[tuple[str, str, int], dict[int, dict]] = defaultdict(dict)
    for r in rows_of(path):
        runs[(r["setting"], r.get("schedule", "cosine"), r["seed"])][r["step"]] = r
    print("| setting | lr | seed | " + " | ".join(f"usage @{s}" for s in steps)
          + " | last step | own / repeat | probe R² (dx, dy) |")
    print("|---" * (len(steps) + 6) + "|")
    for (name, schedule, seed), by_step in sorted(runs.items()):
        last = by_step[max(by_step)]
        r2 = (f"{last['r2_dx']:.2f}, {last['r2_dy']:.2f}" if "r2_dx" in last else f"{last['r2']:.2f}")
        cells = [f"{by_step[s]['usage']:.3f}" if s in by_step else "" for s in steps]
        print(f"| {name} | {schedule} | {seed} | " + " | ".join(cells)
              + f" | {last['step']} | {last['own'] / last['repeat']:.3f} | {r2} |")


def curves(rows: list[dict], plot: Path) -> None:
    """own / repeat, usage and probe R² against steps: one line per (setting, seed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    runs: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in rows:
        runs[(r["setting"], r["seed"])].append(r)
    colours = {name: f"C{i}" for i, name in enumerate(sorted({n for n, _ in runs}))}
    for (name, seed), rs in sorted(runs.items()):
        rs.sort(key=lambda r: r["step"])
        steps = [r["step"] for r in rs]
        for ax, value in zip(axes, (lambda r: r["own"] / r["repeat"], lambda r: r["usage"], lambda r: r["r2"])):
            ax.plot(steps, [value(r) for r in rs], color=colours[name], marker=".", lw=1,
                    label=name if seed == min(s for n, s in runs if n == name) else None)
    axes[0].axhline(0.7, color="k", ls=":", label="target 0.7")
    axes[1].axhline(1.5, color="k", ls=":", label="target 1.5")
    axes[2].axhline(0.8, color="k", ls=":", label="target 0.8")
    titles = ("teacher-forced MSE / repeat-last (own z)", "z usage: other-z / own-z MSE", "probe R² of z to (dx, dy)")
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training step (batch 8 x 8 frames)")
    axes[0].legend(fontsize=7)
    fig.suptitle("DiLA small on the `plain` store (random-init DINOv2-S tokens): one line per seed", fontsize=10)
    fig.tight_layout()
    plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", type=Path, default=Path("data/features/plain.zarr"))
    ap.add_argument("--setting", default="paper", help="the name this run's rows carry")
    ap.add_argument("--config", default="{}", help="JSON: model-config overrides (as variants.<name>.config)")
    ap.add_argument("--reference", action="store_true", help="every switch of the reference code on (as variants.<name>.reference)")
    ap.add_argument("--lr-scale", default="{}", help="JSON: per-group LR factors (as train.optim.lr_scale)")
    ap.add_argument("--bottleneck", default="continuous", choices=("continuous", "nsvq", "gaussian", "sparse"))
    ap.add_argument("--schedule", default="cosine", choices=("cosine", "constant"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--every", type=int, default=200)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--clips", type=int, default=128)
    ap.add_argument("--out", type=Path, default=Path("data/bench/learning.jsonl"))
    ap.add_argument("--save", type=Path, help="write the final model here (safetensors)")
    ap.add_argument("--table", type=Path, help="print the table of a results file instead of training")
    ap.add_argument("--plot", type=Path, help="with --table: also write the curves to this PNG")
    ap.add_argument("--by-run", action="store_true", help="with --table: one row per run instead of per checkpoint")
    args = ap.parse_args()
    if args.table and args.by_run:
        run_table(args.table)
    elif args.table:
        table(args.table, args.plot)
    else:
        train(args)


if __name__ == "__main__":
    main()
