"""Stage `evaluate@<variant>`: every evaluation of one variant, as a DVC metrics file (the
`report` stage tabulates them over all variants).

Token errors are on normalized tokens (the model's space). A "clip" is `train.seq_len` frames
`train.frame_skip` apart from the first frame of one of the first `rollout.episodes` held-out
episodes of `train.dataset`. Sections of `<paths.eval>/<variant>/metrics.json`:

- rollout: from the rollout stage's tokens; token MSE and cosine per horizon step and their
  means, also for the "repeat the last context frame" baseline; SSIM (LPIPS) of decoded
  rollouts vs decoded true tokens (the pixel decoder's own error cancels); other_z: token
  MSE of rollouts under the next clip's actions instead of their own (if it equals the
  true-z error, the model ignores z).
- cycle_transfer: clip i's motion onto clip i+1's first frame and back onto clip i's
  (`pipeline.evaluation.metrics.cycle_transfer`); token MSE to clip i (baseline: its first frame
  repeated), SSIM where the pixel decoder exists.
- teacher_forced: phase 1's final validation L_e and its step, from the trainer's record.
- probe.<dataset>: ridge probe z -> true actions (`evaluate.probe_alpha`), fit on the train
  episodes' clips tiling each episode, scored on the validation episodes'; on synthetic data
  the target is the pose change between the two frames (= the action when frame_skip is 1)
  and r2_translation is the mean R² of the (dx, dy) dimensions.
- motion_isolation: structure frozen at s_0 (`isolate_motion`); drift = mean squared change
  of the output from its first frame, beside the same for the true clip (reference).
- ground_truth (synthetic train.dataset): the renderer draws the exact answer, encoded
  with the store's own frozen encoder: action_transfer (clip i's motion on clip i+1's first
  frame vs clip i+1's appearance rendered under clip i's pose changes) and rebinding
  (structure of clip i, content of clip i+1 vs clip i+1's appearance at clip i's poses);
  reencode_mse checks that re-rendering and encoding a true clip reproduces the store.
- unavailable: "section[.metric]" -> why it could not be computed (never a made-up value).

`latents.npz` beside it holds z of the validation clips of train.dataset with their motion
family (-1 where unknown), for the latent-manifold plot (no rows for a variant without z).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import zarr

from pipeline import artifacts
from pipeline.config import to_dict
from pipeline.data.encoder import EncoderUnavailable, FrozenEncoder, load_encoder
from pipeline.data.sources import build_source
from pipeline.data.sources.synthetic import MOTIONS, Appearance, Motion
from pipeline.data.windows import Windows, normalize
from pipeline.evaluation import metrics as M
from pipeline.evaluation.clips import batched, pick, stack
from pipeline.evaluation.lpips import frame_lpips
from pipeline.evaluation.pixels import load_decoder
from pipeline.params import EncoderParams, Params
from pipeline.training.distributed import device
from pipeline.training.runs import load_final_model, open_windows

FORMAT = "dila-metrics/1"


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
        raise Unavailable(attrs["predicted"])
    truth = normalize(group["truth"][:], ctx.mean, ctx.std)                        # (N, C+H, h, w, D)
    pred = normalize(group["predicted"][:], ctx.mean, ctx.std)                     # (N, H, h, w, D)
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
    r = ctx.params.rollout

    def one(clip: torch.Tensor, donor: torch.Tensor) -> torch.Tensor:
        z = ctx.model.infer_actions(donor)                                         # (B, T-1, d_z)
        return ctx.model.rollout(clip[:, :r.context], z[:, r.context - 1:], r.horizon).e

    return batched(one, truth, np.roll(truth, -1, axis=0), dev=ctx.dev)            # (N, H, h, w, D)


def cycle_section(ctx: Context) -> dict[str, Any]:
    ctx.require_latents("transfer")
    source = ctx.clips["e"]                                                        # (N, T, h, w, D)
    if len(source) < 2:
        raise Unavailable("needs at least 2 held-out clips (one source, one target)")
    target = np.roll(source, -1, axis=0)

    def transfer(src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
        return batched(ctx.model.transfer, src, tgt, dev=ctx.dev)

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
    if "L_e" not in val:
        raise Unavailable(f"{path} holds no final validation L_e")
    e = ctx.clips["e"]                                                             # (N, T, h, w, D)
    truth = e[:, 1:]
    own = float(M.token_mse_per_step(batched(ctx.model.predict, e, dev=ctx.dev), truth).mean())
    pair = batched(lambda c: torch.stack(ctx.model.readout(c), dim=1), e, dev=ctx.dev)  # (N, 2, T-1, h, w, D)
    from_next, from_current = pair[:, 0], pair[:, 1]
    readout = {"from_true_next_s": float(M.token_mse_per_step(from_next, truth).mean()),
               "from_current_s": float(M.token_mse_per_step(from_current, truth).mean())}
    readout["ratio"] = M.error_ratio(readout["from_current_s"], readout["from_true_next_s"])
    baseline = float(M.token_mse_per_step(M.teacher_forced_baseline(e), truth).mean())
    return {"val_mse": float(val["L_e"]), "step": int(record["spec"]["steps"]), "record": str(path),
            "clips_val_mse": own, "baseline_val_mse": baseline, "ratio_to_baseline": M.error_ratio(own, baseline),
            "readout": readout}


def probe_targets(name: str, params: Params, clips: dict[str, Any]) -> np.ndarray:
    """(N, T-1, a) true action of every transition of the clips (see the module docstring)."""
    if params.dataset(name).kind == "synthetic" and "pose" in clips.get("labels", {}):
        change = np.diff(clips["labels"]["pose"].astype(np.float64), axis=1)        # (N, T-1, K, 4)
        return change.reshape(*change.shape[:2], -1)
    if "actions" not in clips:
        raise Unavailable(f"the {name!r} feature store has no actions")
    return clips["actions"][:, :-1]


@dataclass
class Latents:
    z: np.ndarray                    # (M, d_z) one latent action per transition
    y: np.ndarray | None             # (M, a) its true action, None where the store has none
    family: np.ndarray               # (M,) motion family id, -1 where unknown


def latents(ctx: Context, name: str, windows: Windows, chunk: int = 64) -> Latents:
    """z, true actions and motion families of the clips tiling every episode of `windows`."""
    idx = pick(windows, tile=True)
    zs, ys, fams = [], [], []
    for i in range(0, len(idx), chunk):
        clips = stack(windows, idx[i:i + chunk])
        z = batched(ctx.model.infer_actions, clips["e"], dev=ctx.dev)             # (n, T-1, d_z)
        zs.append(z.reshape(-1, z.shape[-1]))
        try:
            y = probe_targets(name, ctx.params, clips)                             # (n, T-1, a)
            ys.append(y.reshape(-1, y.shape[-1]))
        except Unavailable:
            pass
        motion = clips.get("labels", {}).get("motion")
        fams.append(motion[:, :-1].reshape(-1) if motion is not None else np.full(len(zs[-1]), -1))
    return Latents(np.concatenate(zs), np.concatenate(ys) if ys else None, np.concatenate(fams).astype(np.int32))


def probe_section(ctx: Context, name: str, cache: dict[str, Latents]) -> dict[str, Any]:
    ctx.require_latents("a probe")
    train, val = open_windows(ctx.params, name)
    cfg = ctx.model.cfg
    probe_targets(name, ctx.params, stack(train, np.arange(1)))                    # Unavailable without actions
    if (train.grid, train.dim) != (tuple(cfg.grid), cfg.token_dim):
        raise Unavailable(f"the {name!r} store holds {train.grid} x {train.dim} tokens, the model takes "
                          f"{tuple(cfg.grid)} x {cfg.token_dim} (another encoder or input size)")
    test = cache[name] = latents(ctx, name, val)
    fit = latents(ctx, name, train)
    if fit.y is None or test.y is None:
        raise Unavailable(f"the {name!r} feature store has no actions")
    out = M.linear_probe(fit.z, fit.y, test.z, test.y, ctx.params.evaluate.probe_alpha)
    if ctx.params.dataset(name).kind == "synthetic":
        dims = [d for d in range(fit.y.shape[1]) if d % 4 in (0, 1)]               # (dx, dy) of every object
        r2 = [out["r2_per_dim"][d] for d in dims if out["r2_per_dim"][d] is not None]
        out["r2_translation"] = float(np.mean(r2)) if r2 else None
    return out


def isolation_section(ctx: Context) -> dict[str, Any]:
    e = ctx.clips["e"]                                                             # (N, T, h, w, D)
    if e.shape[1] < 3:
        raise Unavailable("needs clips of at least 3 frames (train.seq_len >= 3)")
    drift = M.isolation_drift(batched(ctx.model.isolate_motion, e, dev=ctx.dev))   # (T-2,)
    reference = M.isolation_drift(e[:, 1:])                                        # (T-2,)
    out = {**_mean_steps(drift, "drift"), **_mean_steps(reference, "reference")}
    out["ratio"] = M.finite_or_none(out["drift"] / out["reference"]) if out["reference"] > 0 else None
    return out


def store_encoder(record: dict[str, Any], params: Params) -> FrozenEncoder:
    """The frozen encoder a store's attributes record (model, weights, input size, final norm)."""
    weights = record["weights"]
    random = re.fullmatch(r"random-init \(seed (\d+)\)", weights)
    if random is None and not weights.startswith("pretrained@"):
        raise Unavailable(f"cannot rebuild the store's encoder from its record weights={weights!r}")
    enc = EncoderParams(model=record["model"], weights="random" if random else "pretrained",
                        revision=params.encoder.revision if random else weights.split("@", 1)[1],
                        input_size=record["input_size"], final_norm=record["final_norm"],
                        batch_size=params.encoder.batch_size, dtype=params.encoder.dtype)
    try:
        encoder = load_encoder(enc, int(random.group(1)) if random else params.seed)
    except EncoderUnavailable as err:
        raise Unavailable(f"the store's encoder cannot be loaded: {err}") from err
    if encoder.record.weights != weights:
        raise Unavailable(f"loaded encoder weights {encoder.record.weights!r}, the store was made with {weights!r}")
    return encoder.to(device())


