"""The evaluation report: a headline table, the detailed tables shaped like the paper's ablation
table, and figures.

Input: every variant's evaluation details (details.json, the evaluate stage's schema, see
stages/evaluate.py) and, where present, its latents (z (M, d_z), family (M,), families
(names)), its phase-1 validation curve (from the training logs) and its rollout curves per
training seed (from the replicas). Output under the report directory (`paths.report`):

    metrics.json              the DVC metrics of the whole run, headline keys only: per variant
                              rollout / repeat-last token MSE and z usage (and its planning success
                              beside random actions' and the simulator's), see `headline`
    seeds.json                per variant, mean / sd / n over training seeds of its headline
                              numbers (pipeline/evaluation/seeds.py); a plain file, not DVC metrics
    table.md                  the headline table and what it says, then the detailed tables (rows =
                              variants + the "repeat last frame" baseline), the paper's numbers beside
                              ours (pipeline/evaluation/paper.py), and the notes
    curves/rollout.tsv        variant, curve (own z, another clip's z, repeat last frame), step, token
                              MSE: dvc.yaml's top-level rollout-error plot
    curves/learning.tsv       variant, curve, step, phase-1 validation L_e: its learning-curve plot
    plots/rollout_error.png   the rollout-error figure (pipeline/evaluation/report_figures.py)
    plots/learning.png        the learning-curve figure
    plots/latents_<variant>.png  z of one variant in 2-D (UMAP where `umap-learn` is installed,
                              else PCA; the title says which), coloured by transform family and
                              by the size of the true action (pipeline/evaluation/latent_plots.py)

and, with `figures` (the project's docs/figures, tracked by git), the two main figures again as
small PNGs: rollout_error.png and learning.png.

Numbers are printed with 4 significant digits (a spread over seeds with 2). A value that could
not be computed reads "n/a [k]" in its cell, with note k giving the reason recorded in
details.json; a negative R² (or explained variance) carries a note that says what it means. The
header names the encoder weights, so a run on a random-init encoder is never read as a
pretrained one.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.evaluation import report_figures as figures_
from pipeline.evaluation import report_planning as planning
from pipeline.evaluation.latent_plots import plot_variant
from pipeline.evaluation.paper import comparison, lookup
from pipeline.evaluation.seeds import seeds_lines

BASELINE = figures_.BASELINE
DASH = "—"
Z_TARGET = figures_.Z_TARGET
IGNORES_Z = 1.05   # z usage below this: swapping in another clip's z changes the rollout error by under 5%
NEGATIVE_R2 = ("A negative R² (or explained variance) means the fit predicts its targets worse than their "
               "mean would: z carries no linearly readable information about them.")
PLOT_DPI, FIGURE_DPI = 120, 72  # plots/ beside the table; the small committed copies in docs/figures


def number(value: float) -> str:
    """4 significant digits, trailing zeros kept (1.000, 0.05690); integers and 0 as they are."""
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    v = float(value)
    if v == 0 or not math.isfinite(v):
        return "0" if v == 0 else str(v)
    return _clean(f"{v:#.4g}")


def _clean(text: str) -> str:
    mantissa, _, exponent = text.partition("e")
    mantissa = mantissa.rstrip(".")
    return f"{mantissa}e{int(exponent)}" if exponent else mantissa


def spread_text(mean: float, sd: float | None) -> str:
    """mean ± sd: the mean with 4 significant digits, the sd with 2."""
    return number(mean) + ("" if sd is None else f" ± {_clean(f'{sd:#.2g}') if sd else '0'}")


def _is_r2(key: str) -> bool:
    return any(part.startswith("r2") or part == "explained" for part in key.split("."))


class Notes:
    """Numbered footnotes; the same reason always gets the same number."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def mark(self, reason: str) -> str:
        if reason not in self.reasons:
            self.reasons.append(reason)
        return f"[{self.reasons.index(reason) + 1}]"

    def ref(self, reason: str) -> str:
        return f"n/a {self.mark(reason)}"

    def r2(self, value: float) -> str:
        """An R² (or explained variance) cell: the number, and the note on negatives where below 0."""
        return number(value) + (f" {self.mark(NEGATIVE_R2)}" if value < 0 else "")

    def lines(self) -> list[str]:
        return [f"[{i}] {reason}" for i, reason in enumerate(self.reasons, 1)]


