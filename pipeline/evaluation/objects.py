"""The `objects.<dataset>` evaluation section: does z describe each object of a multi-object scene?

On a probe dataset whose source splits its true actions per object
(`Source.object_targets`, e.g. the synthetic renderer with `max_objects` > 1):

- per_object: a ridge probe from the whole z to each object's action, fit on the train
  episodes' transitions where that object exists and scored on the held-out ones (R² per
  object, and by how many objects the episode holds: `r2_by_count`, null where fewer than 2
  train or held-out transitions come from episodes with that many objects, and
  `transitions_by_count`, how many there were: the held-out episodes are a seeded random sample,
  so a count can be missing from them);
- slots (a factored model, `cfg.slots` > 1, whose z is the concatenation of one chunk per
  slot): the R² of a probe from each slot's chunk alone to each object's action, the best
  one-to-one slot -> object assignment (`latent_stats.best_assignment`) and the R² under it;
- dci: disentanglement and completeness (`latent_stats.dci`) of the importance of each code
  for each object (the absolute standardised ridge weights, summed over an object's action
  dimensions), over transitions of episodes where every object exists. The codes are the
  dimensions of z, and for a factored model also its slots (`dci_slots`).

R² is in the units of `pipeline.evaluation.metrics.linear_probe` (mean over the defined
dimensions of an object's action).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.evaluation import latent_stats as S
from pipeline.evaluation import metrics as M
from pipeline.evaluation.sections import Context, Latents, Unavailable, latents
from pipeline.training.runs import open_windows


def _probe_r2(fit_x: np.ndarray, fit_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
              alpha: float) -> float | None:
    if len(fit_x) < 2 or len(test_x) < 2:
        return None
    return M.linear_probe(fit_x, fit_y, test_x, test_y, alpha)["r2"]


def _split(ctx: Context, name: str, cache: dict[str, Latents]) -> tuple[Latents, Latents]:
    """(fit, test) latents of dataset `name`, from the probe's cache where it ran first."""
    fit, test = cache.get(f"{name}/train"), cache.get(name)
    if fit is None or test is None:
        train, val = open_windows(ctx.params, name)
        fit, test = latents(ctx, name, train), latents(ctx, name, val)
    if fit.objects is None or test.objects is None:
        raise Unavailable(f"the {name!r} source does not split its actions per object (one object per episode)")
    return fit, test


def _per_object(fit: Latents, test: Latents, alpha: float) -> dict[str, Any]:
    objects = fit.objects.shape[1]
    r2 = [_probe_r2(fit.z[fit.present[:, k]], fit.objects[fit.present[:, k], k],
                    test.z[test.present[:, k]], test.objects[test.present[:, k], k], alpha) for k in range(objects)]
    counts = test.present.sum(1)                                                       # (M,) objects per transition
    by_count, transitions = {}, {}
    for n in range(1, objects + 1):
        fit_n, test_n = fit.present.sum(1) == n, counts == n
        scores = [_probe_r2(fit.z[fit_n], fit.objects[fit_n, k], test.z[test_n], test.objects[test_n, k], alpha)
                  for k in range(n)]
        defined = [v for v in scores if v is not None]
        by_count[str(n)] = float(np.mean(defined)) if defined else None
        transitions[str(n)] = {"fit": int(fit_n.sum()), "test": int(test_n.sum())}
    return {"r2": r2, "r2_by_count": by_count, "transitions_by_count": transitions, "objects": objects}


def _slot_scores(fit: Latents, test: Latents, slots: int, alpha: float) -> dict[str, Any]:
    objects, chunk = fit.objects.shape[1], fit.z.shape[1] // slots
    score = np.full((slots, objects), np.nan)
    for s in range(slots):
        cols = slice(s * chunk, (s + 1) * chunk)
        for k in range(objects):
            f, t = fit.present[:, k], test.present[:, k]
            value = _probe_r2(fit.z[f, cols], fit.objects[f, k], test.z[t, cols], test.objects[t, k], alpha)
            score[s, k] = np.nan if value is None else value
    if slots < objects:
        return {"r2": score.tolist(), "assignment": None, "assigned_r2": None}
    assignment, _ = S.best_assignment(np.nan_to_num(score, nan=-1.0))
    assigned = [score[s, k] for k, s in enumerate(assignment)]
    return {"r2": [[None if np.isnan(v) else float(v) for v in row] for row in score],
            "assignment": list(assignment), "assigned_r2": [None if np.isnan(v) else float(v) for v in assigned]}


def _dci(lat: Latents, slots: int) -> dict[str, Any]:
    full = lat.present.all(1)                                                          # every object exists
    if full.sum() < 4:
        return {"dci": None, "dci_slots": None, "transitions": int(full.sum())}
    y = lat.objects[full]                                                              # (M', K, a/K)
    importance = S.linear_importance(lat.z[full], y.reshape(len(y), -1))              # (d_z, K a/K)
    per_object = importance.reshape(len(importance), y.shape[1], -1).sum(-1)           # (d_z, K)
    out: dict[str, Any] = {"dci": S.dci(per_object), "transitions": int(full.sum()), "dci_slots": None}
    if slots > 1:
        out["dci_slots"] = S.dci(per_object.reshape(slots, -1, per_object.shape[1]).sum(1))  # (slots, K)
    return out


def objects_section(ctx: Context, name: str, cache: dict[str, Latents]) -> dict[str, Any]:
    ctx.require_latents("the per-object probes")
    fit, test = _split(ctx, name, cache)
    alpha, slots = ctx.params.evaluate.probe_alpha, int(getattr(ctx.model.cfg, "slots", 1))
    out: dict[str, Any] = {"per_object": _per_object(fit, test, alpha), "slots": None}
    if slots > 1:
        out["slots"] = _slot_scores(fit, test, slots, alpha)
    return {**out, **_dci(test, slots)}
