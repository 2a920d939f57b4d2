"""Benchmark the training input path: windows read from one store against windows drawn from a
mixture of stores (`train.mixture`), with no model step, so the cost of mixing is all that differs.

  single    the trainer's loader over the first store's training windows, in `StepBatches` order
  mixture   the same loader over a `Mixture` of every store at equal ratios, in `MixtureBatches`
            order (each batch position draws its store, then that store's next window)
Both read the same number of batches of the same shape. The two sides alternate for `--rounds`
rounds (the machine is shared: a ratio measured in one run, side by side, is what holds). Reported:
windows/s per side and round, the median, and the ratio mixture / single.

Usage (from the project root):
    python benchmarks/mixture.py [--workdir DIR] [--stores synthetic objects3] [--batch 8]
                                 [--seq-len 4] [--steps 200] [--rounds 3] [--workers 1]
The stores are built in DIR (default: a temporary directory) from params.yaml with
encoder.weights=random, unless they are there already.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pipeline import artifacts
from pipeline.data.mixture import Mixture
from pipeline.data.windows import loader, split_windows
from pipeline.params import load_params
from stages import extract, prepare


def windows_per_s(dataset, order, workers: int) -> float:
    """Read every batch of `order` through the trainer's loader; windows read per second."""
    t0, n = time.perf_counter(), 0
    for batch in loader(dataset, order, workers, torch.device("cpu")):
        n += len(batch["e"])
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--stores", nargs="+", default=["synthetic", "objects3"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=4)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        params = load_params("params.yaml", ["encoder.weights=random", f"paths.prepared={work}/prepared",
                                             f"paths.features={work}/features"])
        parts = {}
        for name in args.stores:
            path = artifacts.store_path(params, name)
            if not path.exists():
                prepare.run(params, name, show_progress=False)
                extract.run(params, name, show_progress=False)
            parts[name], _ = split_windows(path, params.train.val_fraction, params.seed, args.seq_len, 1)
        single = parts[args.stores[0]]
        mixture = Mixture(parts, {name: 1.0 for name in args.stores})
        rows: dict[str, list[float]] = {"single": [], "mixture": []}
        for _ in range(args.rounds):  # alternate the sides: load on a shared machine drifts
            for side, data in (("single", single), ("mixture", mixture)):
                order = data.step_batches(args.batch, params.seed, 0, args.steps, 0, 1)
                rows[side].append(windows_per_s(data, order, args.workers))
    median = {side: statistics.median(v) for side, v in rows.items()}
    print(json.dumps({"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
                      "torch": torch.__version__, "args": vars(args) | {"workdir": str(args.workdir)},
                      "grid": single.grid, "dim": single.dim, "windows_per_s": rows}, indent=1))
    print("\n| side | windows/s per round | median |\n|---|---|---|")
    for side, values in rows.items():
        print(f"| {side} | {', '.join(f'{v:.0f}' for v in values)} | {median[side]:.0f} |")
    print(f"\nmixture / single windows/s: {median['mixture'] / median['single']:.2f}")


if __name__ == "__main__":
    main()
