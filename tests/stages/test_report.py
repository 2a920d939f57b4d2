import json
from pathlib import Path

import pytest

from pipeline.artifacts import MissingInput
from stages import report
from tests.stages.conftest import ONLY_DILA
from tests.stages.helpers import stage_params


def test_writes_the_table_and_plots(run):
    table = report.run(run.params)
    text = table.read_text()
    assert table == Path(run.params.paths.report) / "table.md"
    assert "\n| dila | " in text and "\n| repeat last frame | " in text and "random-init (seed 0)" in text
    m = json.loads((table.parent / "metrics.json").read_text())
    assert m == {"repeat_mse": run.headline["repeat_mse"], "plan_random": None, "plan_simulator": None,
                 "dila": {"rollout_mse": run.headline["rollout_mse"], "z_usage": run.headline["z_usage"],
                          "plan_success": None}}  # the plan stages have not run here
    assert "run `dila plan-baselines` first" in text and "run `dila plan dila` first" in text
    assert sorted(p.name for p in (table.parent / "plots").iterdir()) == ["latents_dila.png", "rollout_error.png"]


def test_a_variant_without_metrics_names_the_stage_to_run(run):
    p = stage_params(run.tmp, ONLY_DILA, "variants.other.variant=dila")
    with pytest.raises(MissingInput, match="run `dila evaluate other` first"):
        report.run(p)