def _objects_count_reason(m: dict[str, Any], key: str) -> str | None:
    """Why objects.<store>.per_object.r2_by_count.<n> is null, in words (None for other keys)."""
    parts = key.split(".")
    if len(parts) != 5 or parts[0] != "objects" or parts[3] != "r2_by_count":
        return None
    store, n = parts[1], parts[4]
    seen = lookup(m, f"objects.{store}.per_object.transitions_by_count.{n}")
    if seen is None:
        return (f"{store}: no R² for episodes with {n} objects: fewer than 2 of the probe's held-out (or "
                f"training) transitions come from such episodes. The held-out episodes are a small seeded "
                f"random draw, so a count can be missing from them.")
    if seen["test"] == 0:
        return (f"{store}: none of its held-out episodes holds {n} objects (the held-out episodes are a small "
                f"seeded random draw; {seen['fit']} training transitions have {n}), so there is no R² for {n}.")
    return (f"{store}: too few transitions with {n} objects to fit and score a probe ({seen['fit']} training, "
            f"{seen['test']} held out).")


def _reason(m: dict[str, Any], key: str, label: str | None = None) -> str:
    """The recorded reason for `key` or for the closest section holding it, in words."""
    unavailable = m.get("unavailable", {})
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in unavailable:
            return unavailable[prefix].removeprefix("unavailable: ")
    counted = _objects_count_reason(m, key)
    if counted is not None:
        return counted
    what = label or key
    return (f"{what}: the evaluation of variant '{m.get('variant', '?')}' records neither a value nor a reason "
            f"(run `dila evaluate {m.get('variant', '<variant>')}` again)")


def cell(m: dict[str, Any], key: str, notes: Notes, label: str | None = None) -> str:
    value = lookup(m, key)
    if value is None:
        return notes.ref(_reason(m, key, label))
    return notes.r2(value) if _is_r2(key) else number(value)


def _rollout_ratio(m: dict[str, Any]) -> float | None:
    own, base = lookup(m, "rollout.token_mse"), lookup(m, "rollout.baseline.token_mse")
    return own / base if own is not None and base else None


def _ratio_cell(m: dict[str, Any], notes: Notes) -> str:
    ratio = _rollout_ratio(m)
    return notes.ref(_reason(m, "rollout.token_mse", "rollout / repeat last")) if ratio is None else number(ratio)


def _names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _row(name: str, cells: list[str]) -> str:
    return "| " + " | ".join([name, *cells]) + " |"


def _rule(cols: int) -> str:
    return "|" + "---|" * cols


def _train_dataset(metrics: dict[str, dict[str, Any]]) -> str | None:
    return next(iter(metrics.values())).get("dataset")


def _headline_table(metrics: dict[str, dict[str, Any]], plans: dict[str, Any] | None, notes: Notes) -> list[str]:
    train = _train_dataset(metrics)
    head = ["z usage: other-z / own-z rollout MSE", "decoder read-out: MSE from s_t / from true s_{t+1}",
            "rollout / repeat last", "teacher-forced / repeat last", f"probe R² on {train} (the training store)"]
    rates, plan_of = {}, {}
    if plans is not None:
        head.append("planning success")
        rates, plan_of = planning.numbers(plans)["variants"], plans.get("variants", {})
    lines = [_row("model", head), _rule(len(head) + 1)]
    for variant, m in metrics.items():
        cells = [cell(m, "rollout.z_usage", notes, "z usage"),
                 cell(m, "teacher_forced.readout.ratio", notes, "decoder read-out"), _ratio_cell(m, notes),
                 cell(m, "teacher_forced.ratio_to_baseline", notes, "teacher-forced / repeat last"),
                 cell(m, f"probe.{train}.r2", notes, f"probe R² on {train}")]
        if plans is not None:
            rate = rates.get(variant)
            cells.append(number(rate) if rate is not None else
                         notes.ref((plan_of.get(variant) or {}).get("unavailable", "not planned")))
        lines.append(_row(variant, cells))
    return lines


