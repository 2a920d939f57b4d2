"""The evaluations of one variant, section by section (the evaluate stage runs them in order and
writes what they return; see stages/evaluate.py for what each measures).

A section is a function of a `Context` that returns a dict, or raises `Unavailable` with the
reason it cannot be computed here (recorded, never replaced by a made-up value). What a
dataset knows of its own ground truth (true actions, translation dimensions, motion names,
counterfactual renders) comes from its source's ground-truth interface
(`pipeline.data.sources.base.Source`), never from a source's internals.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import zarr

from dila_core.world_model import PREDICTION_LOSS
from pipeline import artifacts
from pipeline.config import to_dict
from pipeline.data.encoder import EncoderUnavailable, load_recorded
from pipeline.data.sources import Source, build_source
from pipeline.data.windows import Windows, normalize
from pipeline.evaluation import metrics as M
from pipeline.evaluation.clips import batched, pick, roll_out, stack
from pipeline.evaluation.lpips import frame_lpips
from pipeline.params import Params
from pipeline.training.runs import open_windows


class Unavailable(Exception):
    """A metric that cannot be computed here; the message says why."""


@dataclass
class Context:
    params: Params
    variant: str
    model: torch.nn.Module                            # a dila_core.world_model family
    dev: torch.device
    mean: np.ndarray                                  # (D,) store stats of train.dataset
    std: np.ndarray
    clips: dict[str, Any]                             # `stack` of the validation clips
    decode: Callable[[np.ndarray], np.ndarray] | None  # normalized tokens (N, h, w, D) -> frames (N, S, S, 3)
    decode_reason: str | None                         # why decode is None
    unavailable: dict[str, str]
    sources: dict[str, Source] = field(default_factory=dict)

    def source(self, name: str) -> Source:
        """Dataset `name`'s source: what it knows of its own ground truth."""
        if name not in self.sources:
            self.sources[name] = build_source(self.params.dataset(name))
        return self.sources[name]

    def verb(self, name: str) -> Callable[..., torch.Tensor]:
        """The model's inference verb `name` (beyond the world-model interface), or Unavailable."""
        if not callable(getattr(self.model, name, None)):
            family = type(self.model).__name__
            raise Unavailable(f"the model of variant {self.variant!r} ({family}) has no {name!r} step, "
                              "which this evaluation needs")
        return getattr(self.model, name)

    def require_latents(self, what: str) -> None:
        if not self.model.capabilities.latent_actions:
            raise Unavailable(f"variant {self.variant!r} has no latent actions for {what}")


def _mean_steps(values: np.ndarray, prefix: str) -> dict[str, Any]:
    return {prefix: float(np.mean(values)), f"{prefix}_per_step": [float(v) for v in values]}


