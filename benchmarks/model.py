"""Forward + backward cost of the DiLA model per preset: step time, tokens/s, peak memory, FLOPs.

    python benchmarks/model.py                                   # CPU: tiny, small, paper
    python benchmarks/model.py --device cuda --presets paper --batch 32 --frames 16 --dtype bfloat16

One step is `loss, logs = model(e); loss.backward()` on random tokens of the preset's
grid and width (no optimizer). Every preset runs in its own subprocess, so its peak
memory is its own: on CPU the peak resident set size of that process (and how much
the step added on top of the built model), on CUDA `torch.cuda.max_memory_allocated`.
FLOPs per step are counted once with `torch.utils.flop_counter.FlopCounterMode`; on
CUDA, model FLOP utilisation = FLOPs / step time / --peak-tflops (bf16 dense peak of
the device). Prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from dila_core.model import DiLA
from dila_core.presets import preset

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def one_step(model: DiLA, e: torch.Tensor, device: str, dtype: torch.dtype) -> None:
    with torch.autocast(device_type=device, dtype=dtype, enabled=dtype != torch.float32):
        loss, _ = model(e)
    loss.backward()
    model.zero_grad(set_to_none=True)


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(name: str, batch: int, frames: int, device: str, dtype: torch.dtype, steps: int, warmup: int) -> dict:
    """Time `steps` training steps of preset `name` after `warmup` steps; returns one result row."""
    torch.manual_seed(0)
    cfg = preset(name)
    model = DiLA(cfg).to(device)
    e = torch.randn(batch, frames, *cfg.grid, cfg.token_dim, device=device)
    built_rss = peak_rss_mib()
    with FlopCounterMode(display=False) as counter:
        one_step(model, e, device, dtype)
    for _ in range(warmup):
        one_step(model, e, device, dtype)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        synchronize(device)
        start = time.perf_counter()
        one_step(model, e, device, dtype)
        synchronize(device)
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    tokens = batch * frames * cfg.grid[0] * cfg.grid[1]
    row = {"preset": name, "params": sum(p.numel() for p in model.parameters()), "batch": batch, "frames": frames,
           "tokens": tokens, "step_s": step_s, "tokens_per_s": tokens / step_s,
           "flops": counter.get_total_flops(), "peak_mib": peak_rss_mib(), "built_mib": built_rss}
    if device == "cuda":
        row["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        row["built_mib"] = float("nan")
    return row


def table(rows: list[dict], peak_tflops: float | None) -> str:
    head = ("| preset | params | batch x frames | tokens/step | step (s) | tokens/s | GFLOP/step "
            "| peak mem (MiB) | step adds (MiB) |")
    lines = [head + (" MFU |" if peak_tflops else ""), "|" + "---|" * (9 + bool(peak_tflops))]
    for r in rows:
        line = (f"| {r['preset']} | {r['params'] / 1e6:.2f}M | {r['batch']} x {r['frames']} | {r['tokens']} "
                f"| {r['step_s']:.3f} | {r['tokens_per_s']:.0f} | {r['flops'] / 1e9:.1f} | {r['peak_mib']:.0f} "
                f"| {r['peak_mib'] - r['built_mib']:.0f} |")
        mfu = r["flops"] / r["step_s"] / (peak_tflops * 1e12) if peak_tflops else None
        lines.append(line + (f" {100 * mfu:.1f}% |" if mfu is not None else ""))
    return "\n".join(lines)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["tiny", "small", "paper"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--batch", type=int, default=4, help="clips per step (all presets but paper on CPU)")
    p.add_argument("--frames", type=int, default=8, help="frames per clip")
    p.add_argument("--paper-batch", type=int, default=None, help="batch for the paper preset (default --batch)")
    p.add_argument("--paper-frames", type=int, default=None, help="frames for the paper preset (default --frames)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--peak-tflops", type=float, default=None, help="device bf16 dense peak, for MFU (CUDA)")
    p.add_argument("--out", type=Path, default=None,
                   help="append each result row as a JSON line (device included), e.g. "
                        "benchmarks/results/model_cuda.jsonl, which `dila dry-run` reads")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


def main() -> None:
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        [name] = args.presets
        print(json.dumps(measure(name, args.batch, args.frames, args.device, DTYPES[args.dtype], args.steps,
                                 args.warmup)))
        return
    rows = []
    for name in args.presets:
        paper = name == "paper"
        batch = args.paper_batch if paper and args.paper_batch else args.batch
        frames = args.paper_frames if paper and args.paper_frames else args.frames
        cmd = [sys.executable, __file__, "--worker", "--presets", name, "--device", args.device, "--dtype",
               args.dtype, "--batch", str(batch), "--frames", str(frames), "--steps", str(args.steps),
               "--warmup", str(args.warmup)] + (["--threads", str(args.threads)] if args.threads else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"device: {args.device} ({platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads), dtype {args.dtype}, median of {args.steps} steps "
          f"after {args.warmup} warm-up")
    print(table(rows, args.peak_tflops if args.device == "cuda" else None))
    if args.out is not None:
        with args.out.open("a") as f:
            for row in rows:
                f.write(json.dumps({**row, "device": args.device, "dtype": args.dtype, "torch": torch.__version__,
                                    "date": time.strftime("%Y-%m-%d")}) + "\n")


if __name__ == "__main__":
    main()