def _findings(metrics: dict[str, dict[str, Any]], plans: dict[str, Any] | None) -> list[str]:
    """What the headline table says, in sentences computed from it."""
    usage = {v: lookup(m, "rollout.z_usage") for v, m in metrics.items()}
    with_z = {v: u for v, u in usage.items() if u is not None}
    ignoring = [v for v, u in with_z.items() if u < IGNORES_Z]
    lines = []
    if with_z and len(ignoring) == len(with_z):
        lo, hi = min(with_z.values()), max(with_z.values())
        lines.append(f"- **No variant uses its latent action z.** Rolled out under another clip's z, every model "
                     f"with a z predicts as well as under its own (z usage {number(lo)} to {number(hi)}; 1 means "
                     f"z is ignored; target: {Z_TARGET}). Every other number below describes models that do not "
                     "act on z.")
    elif ignoring:
        lines.append(f"- **{_names(ignoring)}: z is not used** (z usage below {IGNORES_Z}; target: {Z_TARGET}).")
    reached = [v for v, u in with_z.items() if u >= Z_TARGET]
    if reached:
        lines.append(f"- {_names(reached)}: z usage at or above the target ({Z_TARGET}).")
    stuck = [v for v, m in metrics.items() if (_rollout_ratio(m) or 0.0) >= 1.0]
    if stuck:
        lines.append(f"- **{_names(stuck)}: rollouts no better than repeating the last frame** "
                     "(rollout / repeat last at or above 1).")
    for variant, m in metrics.items():
        if "rollout" not in m:
            lines.append(f"- {variant}: no rollout ({_reason(m, 'rollout')}).")
    if plans is not None:
        planned = planning.numbers(plans)
        rates = [r for r in planned["variants"].values() if r is not None]
        if rates and max(rates) == 0:
            sim, rand = planned["plan_simulator"], planned["plan_random"]
            lines.append("- **No world model reached a planning goal** (success 0 for every variant that planned"
                         + ("" if sim is None else f"; the simulator as model: {number(sim)}")
                         + ("" if rand is None else f", random actions: {number(rand)}") + ").")
    return lines


