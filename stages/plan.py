"""Stage `plan@<variant>`: MPPI over true actions through the action adapter and the variant's final
world model, toward goal frames of held-out episodes of train.dataset, judged by train.dataset's
own simulator (`pipeline.planning.run.world_model_planner`). A variant without latent actions, or
a dataset without a simulator, gets a file that says why instead of numbers."""
from __future__ import annotations

from pathlib import Path

from pipeline import artifacts
from pipeline.params import Params
from pipeline.planning.latent import NoPlanning
from pipeline.planning.run import world_model_planner


def run(params: Params, variant: str) -> Path:
    """Plan with `variant`; writes and returns <paths.plan>/<variant>.json."""
    params.variant(variant)
    try:
        result = world_model_planner(params, variant)
    except NoPlanning as err:
        result = {"variant": variant, "dataset": params.train.dataset, "success_rate": None, "unavailable": str(err)}
    return artifacts.write_json(artifacts.plan_path(params, variant), result)
