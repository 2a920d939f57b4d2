"""Numbers about a set of latent actions that need no eyes (issue 12's latent-manifold summary).

All take numpy arrays; z is (M, d_z), one latent action per transition.

- `effective_rank(z)`: exp of the entropy of the normalised singular values of the centred z
  (Roy & Vetterli 2007): d for isotropic z in d dimensions, 1 for z on a line.
- `dimension_variance(z)`: per-dimension variance, to see dead or dominant dimensions.
- `inverse_consistency(z_forward, z_backward)`: mean cosine of z(t -> t+1) and z(t+1 -> t);
  -1 when the reverse transition gets the opposite action.
- `dci(importance)`: DCI disentanglement and completeness (Eastwood & Williams 2018) of an
  importance matrix R (codes x factors), e.g. `linear_importance(z, factors)`.
- `best_assignment(score)`: the slot -> object matching that maximises the total score
  (for per-object probes of a factored model with few slots).
"""
from __future__ import annotations

import itertools

import numpy as np


def effective_rank(z: np.ndarray, eps: float = 1e-12) -> float:
    x = np.asarray(z, np.float64)
    s = np.linalg.svd(x - x.mean(0), compute_uv=False)
    if s.sum() <= eps:
        return 0.0
    p = s / s.sum()
    p = p[p > eps]
    return float(np.exp(-(p * np.log(p)).sum()))


def dimension_variance(z: np.ndarray) -> np.ndarray:
    return np.asarray(z, np.float64).var(0)


def inverse_consistency(z_forward: np.ndarray, z_backward: np.ndarray, eps: float = 1e-12) -> float:
    a, b = np.asarray(z_forward, np.float64), np.asarray(z_backward, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"inverse_consistency: shapes {a.shape} and {b.shape} differ")
    cos = (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), eps)
    return float(cos.mean())


def linear_importance(z: np.ndarray, factors: np.ndarray, alpha: float = 1e-3) -> np.ndarray:
    """(d_z, K) |coefficients| of a ridge regression of each standardised factor on standardised z."""
    x = np.asarray(z, np.float64)
    y = np.asarray(factors, np.float64)
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-12)
    y = (y - y.mean(0)) / np.maximum(y.std(0), 1e-12)
    w = np.linalg.solve(x.T @ x / len(x) + alpha * np.eye(x.shape[1]), x.T @ y / len(x))
    return np.abs(w)


def _entropy(p: np.ndarray, base: int) -> np.ndarray:
    """Entropy (log base `base`) of each row of p (rows sum to 1)."""
    q = np.where(p > 0, p, 1.0)
    return -(p * np.log(q)).sum(-1) / np.log(base)


def dci(importance: np.ndarray) -> dict[str, float]:
    """Disentanglement (each code explains one factor) and completeness (each factor is explained
    by one code) of R (codes x factors), both in [0, 1]; codes weighted by their total importance."""
    r = np.asarray(importance, np.float64)
    if r.ndim != 2 or r.shape[1] < 2 or r.shape[0] < 2 or (r < 0).any():
        raise ValueError(f"dci: expected a non-negative (codes >= 2, factors >= 2) matrix, got shape {r.shape}")
    total = r.sum()
    if total <= 0:
        return {"disentanglement": 0.0, "completeness": 0.0}
    rows = r.sum(1, keepdims=True)
    d_code = 1.0 - _entropy(np.divide(r, rows, out=np.zeros_like(r), where=rows > 0), r.shape[1])
    rho = rows[:, 0] / total
    cols = r.sum(0, keepdims=True)
    c_factor = 1.0 - _entropy(np.divide(r, cols, out=np.zeros_like(r), where=cols > 0).T, r.shape[0])
    return {"disentanglement": float((rho * d_code).sum()), "completeness": float(c_factor.mean())}


def best_assignment(score: np.ndarray) -> tuple[tuple[int, ...], float]:
    """For score (slots, objects) with slots >= objects: the objects' slots (one distinct slot per
    object) maximising the summed score, and that sum. Exhaustive: meant for a handful of slots."""
    s = np.asarray(score, np.float64)
    slots, objects = s.shape
    if slots < objects:
        raise ValueError(f"best_assignment: {slots} slots cannot cover {objects} objects")
    best = max(itertools.permutations(range(slots), objects), key=lambda p: s[list(p), range(objects)].sum())
    return tuple(int(k) for k in best), float(s[list(best), range(objects)].sum())
