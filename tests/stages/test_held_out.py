"""evaluate.held_out: every variant rolled out on other stores' held-out episodes. The section must
equal what the rollout and evaluate stages compute with that store as train.dataset, carry its
reason where a variant cannot roll out, and reach the headline numbers, replicas and report."""
from __future__ import annotations

import dataclasses
import json

import pytest

from pipeline import artifacts
from pipeline.config import ParamsError
from pipeline.evaluation.held_out import held_out_section
from pipeline.evaluation.report import format_table
from pipeline.evaluation.sections import Context, Unavailable
from stages import evaluate, extract, prepare, rollout
from tests.stages.conftest import ONLY_DILA
from tests.stages.helpers import save_model, stage_params

HELD = "evaluate.held_out=[objects3]"


@pytest.fixture(scope="module")
def held(tmp_path_factory):
    """Two stores (synthetic to train on, objects3 held out), an untrained tiny dila, its evaluation."""
    tmp = tmp_path_factory.mktemp("held_out")
    params = stage_params(tmp, ONLY_DILA, HELD)
    for name in ("synthetic", "objects3"):
        prepare.run(params, name, show_progress=False)
        extract.run(params, name, show_progress=False)
    model = save_model(params, "dila")
    rollout.run(params, "dila")
    headline = json.loads(evaluate.run(params, "dila").read_text())
    details = json.loads(artifacts.details_path(params, "dila").read_text())
    return dataclasses.make_dataclass("Held", ["params", "tmp", "model", "headline", "details"])(
        params, tmp, model, headline, details)


def test_held_out_section_equals_the_rollout_stages_on_that_store(held):
    p = held.params
    other = dataclasses.replace(p, train=dataclasses.replace(p.train, dataset="objects3"),
                                evaluate=dataclasses.replace(p.evaluate, held_out=()),
                                paths=dataclasses.replace(p.paths, eval=str(held.tmp / "eval_objects3")))
    rollout.run(other, "dila")
    evaluate.run(other, "dila")
    ref = json.loads(artifacts.details_path(other, "dila").read_text())["rollout"]
    got = dict(held.details["held_out"]["objects3"])
    assert got.pop("store") == str(artifacts.store_path(p, "objects3"))
    assert got.pop("ratio") == pytest.approx(ref["token_mse"] / ref["baseline"]["token_mse"])
    assert got == ref and ref["episodes"] >= 1
    assert held.details["rollout"]["token_mse"] != ref["token_mse"]  # another store, other clips
    assert held.details["unavailable"]["held_out.objects3.ssim"].startswith("held-out stores are scored on tokens")


def test_headline_and_report_carry_the_held_out_ratio(held):
    ratio = held.details["held_out"]["objects3"]["ratio"]
    assert held.headline["held_out_ratio_objects3"] == ratio
    table = format_table({"dila": held.details})
    assert "## Held-out stores" in table
    row = next(line for line in table.splitlines() if line.startswith("| dila (objects3) |"))
    assert f"| {ratio:.4g} |" in row


def test_a_variant_without_latent_actions_records_why(held):
    ctx = Context(held.params, "dila", held.model, None, None, None, {}, None, None, {})
    ctx.model = dataclasses.make_dataclass("NoZ", ["capabilities"])(
        dataclasses.make_dataclass("Caps", ["latent_actions"])(False))
    with pytest.raises(Unavailable, match="has no latent actions for rollouts"):
        held_out_section(ctx, "objects3", {})


def test_tokens_of_another_encoder_are_refused(held):
    ctx = Context(held.params, "dila", held.model, None, None, None, {}, None, None, {})
    with pytest.raises(Unavailable, match=r"objects3.*the model was trained on tokens from"):
        held_out_section(ctx, "objects3", {"model": "another encoder"})


@pytest.mark.parametrize("value, match", [("[objects3, objects3]", "distinct dataset names"),
                                          ("[synthetic]", "a dataset other than train.dataset"),
                                          ("[nowhere]", "one of the datasets")])
def test_held_out_names_are_validated(tmp_path, value, match):
    with pytest.raises(ParamsError, match=rf"evaluate.held_out.*{match}"):
        stage_params(tmp_path, ONLY_DILA, f"evaluate.held_out={value}")
