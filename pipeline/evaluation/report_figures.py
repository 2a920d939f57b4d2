"""The report's two main figures, as matplotlib Figures (their lines can be read back without
pixels), and the small tables DVC draws its own views from.

- `rollout_error`: the rollout's token MSE per horizon step for every variant with rollouts,
  under its own z (solid) and under another clip's z (dashed, hollow markers), beside repeating
  the last context frame (black, dotted); the right panel divides both by the repeat-last error,
  so a model that merely copies the last frame lies on 1. Markers are offset sideways per
  variant, so a variant that lies exactly on another curve (or on the baseline) stays visible.
  Where replicas exist, a band spans the own-z error of every training seed (min to max); the
  legend says why there is none.
  Variants without rollouts are named in the legend with the reason.
- `learning`: every variant's phase-1 validation L_e (the teacher-forced token MSE) against the
  training step, from the training logs.
- `rollout_rows` / `learning_rows`: the same numbers as long tables (one row per variant, curve
  and step) for dvc.yaml's top-level plots, which overlay the variants.

The titles name the dataset, the encoder and its weights (random-init or pretrained) and the
number of held-out episodes.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

BASELINE = "repeat last frame"
Z_TARGET = 1.5  # the z usage a model that acts on its latent action should reach
OWN, OTHER = "own z", "another clip's z"
MARKERS = "osD^vP*Xh<>p"


def _unavailable(m: dict[str, Any], key: str) -> str:
    why = (m.get("unavailable") or {}).get(key, "not recorded")
    return why.removeprefix("unavailable: ")


def run_title(metrics: dict[str, dict[str, Any]], episodes: bool = True) -> str:
    """Dataset, encoder and weights (and, with `episodes`, the number of held-out episodes rolled out)."""
    first = next(iter(metrics.values()))
    weights = ", ".join(sorted({str(m.get("encoder_weights")) for m in metrics.values()}))
    model = (first.get("encoder") or {}).get("model", "unknown encoder")
    rolled = next((m["rollout"] for m in metrics.values() if "rollout" in m), None)
    episodes = f"; {rolled['episodes']} held-out episodes" if rolled and episodes else ""
    random = ": a pipeline check, not a result" if "random-init" in weights else ""
    return f"{first.get('dataset')}{episodes}; encoder {model}, weights {weights}{random}"


def _offsets(n: int, spacing: float, width: float = 0.3) -> np.ndarray:
    """Sideways offsets of n variants' markers, centred on 0, `width` of `spacing` apart in all."""
    return (np.arange(n) - (n - 1) / 2) * (width * spacing / max(n - 1, 1))


