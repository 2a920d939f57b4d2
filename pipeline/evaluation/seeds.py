"""The headline numbers of a variant, and their mean and spread over training seeds.

`headline` is the one definition of a variant's headline numbers (the evaluate stage's
metrics.json keys, and what `replicas@` records per seed); `seed_table` gathers the main run
(seed `seed`) and the replicas into mean / sd / n per variant, the report's seeds table
(`seeds_lines`) and its seeds.json.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.evaluation.paper import lookup
from pipeline.params_eval import EvaluateParams


def headline(details: dict[str, Any], evaluate: EvaluateParams) -> dict[str, float | None]:
    """A variant's headline numbers from its evaluation details: the same keys for every variant
    (null where a number does not exist for it; the details say why)."""
    keys = {"rollout_mse": "rollout.token_mse", "repeat_mse": "rollout.baseline.token_mse",
            "z_usage": "rollout.z_usage", "readout": "teacher_forced.readout.ratio",
            "tf_mse": "teacher_forced.clips_val_mse",
            **{f"r2_{name}": f"probe.{name}.r2" for name in evaluate.probe_datasets},
            **{f"held_out_ratio_{name}": f"held_out.{name}.ratio" for name in evaluate.held_out}}
    return {name: lookup(details, key) for name, key in keys.items()}


def _ratio(h: dict[str, float | None]) -> float | None:
    a, b = h.get("rollout_mse"), h.get("repeat_mse")
    return a / b if a is not None and b else None


def spread(values: list[float | None]) -> dict[str, float | int | None]:
    """mean, sample sd (null below 2 values) and n of the non-null values."""
    x = np.array([v for v in values if v is not None], np.float64)
    return {"mean": float(x.mean()) if len(x) else None, "sd": float(x.std(ddof=1)) if len(x) > 1 else None,
            "n": int(len(x))}


def seed_table(runs: dict[str, dict[int, dict[str, float | None]]]) -> dict[str, Any]:
    """{variant: {seed: headline}} -> {variant: {"seeds": [...], metric: {mean, sd, n}}} over the
    headline numbers plus rollout_ratio = rollout_mse / repeat_mse (below 1 beats repeating the
    last frame)."""
    out: dict[str, Any] = {}
    for variant, by_seed in runs.items():
        rows = [{**h, "rollout_ratio": _ratio(h)} for h in by_seed.values()]
        keys = [k for k in rows[0] if k != "repeat_mse"] if rows else []
        out[variant] = {"seeds": sorted(by_seed), **{k: spread([row.get(k) for row in rows]) for k in keys}}
    return out


COLUMNS = (("rollout / repeat", "rollout_ratio"), ("z usage", "z_usage"), ("read-out", "readout"),
           ("teacher-forced MSE", "tf_mse"))


def seeds_lines(table: dict[str, Any], missing: dict[str, str], ref, stats) -> list[str]:
    """Markdown lines of the report's seeds table from `seed_table`'s output; `missing` holds the
    reason a variant's replicas are absent, `ref(reason)` makes a note, `stats(key, {mean, sd, n})`
    the cell of a number that exists."""
    probes = sorted({k for row in table.values() for k in row if k.startswith("r2_")})
    held = sorted({k for row in table.values() for k in row if k.startswith("held_out_ratio_")})
    cols = [*COLUMNS, *((f"R² {k[3:]}", k) for k in probes),
            *((f"rollout / repeat {k[len('held_out_ratio_'):]}", k) for k in held)]
    lines = ["## Over training seeds (mean ± sd; data, split and encoder fixed)", "",
             "Each variant trained again from each of replicas.seeds, scored as the evaluate stage scores "
             "the main run (whose seed is the first). rollout / repeat below 1 beats repeating the last "
             "frame; z usage and read-out as in the headline table.", "",
             "| variant | seeds | " + " | ".join(h for h, _ in cols) + " |", "|---|---|" + "---|" * len(cols)]

    def cell(key: str, s: dict[str, Any]) -> str:
        return "—" if s["mean"] is None else stats(key, s)

    for variant, row in table.items():
        seeds = ", ".join(map(str, row["seeds"]))
        if variant in missing:
            seeds += f"; replicas {ref(missing[variant])}"
        lines.append(f"| {variant} | {seeds} | " + " | ".join(cell(k, row[k]) for _, k in cols) + " |")
    return lines
