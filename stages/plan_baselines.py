"""Stage `plan_baselines`: the planning tasks of `plan@<variant>` solved by random actions and by the
same MPPI with train.dataset's simulator as its model (the upper bound), judged by the simulator
(`pipeline.planning.baselines.baselines`). A dataset without a simulator gets a file that says why."""
from __future__ import annotations

from pathlib import Path

from pipeline import artifacts
from pipeline.params import Params
from pipeline.planning.latent import NoPlanning
from pipeline.planning.baselines import baselines


def run(params: Params) -> Path:
    """Writes and returns <paths.plan>/baselines.json."""
    try:
        result = baselines(params)
    except NoPlanning as err:
        result = {"dataset": params.train.dataset, "random": None, "simulator": None, "unavailable": str(err)}
    return artifacts.write_json(artifacts.plan_baselines_path(params), result)
