"""The evaluation report: a Markdown table shaped like the paper's ablation table, and plots.

Input: every variant's evaluation details (details.json, the evaluate stage's schema, see
stages/evaluate.py) and, where present, its latents (z (M, d_z), family (M,), families
(names)). Output under the report directory (`paths.report`):

    metrics.json              the DVC metrics of the whole run: repeat_mse, then per variant its
                              rollout_mse and z_usage (see `headline`)
    seeds.json                the second DVC metrics file: per variant, mean / sd / n over training
                              seeds of its headline numbers (pipeline/evaluation/seeds.py)
    table.md                  rows = variants + the "repeat last frame" baseline; then the
                              paper's numbers beside ours (pipeline/evaluation/paper.py)
    plots/rollout_error.png   token MSE and cosine vs horizon step, per variant, with the baseline
    plots/latents_<variant>.png  z of one variant in 2-D (UMAP where `umap-learn` is installed,
                              else PCA; the title says which), coloured by transform family and
                              by the size of the true action (pipeline/evaluation/latent_plots.py)

A value that could not be computed reads "n/a [k]" in its cell, with note k giving the
reason recorded in details.json. The header names the encoder weights, so a run on a
random-init encoder is never read as a pretrained one.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pipeline.evaluation import report_planning as planning
from pipeline.evaluation.latent_plots import plot_variant
from pipeline.evaluation.paper import comparison, lookup
from pipeline.evaluation.seeds import seeds_lines

BASELINE = "repeat last frame"
DASH = "—"


def _reason(m: dict[str, Any], key: str) -> str:
    """The recorded reason for `key` or for the closest section holding it."""
    unavailable = m.get("unavailable", {})
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in unavailable:
            return unavailable[prefix]
    return f"{key} not recorded in details.json"


class Notes:
    """Numbered footnotes; the same reason always gets the same number."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def ref(self, reason: str) -> str:
        if reason not in self.reasons:
            self.reasons.append(reason)
        return f"n/a [{self.reasons.index(reason) + 1}]"

    def lines(self) -> list[str]:
        return [f"[{i}] {reason}" for i, reason in enumerate(self.reasons, 1)]


def number(value: float) -> str:
    return f"{value:.4g}"


def cell(m: dict[str, Any], key: str, notes: Notes) -> str:
    value = lookup(m, key)
    return notes.ref(_reason(m, key)) if value is None else number(value)


