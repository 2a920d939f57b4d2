"""The paper's numbers beside ours, and whether the ablation ordering agrees (for table.md).

Paper numbers, from the DiLA paper: the ablation on SSv2 + RT-1 (LPIPS of decoded frames,
lower is better) and the out-of-domain Push-T probe MSE of z to the true actions. Our columns are
what the evaluate stage measured on this run's data: LPIPS where it was computed, token
MSE otherwise, so only the *ordering* of the models can be compared, never the values.
A variant maps to a paper row by its (variant, bottleneck); others are left out.
"""
from __future__ import annotations

from typing import Any

PAPER_ROWS = {("dila", "continuous"): "DiLA", ("no_content", "continuous"): "w/o content",
              ("dila", "nsvq"): "Discrete z", ("dila", "gaussian"): "Gaussian z"}
# column -> (paper value per row, our metric keys in order of preference)
ABLATION = {
    "rollouts": ({"w/o content": 0.344, "Discrete z": 0.334, "Gaussian z": 0.346, "DiLA": 0.263},
                 ("rollout.lpips", "rollout.token_mse")),
    "cycle transfer": ({"w/o content": 0.451, "Discrete z": 0.442, "Gaussian z": 0.434, "DiLA": 0.343},
                       ("cycle_transfer.lpips", "cycle_transfer.token_mse")),
    "MSE @ N steps": ({"w/o content": 0.249, "Discrete z": 0.262, "Gaussian z": 0.265, "DiLA": 0.216},
                      ("teacher_forced.val_mse",)),
}
PUSHT_PROBE = {"DiLA": 0.009, "Discrete z": 0.023, "Gaussian z": 0.041}


def lookup(m: dict[str, Any], key: str) -> Any:
    """m[a][b][c] for key "a.b.c"; None where a part is missing."""
    node: Any = m
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def paper_row(m: dict[str, Any]) -> str | None:
    model = m.get("model") or {}
    return PAPER_ROWS.get((model.get("variant"), model.get("bottleneck")))


def order(values: dict[str, float]) -> list[str]:
    """Row names from best (lowest) to worst; ties keep the given order."""
    return sorted(values, key=lambda name: values[name])


def verdict(paper: dict[str, float], ours: dict[str, float]) -> str:
    """Whether our ordering of the rows both have agrees with the paper's, in words."""
    shared = [name for name in paper if name in ours]
    if len(shared) < 2:
        return "fewer than two comparable models"
    want, got = order({n: paper[n] for n in shared}), order({n: ours[n] for n in shared})
    if want == got:
        return "agrees (same order)"
    best = "same best model" if want[0] == got[0] else f"paper's best ({want[0]}) is #{got.index(want[0]) + 1} here"
    return f"disagrees ({best})"


def _rows(metrics: dict[str, dict[str, Any]], among: dict[str, float]) -> dict[str, dict[str, Any]]:
    """{paper row: metrics} of the variants that map to a row of `among`."""
    rows = ((paper_row(m), m) for m in metrics.values())
    return {row: m for row, m in rows if row in among}


def _ours(metrics: dict[str, dict[str, Any]], keys: tuple[str, ...],
          among: dict[str, float]) -> tuple[dict[str, float], str | None]:
    """Our value per paper row of `among` from the first key every such variant has, and that key."""
    rows = _rows(metrics, among)
    for key in keys:
        values = {row: lookup(m, key) for row, m in rows.items()}
        if values and all(v is not None for v in values.values()):
            return {row: float(v) for row, v in values.items()}, key
    return {}, None


def _line(name: str, cells: list[str]) -> str:
    return "| " + " | ".join([name, *cells]) + " |"


def comparison(metrics: dict[str, dict[str, Any]], probe_dataset: str | None = "pusht") -> list[str]:
    """Markdown lines: the paper's ablation and its Push-T probe beside ours (our probe on dataset
    `probe_dataset`; none when None), and the ordering verdicts; empty when no variant maps to a
    paper row."""
    if not any(paper_row(m) is not None for m in metrics.values()):
        return []
    lines = ["## Against the paper (only the ordering is comparable)", "",
             "| column | ours (metric) | paper order (best first) | our order | ordering |", "|---|---|---|---|---|"]
    for column, (paper, keys) in ABLATION.items():
        ours, key = _ours(metrics, keys, paper)
        got = " < ".join(order(ours)) if ours else "not measured"
        lines.append(_line(column, [key or "—", " < ".join(order(paper)), got,
                                    verdict(paper, ours) if ours else "—"]))
    return lines if probe_dataset is None else lines + _probe(metrics, probe_dataset)


def _probe(metrics: dict[str, dict[str, Any]], probe_dataset: str) -> list[str]:
    ours, _ = _ours(metrics, (f"probe.{probe_dataset}.mse",), PUSHT_PROBE)
    weights = ", ".join(sorted({str(m.get("encoder_weights")) for m in metrics.values()}))
    random = " — **a random-init encoder, not pretrained DINOv2**" if "random-init" in weights else ""
    lines = ["", f"Linear probe of z to the true `{probe_dataset}` actions, out of domain (MSE, lower is better). "
             f"Paper: pretrained DINOv2-with-registers-base. Ours: encoder weights {weights}{random}; models "
             "trained on the train dataset only; MSE in train-set standard deviations (the paper's scale is "
             "not stated, so compare orderings, not values).", "",
             "| model | paper MSE | our MSE | our R² |", "|---|---|---|---|"]
    rows = _rows(metrics, PUSHT_PROBE)
    for row, paper_mse in PUSHT_PROBE.items():
        m = rows.get(row, {})
        mse, r2 = lookup(m, f"probe.{probe_dataset}.mse"), lookup(m, f"probe.{probe_dataset}.r2")
        lines.append(_line(row, [f"{paper_mse:g}", "—" if mse is None else f"{mse:.4g}",
                                 "—" if r2 is None else f"{r2:.4g}"]))
    if ours:
        lines += ["", f"Probe ordering: {verdict(PUSHT_PROBE, ours)}."]
    return lines
