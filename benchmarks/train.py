"""Benchmark stage two: training on cached tokens against encoding frames with DINOv2 on every step.

Two ways to feed the same model the same windows, at equal model, batch and window length:
  cached    the trainer's path: DataLoader workers read token windows from the Zarr store and
            normalize them; the main process runs the model step (forward, backward, AdamW)
  encode    the reference code's design: workers decode the window's frames from the source and
            resize them; the main process runs the frozen DINOv2 on them, normalizes the tokens
            with the same stats, then the same model step
Reported per mode: steps/s, clips/s (= batch x steps/s), ms per step, and the data-wait share
(time blocked on the loader / step time); then the ratio cached / encode clips/s.

Usage (from the project root):
    python benchmarks/train.py [--workdir DIR] [-S key=value ...] [--preset small] [--batch 8]
                               [--seq-len 4] [--steps 30] [--warmup 3] [--workers 1] [--threads N]
The store is built in DIR (default: a temporary directory) from params.yaml with
encoder.weights=random, unless one is there already (throughput does not depend on the
encoder's weight values).
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dila_core.model import DiLA
from dila_core.presets import preset
from pipeline import artifacts
from pipeline.data.encoder import load_encoder, resize_frames
from pipeline.data.sources import EpisodeRef, build_source
from pipeline.data.split import split_episodes
from pipeline.data.store import open_store
from pipeline.data.windows import EPS, StepBatches, Windows, loader, worker_init
from pipeline.params import Params, load_params
from stages import extract, prepare


class FrameWindows(Dataset):
    """The pixels (T, 3, S, S) of the same windows as `windows`, decoded from the source."""

    def __init__(self, params: Params, name: str, windows: Windows):
        manifest = artifacts.read_manifest(params, name)
        self.refs = [EpisodeRef(e["key"], e["origin"]) for e in manifest["episodes"]]
        self.ds, self.windows, self.size = params.dataset(name), windows, params.encoder.input_size
        self.source = None  # built inside each worker

    def __len__(self) -> int:
        return len(self.windows)

    def close(self) -> None:
        self.source = None

    def __getitem__(self, i: int) -> torch.Tensor:
        self.source = self.source or build_source(self.ds)
        w = self.windows
        first, episode = (int(v) for v in w.windows[i])
        a = first - int(w.bounds[episode, 0])
        frames = self.source.load(self.refs[episode], a, a + (w.seq_len - 1) * w.frame_skip + 1).frames
        return resize_frames(torch.from_numpy(np.ascontiguousarray(frames[:: w.frame_skip])), self.size)


def timed_steps(batches, to_tokens, model: DiLA, opt, steps: int, warmup: int) -> dict[str, float]:
    """Run warmup + steps model steps; mean step time and data wait over the timed steps."""
    it = iter(batches)
    waits, totals = [], []
    for k in range(warmup + steps):
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        loss, _ = model(to_tokens(batch))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if k >= warmup:
            waits.append(t1 - t0)
            totals.append(time.perf_counter() - t0)
    step = float(np.mean(totals))
    return {"ms_per_step": 1e3 * step, "steps_per_s": 1 / step, "data_wait_share": sum(waits) / sum(totals)}


def measure(params: Params, args, mode: str, train_set: Windows) -> dict[str, float]:
    torch.manual_seed(params.seed)
    model = DiLA(preset(args.preset, grid=train_set.grid, token_dim=train_set.dim))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    order = StepBatches(len(train_set), args.batch, params.seed, 0, args.warmup + args.steps)
    cpu = torch.device("cpu")
    if mode == "cached":
        row = timed_steps(loader(train_set, order, args.workers, cpu), lambda b: b["e"], model, opt,
                          args.steps, args.warmup)
    else:
        encoder = load_encoder(params.encoder, params.seed)
        frames = DataLoader(FrameWindows(params, args.dataset, train_set), batch_sampler=order,
                            num_workers=args.workers, worker_init_fn=worker_init,
                            prefetch_factor=4 if args.workers else None)

        def encode(pixels: torch.Tensor) -> torch.Tensor:            # (B, T, 3, S, S) -> (B, T, h, w, D)
            with torch.no_grad():
                tokens = encoder(pixels.flatten(0, 1)).float()
            tokens = tokens.to(torch.float16).float()                # the precision the store keeps
            e = (tokens - train_set.mean) / (train_set.std + EPS)
            return e.unflatten(0, pixels.shape[:2])

        row = timed_steps(frames, encode, model, opt, args.steps, args.warmup)
    row["clips_per_s"] = args.batch * row["steps_per_s"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-S", "--set", action="append", default=[], help="param override key=value")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        params = load_params("params.yaml", ["encoder.weights=random", f"paths.prepared={work}/prepared",
                                             f"paths.features={work}/features", *args.set])
        path = artifacts.store_path(params, args.dataset)
        if not path.exists():
            prepare.run(params, args.dataset, show_progress=False)
            extract.run(params, args.dataset, show_progress=False)
        n = open_store(path)["episode_ends"].shape[0]
        train_eps, _ = split_episodes(n, params.train.val_fraction, params.seed)
        train_set = Windows(path, train_eps, args.seq_len, 1)
        rows = {mode: measure(params, args, mode, train_set) for mode in ("cached", "encode")}
    print(json.dumps({"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
                      "torch": torch.__version__, "args": vars(args) | {"workdir": str(args.workdir)},
                      "grid": train_set.grid, "dim": train_set.dim}, indent=1))
    print("\n| mode | ms/step | steps/s | clips/s | data-wait share |\n|---|---|---|---|---|")
    for mode, r in rows.items():
        print(f"| {mode} | {r['ms_per_step']:.0f} | {r['steps_per_s']:.2f} | {r['clips_per_s']:.1f} | "
              f"{100 * r['data_wait_share']:.1f}% |")
    print(f"\ncached / encode clips/s: {rows['cached']['clips_per_s'] / rows['encode']['clips_per_s']:.2f}x")


if __name__ == "__main__":
    main()