def _main_columns(metrics: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """(header, metrics key) of the detailed ablation table; one group of probe columns per probe dataset."""
    cols = [("z usage: other-z / own-z rollout MSE", "rollout.z_usage"),
            ("decoder read-out: MSE from s_t / from true s_{t+1}", "teacher_forced.readout.ratio"),
            ("rollout token MSE", "rollout.token_mse"), ("rollout SSIM", "rollout.ssim"),
            ("rollout LPIPS", "rollout.lpips"), ("rollout token MSE, another clip's z", "rollout.other_z.token_mse"),
            ("cycle transfer token MSE", "cycle_transfer.token_mse"),
            ("cycle transfer SSIM", "cycle_transfer.ssim"), ("teacher-forced val MSE", "teacher_forced.val_mse"),
            ("teacher-forced MSE, rollout clips", "teacher_forced.clips_val_mse")]
    probed = sorted({name for m in metrics.values() for name in m.get("probe", {})}
                    | {key.split(".")[1] for m in metrics.values() for key in m.get("unavailable", {})
                       if key.startswith("probe.")})
    for name in probed:
        cols += [(f"probe {name} MSE", f"probe.{name}.mse"), (f"probe {name} R²", f"probe.{name}.r2")]
        if any(lookup(m, f"probe.{name}.r2_translation") is not None for m in metrics.values()):
            cols.append((f"probe {name} R² (dx, dy)", f"probe.{name}.r2_translation"))
    return cols


def _main_table(metrics: dict[str, dict[str, Any]], notes: Notes) -> list[str]:
    cols = _main_columns(metrics)
    lines = [_row("model", [h for h, _ in cols]), _rule(len(cols) + 1)]
    for variant, m in metrics.items():
        cells = []
        for header, key in cols:
            text = cell(m, key, notes, header)
            if key == "teacher_forced.val_mse" and lookup(m, key) is not None:
                text += f" (step {lookup(m, 'teacher_forced.step')})"
            cells.append(text)
        lines.append(_row(variant, cells))
    source = next((m for m in metrics.values() if "rollout" in m), None)
    baseline = {"rollout.token_mse": "rollout.baseline.token_mse", "rollout.ssim": "rollout.baseline.ssim",
                "rollout.lpips": "rollout.baseline.lpips",
                "cycle_transfer.token_mse": "cycle_transfer.baseline_token_mse",
                "teacher_forced.clips_val_mse": "teacher_forced.baseline_val_mse"}
    cells = [DASH if key not in baseline else
             (cell(source, baseline[key], notes, f"{header} of {BASELINE}") if source is not None
              else notes.ref("no variant has rollouts"))
             for header, key in cols]
    lines.append(_row(BASELINE, cells))
    return lines


def _truth_table(metrics: dict[str, dict[str, Any]], notes: Notes) -> list[str]:
    cols = [("action transfer", "ground_truth.action_transfer.token_mse"),
            ("static target (baseline)", "ground_truth.action_transfer.baseline_token_mse"),
            ("rebinding", "ground_truth.rebinding.token_mse"),
            ("structure clip (baseline)", "ground_truth.rebinding.baseline_token_mse"),
            ("re-encoding check", "ground_truth.reencode_mse"),
            ("motion-isolation drift", "motion_isolation.drift"),
            ("true clip change", "motion_isolation.reference")]
    lines = [_row("model", [h for h, _ in cols]), _rule(len(cols) + 1)]
    lines += [_row(variant, [cell(m, key, notes, h) for h, key in cols]) for variant, m in metrics.items()]
    return lines


def _latent_table(metrics: dict[str, dict[str, Any]], notes: Notes) -> list[str]:
    cols = [("d_z", "latent_space.d_z"), ("effective rank", "latent_space.effective_rank"),
            ("active dims", "latent_space.active_dims"),
            ("inverse consistency cos(z(t→t+1), z(t+1→t))", "latent_space.inverse_consistency"),
            ("future leakage: shuffled-future z / true z one-step MSE", "future_leakage.ratio")]
    if any(lookup(m, "latent_space.codebook") is not None for m in metrics.values()):
        cols += [("codebook usage", "latent_space.codebook.usage"),
                 ("codebook perplexity", "latent_space.codebook.perplexity")]
    lines = [_row("model", [h for h, _ in cols]), _rule(len(cols) + 1)]
    for variant, m in metrics.items():
        cells = [DASH if key.startswith("latent_space.codebook") and "latent_space" in m
                 and lookup(m, "latent_space.codebook") is None else cell(m, key, notes, h) for h, key in cols]
        lines.append(_row(variant, cells))
    return lines


def _objects_table(metrics: dict[str, dict[str, Any]], notes: Notes) -> list[str]:
    """One row per (variant, multi-object store); empty when no variant has per-object numbers."""
    stores = sorted({name for m in metrics.values() for name in m.get("objects", {})})
    if not stores:
        return []
    counts = sorted({c for m in metrics.values() for o in m.get("objects", {}).values()
                     for c in o["per_object"]["r2_by_count"]}, key=int)
    head = [f"R², {c} object{'s' if c != '1' else ''}" for c in counts] + [
        "slots: assigned R²", "DCI disentanglement", "DCI of slots"]
    lines = [_row("model (store)", head), _rule(len(head) + 1)]
    for name in stores:
        for variant, m in metrics.items():
            key = f"objects.{name}"
            if lookup(m, key) is None:
                lines.append(_row(f"{variant} ({name})", [notes.ref(_reason(m, key, f"objects of {name}"))]
                                  + [DASH] * (len(head) - 1)))
                continue
            o = m["objects"][name]
            slots = (o.get("slots") or {}).get("assigned_r2")
            cells = [cell(m, f"{key}.per_object.r2_by_count.{c}", notes) for c in counts]
            cells.append(", ".join(notes.r2(v) for v in slots if v is not None) if slots else DASH)
            cells.append(number(o["dci"]["disentanglement"]) if o.get("dci") else DASH)
            cells.append(number(o["dci_slots"]["disentanglement"]) if o.get("dci_slots") else DASH)
            lines.append(_row(f"{variant} ({name})", cells))
    return lines


def _held_out_table(metrics: dict[str, dict[str, Any]], notes: Notes) -> list[str]:
    """One row per (variant, store of evaluate.held_out); empty when no store is held out."""
    stores = sorted({name for m in metrics.values() for name in m.get("held_out", {})}
                    | {key.split(".")[1] for m in metrics.values() for key in m.get("unavailable", {})
                       if key.startswith("held_out.") and key.count(".") == 1})
    cols = [("episodes", "episodes"), ("rollout / repeat", "ratio"), ("z usage", "z_usage"),
            ("rollout token MSE", "token_mse"), ("repeat last frame", "baseline.token_mse"),
            ("rollout cosine", "cosine")]
    lines = [_row("model (store)", [h for h, _ in cols]), _rule(len(cols) + 1)]
    for name in stores:
        lines += [_row(f"{variant} ({name})", [cell(m, f"held_out.{name}.{key}", notes, f"{h} on {name}")
                                               for h, key in cols])
                  for variant, m in metrics.items()]
    return lines if stores else []


def _header(metrics: dict[str, dict[str, Any]]) -> list[str]:
    first = next(iter(metrics.values()))
    weights = sorted({str(m.get("encoder_weights")) for m in metrics.values()})
    model = first.get("encoder", {}).get("model", "unknown")
    lines = ["# Evaluation", "", f"Dataset: {first.get('dataset')}. Encoder: {model}, weights {', '.join(weights)}."]
    if any(w.startswith("random-init") for w in weights):
        lines.append("**Random-init encoder: these tokens do not come from pretrained DINOv2 weights; "
                     "the numbers test the pipeline, they are not results.**")
    r = next((m["rollout"] for m in metrics.values() if "rollout" in m), None)
    if r is not None:
        lines.append(f"Rollouts: {r['episodes']} held-out episodes, {r['context']} context frame(s), "
                     f"horizon {r['horizon']}, frame_skip {r['frame_skip']}.")
    return lines


HOW_TO_READ = (
    f"z usage: the rollout's token MSE under another clip's z over that under the clip's own z; 1 means the "
    f"model ignores its latent action (target: {Z_TARGET}). Decoder read-out: the decoder's MSE reading s_t over "
    "reading the true s_{t+1}; 1 means it reads no motion from structure. Rollout / repeat last and "
    "teacher-forced / repeat last: the model's token MSE over repeating the last true frame on the same clips; "
    "below 1 beats that trivial baseline. Probe R²: a ridge probe from z to the true actions, scored on held-out "
    "episodes; 1 is perfect, 0 is no better than predicting the mean action, below 0 worse.")
HOW_TO_READ_PLANNING = " Planning success: the share of held-out goals reached (see Planning)."


def format_table(metrics: dict[str, dict[str, Any]], pusht: str | None = None,
                 plans: dict[str, Any] | None = None, seeds: dict[str, Any] | None = None) -> str:
    """table.md for metrics {variant: details.json content} (in row order); `pusht` names the
    probed dataset set beside the paper's Push-T probe (none when None); `plans` adds the
    planning column and table, `seeds` ({"table": seed_table(...), "missing": {variant: why}}) the
    seeds table."""
    if not metrics:
        raise ValueError("format_table: no variants to report")
    notes = Notes()
    lines = _header(metrics) + ["", "## Headline", ""]
    lines += _headline_table(metrics, plans, notes)
    findings = _findings(metrics, plans)
    lines += ["", *findings] if findings else []
    lines += ["", HOW_TO_READ + (HOW_TO_READ_PLANNING if plans is not None else "")]
    lines += ["", "## Ablation, in detail (lower is better, except SSIM, cosine and R²)", ""]
    lines += _main_table(metrics, notes)
    lines += ["", "Token errors are on normalized tokens; SSIM/LPIPS compare decoded rollouts with decoded true "
              "tokens; probe MSE is in train-set standard deviations of each action dimension."]
    held_out = _held_out_table(metrics, notes)
    if held_out:
        lines += ["", "## Held-out stores (evaluate.held_out: rollouts on other datasets' held-out episodes)", "",
                  "The rollout above, on each store's validation episodes, in that store's normalisation; "
                  "rollout / repeat below 1 beats repeating the last frame.", "", *held_out]
    lines += ["", "## Synthetic ground truth (token MSE, lower is better)", ""]
    lines += _truth_table(metrics, notes)
    lines += ["", "## Latent space (the shape of z; no eyes needed)", "",
              "Effective rank: exp of the entropy of z's singular values (d_z when isotropic, 1 on a line). "
              "Active dims: variance >= 1% of the largest. Inverse consistency: -1 when reversing a "
              "transition gives the opposite action. Future leakage: above 1 when z carries the true next "
              "frame's motion; 1 means z is ignored, or (if the one-step error beats repeating the frame) "
              "the future reaches the prediction another way.", ""]
    lines += _latent_table(metrics, notes)
    objects = _objects_table(metrics, notes)
    if objects:
        lines += ["", "## Objects (per-object probes on the multi-object stores; R², higher is better)", "",
                  "Per object: ridge probe from the whole z to each object's action, by the number of objects "
                  "in the episode. Slots: each slot's chunk of z alone, slots matched one-to-one to objects by "
                  "the best assignment (factored models). DCI: disentanglement of the codes' importance for the "
                  "objects (1: each code serves one).", ""]
        lines += objects
    if seeds is not None:
        def stats(key: str, s: dict[str, Any]) -> str:
            text = spread_text(s["mean"], s["sd"])
            return text + (f" {notes.mark(NEGATIVE_R2)}" if key.startswith("r2_") and s["mean"] < 0 else "")

        lines += ["", *seeds_lines(seeds["table"], seeds["missing"], notes.ref, stats)]
    if plans is not None:
        lines += ["", *planning.table(plans, notes.ref, number, notes.r2)]
    against = comparison(metrics, pusht)
    lines += ["", *against] if against else []
    if notes.reasons:
        lines += ["", "## Notes", "", *notes.lines()]
    return "\n".join(lines) + "\n"


def plot_rollout_error(metrics: dict[str, dict[str, Any]], seed_curves: dict[str, dict[int, Any]] | None = None):
    """The rollout-error Figure (`report_figures.rollout_error`); None when no variant has rollouts."""
    return figures_.rollout_error(metrics, seed_curves)


def headline(metrics: dict[str, dict[str, Any]], plans: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's DVC metrics file, headline keys only: per variant rollout_ratio (rollout / repeat-last
    token MSE: below 1 beats repeating the last frame) and z_usage (other-z / own-z: 1 means z is
    ignored), and with `plans` its plan_success beside plan_random and plan_simulator (random actions'
    and the simulator's success rates). Null where a variant lacks the number (table.md's notes say
    why). Few keys, so `dvc metrics show` and `dvc exp show` compare variants on one screen."""
    bases = {lookup(m, "rollout.baseline.token_mse") for m in metrics.values()} - {None}
    if len(bases) > 1:  # every variant rolls out the same clips, so one baseline; anything else is a bug
        raise ValueError(f"variants disagree on the repeat-last-frame baseline: {sorted(bases)}")
    out: dict[str, Any] = {}
    planned = planning.numbers(plans) if plans is not None else None
    if planned is not None:
        out.update(plan_random=planned["plan_random"], plan_simulator=planned["plan_simulator"])
    for variant, m in metrics.items():
        out[variant] = {"rollout_ratio": _rollout_ratio(m), "z_usage": lookup(m, "rollout.z_usage")}
        if m.get("held_out"):
            out[variant]["held_out_ratio"] = {n: lookup(m, f"held_out.{n}.ratio") for n in sorted(m["held_out"])}
        if planned is not None:
            out[variant]["plan_success"] = planned["variants"].get(variant)
    return out


def _save(fig, paths: list[tuple[Path, int]]) -> list[Path]:
    """fig written to each (path, dpi); stale files at those paths removed when there is no figure."""
    for path, dpi in paths:
        path.unlink(missing_ok=True)
        if fig is not None:
            fig.savefig(path, dpi=dpi)
    return [p for p, _ in paths] if fig is not None else []


def write_report(out_dir: Path, metrics: dict[str, dict[str, Any]],
                 latents: dict[str, dict[str, np.ndarray]], pusht: str | None = None, seed: int = 0,
                 plans: dict[str, Any] | None = None, seeds: dict[str, Any] | None = None,
                 learning: dict[str, dict[str, Any]] | None = None,
                 seed_curves: dict[str, dict[int, Any]] | None = None, figures: Path | None = None) -> Path:
    """metrics.json, table.md, curves/ and the plots under out_dir (latent maps seeded by `seed`; with
    `plans` the planning table, see report_planning; with `seeds` the seeds table and seeds.json, see
    replicas; `learning` {variant: {"step", "value"} or {"unavailable"}} the phase-1 validation L_e
    curves; `seed_curves` {variant: {seed: rollout curves}} the seed bands), and the two main figures
    again in `figures` where given; returns table.md's path. Stale plots are removed."""
    plots, curves = out_dir / "plots", out_dir / "curves"
    plots.mkdir(parents=True, exist_ok=True)
    curves.mkdir(parents=True, exist_ok=True)
    for old in plots.glob("*.png"):
        old.unlink()
    learning = learning or {}
    if figures is not None:
        figures.mkdir(parents=True, exist_ok=True)
    for name, fig in (("rollout_error.png", figures_.rollout_error(metrics, seed_curves)),
                      ("learning.png", figures_.learning(metrics, learning))):
        _save(fig, [(plots / name, PLOT_DPI)] + ([(figures / name, FIGURE_DPI)] if figures is not None else []))
    for variant, lat in latents.items():
        plot_variant(variant, lat, plots / f"latents_{variant}.png", seed)
    (curves / "rollout.tsv").write_text(figures_.tsv(("variant", "curve", "step", "token_mse"),
                                                     figures_.rollout_rows(metrics)))
    (curves / "learning.tsv").write_text(figures_.tsv(("variant", "curve", "step", "L_e"),
                                                      figures_.learning_rows(learning)))
    (out_dir / "metrics.json").write_text(json.dumps(headline(metrics, plans), indent=1, allow_nan=False) + "\n")
    (out_dir / "seeds.json").unlink(missing_ok=True)
    if seeds is not None:  # mean / sd / n over seeds per variant (a plain file beside the table)
        (out_dir / "seeds.json").write_text(json.dumps(seeds["table"], indent=1, allow_nan=False) + "\n")
    table = out_dir / "table.md"
    table.write_text(format_table(metrics, pusht, plans, seeds))
    return table
