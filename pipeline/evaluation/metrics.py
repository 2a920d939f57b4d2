"""Evaluation metrics: pure functions on arrays (numpy in, numpy or floats out; no I/O).

Token arrays are laid out (N, T, h, w, D): N clips (episodes), T frames, a grid of
h x w tokens of D channels. Frames for pixel metrics are (N, H, W, 3) RGB in [0, 1].

- `token_mse_per_step`, `cosine_per_step`: prediction vs truth at every horizon step,
  averaged over clips, tokens (and channels, for the MSE).
- `repeat_last`: the trivial baseline that repeats the last context frame.
- `fit_probe` / `linear_probe`: a closed-form ridge regression on standardised inputs,
  scored by MSE and R² per output dimension and averaged.
- `ssim`: structural similarity with a Gaussian window, per image.
- `cycle_transfer`: the source -> target -> source round trip of a transfer function.
- `isolation_drift`: how much frames change over time relative to their first frame.
- `pca_2d`: the first two principal components, for plots.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

Array = np.ndarray


def _check_same(pred: Array, truth: Array, name: str, ndim: int) -> None:
    if pred.shape != truth.shape or pred.ndim != ndim:
        raise ValueError(f"{name}: prediction {pred.shape} and truth {truth.shape} must have the same "
                         f"{ndim}-d shape")


def token_mse_per_step(pred: Array, truth: Array) -> Array:
    """(T,) mean squared error at each step of pred, truth (N, T, h, w, D)."""
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    _check_same(pred, truth, "token_mse_per_step", 5)
    return np.square(pred - truth).mean(axis=(0, 2, 3, 4))


def cosine_per_step(pred: Array, truth: Array, eps: float = 1e-8) -> Array:
    """(T,) cosine similarity over channels of every token, averaged over clips and tokens,
    at each step of pred, truth (N, T, h, w, D). A zero vector has similarity 0."""
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    _check_same(pred, truth, "cosine_per_step", 5)
    dot = (pred * truth).sum(-1)                                                    # (N, T, h, w)
    norms = np.linalg.norm(pred, axis=-1) * np.linalg.norm(truth, axis=-1)          # (N, T, h, w)
    return (dot / np.maximum(norms, eps)).mean(axis=(0, 2, 3))


def repeat_last(context: Array, horizon: int) -> Array:
    """The "repeat the last context frame" prediction: context (N, Tc, h, w, D) -> (N, horizon, h, w, D)."""
    context = np.asarray(context)
    if context.ndim != 5 or context.shape[1] < 1:
        raise ValueError(f"repeat_last: context must be (N, Tc >= 1, h, w, D), got {context.shape}")
    return np.repeat(context[:, -1:], horizon, axis=1)


def teacher_forced_baseline(e: Array) -> Array:
    """Repeat-last-frame teacher-forced prediction of frames 1..T-1 of clips e (N, T, h, w, D):
    frame t predicts frame t + 1, (N, T-1, h, w, D)."""
    e = np.asarray(e)
    if e.ndim != 5 or e.shape[1] < 2:
        raise ValueError(f"teacher_forced_baseline: e must be (N, T >= 2, h, w, D), got {e.shape}")
    return e[:, :-1]


def error_ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator of two errors; None when the denominator is 0 (undefined).
    Used for z usage (other-z error / own-z error: 1.0 means z is ignored) and the decoder
    read-out (error from s_t / error from the true s_{t+1}: 1.0 means structure is not read)."""
    return None if denominator <= 0 else float(numerator) / float(denominator)


@dataclass(frozen=True)
class RidgeProbe:
    """y ≈ ((x - x_mean) / x_scale) @ weight + bias, for x (N, d_in) and y (N, d_out)."""

    x_mean: Array   # (d_in,)
    x_scale: Array  # (d_in,)
    weight: Array   # (d_in, d_out)
    bias: Array     # (d_out,)

    def predict(self, x: Array) -> Array:
        return ((np.asarray(x, np.float64) - self.x_mean) / self.x_scale) @ self.weight + self.bias


def _scale(values: Array) -> Array:
    """Standard deviation per column, with constant columns given scale 1."""
    std = values.std(axis=0)
    return np.where(std > 1e-12, std, 1.0)


