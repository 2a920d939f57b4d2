"""Stage replicas and the seeds table: a replica trains from its own seed on the main run's data
and split, is scored as the evaluate stage scores the main run (the replica of the main seed
reproduces the main run's headline numbers), and the report gives mean and sd over seeds."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from pipeline import artifacts
from pipeline.evaluation import report_figures
from pipeline.evaluation.replicas import replica_headline
from pipeline.evaluation.seeds import seed_table, spread
from pipeline.training import distributed
from pipeline.training.runs import phase1, phase2
from stages import evaluate, extract, finetune, prepare, replicas, report, rollout, train
from tests.stages.conftest import ONLY_DILA
from tests.stages.helpers import stage_params

TINY = ["model.preset=tiny", "train.batch_size=2", "train.steps=6", "train.val_every=3", "train.val_batches=1",
        "train.checkpoint_every=3", "train.log_every=1", "train.workers=0", "finetune.steps=2",
        "finetune.checkpoint_every=1", "evaluate.held_out=[objects3]", "replicas.seeds=[1]"]


@pytest.fixture(scope="module")
def main(tmp_path_factory):
    """The main run of a tiny dila (seed 0: train, finetune, rollout, evaluate) and its replica (seed 1)."""
    tmp = tmp_path_factory.mktemp("replicas")
    params = stage_params(tmp, ONLY_DILA, *TINY)
    for name in ("synthetic", "objects3"):
        prepare.run(params, name, show_progress=False)
        extract.run(params, name, show_progress=False)
    train.run(params, "dila", show_progress=False)
    finetune.run(params, "dila", show_progress=False)
    rollout.run(params, "dila")
    headline = json.loads(evaluate.run(params, "dila").read_text())
    path = replicas.run(params, "dila", show_progress=False)
    main = dataclasses.make_dataclass("Main", ["params", "headline", "file"])
    return main(params, headline, json.loads(path.read_text()))


def test_the_replica_of_the_main_seed_reproduces_the_main_run(main):
    p = artifacts.replica_params(main.params, "dila", main.params.seed)
    d = distributed.init()
    phase1(p, "dila", main.params.seed, d, False, replicas.__name__)
    phase2(p, "dila", main.params.seed, d, False, replicas.__name__)
    numbers, unavailable, curves = replica_headline(p, "dila")
    assert numbers == main.headline and numbers["rollout_mse"] is not None and numbers["z_usage"] is not None
    details = json.loads(artifacts.details_path(main.params, "dila").read_text())["rollout"]
    assert curves == {"token_mse_per_step": details["token_mse_per_step"],
                      "other_z_token_mse_per_step": details["other_z"]["token_mse_per_step"]}
    assert numbers["held_out_ratio_objects3"] is not None
    assert "rollout.ssim" in unavailable  # tokens only: no pixel decoder


def test_a_replica_trains_from_its_own_seed_on_the_main_split(main):
    rep = artifacts.replica_params(main.params, "dila", 1)
    record = artifacts.read_record(rep, "dila", "train")
    ours = artifacts.read_record(main.params, "dila", "train")
    assert record["spec"]["seed"] == 1 and ours["spec"]["seed"] == 0
    assert record["split"] == ours["split"] and record["store"] == ours["store"]
    assert artifacts.final_weights(rep, "dila", "finetune").is_file()
    assert str(artifacts.final_weights(rep, "dila", "train")).startswith(main.params.paths.replicas)
    assert list(main.file["seeds"]) == ["1"] and main.file["split_seed"] == 0
    assert main.file["seeds"]["1"].keys() == main.headline.keys()
    assert main.file["seeds"]["1"]["tf_mse"] != main.headline["tf_mse"]  # other weights, other numbers


def test_the_report_gives_mean_and_sd_over_the_main_run_and_the_replicas(main):
    table = report.run(main.params, figures=None).read_text()
    seeds = json.loads((artifacts.report_dir(main.params) / "seeds.json").read_text())
    runs = [main.headline, main.file["seeds"]["1"]]
    ratios = [h["rollout_mse"] / h["repeat_mse"] for h in runs]
    row = seeds["dila"]
    assert row["seeds"] == [0, 1]
    assert row["rollout_ratio"]["mean"] == pytest.approx(np.mean(ratios))
    assert row["rollout_ratio"]["sd"] == pytest.approx(np.std(ratios, ddof=1))
    assert row["z_usage"]["n"] == 2 and row["tf_mse"]["mean"] == pytest.approx(np.mean([h["tf_mse"] for h in runs]))
    assert "## Over training seeds" in table and "\n| dila | 0, 1 | " in table
    replica = main.file["curves"]["1"]                        # the replica's rollout curves: the figure's seed band
    assert len(replica["token_mse_per_step"]) == len(replica["other_z_token_mse_per_step"]) == 3  # rollout.horizon
    metrics = {"dila": json.loads(artifacts.details_path(main.params, "dila").read_text())}
    _, curves = report._seeds(main.params, metrics)
    assert curves["dila"][0]["token_mse_per_step"] == metrics["dila"]["rollout"]["token_mse_per_step"]
    assert curves["dila"][1] == replica
    fig = report_figures.rollout_error(metrics, curves)
    assert [c.get_label() for c in fig.axes[0].collections] == ["dila: 2 seeds, min to max"]


def test_replicas_of_other_seeds_are_refused_as_stale(main):
    p = dataclasses.replace(main.params, replicas=dataclasses.replace(main.params.replicas, seeds=(1, 2)))
    with pytest.raises(artifacts.MissingInput, match="run `dila replicas dila` again"):
        artifacts.read_replicas(p, "dila")
    table = report.run(p, figures=None).read_text()  # the report keeps the main run alone and says why
    assert "\n| dila | 0; replicas n/a [" in table and "run `dila replicas dila` again" in table


def test_spread_over_seeds():
    assert spread([1.0, 3.0, None]) == {"mean": 2.0, "sd": pytest.approx(np.sqrt(2.0)), "n": 2}
    assert spread([2.0]) == {"mean": 2.0, "sd": None, "n": 1}
    assert spread([None]) == {"mean": None, "sd": None, "n": 0}
    out = seed_table({"v": {0: {"rollout_mse": 1.0, "repeat_mse": 2.0, "z_usage": None},
                            1: {"rollout_mse": 3.0, "repeat_mse": 2.0, "z_usage": None}}})
    assert out == {"v": {"seeds": [0, 1], "rollout_mse": {"mean": 2.0, "sd": pytest.approx(np.sqrt(2)), "n": 2},
                         "z_usage": {"mean": None, "sd": None, "n": 0},
                         "rollout_ratio": {"mean": 1.0, "sd": pytest.approx(np.sqrt(0.5)), "n": 2}}}


def test_no_seeds_still_writes_both_declared_outputs(tmp_path):
    """dvc.yaml declares the folder and the file; with replicas.seeds empty (the default) both
    must exist or `dvc repro` fails the stage."""
    params = stage_params(tmp_path, ONLY_DILA, *TINY[:-1], "replicas.seeds=[]")
    path = replicas.run(params, "dila", show_progress=False)
    assert json.loads(path.read_text())["seeds"] == {}
    folder = path.parent / "dila"
    assert folder.is_dir() and not any(folder.iterdir())