def _renderer(ctx: Context, attrs: dict[str, Any]) -> Callable[[Appearance, int, np.ndarray], np.ndarray]:
    """render(appearance, family, poses (T, n, 4)) -> normalized tokens (T, h, w, D) of the true frames."""
    ds = ctx.params.dataset(ctx.params.train.dataset)
    if attrs["source"]["params"] != to_dict(ds):
        raise Unavailable(f"the store was made with other settings of datasets.{ctx.params.train.dataset}; "
                          f"run `dila extract {ctx.params.train.dataset}` again")
    encoder = store_encoder(attrs["encoder"], ctx.params)
    source = build_source(replace(ds, frame_stride=1, max_frames=None))

    def render(appearance: Appearance, family: int, poses: np.ndarray) -> np.ndarray:
        motion = Motion(family, np.concatenate([poses, poses[-1:]]))               # + the last outgoing pose
        frames = source.render(appearance, motion, 0, len(poses)).frames            # (T, H, W, 3)
        return normalize(encoder.encode_frames(frames).astype(np.float16), ctx.mean, ctx.std)

    return render


def ground_truth_section(ctx: Context, attrs: dict[str, Any]) -> dict[str, Any]:
    if ctx.params.dataset(ctx.params.train.dataset).kind != "synthetic":
        raise Unavailable("needs a synthetic train.dataset (its renderer draws the exact answers)")
    e, labels = ctx.clips["e"], ctx.clips["labels"]                                # (N, T, h, w, D)
    count = labels["present"][:, 0].sum(-1)                                        # (N,) objects per clip
    pairs = [(i, (i + 1) % len(e)) for i in range(len(e)) if len(e) > 1 and count[i] == count[(i + 1) % len(e)]]
    if not pairs:
        raise Unavailable("needs 2 held-out clips with the same number of objects")
    render = _renderer(ctx, attrs)
    truths: dict[str, list[np.ndarray]] = {"transfer": [], "rebind": [], "reencode": []}
    for i, j in pairs:
        n = int(count[i])
        pose_a, pose_b = labels["pose"][i][:, :n], labels["pose"][j][:, :n]       # (T, n, 4)
        look_a, look_b = (Appearance(labels["content"][k, 0, 0], labels["content"][k, 0, 1:n + 1]) for k in (i, j))
        family = int(labels["motion"][i, 0])
        truths["transfer"].append(render(look_b, family, pose_b[0] + (pose_a - pose_a[0])))
        truths["rebind"].append(render(look_b, family, pose_a))
        truths["reencode"].append(render(look_a, family, pose_a))
    a, b = e[[i for i, _ in pairs]], e[[j for _, j in pairs]]
    truth = {k: np.stack(v) for k, v in truths.items()}                            # (P, T, h, w, D)

    def mse(x: np.ndarray, y: np.ndarray) -> float:
        return float(M.token_mse_per_step(x, y).mean())

    out: dict[str, Any] = {"pairs": len(pairs), "reencode_mse": mse(truth["reencode"], a)}
    rebound = batched(ctx.model.rebind, a, b, dev=ctx.dev)                         # (P, T-1, h, w, D)
    out["rebinding"] = {"token_mse": mse(rebound, truth["rebind"][:, 1:]),
                        "baseline_token_mse": mse(a[:, 1:], truth["rebind"][:, 1:])}
    try:
        ctx.require_latents("action transfer")
        moved = batched(ctx.model.transfer, a, b, dev=ctx.dev)                     # (P, T-1, h, w, D)
        steps = moved.shape[1]
        out["action_transfer"] = {"token_mse": mse(moved, truth["transfer"][:, 1:]),
                                  "baseline_token_mse": mse(M.repeat_last(b[:, :1], steps), truth["transfer"][:, 1:])}
    except Unavailable as err:
        ctx.unavailable["ground_truth.action_transfer"] = str(err)
    return out


