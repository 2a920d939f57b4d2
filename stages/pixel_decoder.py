"""Stage `pixel_decoder`: learn to map cached tokens back to RGB frames.

Pairs are (tokens of stored frame i, frame i re-read from the source through the
manifest and resized to `pixel_decoder.size`, bicubic with antialiasing). Tokens are
normalized with the store's statistics exactly as the world model sees them,
(tokens - mean) / (std + EPS) (`pipeline.data.windows.normalize`), so the decoder also renders predicted tokens.
Training uses the train episodes of the seeded split (`pipeline.data.split`), MSE, AdamW,
gradient clipping and the configured schedule (stepped every step). Validation reports
MSE and PSNR on held-out episodes, beside the PSNR of always answering the mean
training frame.

Outputs, under `<paths.models>/pixel_decoder/`:
- `model.safetensors`: weights; metadata holds the decoder config, the step, the store's
  encoder record and plan hash and EPS (`pipeline.training.checkpoint`); rewritten every `checkpoint_every` steps;
- `metrics.json`: the headline validation PSNR beside the mean-frame baseline; `details.json`:
  validation MSE/PSNR, the baseline, steps, time, encoder record;
- `samples.png`: held-out frames (top row) above their decoded tokens (bottom row).
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import image as mpimg
from torch import Tensor, nn
from torch.utils.data import DataLoader

from dila_core.pixel_decoder import PixelDecoder, PixelDecoderConfig
from pipeline import artifacts
from pipeline.config import to_dict
from pipeline.data import store
from pipeline.data.frames import ShardFrames
from pipeline.data.sources import SourceError, build_source
from pipeline.data.split import split_frames
from pipeline.data.windows import EPS, normalize
from pipeline.evaluation.pixels import decode_tokens
from pipeline.params import Params, PixelDecoderParams
from pipeline.progress import track
from pipeline.provenance import code_hash
from pipeline.training.checkpoint import save_checkpoint
from pipeline.training.distributed import Dist
from pipeline.training.distributed import device as pick_device
from pipeline.training.runs import token_stats
from pipeline.training.trainer import RunFiles, Trainer, TrainSpec, clear_state

TOKEN_MEMORY = 2 * 2**30   # a store's tokens up to this many bytes are read into memory once
EVAL_FRAMES = 1024         # validation (and the train-fit report) use at most this many frames
SAMPLES = 8                # frames shown in samples.png
# metrics.json: name -> key of details.json (which holds everything)
HEADLINE = {"psnr": "val_psnr", "psnr_mean_frame": "baseline_mean_frame_val_psnr"}


class TokenRows:
    """Rows of a store's tokens array (F, h, w, D) float16, read into memory when they fit `budget`."""

    def __init__(self, array: Any, budget: int = TOKEN_MEMORY):
        self.shape = tuple(array.shape)
        self.rows = array[:] if math.prod(self.shape) * 2 <= budget else array

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        """Rows idx (any order, repeats allowed) -> (len(idx), h, w, D) float16."""
        if isinstance(self.rows, np.ndarray):
            return self.rows[idx]
        unique, inverse = np.unique(idx, return_inverse=True)
        return self.rows.get_orthogonal_selection((unique,))[inverse]


@dataclass
class Pairs:
    """Token rows, the matching frames (F, 3, S, S) uint8, and the store's stats (D,)."""

    tokens: TokenRows
    frames: np.ndarray
    mean: Tensor
    std: Tensor

    def batch(self, idx: np.ndarray, device: torch.device) -> tuple[Tensor, Tensor]:
        """Normalized tokens (B, h, w, D) and target frames (B, 3, S, S) in [0, 1], float32."""
        x = normalize(torch.from_numpy(self.tokens(idx)), self.mean, self.std).to(device)
        y = torch.from_numpy(self.frames[idx]).to(device, torch.float32) / 255.0
        return x, y


def _check_store(params: Params, name: str, attrs: dict[str, Any], ends: np.ndarray,
                 manifest: dict[str, Any]) -> None:
    path = artifacts.store_path(params, name)
    if not attrs.get("complete"):
        raise store.StoreError(f"{path}: the store is incomplete; run `dila extract {name}` first")
    frames = np.cumsum([e["frames"] for e in manifest["episodes"]])
    keys = [e["key"] for e in manifest["episodes"]]
    if attrs.get("source") != manifest["source"] or attrs.get("episodes") != keys \
            or not np.array_equal(frames, ends):
        raise store.StoreError(f"{path}: made from other episodes than the manifest of {name!r}; "
                               f"run `dila extract {name}` again")
    if build_source(params.dataset(name)).fingerprint() != manifest["source"]["fingerprint"]:
        raise SourceError(f"{params.dataset(name).path}: the source changed since `dila prepare {name}`; "
                          "run prepare and extract again")


