"""Benchmark stage one: is extraction bound by the encoder, how big is the store, how fast are reads.

Measures, on the same frames of one dataset:
  encoder-only   frames/s of the encoder's forward on frames already decoded and resized in memory
  end-to-end     frames/s of `extract.run` (decode workers, resize, encode, compress, write, stats)
  ratio          end-to-end / encoder-only (goal: >= 0.8 on CPU, >= 0.9 on a GPU)
  bytes/frame    stored token bytes per frame against raw float16
  window reads   random 16-frame windows (within one episode) read per second from the store

Usage (from the project root):
    python benchmarks/extract.py [-S key=value ...] [--rounds 3] [--windows 300] [--out results.json]
The two throughputs are measured alternately for `--rounds` rounds and the best of each is
kept, so a busy machine biases neither side.
Defaults: params.yaml with encoder.weights=random (throughput does not depend on the weights'
values; the compression ratio does, so it is reported for the weights used).
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr

from pipeline import artifacts
from pipeline.data.encoder import load_encoder, resize_frames
from pipeline.data.inspect import info
from pipeline.data.sources import build_source
from pipeline.params import load_params
from stages import extract, prepare


def encoder_only_fps(params, name: str) -> tuple[float, int]:
    source = build_source(params.dataset(name))
    frames = np.concatenate([source.load(ref).frames for ref in source.refs()])  # (F, H, W, 3)
    pixels = resize_frames(torch.from_numpy(frames), params.encoder.input_size)  # (F, 3, S, S)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    encoder = load_encoder(params.encoder, params.seed).to(device)
    batch = params.encoder.batch_size
    encoder(pixels[:batch].to(device))  # warm-up
    _sync(device)
    start = time.perf_counter()
    for i in range(0, len(pixels), batch):
        encoder(pixels[i : i + batch].to(device, non_blocking=True)).cpu()
    _sync(device)
    return len(pixels) / (time.perf_counter() - start), len(pixels)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def window_reads_per_s(path: Path, n: int, window: int = 16, seed: int = 0) -> float:
    root = zarr.open_group(path, mode="r")
    tokens, ends = root["tokens"], root["episode_ends"][:]
    starts = np.concatenate([[0], ends[:-1]])
    rng = np.random.default_rng(seed)
    usable = np.flatnonzero(ends - starts >= window)
    begin = time.perf_counter()
    for _ in range(n):
        e = rng.choice(usable)
        a = rng.integers(starts[e], ends[e] - window + 1)
        tokens[a : a + window]
    return n / (time.perf_counter() - begin)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-S", "--set", action="append", default=[], help="param override key=value")
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--windows", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        overrides = ["encoder.weights=random", f"paths.prepared={tmp}/prepared", f"paths.features={tmp}/features",
                     *args.set]
        params = load_params("params.yaml", overrides)
        prepare.run(params, args.dataset, show_progress=False)
        enc_fps, e2e_fps = 0.0, 0.0
        for _ in range(args.rounds):
            fps, n_frames = encoder_only_fps(params, args.dataset)
            enc_fps = max(enc_fps, fps)
            shutil.rmtree(artifacts.store_path(params, args.dataset), ignore_errors=True)
            start = time.perf_counter()
            path = extract.run(params, args.dataset, show_progress=False)
            e2e_fps = max(e2e_fps, n_frames / (time.perf_counter() - start))
        summary = info(path)
        stored = sum(p.stat().st_size for p in (path / "tokens").rglob("*") if p.is_file())
        raw = int(np.prod(zarr.open_group(path, mode="r")["tokens"].shape)) * 2
        result = {
            "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
            + (torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"),
            "overrides": overrides[3:],
            "rounds": args.rounds,
            "frames": n_frames,
            "tokens": summary["tokens"],
            "decode_workers": params.decode.workers,
            "encoder_only_fps": round(enc_fps, 1),
            "end_to_end_fps": round(e2e_fps, 1),
            "ratio": round(e2e_fps / enc_fps, 3),
            "stored_bytes_per_frame": round(stored / n_frames),
            "raw_float16_bytes_per_frame": raw // n_frames,
            "compression_ratio": round(raw / stored, 3),
            "window16_reads_per_s": round(window_reads_per_s(path, args.windows), 1),
        }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