def _section(out: dict[str, Any], key: str, fn: Callable[[], dict[str, Any]], unavailable: dict[str, str],
             where: str | None = None) -> None:
    """out[key] = fn(), or the reason it is unavailable in unavailable[where or key]."""
    try:
        out[key] = fn()
    except Unavailable as err:
        unavailable[where or key] = str(err)


def _latents_file(ctx: Context, cache: dict[str, Latents]) -> None:
    """z of train.dataset's validation clips with their motion families, for the manifold plot."""
    path = artifacts.latents_path(ctx.params, ctx.variant)
    path.parent.mkdir(parents=True, exist_ok=True)
    name = ctx.params.train.dataset
    names = np.array(MOTIONS if ctx.params.dataset(name).kind == "synthetic" else (), dtype=str)
    if not ctx.model.capabilities.latent_actions:                                          # an empty file: no z to plot
        np.savez(path, z=np.zeros((0, 0), np.float32), family=np.zeros(0, np.int32), families=names)
        return
    if name not in cache:
        cache[name] = latents(ctx, name, open_windows(ctx.params, name)[1])
    np.savez(path, z=cache[name].z.astype(np.float32), family=cache[name].family, families=names)


def run(params: Params, variant: str) -> Path:
    """Evaluate `variant`'s final model; writes metrics.json (and latents.npz) and returns its path."""
    torch.manual_seed(params.seed)
    dev = device()
    _, val = open_windows(params)
    model, phase, step, weights = load_final_model(params, variant, val, dev)
    clips = stack(val, pick(val, tile=False, limit=params.rollout.episodes))
    decode, why = load_decoder(params, val.attrs.get("plan_sha256"), dev)
    ctx = Context(params, variant, model, dev, val.mean.numpy(), val.std.numpy(), clips, decode, why, {})
    encoder = val.attrs.get("encoder") or {}
    out: dict[str, Any] = {
        "format": FORMAT, "variant": variant, "dataset": params.train.dataset,
        "encoder_weights": encoder.get("weights"), "encoder": encoder,
        "model": {"path": str(weights), "phase": phase, "step": step, "variant": model.cfg.variant,
                  "bottleneck": model.cfg.bottleneck.kind},
        "clips": {"count": len(clips["e"]), "frames": params.train.seq_len, "frame_skip": params.train.frame_skip},
    }
    gone = ctx.unavailable
    _section(out, "rollout", lambda: rollout_section(ctx), gone)
    _section(out, "cycle_transfer", lambda: cycle_section(ctx), gone)
    _section(out, "teacher_forced", lambda: teacher_forced_section(ctx), gone)
    cache: dict[str, Latents] = {}
    out["probe"] = {}
    for name in params.evaluate.probe_datasets:
        _section(out["probe"], name, lambda: probe_section(ctx, name, cache), gone, f"probe.{name}")
    _section(out, "motion_isolation", lambda: isolation_section(ctx), gone)
    _section(out, "ground_truth", lambda: ground_truth_section(ctx, val.attrs), gone)
    _latents_file(ctx, cache)
    out["unavailable"] = dict(sorted(ctx.unavailable.items()))
    path = artifacts.metrics_path(params, variant)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, allow_nan=False) + "\n")
    return path