def read_frames(params: Params, name: str, manifest: dict[str, Any], attrs: dict[str, Any],
                size: int, show: bool) -> np.ndarray:
    """Every stored frame, re-read from the source and resized: (F, 3, size, size) uint8."""
    layout = store.layout_of(attrs)
    shards = ShardFrames(params.dataset(name), manifest, layout, size)
    workers = params.decode.workers
    loader = DataLoader(shards, batch_size=None, num_workers=workers, collate_fn=_pixels,
                        prefetch_factor=2 if workers else None, worker_init_fn=_one_thread)
    frames = np.empty((layout.n_frames, 3, size, size), dtype=np.uint8)
    for k, pixels in enumerate(track(loader, f"pixel_decoder: frames of {name}", len(shards), show)):
        start, stop = layout.shard_range(k)
        frames[start:stop] = pixels.mul(255.0).round_().to(torch.uint8).numpy()
    return frames


def _pixels(item: dict[str, Any]) -> Tensor:
    return item["pixels"]


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)


def load_pairs(params: Params, name: str, show: bool = False) -> tuple[Pairs, np.ndarray, dict[str, Any]]:
    """The (token, frame) pairs of dataset `name`, its episode_ends (E,) and the store's attributes."""
    root = store.open_store(artifacts.store_path(params, name))
    attrs = store.store_attrs(root)
    ends = root["episode_ends"][:]
    manifest = artifacts.read_manifest(params, name)
    _check_store(params, name, attrs, ends, manifest)
    store.require_intact(artifacts.store_path(params, name))  # a damaged shard: a clear error now, not a failed read later
    frames = read_frames(params, name, manifest, attrs, params.pixel_decoder.size, show)
    stats = token_stats(params, name)  # as the world models see them (a mixture's shared stats, if any)
    return Pairs(TokenRows(root["tokens"]), frames, *stats), ends, attrs


def spread(idx: np.ndarray, n: int) -> np.ndarray:
    """At most n entries of idx, evenly spaced (all of them when there are n or fewer)."""
    return idx if len(idx) <= n else idx[np.unique(np.linspace(0, len(idx) - 1, n).round().astype(int))]


def decoder_config(pd: PixelDecoderParams, grid: tuple[int, int], dim: int) -> PixelDecoderConfig:
    """The decoder for a store's grid and width at the params' output size and width."""
    cfg = PixelDecoderConfig(in_dim=dim, grid=tuple(grid), size=pd.size, width=pd.width)
    cfg.validate("pixel_decoder")
    return cfg


def batches(rng: np.random.Generator, idx: np.ndarray, size: int) -> Iterator[np.ndarray]:
    """Endless batches of `size` entries of idx: shuffled epochs, each entry once per epoch."""
    pending = np.empty(0, dtype=np.int64)
    while True:
        while len(pending) < size:
            pending = np.concatenate([pending, rng.permutation(idx)])
        yield np.sort(pending[:size])
        pending = pending[size:]