def _columns(metrics: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """(header, metrics key) of the main table; one group of probe columns per probe dataset."""
    cols = [("z used: other-z / own-z rollout MSE", "rollout.z_usage"),
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


def _row(name: str, cells: list[str]) -> str:
    return "| " + " | ".join([name, *cells]) + " |"


def _main_table(metrics: dict[str, dict[str, Any]], notes: Notes) -> list[str]:
    cols = _columns(metrics)
    lines = [_row("model", [h for h, _ in cols]), "|" + "---|" * (len(cols) + 1)]
    for variant, m in metrics.items():
        cells = []
        for header, key in cols:
            text = cell(m, key, notes)
            if key == "teacher_forced.val_mse" and lookup(m, key) is not None:
                text += f" @ {lookup(m, 'teacher_forced.step')} steps"
            cells.append(text)
        lines.append(_row(variant, cells))
    source = next((m for m in metrics.values() if "rollout" in m), None)
    baseline = {"rollout.token_mse": "rollout.baseline.token_mse", "rollout.ssim": "rollout.baseline.ssim",
                "rollout.lpips": "rollout.baseline.lpips",
                "cycle_transfer.token_mse": "cycle_transfer.baseline_token_mse",
                "teacher_forced.clips_val_mse": "teacher_forced.baseline_val_mse"}
    cells = [DASH if key not in baseline else
             (cell(source, baseline[key], notes) if source is not None else notes.ref("no variant has rollouts"))
             for _, key in cols]
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
    lines = [_row("model", [h for h, _ in cols]), "|" + "---|" * (len(cols) + 1)]
    lines += [_row(variant, [cell(m, key, notes) for _, key in cols]) for variant, m in metrics.items()]
    return lines


def _latent_table(metrics: dict[str, dict[str, Any]], notes: Notes) -> list[str]:
    cols = [("d_z", "latent_space.d_z"), ("effective rank", "latent_space.effective_rank"),
            ("active dims", "latent_space.active_dims"),
            ("inverse consistency cos(z(t→t+1), z(t+1→t))", "latent_space.inverse_consistency"),
            ("future leakage: shuffled-future z / true z one-step MSE", "future_leakage.ratio")]
    if any(lookup(m, "latent_space.codebook") is not None for m in metrics.values()):
        cols += [("codebook usage", "latent_space.codebook.usage"),
                 ("codebook perplexity", "latent_space.codebook.perplexity")]
    lines = [_row("model", [h for h, _ in cols]), "|" + "---|" * (len(cols) + 1)]
    for variant, m in metrics.items():
        cells = [DASH if key.startswith("latent_space.codebook") and "latent_space" in m
                 and lookup(m, "latent_space.codebook") is None else cell(m, key, notes) for _, key in cols]
        lines.append(_row(variant, cells))
    return lines


def _objects_table(metrics: dict[str, dict[str, Any]], notes: Notes) -> list[str]:
    """One row per (variant, multi-object store); empty when no variant has per-object numbers."""
    stores = sorted({name for m in metrics.values() for name in m.get("objects", {})})
    if not stores:
        return []
    counts = sorted({c for m in metrics.values() for o in m.get("objects", {}).values()
                     for c in o["per_object"]["r2_by_count"]})
    head = [f"R², {c} object(s)" for c in counts] + ["slots: assigned R²", "DCI disentanglement",
                                                     "DCI of slots"]
    lines = [_row("model (store)", head), "|" + "---|" * (len(head) + 1)]
    for name in stores:
        for variant, m in metrics.items():
            key = f"objects.{name}"
            if lookup(m, key) is None:
                lines.append(_row(f"{variant} ({name})", [notes.ref(_reason(m, key))] + [DASH] * (len(head) - 1)))
                continue
            o = m["objects"][name]
            slots = (o.get("slots") or {}).get("assigned_r2")
            cells = [cell(m, f"{key}.per_object.r2_by_count.{c}", notes) for c in counts]
            cells.append(", ".join(number(v) for v in slots if v is not None) if slots else DASH)
            cells.append(number(o["dci"]["disentanglement"]) if o.get("dci") else DASH)
            cells.append(number(o["dci_slots"]["disentanglement"]) if o.get("dci_slots") else DASH)
            lines.append(_row(f"{variant} ({name})", cells))
    return lines


def _held_out_table(metrics: dict[str, dict[str, Any]], notes: Notes) -> list[str]:
    """One row per (variant, store of evaluate.held_out); empty when no store is held out."""
    stores = sorted({name for m in metrics.values() for name in m.get("held_out", {})}
                    | {key.split(".")[1] for m in metrics.values() for key in m.get("unavailable", {})
                       if key.startswith("held_out.") and key.count(".") == 1})
    cols = [("episodes", "episodes"), ("rollout / repeat", "ratio"), ("z used", "z_usage"),
            ("rollout token MSE", "token_mse"), ("repeat last frame", "baseline.token_mse"),
            ("rollout cosine", "cosine")]
    lines = [_row("model (store)", [h for h, _ in cols]), "|" + "---|" * (len(cols) + 1)]
    for name in stores:
        lines += [_row(f"{variant} ({name})", [cell(m, f"held_out.{name}.{key}", notes) for _, key in cols])
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


def format_table(metrics: dict[str, dict[str, Any]], pusht: str | None = None,
                 plans: dict[str, Any] | None = None, seeds: dict[str, Any] | None = None) -> str:
    """table.md for metrics {variant: details.json content} (in row order); `pusht` names the
    probed dataset set beside the paper's Push-T probe (none when None); `plans` adds the
    planning table, `seeds` ({"table": seed_table(...), "missing": {variant: why}}) the seeds table."""
    if not metrics:
        raise ValueError("format_table: no variants to report")
    notes = Notes()
    lines = _header(metrics) + ["", "## Ablation (lower is better, except SSIM, cosine and R²)", ""]
    lines += _main_table(metrics, notes)
    lines += ["", "Read the first two columns first. z used: 1.00 means the model ignores its latent action "
              "(the default run must reach 1.5). Decoder read-out: 1.00 means the decoder does not read motion "
              "from structure. A model at 1.00 on either describes no learned dynamics, whatever its other numbers.",
              "", "Token errors are on normalized tokens; SSIM/LPIPS compare decoded rollouts with decoded true "
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
                  "Per object: ridge probe from the whole z to each object's action. Slots: each slot's chunk "
                  "of z alone, slots matched one-to-one to objects by the best assignment (factored models). "
                  "DCI: disentanglement of the codes' importance for the objects (1: each code serves one).", ""]
        lines += objects
    if seeds is not None:
        lines += ["", *seeds_lines(seeds["table"], seeds["missing"], notes.ref, number)]
    if plans is not None:
        lines += ["", *planning.table(plans, notes.ref, number)]
    against = comparison(metrics, pusht)
    lines += ["", *against] if against else []
    if notes.reasons:
        lines += ["", "## Notes", "", *notes.lines()]
    return "\n".join(lines) + "\n"


def plot_rollout_error(metrics: dict[str, dict[str, Any]], path: Path) -> Path | None:
    """Token MSE and cosine vs horizon step per variant, with the baseline; None when no rollouts."""
    rolled = {v: m["rollout"] for v, m in metrics.items() if "rollout" in m}
    if not rolled:
        return None
    fig = Figure(figsize=(10, 4), layout="constrained")
    for ax, key, label in zip(fig.subplots(1, 2), ("token_mse", "cosine"), ("token MSE", "token cosine")):
        for variant, r in rolled.items():
            values = r[f"{key}_per_step"]
            ax.plot(range(1, len(values) + 1), values, marker="o", ms=3, label=variant)
        base = next(iter(rolled.values()))["baseline"][f"{key}_per_step"]
        ax.plot(range(1, len(base) + 1), base, "k--", label=BASELINE)
        ax.set(xlabel="horizon step", ylabel=label, title=f"rollout {label}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    return path


def headline(metrics: dict[str, dict[str, Any]], plans: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's metrics file: the two numbers that say whether a variant learned anything (does it
    beat repeating the last frame, does it use z) for every variant, beside the baseline, and with
    `plans` the planning success rates (each variant's, random actions', the simulator's). Null
    where a variant lacks the number (table.md's notes say why). One file with few keys, so
    `dvc metrics show` and `dvc exp show` compare variants in one row."""
    bases = {lookup(m, "rollout.baseline.token_mse") for m in metrics.values()} - {None}
    if len(bases) > 1:  # every variant rolls out the same clips, so one baseline; anything else is a bug
        raise ValueError(f"variants disagree on the repeat-last-frame baseline: {sorted(bases)}")
    out: dict[str, Any] = {"repeat_mse": bases.pop() if bases else None}
    planned = planning.numbers(plans) if plans is not None else None
    if planned is not None:
        out.update(plan_random=planned["plan_random"], plan_simulator=planned["plan_simulator"])
    for variant, m in metrics.items():
        out[variant] = {"rollout_mse": lookup(m, "rollout.token_mse"), "z_usage": lookup(m, "rollout.z_usage")}
        if m.get("held_out"):
            out[variant]["held_out_ratio"] = {n: lookup(m, f"held_out.{n}.ratio") for n in sorted(m["held_out"])}
        if planned is not None:
            out[variant]["plan_success"] = planned["variants"].get(variant)
    return out


def write_report(out_dir: Path, metrics: dict[str, dict[str, Any]],
                 latents: dict[str, dict[str, np.ndarray]], pusht: str | None = None, seed: int = 0,
                 plans: dict[str, Any] | None = None, seeds: dict[str, Any] | None = None) -> Path:
    """metrics.json, table.md and the plots under out_dir (latent maps seeded by `seed`; with `plans`
    the planning table, see report_planning; with `seeds` the seeds table and seeds.json, see
    replicas); returns table.md's path. Stale plots are removed."""
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    for old in plots.glob("*.png"):
        old.unlink()
    plot_rollout_error(metrics, plots / "rollout_error.png")
    for variant, lat in latents.items():
        plot_variant(variant, lat, plots / f"latents_{variant}.png", seed)
    (out_dir / "metrics.json").write_text(json.dumps(headline(metrics, plans), indent=1, allow_nan=False) + "\n")
    if seeds is not None:  # the second DVC metrics file: mean / sd / n over seeds per variant
        (out_dir / "seeds.json").write_text(json.dumps(seeds["table"], indent=1, allow_nan=False) + "\n")
    table = out_dir / "table.md"
    table.write_text(format_table(metrics, pusht, plans, seeds))
    return table
