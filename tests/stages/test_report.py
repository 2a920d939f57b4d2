import dataclasses
import json
from pathlib import Path

import pytest

from dila_core.world_model import PREDICTION_LOSS
from pipeline import artifacts
from pipeline.artifacts import MissingInput
from stages import report
from tests.stages.conftest import ONLY_DILA
from tests.stages.helpers import private, stage_params


def test_writes_the_table_figures_curves_and_plots(run, tmp_path):
    figures = tmp_path / "figures"
    table = report.run(run.params, figures=figures)
    text = table.read_text()
    assert table == Path(run.params.paths.report) / "table.md"
    assert "\n| dila | " in text and "\n| repeat last frame | " in text and "random-init (seed 0)" in text
    assert text.index("## Headline") < text.index("## Ablation, in detail")
    m = json.loads((table.parent / "metrics.json").read_text())
    ratio = run.headline["rollout_mse"] / run.headline["repeat_mse"]
    assert m == {"plan_random": None, "plan_simulator": None,
                 "dila": {"rollout_ratio": pytest.approx(ratio), "z_usage": run.headline["z_usage"],
                          "plan_success": None}}  # the plan stages have not run here
    assert "run `dila plan-baselines` first" in text and "run `dila plan dila` first" in text
    # no training logs in this fixture: no learning curve to draw
    assert sorted(p.name for p in (table.parent / "plots").iterdir()) == ["latents_dila.png", "rollout_error.png"]
    assert sorted(p.name for p in figures.iterdir()) == ["rollout_error.png"]
    assert sorted(p.name for p in (table.parent / "curves").iterdir()) == ["learning.tsv", "rollout.tsv"]
    assert (table.parent / "seeds.json").is_file()


def test_the_learning_curve_comes_from_the_phase_1_validation_log(run, tmp_path):
    p = private(run.params, tmp_path, copy=True)
    p = dataclasses.replace(p, paths=dataclasses.replace(p.paths, report=str(tmp_path / "report")))
    log = artifacts.curve_path(p, "dila", "train", "val", PREDICTION_LOSS)
    log.parent.mkdir(parents=True)
    log.write_text(f"step\t{PREDICTION_LOSS}\n3\t0.5\n6\t0.25\n")
    assert report.LOSS == PREDICTION_LOSS
    table = report.run(p, figures=tmp_path / "figures")
    assert (table.parent / "curves" / "learning.tsv").read_text() == \
        "variant\tcurve\tstep\tL_e\ndila\tphase 1\t3\t0.5\ndila\tphase 1\t6\t0.25\n"
    assert sorted(x.name for x in (tmp_path / "figures").iterdir()) == ["learning.png", "rollout_error.png"]


def test_a_variant_without_metrics_names_the_stage_to_run(run):
    p = stage_params(run.tmp, ONLY_DILA, "variants.other.variant=dila")
    with pytest.raises(MissingInput, match="run `dila evaluate other` first"):
        report.run(p, figures=None)
