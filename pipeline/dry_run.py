"""What a params file's run will cost, before it runs (`dila dry-run`): no video is decoded, no
token encoded, nothing trained, no GPU needed.

- Stores: per dataset, its kept frames (the source's `metadata_count`, where metadata, an index
  or the generator's params tell them without decoding; else `budget.frames.<name>`; else
  unknown), the token grid and width
  of the configured encoder, the bytes per stored frame (raw float16 × the compression ratio
  measured by `benchmarks/extract.py`, file `budget.store_bytes`) and the size on disk.
- Compute, counted: the encoder's FLOPs per frame and each phase's FLOPs per training step
  (forward and backward), counted by `torch.utils.flop_counter.FlopCounterMode` on the meta
  device (no memory, no data; the pure-PyTorch scan path of the content memory; the model in
  eval mode, whose arithmetic is the training step's without bookkeeping that reads values).
- Time and memory: from a measured GPU step of `benchmarks/model.py --out` (file `budget.measured`)
  where one matches the preset, batch and frames; otherwise the lower bound at the GPU's dense
  peak (`budget.gpu_peak_tflops`), said to be a bound. Memory: the exact size of weights,
  gradients and AdamW state per rank; activations only from a measurement.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from dila_core import world_model
from pipeline.data.encoder import builtin_config
from pipeline.data.sources import EpisodeError, SourceError, build_source
from pipeline.params import PATCH, Params
from pipeline.training.runs import model_config, variant_capabilities

ADAMW_BYTES = 16  # fp32 weight + gradient + two AdamW moments per parameter


def count_frames(params: Params, name: str) -> tuple[int | None, str]:
    """(kept frames of dataset `name`, how they were found) without decoding a frame."""
    ds = params.dataset(name)
    try:
        source = build_source(ds)
        refs = source.refs()
        counts, bad = [], 0
        for ref in refs:
            try:
                counts.append(source.metadata_count(ref))
            except EpisodeError:  # prepare would skip it too
                bad += 1
        if None in counts:
            raise SourceError(f"{ds.kind} counts frames only by decoding them")
        notes = [f"{len(counts)} episodes"] + ([f"{bad} unreadable, skipped"] if bad else []) + \
            ([source.metadata_bound] if source.metadata_bound else [])
        return sum(counts), f"counted ({'; '.join(notes)})"
    except (SourceError, OSError) as err:
        declared = params.budget.frames.get(name)
        if declared is None:
            return None, f"unknown: {err}; set budget.frames.{name}"
        return declared, f"budget.frames.{name} (the data is not readable here: {err})"


def encoder_shape(params: Params) -> tuple[tuple[int, int], int]:
    side = params.encoder.input_size // PATCH
    return (side, side), int(builtin_config(params.encoder.model).hidden_size)


def bytes_per_frame(params: Params) -> tuple[float, str]:
    """Stored bytes per frame: raw float16 tokens × the measured compression ratio."""
    grid, dim = encoder_shape(params)
    raw = grid[0] * grid[1] * dim * 2
    m = json.loads(Path(params.budget.store_bytes).read_text())
    ratio = m["stored_bytes_per_frame"] / m["raw_bytes_per_frame"]
    return raw * ratio, (f"{raw:,} raw float16 bytes × {ratio:.3f}, the stored/raw ratio measured by "
                         f"`{m['command']}` ({m['date']}, {m['what']})")


def encoder_flops(params: Params) -> float:
    """FLOPs of one frame through the configured DINOv2 at input_size."""
    from transformers import AutoModel

    with torch.device("meta"):
        model = AutoModel.from_config(builtin_config(params.encoder.model))
        pixels = torch.empty(1, 3, params.encoder.input_size, params.encoder.input_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(pixel_values=pixels)
    return float(counter.get_total_flops())


def step_flops(params: Params, variant: str) -> dict[str, Any]:
    """FLOPs of one global training step (forward + backward) of `variant` per phase, counted on
    the meta device. A bottleneck that uses an op the meta device lacks (NSVQ's bincount) is
    counted as the continuous one in its place, and the result says so (its codebook lookup, a
    few MFLOP, is left out)."""
    grid, dim = encoder_shape(params)
    t = params.train
    phases = ["train"] + (["finetune"] if variant_capabilities(params, variant).phase2 else [])
    try:
        return {**_count(params, variant, grid, dim, t.batch_size, phases), "counted_on": "meta"}
    except (NotImplementedError, RuntimeError):
        v = params.variant(variant)
        swapped = dataclasses.replace(params, variants={variant: dataclasses.replace(v, bottleneck="continuous")})
        return {**_count(swapped, variant, grid, dim, t.batch_size, phases),
                "counted_on": f"meta, {v.bottleneck} counted as continuous"}


def _count(params: Params, variant: str, grid: tuple[int, int], dim: int, batch: int,
           phases: list[str]) -> dict[str, float]:
    with torch.device("meta"):
        model = world_model.build_model(model_config(params, variant, grid, dim))
        e = torch.empty(batch, params.train.seq_len, *grid, dim)
    model.eval()  # the same arithmetic; training-only bookkeeping (e.g. NSVQ's dead-code reset) reads values
    out = {"params": float(sum(p.numel() for p in model.parameters()))}
    for phase in phases:
        fn = model.objective if phase == "train" else model.phase2_objective
        with FlopCounterMode(display=False) as counter:
            fn(e)[0].backward()
        out[phase] = float(counter.get_total_flops())
    return out


def measured_step(params: Params) -> dict[str, Any] | None:
    """A measured CUDA step of this preset at this batch and clip length, if one is on record."""
    path = Path(params.budget.measured)
    if not path.is_file():
        return None
    t = params.train
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if (row.get("device"), row["preset"], row["batch"], row["frames"]) == \
                ("cuda", params.model.preset, t.batch_size, t.seq_len):
            return row
    return None


def dry_run(params: Params) -> dict[str, Any]:
    """Everything `dila dry-run` prints, as numbers (see the module docstring for their sources)."""
    b, t, f = params.budget, params.train, params.finetune
    per_frame, how_bytes = bytes_per_frame(params)
    stores = {}
    for name in params.datasets:
        frames, how = count_frames(params, name)
        stores[name] = {"kind": params.dataset(name).kind, "frames": frames, "frames_from": how,
                        "bytes": None if frames is None else frames * per_frame}
    known = sum(s["frames"] for s in stores.values() if s["frames"] is not None)
    peak = b.gpu_peak_tflops * 1e12
    enc = encoder_flops(params)
    runs = 1 + len(params.replicas.seeds)
    training, flops_total = {}, 0.0
    for variant in params.variants:
        steps = step_flops(params, variant)
        total = runs * (t.steps * steps["train"] + f.steps * steps.get("finetune", 0.0))
        training[variant] = {**steps, "runs": runs, "flops": total}
        flops_total += total
    measured = measured_step(params)
    params_count = max(v["params"] for v in training.values())
    return {
        "grid": list(encoder_shape(params)[0]), "dim": encoder_shape(params)[1], "bytes_per_frame": per_frame,
        "bytes_from": how_bytes, "stores": stores, "frames_known": known,
        "extraction": {"flops_per_frame": enc, "flops": enc * known, "gpu_hours_at_peak": enc * known / peak / 3600},
        "training": training, "training_flops": flops_total, "gpu_hours_at_peak": flops_total / peak / 3600,
        "measured": measured, "static_bytes_per_rank": params_count * ADAMW_BYTES,
        "gpus": b.gpus, "peak_tflops": b.gpu_peak_tflops,
    }


def _gb(x: float | None) -> str:
    return "unknown" if x is None else f"{x / 1e9:,.3g} GB"


def _flop(x: float) -> str:
    """x FLOPs with the largest SI prefix that keeps it >= 1 (3 significant digits)."""
    for scale, prefix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M")):
        if x >= scale:
            return f"{x / scale:.3g} {prefix}FLOP"
    return f"{x:.3g} FLOP"


def _hours(x: float) -> str:
    return f"{x:,.1f}" if x >= 10 else f"{x:.3g}"


def format_dry_run(r: dict[str, Any], params: Params) -> str:
    t = params.train
    lines = [f"Dry run: nothing decoded, encoded or trained. Encoder {params.encoder.model} at "
             f"{params.encoder.input_size} px -> {r['grid'][0]} x {r['grid'][1]} x {r['dim']} tokens per frame.",
             f"Bytes per stored frame: {r['bytes_per_frame']:,.0f} ({r['bytes_from']}).", "",
             "| dataset | kind | kept frames | size on disk | frames from |", "|---|---|---|---|---|"]
    for name, s in r["stores"].items():
        frames = "unknown" if s["frames"] is None else f"{s['frames']:,}"
        lines.append(f"| {name} | {s['kind']} | {frames} | {_gb(s['bytes'])} | {s['frames_from']} |")
    total = sum(s["bytes"] for s in r["stores"].values() if s["bytes"] is not None)
    e = r["extraction"]
    lines += ["", f"Stores in all: {_gb(total)} for {r['frames_known']:,} known frames.",
              f"Extraction: {_flop(e['flops_per_frame'])} per frame (counted), {_flop(e['flops'])} in all; "
              f"at least {_hours(e['gpu_hours_at_peak'])} GPU-hours at the {r['peak_tflops']:.0f} TFLOP/s dense peak "
              "(a lower bound: no GPU extraction throughput is on record).", "",
              f"Training (batch {t.batch_size} x {t.seq_len} frames, {t.steps:,} + {params.finetune.steps:,} steps per "
              f"run, counted FLOPs per step):", "",
              "| variant | params | per step, phase 1 | per step, phase 2 | runs | in all | counted on |",
              "|---|---|---|---|---|---|---|"]
    for variant, v in r["training"].items():
        ft = _flop(v["finetune"]) if "finetune" in v else "—"
        lines.append(f"| {variant} | {v['params'] / 1e6:.3g}M | {_flop(v['train'])} | {ft} | {v['runs']} "
                     f"| {_flop(v['flops'])} | {v['counted_on']} |")
    gpus, m = r["gpus"], r["measured"]
    lines += ["", f"Training compute: {_flop(r['training_flops'])}, at least {_hours(r['gpu_hours_at_peak'])} "
              f"GPU-hours at the dense peak ({_hours(r['gpu_hours_at_peak'] / gpus)} h wall-clock on {gpus} GPU(s))."]
    if m is None:
        lines.append(f"No measured GPU step of preset {params.model.preset!r} at batch {t.batch_size} x {t.seq_len} "
                     f"is on record ({params.budget.measured}): the times above are lower bounds; "
                     "`benchmarks/model.py --device cuda --out ...` records one.")
    else:
        steps = sum(v["runs"] * (t.steps + (params.finetune.steps if "finetune" in v else 0))
                    for v in r["training"].values())
        lines.append(f"Measured: {m['step_s']:.3f} s per step ({params.budget.measured}), so about "
                     f"{steps * m['step_s'] / 3600 / gpus:,.1f} h wall-clock for {steps:,} steps on {gpus} GPU(s).")
    act = "not measured" if m is None else f"{m['peak_mib'] / 1024:.1f} GiB measured peak in all"
    lines.append(f"GPU memory per rank: {r['static_bytes_per_rank'] / 2**30:.3g} GiB of fp32 weights, gradients and "
                 f"AdamW state (exact); activations: {act}.")
    lines.append("Not counted: the pixel decoder, rollouts, evaluation and planning.")
    return "\n".join(lines) + "\n"