def _band(seed_curves: dict[str, dict[int, dict[str, list[float]]]] | None, variant: str,
          horizon: int) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(min, max, seeds) per step of the own-z error over every seed that has a curve; None below 2."""
    runs = [c.get("token_mse_per_step") for c in (seed_curves or {}).get(variant, {}).values()]
    runs = [np.asarray(r, np.float64) for r in runs if r is not None and len(r) == horizon]
    if len(runs) < 2:
        return None
    stacked = np.stack(runs)
    return stacked.min(0), stacked.max(0), len(runs)


def rollout_error(metrics: dict[str, dict[str, Any]],
                  seed_curves: dict[str, dict[int, dict[str, list[float]]]] | None = None) -> Figure | None:
    """The rollout-error figure (see the module); None when no variant has rollouts. `seed_curves`:
    {variant: {seed: {"token_mse_per_step": [...]}}} over the main run and its replicas."""
    rolled = {v: m["rollout"] for v, m in metrics.items() if "rollout" in m}
    if not rolled:
        return None
    missing = {v: _unavailable(m, "rollout") for v, m in metrics.items() if "rollout" not in m}
    base = np.asarray(next(iter(rolled.values()))["baseline"]["token_mse_per_step"], np.float64)
    steps = np.arange(1, len(base) + 1, dtype=np.float64)
    fig = Figure(figsize=(15, 5.5), layout="constrained")
    error, ratio, usage_ax = fig.subplots(1, 3)
    for ax, scale in ((error, 1.0), (ratio, base)):
        ax.plot(steps, base / scale, color="black", ls=":", lw=2.5, zorder=1, label=BASELINE)
    usage_ax.axhline(1.0, color="black", ls=":", lw=2.5, zorder=1, label="z ignored")
    usage_ax.axhline(Z_TARGET, color="grey", ls="-.", lw=1.5, zorder=1, label="target")
    shift, handles, banded = _offsets(len(rolled), 1.0), [], 0
    for i, (variant, r) in enumerate(rolled.items()):
        colour, marker, x = f"C{i % 10}", MARKERS[i % len(MARKERS)], steps + shift[i]
        own = np.asarray(r["token_mse_per_step"], np.float64)
        other = (r.get("other_z") or {}).get("token_mse_per_step")
        band = _band(seed_curves, variant, len(base))
        for ax, scale in ((error, 1.0), (ratio, base)):
            if band is not None:
                ax.fill_between(steps, band[0] / scale, band[1] / scale, color=colour, alpha=0.15, lw=0,
                                label=f"{variant}: {band[2]} seeds, min to max")
            ax.plot(x, own / scale, color=colour, marker=marker, ms=4, lw=1.5, zorder=3, label=f"{variant}: {OWN}")
            if other is not None:  # on top, hollow and larger: a ring around a filled marker = the same error
                ax.plot(x, np.asarray(other, np.float64) / scale, color=colour, marker=marker, ms=8, mfc="none",
                        ls="--", lw=1.2, zorder=4, label=f"{variant}: {OTHER}")
        if other is not None:
            usage_ax.plot(x, np.asarray(other, np.float64) / own, color=colour, marker=marker, ms=5, lw=1.5,
                          zorder=3, label=f"{variant}: z usage")
        banded += band is not None
        usage = r.get("z_usage")
        usage = "" if usage is None else f" (z usage {usage:.4f})"
        handles.append(Line2D([], [], color=colour, marker=marker, label=f"{variant}{usage}"))
    handles += [Line2D([], [], color="grey", marker="o", ms=4, label=f"{OWN} (solid, filled)"),
                Line2D([], [], color="grey", ls="--", marker="o", ms=8, mfc="none", label=f"{OTHER} (dashed, hollow)"),
                Line2D([], [], color="black", ls=":", lw=2.5, label=f"{BASELINE} (left, middle); z ignored (right)"),
                Line2D([], [], color="grey", ls="-.", lw=1.5, label=f"z usage target ({Z_TARGET})")]
    if banded:
        handles.append(Patch(color="grey", alpha=0.3, label="training seeds: min to max"))
    elif seed_curves:
        several = any(len(by_seed) > 1 for by_seed in seed_curves.values())
        handles.append(Line2D([], [], ls="none", label="no seed bands: the replicas hold no per-step curves"
                              if several else "no seed bands: one training seed"))
    handles += [Line2D([], [], ls="none", label=f"{v}: no rollout ({why})") for v, why in missing.items()]
    error.set(xlabel="horizon step", ylabel="token MSE (normalized tokens)", title="rollout token MSE (lower is better)")
    ratio.set(xlabel="horizon step", ylabel="rollout MSE / repeat-last MSE",
              title="over repeating the last frame (below 1 beats it)")
    usage_ax.set(xlabel="horizon step", ylabel="other-z MSE / own-z MSE",
                 title="z usage per step (1: the rollout ignores z)")
    for ax in (error, ratio, usage_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=8)
    r = next(iter(rolled.values()))
    fig.suptitle(f"Rollouts on {run_title(metrics)}\n{r['context']} context frame(s), horizon {r['horizon']}; "
                 "markers shifted sideways per variant so that curves lying on one another stay visible",
                 fontsize=10)
    return fig


def learning(metrics: dict[str, dict[str, Any]], curves: dict[str, dict[str, Any]]) -> Figure | None:
    """Validation L_e against step per variant (`curves`: {variant: {"step": [...], "value": [...]} or
    {"unavailable": why}}); None when no variant has a curve."""
    drawn = {v: c for v, c in curves.items() if c.get("step")}
    if not drawn:
        return None
    fig = Figure(figsize=(10, 5.5), layout="constrained")
    ax = fig.subplots()
    logged = sorted({int(s) for c in drawn.values() for s in c["step"]})
    spacing = float(np.diff(logged).min()) if len(logged) > 1 else 1.0
    shift = _offsets(len(drawn), spacing, 0.1)
    for i, (variant, c) in enumerate(drawn.items()):
        ax.plot(np.asarray(c["step"], np.float64) + shift[i], c["value"], color=f"C{i % 10}",
                marker=MARKERS[i % len(MARKERS)], ms=5, label=variant)
    for variant, c in curves.items():
        if variant not in drawn:
            ax.plot([], [], ls="none", label=f"{variant}: no curve ({c.get('unavailable', 'not logged')})")
    ax.set(xlabel="training step (phase 1)", ylabel="validation L_e (teacher-forced token MSE)",
           title="phase-1 validation L_e (lower is better)")
    if len(logged) <= 12:
        ax.set_xticks(logged)
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncols=4, fontsize=8)
    fig.suptitle(f"Learning curves on {run_title(metrics, episodes=False)}\n"
                 "markers shifted sideways per variant so that curves lying on one another stay visible",
                 fontsize=9)
    return fig


def rollout_rows(metrics: dict[str, dict[str, Any]]) -> list[tuple[str, str, int, float]]:
    """(variant, curve, step, token MSE) of every rollout curve: own z, another clip's z, and the
    repeat-last baseline once (as variant "repeat last frame")."""
    rows: list[tuple[str, str, int, float]] = []
    base = None
    for variant, m in metrics.items():
        r = m.get("rollout")
        if r is None:
            continue
        base = r["baseline"]["token_mse_per_step"]
        rows += [(variant, OWN, t, v) for t, v in enumerate(r["token_mse_per_step"], 1)]
        other = (r.get("other_z") or {}).get("token_mse_per_step") or []
        rows += [(variant, OTHER, t, v) for t, v in enumerate(other, 1)]
    if base is not None:
        rows += [(BASELINE, BASELINE, t, v) for t, v in enumerate(base, 1)]
    return rows


def learning_rows(curves: dict[str, dict[str, Any]]) -> list[tuple[str, str, int, float]]:
    """(variant, curve, step, validation L_e) of every phase-1 curve."""
    return [(variant, "phase 1", int(s), float(v)) for variant, c in curves.items()
            for s, v in zip(c.get("step", []), c.get("value", []))]


def tsv(header: tuple[str, ...], rows: list[tuple]) -> str:
    return "\n".join("\t".join(str(x) for x in row) for row in [header, *rows]) + "\n"