def fit_probe(x: Array, y: Array, alpha: float) -> RidgeProbe:
    """Ridge regression in closed form on inputs standardised with their own mean and std:
    minimises ||X w + b - y||² + alpha ||w||² (the intercept is not penalised)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or len(x) < 2:
        raise ValueError(f"fit_probe: need x (N, d_in) and y (N, d_out) with the same N >= 2, "
                         f"got {x.shape} and {y.shape}")
    if alpha < 0:
        raise ValueError(f"fit_probe: alpha must be >= 0, got {alpha}")
    x_mean, x_scale = x.mean(0), _scale(x)
    xs = (x - x_mean) / x_scale                                                     # (N, d_in)
    y_mean = y.mean(0)
    gram = xs.T @ xs + alpha * np.eye(x.shape[1])                                   # (d_in, d_in)
    weight = np.linalg.lstsq(gram, xs.T @ (y - y_mean), rcond=None)[0]             # (d_in, d_out)
    return RidgeProbe(x_mean, x_scale, weight, y_mean)


def regression_scores(y_true: Array, y_pred: Array) -> dict[str, object]:
    """MSE and R² per output dimension and averaged. R² of a dimension that is constant in
    y_true is undefined (None) and left out of the average."""
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    _check_same(y_pred, y_true, "regression_scores", 2)
    mse = np.square(y_pred - y_true).mean(0)                                        # (d_out,)
    var = np.square(y_true - y_true.mean(0)).mean(0)                                # (d_out,)
    r2 = [None if v <= 1e-12 else float(1.0 - m / v) for m, v in zip(mse, var)]
    defined = [v for v in r2 if v is not None]
    return {
        "mse": float(mse.mean()),
        "r2": float(np.mean(defined)) if defined else None,
        "mse_per_dim": [float(v) for v in mse],
        "r2_per_dim": r2,
    }


def linear_probe(x_train: Array, y_train: Array, x_test: Array, y_test: Array, alpha: float,
                 groups: dict[str, Array] | None = None) -> dict[str, object]:
    """Fit a ridge probe x -> y on the train set and score it on the test set. Targets are
    standardised with the train set's mean and std first, so MSE is in units of each
    dimension's train-set standard deviation (comparable across dimensions and datasets).
    `groups` (name -> boolean mask over the test set) adds the same scores on each subset under
    "groups" (the one probe, scored per group: e.g. per motion family)."""
    y_train, y_test = np.asarray(y_train, np.float64), np.asarray(y_test, np.float64)
    y_mean, y_scale = y_train.mean(0), _scale(y_train)
    probe = fit_probe(x_train, (y_train - y_mean) / y_scale, alpha)
    truth, pred = (y_test - y_mean) / y_scale, probe.predict(x_test)               # (M, a) each
    scores = regression_scores(truth, pred)
    if groups:
        scores["groups"] = {name: {**regression_scores(truth[mask], pred[mask]), "samples": int(mask.sum())}
                            for name, mask in groups.items() if mask.sum() >= 2}
    return {**scores, "train_samples": int(len(y_train)), "test_samples": int(len(y_test)), "alpha": float(alpha)}


def _gaussian(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()                                                              # (size,)


def ssim(x: Array, y: Array, window: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> Array:
    """(N,) structural similarity of RGB frames x, y (N, H, W, 3) in [0, data_range]:
    Gaussian-weighted local statistics (window x window, std sigma, shrunk to the image if it
    is smaller), constants K1 = 0.01, K2 = 0.03, the SSIM map averaged over valid positions
    and channels."""
    x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    _check_same(x64, y64, "ssim", 4)
    if x64.shape[-1] != 3:
        raise ValueError(f"ssim: frames must be (N, H, W, 3), got {x64.shape}")
    size = min(window, x64.shape[1], x64.shape[2])
    size -= 1 - size % 2                                                            # odd window
    g = _gaussian(size, sigma)
    kernel = (g[:, None] * g[None, :]).expand(3, 1, size, size)                    # (3, 1, k, k)
    a = torch.from_numpy(x64).permute(0, 3, 1, 2)                                   # (N, 3, H, W)
    b = torch.from_numpy(y64).permute(0, 3, 1, 2)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=3)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return (num / den).mean(dim=(1, 2, 3)).numpy()


def cycle_transfer(transfer: Callable[[Array, Array], Array], source: Array, target: Array) -> Array:
    """The cycle source -> target -> source of a transfer function.

    transfer(source_clip, target_clip) applies the motion of source_clip (N, T, ...) to the
    first frame of target_clip and returns the T - 1 generated frames. The motion of
    `source` is moved onto `target`'s first frame; the generated clip (target's first frame
    + generated frames) is moved back onto `source`'s first frame. Returns that
    reconstruction of source[:, 1:] (N, T-1, ...); a perfect transfer returns it exactly.
    """
    forward = transfer(source, target)                                              # (N, T-1, ...)
    generated = np.concatenate([np.asarray(target)[:, :1], forward], axis=1)        # (N, T, ...)
    return transfer(generated, source)


def isolation_drift(frames: Array) -> Array:
    """(T-1,) mean squared change of frames (N, T, h, w, D) at steps 1..T-1 from their step 0.
    A motion-isolated output (frozen structure) should give values near 0."""
    frames = np.asarray(frames, np.float64)
    if frames.ndim != 5 or frames.shape[1] < 2:
        raise ValueError(f"isolation_drift: frames must be (N, T >= 2, h, w, D), got {frames.shape}")
    return np.square(frames[:, 1:] - frames[:, :1]).mean(axis=(0, 2, 3, 4))


def pca_2d(x: Array) -> tuple[Array, Array]:
    """First two principal components of x (N, d): coordinates (N, 2) and the share of the
    variance each explains (2,). Each axis' sign makes its largest-magnitude loading positive."""
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"pca_2d: need x (N >= 2, d), got {x.shape}")
    centred = x - x.mean(0)
    _, sing, vt = np.linalg.svd(centred, full_matrices=False)                       # vt: (r, d)
    axes = vt[:2]
    signs = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(1)])
    axes = axes * signs[:, None]
    coords = centred @ axes.T                                                       # (N, <=2)
    total = float(np.square(sing).sum())
    ratio = np.square(sing[:2]) / total if total > 0 else np.zeros(len(axes))
    if coords.shape[1] < 2:                                                         # d == 1
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
        ratio = np.pad(ratio, (0, 2 - len(ratio)))
    return coords, ratio


def finite_or_none(value: float) -> float | None:
    """A float for JSON: None where the value is NaN or infinite."""
    value = float(value)
    return value if math.isfinite(value) else None
