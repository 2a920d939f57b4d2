"""The report's planning table and numbers, from the plan stages' files (`pipeline.planning`).

`plans` = {"baselines": baselines.json, "variants": {variant: <variant>.json}}; a file the plan
stages could not fill holds "unavailable" (the reason), and a file that does not exist is given
one by the report stage. The normalised score is a world model's success rate over the
simulator-as-model planner's on the same tasks (VP²'s normalisation by its simulator).
"""
from __future__ import annotations

from typing import Any


def _rate(result: dict[str, Any] | None) -> float | None:
    return None if not result else result.get("success_rate")


def numbers(plans: dict[str, Any]) -> dict[str, Any]:
    """{"plan_random", "plan_simulator", "variants": {variant: success rate}} (None where absent)."""
    base = plans.get("baselines") or {}
    return {"plan_random": _rate(base.get("random")), "plan_simulator": _rate(base.get("simulator")),
            "variants": {v: _rate(r) for v, r in plans.get("variants", {}).items()}}


def table(plans: dict[str, Any], ref, fmt, fmt_explained=None) -> list[str]:
    """Markdown lines of the planning table; `ref(reason)` makes a note, `fmt(number)` a cell and
    `fmt_explained(number)` the adapter's explained-variance cell (an R²: below 0 it is worse than
    predicting the mean z; `fmt` when None)."""
    fmt_explained = fmt_explained or fmt
    base = plans.get("baselines") or {}
    sim = _rate(base.get("simulator"))

    def cells(result: dict[str, Any], explained: bool) -> list[str]:
        rate = result.get("success_rate")
        if rate is None:
            return [ref(result.get("unavailable", "not planned")), "—", "—"]
        norm = fmt(rate / sim) if sim else ref("the simulator-as-model planner reached no goal: "
                                               "nothing to normalise by")
        adapter = (result.get("adapter") or {}).get("explained")
        return [fmt(rate), norm, fmt_explained(adapter) if explained and adapter is not None else "—"]

    goals = base.get("goals") or next((r.get("goals") for r in plans.get("variants", {}).values() if r.get("goals")), 0)
    where = f"{base['dataset']}'s simulator" if base.get("dataset") else "the simulator"
    lines = [f"## Planning: success rate on {goals} held-out goals in {where}", "",
             "MPPI over true actions toward a goal state taken from a held-out episode; the simulator alone "
             "judges success. World models plan through the action adapter (a → z); the simulator as the "
             "planner's model is the upper bound that normalises the score.", "",
             "| planner | success rate | normalised by the simulator | adapter: variance of z explained |",
             "|---|---|---|---|"]
    for variant, result in plans.get("variants", {}).items():
        lines.append(f"| {variant} | " + " | ".join(cells(result, True)) + " |")
    for name, key in (("random actions", "random"), ("simulator as model (upper bound)", "simulator")):
        result = base.get(key) or {"unavailable": base.get("unavailable", "plan_baselines has not run")}
        lines.append(f"| {name} | " + " | ".join(cells(result, False)) + " |")
    return lines