def pixel_scores(ctx: Context, section: str, pred: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """SSIM and LPIPS per step of decoded pred vs decoded truth, both (N, T, h, w, D); reasons
    go to ctx.unavailable when the decoder or LPIPS is missing."""
    if ctx.decode is None:
        ctx.unavailable[f"{section}.ssim"] = ctx.unavailable[f"{section}.lpips"] = str(ctx.decode_reason)
        return {}
    n, t = pred.shape[:2]
    a = ctx.decode(pred.reshape(n * t, *pred.shape[2:]))                           # (N*T, S, S, 3)
    b = ctx.decode(truth.reshape(n * t, *truth.shape[2:]))
    out = _mean_steps(M.ssim(a, b).reshape(n, t).mean(0), "ssim")
    lp, why = frame_lpips()
    if lp is None:
        ctx.unavailable[f"{section}.lpips"] = why
    else:
        out.update(_mean_steps(lp(a, b).reshape(n, t).mean(0), "lpips"))
    return out


def rollout_section(ctx: Context) -> dict[str, Any]:
    p, r = ctx.params, ctx.params.rollout
    path = artifacts.rollout_store(p, ctx.variant)
    if not path.exists():
        raise artifacts.MissingInput(f"{path}: no rollouts for variant {ctx.variant!r}; "
                                f"run `dila rollout {ctx.variant}` first")
    group = zarr.open_group(path, mode="r")
    attrs = group.attrs["dila_rollout"]
    made = (attrs["context"], attrs["horizon"], attrs["frame_skip"], attrs["dataset"])
    want = (r.context, r.horizon, p.train.frame_skip, p.train.dataset)
    if made != want:
        raise artifacts.MissingInput(f"{path}: rollouts made with (context, horizon, frame_skip, dataset) = {made}, params say "
                         f"{want}; run `dila rollout {ctx.variant}` again")
    if "predicted" not in group:
        raise Unavailable(attrs["predicted"].removeprefix("unavailable: "))
    return rollout_scores(ctx, group["truth"][:], group["predicted"][:])


def rollout_scores(ctx: Context, truth: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """The rollout section from store-scale float16 tokens (as the rollout stage stores them):
    truth (N, C+H, h, w, D) and predicted (N, H, h, w, D)."""
    p, r = ctx.params, ctx.params.rollout
    truth = normalize(truth, ctx.mean, ctx.std)                                    # (N, C+H, h, w, D)
    pred = normalize(predicted, ctx.mean, ctx.std)                                 # (N, H, h, w, D)
    future, base = truth[:, r.context:], M.repeat_last(truth[:, :r.context], r.horizon)
    out = {"episodes": len(truth), "context": r.context, "horizon": r.horizon, "frame_skip": p.train.frame_skip,
           **_mean_steps(M.token_mse_per_step(pred, future), "token_mse"),
           **_mean_steps(M.cosine_per_step(pred, future), "cosine")}
    baseline = {**_mean_steps(M.token_mse_per_step(base, future), "token_mse"),
                **_mean_steps(M.cosine_per_step(base, future), "cosine")}
    out.update(pixel_scores(ctx, "rollout", pred, future))
    baseline.update(pixel_scores(ctx, "rollout.baseline", base, future))
    if ctx.model.capabilities.latent_actions:
        out["other_z"] = _mean_steps(M.token_mse_per_step(_other_z_rollouts(ctx, truth), future), "token_mse")
        out["z_usage"] = M.error_ratio(out["other_z"]["token_mse"], out["token_mse"])
    else:
        ctx.unavailable["rollout.other_z"] = ctx.unavailable["rollout.z_usage"] = "the model has no latent actions"
    return {**out, "baseline": baseline}


def _other_z_rollouts(ctx: Context, truth: np.ndarray) -> np.ndarray:
    """Rollouts of each clip from its own context under the next clip's inferred actions: how much
    the rollout depends on z (equal errors to the true-z rollout mean z is ignored)."""
    return roll_out(ctx.model, truth, ctx.params.rollout.context, ctx.dev,
                    np.roll(truth, -1, axis=0))                                    # (N, H, h, w, D)


def cycle_section(ctx: Context) -> dict[str, Any]:
    ctx.require_latents("transfer")
    source = ctx.clips["e"]                                                        # (N, T, h, w, D)
    if len(source) < 2:
        raise Unavailable("needs at least 2 held-out clips (one source, one target)")
    target = np.roll(source, -1, axis=0)

    def transfer(src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
        return batched(ctx.verb("transfer"), src, tgt, dev=ctx.dev)

    back = M.cycle_transfer(transfer, source, target)                               # (N, T-1, h, w, D)
    truth = source[:, 1:]
    static = M.repeat_last(source[:, :1], truth.shape[1])
    out = {"pairs": len(source), "frames": source.shape[1],
           "token_mse": float(M.token_mse_per_step(back, truth).mean()),
           "baseline_token_mse": float(M.token_mse_per_step(static, truth).mean())}
    return {**out, **pixel_scores(ctx, "cycle_transfer", back, truth)}


def teacher_forced_section(ctx: Context) -> dict[str, Any]:
    path = artifacts.final_record(ctx.params, ctx.variant, "train")
    if not path.is_file():
        raise Unavailable(f"no phase-1 record at {path} (run `dila train {ctx.variant}`)")
    record = json.loads(path.read_text())
    val = record.get("val") or {}
    if PREDICTION_LOSS not in val:
        raise Unavailable(f"{path} holds no final validation {PREDICTION_LOSS}")
    e = ctx.clips["e"]                                                             # (N, T, h, w, D)
    truth = e[:, 1:]
    own = float(M.token_mse_per_step(batched(ctx.model.predict, e, dev=ctx.dev), truth).mean())
    pair = batched(lambda c: torch.stack(ctx.verb("readout")(c), dim=1), e, dev=ctx.dev)  # (N, 2, T-1, h, w, D)
    from_next, from_current = pair[:, 0], pair[:, 1]
    readout = {"from_true_next_s": float(M.token_mse_per_step(from_next, truth).mean()),
               "from_current_s": float(M.token_mse_per_step(from_current, truth).mean())}
    readout["ratio"] = M.error_ratio(readout["from_current_s"], readout["from_true_next_s"])
    baseline = float(M.token_mse_per_step(M.teacher_forced_baseline(e), truth).mean())
    return {"val_mse": float(val[PREDICTION_LOSS]), "step": int(record["spec"]["steps"]), "record": str(path),
            "clips_val_mse": own, "baseline_val_mse": baseline, "ratio_to_baseline": M.error_ratio(own, baseline),
            "readout": readout}


def probe_targets(ctx: Context, name: str, clips: dict[str, Any]) -> np.ndarray:
    """(N, T-1, a) true action of every transition of the clips, as dataset `name`'s source defines it."""
    y = ctx.source(name).probe_targets(clips.get("actions"), clips.get("labels", {}))
    if y is None:
        raise Unavailable(f"the {name!r} feature store has no actions")
    return y


@dataclass
class Latents:
    z: np.ndarray                    # (M, d_z) one latent action per transition
    y: np.ndarray | None             # (M, a) its true action, None where the store has none
    family: np.ndarray               # (M,) motion family id, -1 where unknown
    objects: np.ndarray | None = None  # (M, K, a / K) y per object, where the source has objects
    present: np.ndarray | None = None  # (M, K) whether each object exists


def _join(parts: list[np.ndarray]) -> np.ndarray | None:
    return np.concatenate(parts) if parts else None


def latents(ctx: Context, name: str, windows: Windows, chunk: int = 64) -> Latents:
    """z, true actions (also per object) and motion families of the clips tiling every episode of
    `windows`."""
    idx = pick(windows, tile=True)
    zs, ys, fams, objects, present = [], [], [], [], []
    for i in range(0, len(idx), chunk):
        clips = stack(windows, idx[i:i + chunk])
        z = batched(ctx.model.infer_actions, clips["e"], dev=ctx.dev)             # (n, T-1, d_z)
        zs.append(z.reshape(-1, z.shape[-1]))
        try:
            y = probe_targets(ctx, name, clips)                                    # (n, T-1, a)
            ys.append(y.reshape(-1, y.shape[-1]))
            split = ctx.source(name).object_targets(y, clips.get("labels", {}))    # (n, T-1, K, a/K), (n, T-1, K)
            if split is not None:
                objects.append(split[0].reshape(-1, *split[0].shape[2:]))
                present.append(split[1].reshape(-1, split[1].shape[-1]))
        except Unavailable:
            pass
        motion = clips.get("labels", {}).get("motion")
        fams.append(motion[:, :-1].reshape(-1) if motion is not None else np.full(len(zs[-1]), -1))
    return Latents(np.concatenate(zs), _join(ys), np.concatenate(fams).astype(np.int32), _join(objects),
                   _join(present))


def probe_section(ctx: Context, name: str, cache: dict[str, Latents]) -> dict[str, Any]:
    ctx.require_latents("a probe")
    train, val = open_windows(ctx.params, name)
    cfg = ctx.model.cfg
    probe_targets(ctx, name, stack(train, np.arange(1)))                    # Unavailable without actions
    if (train.grid, train.dim) != (tuple(cfg.grid), cfg.token_dim):
        raise Unavailable(f"the {name!r} store holds {train.grid} x {train.dim} tokens, the model takes "
                          f"{tuple(cfg.grid)} x {cfg.token_dim} (another encoder or input size)")
    test = cache[name] = latents(ctx, name, val)
    fit = cache[f"{name}/train"] = latents(ctx, name, train)
    if fit.y is None or test.y is None:
        raise Unavailable(f"the {name!r} feature store has no actions")
    names = ctx.source(name).motion_names()
    groups = {names[f]: test.family == f for f in np.unique(test.family) if 0 <= f < len(names)}
    out = M.linear_probe(fit.z, fit.y, test.z, test.y, ctx.params.evaluate.probe_alpha, groups)
    dims = ctx.source(name).translation_dims(fit.y.shape[1])
    if dims:
        r2 = [out["r2_per_dim"][d] for d in dims if out["r2_per_dim"][d] is not None]
        out["r2_translation"] = float(np.mean(r2)) if r2 else None
    return out


def isolation_section(ctx: Context) -> dict[str, Any]:
    e = ctx.clips["e"]                                                             # (N, T, h, w, D)
    if e.shape[1] < 3:
        raise Unavailable("needs clips of at least 3 frames (train.seq_len >= 3)")
    drift = M.isolation_drift(batched(ctx.verb("isolate_motion"), e, dev=ctx.dev))   # (T-2,)
    reference = M.isolation_drift(e[:, 1:])                                        # (T-2,)
    out = {**_mean_steps(drift, "drift"), **_mean_steps(reference, "reference")}
    out["ratio"] = M.finite_or_none(out["drift"] / out["reference"]) if out["reference"] > 0 else None
    return out


def _encode(ctx: Context, attrs: dict[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    """frames (T, H, W, 3) -> normalized tokens (T, h, w, D), with the store's own frozen encoder."""
    ds = ctx.params.dataset(ctx.params.train.dataset)
    if attrs["source"]["params"] != to_dict(ds):
        raise Unavailable(f"the store was made with other settings of datasets.{ctx.params.train.dataset}; "
                          f"run `dila extract {ctx.params.train.dataset}` again")
    try:
        encoder = load_recorded(attrs["encoder"], ctx.params.encoder).to(ctx.dev)
    except EncoderUnavailable as err:
        raise Unavailable(f"the store's encoder cannot be rebuilt: {err}") from err
    return lambda frames: normalize(encoder.encode_frames(frames).astype(np.float16), ctx.mean, ctx.std)


def ground_truth_section(ctx: Context, attrs: dict[str, Any]) -> dict[str, Any]:
    render = ctx.source(ctx.params.train.dataset).counterfactuals()
    if render is None:
        raise Unavailable("needs a train.dataset whose source renders counterfactual clips (the synthetic one)")
    e, labels = ctx.clips["e"], ctx.clips["labels"]                                # (N, T, h, w, D)
    clip = [{k: v[i] for k, v in labels.items()} for i in range(len(e))]           # labels of each clip
    pairs = [(i, (i + 1) % len(e)) for i in range(len(e)) if len(e) > 1 and render.compatible(clip[i], clip[(i + 1) % len(e)])]
    if not pairs:
        raise Unavailable("needs 2 held-out clips with the same number of objects")
    encode = _encode(ctx, attrs)
    truths: dict[str, list[np.ndarray]] = {"transfer": [], "rebind": [], "reencode": []}
    for i, j in pairs:
        a, b = clip[i], clip[j]
        truths["transfer"].append(encode(render.render(look=b, motion=a, start=b)))  # b from its start, moved as a
        truths["rebind"].append(encode(render.render(look=b, motion=a)))             # b's look at a's poses
        truths["reencode"].append(encode(render.render(look=a, motion=a)))           # a itself, re-rendered
    a, b = e[[i for i, _ in pairs]], e[[j for _, j in pairs]]
    truth = {k: np.stack(v) for k, v in truths.items()}                            # (P, T, h, w, D)

    def mse(x: np.ndarray, y: np.ndarray) -> float:
        return float(M.token_mse_per_step(x, y).mean())

    out: dict[str, Any] = {"pairs": len(pairs), "reencode_mse": mse(truth["reencode"], a)}
    rebound = batched(ctx.verb("rebind"), a, b, dev=ctx.dev)                       # (P, T-1, h, w, D)
    out["rebinding"] = {"token_mse": mse(rebound, truth["rebind"][:, 1:]),
                        "baseline_token_mse": mse(a[:, 1:], truth["rebind"][:, 1:])}
    try:
        ctx.require_latents("action transfer")
        moved = batched(ctx.verb("transfer"), a, b, dev=ctx.dev)                   # (P, T-1, h, w, D)
        steps = moved.shape[1]
        out["action_transfer"] = {"token_mse": mse(moved, truth["transfer"][:, 1:]),
                                  "baseline_token_mse": mse(M.repeat_last(b[:, :1], steps), truth["transfer"][:, 1:])}
    except Unavailable as err:
        ctx.unavailable["ground_truth.action_transfer"] = str(err)
    return out


def section(out: dict[str, Any], key: str, fn: Callable[[], dict[str, Any]], unavailable: dict[str, str],
             where: str | None = None) -> None:
    """out[key] = fn(), or the reason it is unavailable in unavailable[where or key]."""
    try:
        out[key] = fn()
    except Unavailable as err:
        unavailable[where or key] = str(err)


def validation_latents(ctx: Context, cache: dict[str, Latents]) -> Latents:
    """Latents of the validation clips tiling every held-out episode of train.dataset, computed once
    per evaluation (the probe of train.dataset fills the same cache)."""
    name = ctx.params.train.dataset
    if name not in cache:
        cache[name] = latents(ctx, name, open_windows(ctx.params, name)[1])
    return cache[name]


def latents_file(ctx: Context, cache: dict[str, Latents]) -> None:
    """z of train.dataset's validation clips with their motion families and the size of their true
    action (‖y‖, NaN where the store has no actions), for the manifold plots."""
    path = artifacts.latents_path(ctx.params, ctx.variant)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = np.array(ctx.source(ctx.params.train.dataset).motion_names(), dtype=str)
    if not ctx.model.capabilities.latent_actions:                                          # an empty file: no z to plot
        np.savez(path, z=np.zeros((0, 0), np.float32), family=np.zeros(0, np.int32),
                 magnitude=np.zeros(0, np.float32), families=names)
        return
    lat = validation_latents(ctx, cache)
    magnitude = np.full(len(lat.z), np.nan) if lat.y is None else np.linalg.norm(lat.y, axis=-1)
    np.savez(path, z=lat.z.astype(np.float32), family=lat.family, magnitude=magnitude.astype(np.float32),
             families=names)
