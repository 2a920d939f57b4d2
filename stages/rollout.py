"""Stage `rollout@<variant>`: autoregressive latent rollouts of held-out episodes.

For the first `rollout.episodes` validation episodes of `train.dataset` (the shared
seeded split, `pipeline.split`) that are long enough, a window of `context + horizon`
kept frames `train.frame_skip` apart is taken from the episode's first frame. The
latent actions z are inferred from the whole true window (`infer_actions`), and the
variant's final model rolls out `horizon` frames after the `context` true frames, in
structure space (`DiLA.rollout`). Output, under `<paths.eval>/rollouts/<variant>/`:

    tokens.zarr   Zarr v3 group, tokens in the feature store's scale (not normalized):
                  truth      (N, context + horizon, h, w, D) float16  the true window
                  predicted  (N, horizon, h, w, D) float16           the rollout (absent for a
                                                                     variant without latent actions)
                  episodes   (N,) int64                              store episode of each window
                  frames     (N, context + horizon) int64            store frame of each window step
                  attrs["dila_rollout"]: what made it (model, store, encoder, settings)
    episode_EEEE.png  when the pixel decoder exists: true frames (top row) above the context
                  frames and the rollout (bottom row), both decoded by the pixel decoder

Helpers shared with the evaluate stage live here too: the final model of a variant,
the held-out windows of any feature store, token (de)normalization, batched inference
and the pixel decoder.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from matplotlib import image as mpimg
from zarr.codecs import BloscCodec

from dila_core.model import DiLA
from pipeline.checkpoint import CheckpointError, load_checkpoint
from pipeline.config import to_dict
from pipeline.params import Params
from pipeline.split import split_episodes
from pipeline.store import open_store
from pipeline.windows import EPS, Windows
from stages.extract import store_path
from stages.pixel_decoder import decode_tokens, load_pixel_decoder, output_dir
from stages.train import final_weights

BATCH = 8  # clips per forward pass in every evaluation loop
FORMAT = "dila-rollouts/1"

Decoder = Callable[[np.ndarray], np.ndarray]  # normalized tokens (N, h, w, D) -> frames (N, S, S, 3) in [0, 1]


def rollout_dir(params: Params, variant: str) -> Path:
    return Path(params.paths.eval) / "rollouts" / variant


def rollout_store(params: Params, variant: str) -> Path:
    return rollout_dir(params, variant) / "tokens.zarr"


def pixel_decoder_path(params: Params) -> Path:
    return output_dir(params) / "model.safetensors"


def final_phase(params: Params, variant: str) -> str:
    """The phase whose weights are a variant's final model: phase 2 ("finetune") for variants
    with latent actions, phase 1 ("train") for "no_latent_action", which has no phase 2."""
    return "train" if params.variant(variant).variant == "no_latent_action" else "finetune"


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def normalize(tokens: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Store-scale tokens (..., D) -> float32 (tokens - mean) / (std + EPS), as pipeline.windows reads them."""
    return ((np.asarray(tokens, np.float32) - mean) / (std + np.float32(EPS))).astype(np.float32)