class PixelObjective(nn.Module):
    """The decoder's loss for the trainer: MSE of decoded tokens x (B, h, w, D) to frames y (B, 3, S, S)."""

    def __init__(self, decoder: PixelDecoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        x, y = batch
        loss = F.mse_loss(self.decoder(x), y)
        return loss, {"loss": loss.detach()}


def train(model: PixelDecoder, pairs: Pairs, idx: np.ndarray, pd: PixelDecoderParams, seed: int,
          files: RunFiles, plan: dict[str, Any], show: bool = False) -> dict[str, float]:
    """Fit the decoder on frames idx for pd.steps steps with the trainer's update (AdamW, clipping,
    schedule) and resume state, written every pd.checkpoint_every steps; a killed run resumes
    where its state is and ends with the same weights and numbers as an uninterrupted one."""
    d = Dist(0, 1, next(model.parameters()).device)
    spec = TrainSpec(objective="teacher_forcing", steps=pd.steps, batch_size=pd.batch_size, optim=pd.optim,
                     checkpoint_every=pd.checkpoint_every, val_every=pd.steps, val_batches=1, log_every=pd.steps,
                     workers=0, seed=seed)
    run = Trainer(model, spec, files, plan, d, objective=PixelObjective(model))
    order = batches(np.random.default_rng([seed, 0x91C5]), idx, pd.batch_size)
    for _ in range(run.start):                                     # the batches a resumed run already took
        next(order)
    tail = max(1, pd.steps // 10)                                  # loss_last: the mean over the last 10%
    for step in track(range(run.start + 1, pd.steps + 1), "pixel_decoder: training", pd.steps - run.start, show):
        loss = run.step(pairs.batch(next(order), d.device))["loss"]  # (B, h, w, D) -> (B, 3, S, S)
        if step == 1:
            run.notes["loss_first"] = loss
        if step > pd.steps - tail:
            run.notes.setdefault("loss_tail", []).append(loss)
        if step % pd.checkpoint_every == 0 and step < pd.steps:
            run.checkpoint(step)
    return {"loss_first": run.notes["loss_first"], "loss_last": float(np.mean(run.notes["loss_tail"])),
            "lr_last": run.sched.get_last_lr()[0]}


def frame_errors(decoder: PixelDecoder, pairs: Pairs, idx: np.ndarray, chunk: int = 128) -> np.ndarray:
    """Per-frame MSE (len(idx),) of the decoded tokens of frames idx against the frames."""
    device = next(decoder.parameters()).device
    errors = []
    for i in range(0, len(idx), chunk):
        x, y = pairs.batch(idx[i:i + chunk], device)
        errors.append((decode_tokens(decoder, x) - y).square().mean(dim=(1, 2, 3)).cpu().numpy())
    return np.concatenate(errors).astype(np.float64)


def quality(errors: np.ndarray) -> dict[str, float]:
    """MSE over all pixels and mean per-frame PSNR (peak 1) of per-frame MSEs."""
    psnr = 10.0 * np.log10(1.0 / np.maximum(errors, 1e-10))
    return {"mse": float(errors.mean()), "psnr": float(psnr.mean())}


def mean_frame_errors(pairs: Pairs, train_idx: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Per-frame MSE of always answering the mean training frame (the trivial baseline)."""
    mean = pairs.frames[train_idx].astype(np.float64).mean(0) / 255.0           # (3, S, S)
    return np.stack([np.square(pairs.frames[i] / 255.0 - mean).mean() for i in idx])


def save_samples(path: Path, decoder: PixelDecoder, pairs: Pairs, idx: np.ndarray) -> None:
    """A PNG with frames idx on the top row and their decoded tokens below."""
    device = next(decoder.parameters()).device
    x, y = pairs.batch(idx, device)
    rows = torch.stack([y, decode_tokens(decoder, x)]).cpu()                # (2, N, 3, S, S)
    grid = rows.permute(0, 3, 1, 4, 2).reshape(2 * y.shape[-2], -1, 3)     # (2S, N*S, 3)
    mpimg.imsave(path, grid.clamp(0, 1).numpy())


def run(params: Params, show_progress: bool = True) -> Path:
    """Train the pixel decoder on params.train.dataset; returns the path of model.safetensors."""
    pd, name, start = params.pixel_decoder, params.train.dataset, time.perf_counter()
    pairs, ends, attrs = load_pairs(params, name, show_progress)
    train_idx, val_idx = split_frames(ends, params.train.val_fraction, params.seed)
    _, h, w, dim = pairs.tokens.shape
    device = pick_device()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.seed)
        model = PixelDecoder(decoder_config(pd, (h, w), dim)).to(device)
    out = artifacts.pixel_decoder_dir(params)
    meta = {"dataset": name, "encoder": attrs["encoder"], "store_plan_sha256": attrs.get("plan_sha256"),
            "norm_eps": EPS}
    path = artifacts.pixel_decoder_weights(params)
    files = RunFiles(state=artifacts.pixel_decoder_state(params), live=None)
    plan = {"stage": "pixel_decoder", "config": to_dict(model.cfg), "meta": meta, "params": to_dict(pd),
            "val_fraction": params.train.val_fraction, "seed": params.seed, "code_sha256": code_hash(__name__)}
    fit = train(model, pairs, train_idx, pd, params.seed, files, plan, show_progress)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, model, pd.steps, meta)
    clear_state(files, Dist(0, 1, device))
    model.eval()
    val_eval = spread(val_idx, EVAL_FRAMES)
    val = quality(frame_errors(model, pairs, val_eval))
    metrics = {
        **meta, "steps": pd.steps, "size": pd.size, "device": device.type,
        "frames": {"train": len(train_idx), "val": len(val_idx), "val_evaluated": len(val_eval)},
        "val_mse": val["mse"], "val_psnr": val["psnr"],
        "train_psnr": quality(frame_errors(model, pairs, spread(train_idx, EVAL_FRAMES)))["psnr"],
        "baseline_mean_frame_val_psnr": quality(mean_frame_errors(pairs, train_idx, val_eval))["psnr"],
        **fit, "seconds": round(time.perf_counter() - start, 1),
    }
    artifacts.pixel_decoder_details(params).write_text(json.dumps(metrics, indent=1) + "\n")
    headline = {name: metrics[key] for name, key in HEADLINE.items()}
    artifacts.pixel_decoder_metrics(params).write_text(json.dumps(headline, indent=1) + "\n")
    save_samples(out / "samples.png", model, pairs, spread(val_idx, SAMPLES))
    return path