def denormalize(e: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """The inverse of `normalize`: model-space tokens (..., D) -> float32 store scale."""
    return (np.asarray(e, np.float32) * (std + np.float32(EPS)) + mean).astype(np.float32)


def has_latent_actions(model: DiLA) -> bool:
    return model.cfg.variant != "no_latent_action"


def load_model(params: Params, variant: str, phase: str, windows: Windows,
               dev: torch.device) -> tuple[DiLA, int, Path]:
    """A variant's weights after `phase`, checked against params and the store: (model in eval
    mode, step, path)."""
    path = final_weights(params, variant, phase)
    if not path.is_file():
        command = "train" if phase == "train" else "finetune"
        raise FileNotFoundError(f"{path}: no {phase} weights for variant {variant!r}; "
                                f"run `dila {command} {variant}` first")
    model, step = load_checkpoint(path, dev)
    want = params.variant(variant)
    got = (model.cfg.variant, model.cfg.bottleneck.kind)
    if got != (want.variant, want.bottleneck):
        raise CheckpointError(f"{path}: holds a {got[0]} model with a {got[1]} bottleneck, but variants.{variant} "
                              f"is {want.variant} with {want.bottleneck}; train it again")
    if (tuple(model.cfg.grid), model.cfg.token_dim) != (windows.grid, windows.dim):
        raise CheckpointError(f"{path}: model expects a {tuple(model.cfg.grid)} x {model.cfg.token_dim} token grid, "
                              f"the store {windows.path} holds {windows.grid} x {windows.dim}")
    return model.eval(), step, path


def split_windows(params: Params, name: str, length: int, what: str = "train.seq_len") -> tuple[Windows, Windows]:
    """(train, val) windows of `length` frames (the setting `what`) `train.frame_skip` apart over
    dataset `name`'s store, split by episode as every stage two stage splits them."""
    path = store_path(params, name)
    n_episodes = open_store(path)["episode_ends"].shape[0]
    train_eps, val_eps = split_episodes(n_episodes, params.train.val_fraction, params.seed)
    skip = params.train.frame_skip
    try:
        return Windows(path, train_eps, length, skip), Windows(path, val_eps, length, skip)
    except ValueError as err:
        raise ValueError(f"{err} (the window length {length} is {what})") from err


def pick(windows: Windows, tile: bool, limit: int | None = None) -> np.ndarray:
    """Indices into `windows` of the windows that start at each episode's first frame
    (tile=False), or that tile each episode from its first frame, consecutive windows sharing
    one frame (tile=True); from the first `limit` episodes that hold one (all when None)."""
    first, episode = windows.windows[:, 0], windows.windows[:, 1]                  # (N,), (N,)
    offset = first - windows.bounds[episode, 0]
    step = (windows.seq_len - 1) * windows.frame_skip
    keep = offset % step == 0 if tile else offset == 0
    chosen = np.unique(episode[keep])[:limit]
    return np.flatnonzero(keep & np.isin(episode, chosen))


def stack(windows: Windows, idx: np.ndarray) -> dict[str, Any]:
    """Windows idx read and stacked: e (N, T, h, w, D) float32 normalized, frame (N,) first
    frame, episode (N,), and actions (N, T, a) and labels {name: (N, T, ...)} where present."""
    if len(idx) == 0:
        raise ValueError(f"{windows.path}: no held-out window of {windows.seq_len} frames "
                         f"(frame_skip {windows.frame_skip}) to evaluate")
    items = [windows[int(i)] for i in idx]
    out: dict[str, Any] = {
        "e": torch.stack([it["e"] for it in items]).numpy(),
        "frame": np.array([it["frame"] for it in items], np.int64),
        "episode": np.array([it["episode"] for it in items], np.int64),
    }
    if "actions" in items[0]:
        out["actions"] = torch.stack([it["actions"] for it in items]).numpy()
    if "labels" in items[0]:
        out["labels"] = {n: torch.stack([it["labels"][n] for it in items]).numpy() for n in items[0]["labels"]}
    return out


@torch.no_grad()
def batched(fn: Callable[..., torch.Tensor], *arrays: np.ndarray, dev: torch.device) -> np.ndarray:
    """fn applied to slices of BATCH clips of `arrays` (same first axis) on `dev`; outputs
    concatenated on the first axis, as float32 numpy."""
    out = []
    for i in range(0, len(arrays[0]), BATCH):
        parts = [torch.from_numpy(np.ascontiguousarray(a[i:i + BATCH])).to(dev) for a in arrays]
        out.append(fn(*parts).float().cpu().numpy())
    return np.concatenate(out)


def roll_out(model: DiLA, e: np.ndarray, context: int, dev: torch.device) -> np.ndarray:
    """Rollouts of clips e (N, context + horizon, h, w, D): `horizon` frames after the first
    `context` ones, under the actions inferred from the whole clip -> (N, horizon, h, w, D)."""
    horizon = e.shape[1] - context

    def one(clip: torch.Tensor) -> torch.Tensor:
        z = model.infer_actions(clip)                                              # (B, T-1, d_z)
        return model.rollout(clip[:, :context], z[:, context - 1:], horizon).e

    return batched(one, e, dev=dev)


def load_decoder(params: Params, store_plan: str | None, dev: torch.device) -> tuple[Decoder | None, str | None]:
    """The pixel decoder as a function, or None and the reason it cannot be used."""
    path = pixel_decoder_path(params)
    if not path.is_file():
        return None, f"no pixel decoder at {path} (run `dila pixel-decoder` to train one)"
    decoder, meta = load_pixel_decoder(path, dev)
    if meta.get("store_plan_sha256") != store_plan:
        return None, (f"the pixel decoder at {path} was trained on another feature store than "
                      f"{params.train.dataset!r} holds now (train it again)")

    def decode(e: np.ndarray) -> np.ndarray:
        frames = decode_tokens(decoder, torch.from_numpy(np.ascontiguousarray(e, np.float32)))  # (N, 3, S, S)
        return frames.permute(0, 2, 3, 1).clamp(0, 1).cpu().numpy()

    return decode, None


def grid_image(rows: list[np.ndarray], gap: int = 2) -> np.ndarray:
    """Frames rows[r] (T_r, S, S, 3) in [0, 1] laid out in rows (left aligned) with white gaps:
    (R*S + (R-1)*gap, T*S + (T-1)*gap, 3) for T the longest row."""
    size = rows[0].shape[1]
    cols = max(len(r) for r in rows)
    img = np.ones((len(rows) * (size + gap) - gap, cols * (size + gap) - gap, 3), np.float32)
    for r, frames in enumerate(rows):
        for c, frame in enumerate(frames):
            img[r * (size + gap):r * (size + gap) + size, c * (size + gap):c * (size + gap) + size] = frame
    return img


def write_grids(out: Path, decode: Decoder, truth: np.ndarray, predicted: np.ndarray, context: int,
                episodes: np.ndarray) -> list[Path]:
    """One PNG per clip: decoded truth (N, T) on top, decoded context + rollout (N, T) below."""
    paths = []
    for e_true, e_pred, ep in zip(truth, predicted, episodes):
        top = decode(e_true)                                                        # (T, S, S, 3)
        bottom = np.concatenate([top[:context], decode(e_pred)])                    # (T, S, S, 3)
        path = out / f"episode_{int(ep):04d}.png"
        mpimg.imsave(path, grid_image([top, bottom]))
        paths.append(path)
    return paths


def _array(group: zarr.Group, name: str, values: np.ndarray) -> None:
    chunks = (1, *values.shape[1:]) if values.ndim > 2 else values.shape
    blosc = BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")
    group.create_array(name, shape=values.shape, dtype=values.dtype, chunks=chunks, compressors=blosc)[...] = values


def run(params: Params, variant: str) -> Path:
    """Roll out the held-out windows with `variant`'s final model; returns the output directory."""
    torch.manual_seed(params.seed)
    dev, r = device(), params.rollout
    length = r.context + r.horizon
    _, val = split_windows(params, params.train.dataset, length, "rollout.context + rollout.horizon")
    clips = stack(val, pick(val, tile=False, limit=r.episodes))
    phase = final_phase(params, variant)
    model, step, weights = load_model(params, variant, phase, val, dev)
    mean, std = val.mean.numpy(), val.std.numpy()
    out = rollout_dir(params, variant)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("episode_*.png"):
        old.unlink()
    group = zarr.open_group(rollout_store(params, variant), mode="w", zarr_format=3)
    skip = params.train.frame_skip
    frames = clips["frame"][:, None] + skip * np.arange(length, dtype=np.int64)    # (N, T)
    tokens = open_store(val.path)["tokens"]
    _array(group, "truth", np.stack([tokens.get_orthogonal_selection((f,)) for f in frames]))
    _array(group, "episodes", clips["episode"])
    _array(group, "frames", frames)
    predicted, pixels = None, "unavailable: no rollout"
    if has_latent_actions(model):
        predicted = roll_out(model, clips["e"], r.context, dev)                      # (N, H, h, w, D)
        _array(group, "predicted", denormalize(predicted, mean, std).astype(np.float16))
        decode, reason = load_decoder(params, val.attrs.get("plan_sha256"), dev)
        pixels = f"unavailable: {reason}" if decode is None else \
            f"{len(write_grids(out, decode, clips['e'], predicted, r.context, clips['episode']))} PNG grids"
    group.attrs["dila_rollout"] = {
        "format": FORMAT, "variant": variant, "dataset": params.train.dataset, "store": str(val.path),
        "store_plan_sha256": val.attrs.get("plan_sha256"), "encoder": val.attrs.get("encoder"),
        "checkpoint": {"path": str(weights), "phase": phase, "step": step}, "context": r.context,
        "horizon": r.horizon, "frame_skip": skip, "seed": params.seed,
        "model": to_dict(model.cfg), "pixels": pixels,
        "predicted": "ok" if predicted is not None else
        f"unavailable: variant {variant!r} ({model.cfg.variant}) has no latent actions to roll out",
    }
    return out
