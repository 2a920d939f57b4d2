"""Training on several stores at configured ratios: the draws follow the ratios, are a function of
(seed, step) alone (so a resumed run reads the same batches), cover each store's windows once per
epoch, split over ranks like one process; the shared statistics are exactly the mixture's; a
tiny run trains on a mixture of two real stores and records it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline import artifacts
from pipeline.config import ParamsError
from pipeline.data.mixture import MixtureBatches, pooled_stats
from pipeline.params import apply_overrides, parse_params, read_yaml
from pipeline.training import distributed
from pipeline.training.runs import open_training, open_windows, phase1
from stages import extract, prepare
from tests.conftest import ROOT, make_params

SIZES, RATIOS = np.array([50, 30, 10]), np.array([1.0, 2.0, 1.0])


def store_of(index: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.cumsum(SIZES), index, side="right")


def batches(seed=0, start=0, stop=400, batch=8, rank=0, world=1):
    return list(MixtureBatches(SIZES, RATIOS, batch, seed, start, stop, rank, world))


def test_draws_follow_the_ratios():
    drawn = store_of(np.concatenate(batches(stop=2000)))
    n, p = len(drawn), RATIOS / RATIOS.sum()
    share = np.bincount(drawn, minlength=3) / n
    assert np.all(np.abs(share - p) < 4 * np.sqrt(p * (1 - p) / n)), share  # within 4 standard errors


def test_batches_are_a_function_of_seed_and_step_and_resume_exactly():
    whole = batches(stop=300)
    assert whole == batches(stop=300)
    assert whole != batches(seed=1, stop=300)
    assert batches(start=137, stop=300) == whole[137:]  # a run resumed at step 137


def test_each_store_gives_every_window_once_per_epoch():
    index = np.concatenate(batches(stop=400))
    offsets = np.concatenate([[0], np.cumsum(SIZES)])
    for s, size in enumerate(SIZES):
        mine = index[store_of(index) == s] - offsets[s]
        assert len(mine) >= 2 * size
        assert sorted(mine[:size]) == list(range(size)) and sorted(mine[size:2 * size]) == list(range(size))


def test_ranks_split_each_global_batch():
    one = batches(stop=50, batch=8)
    ranks = [batches(stop=50, batch=8, rank=r, world=2) for r in range(2)]
    assert [a + b for a, b in zip(*ranks)] == one
    with pytest.raises(ParamsError, match="not divisible by the 3 ranks"):
        MixtureBatches(SIZES, RATIOS, 8, 0, 0, 5, 0, 3)


def test_pooled_stats_are_the_mixtures_own():
    rng = np.random.default_rng(0)
    a = rng.normal(1.0, 2.0, size=(300, 4))
    b = rng.normal(-3.0, 0.5, size=(100, 4))
    stats = [(torch.tensor(x.mean(0)), torch.tensor(x.std(0))) for x in (a, b)]
    mean, std = pooled_stats(stats, [300, 100])  # ratios equal to the sizes: the concatenation's stats
    both = np.concatenate([a, b])
    np.testing.assert_allclose(mean, both.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std, both.std(0), rtol=1e-5)
    mean, std = pooled_stats(stats, [1, 1])  # 1:1: as if b were drawn as often as a
    even = np.concatenate([a, np.repeat(b, 3, axis=0)])
    np.testing.assert_allclose(mean, even.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std, even.std(0), rtol=1e-5)


@pytest.mark.parametrize("override, key", [
    ("train.mixture={synthetic: 1, franka: 1}", "train.mixture.franka"),
    ("train.mixture={synthetic: 0, objects3: 1}", "train.mixture.synthetic"),
    ("train.mixture={objects3: 1}", "train.mixture"),
    ("train.mixture_stats=mean", "train.mixture_stats"),
])
def test_mixture_params_errors_name_the_key(override, key):
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        parse_params(apply_overrides(read_yaml(ROOT / "params.yaml"), ["train.dataset=synthetic", override]))


TINY = ["model.preset=tiny", "train.seq_len=4", "train.batch_size=4", "train.steps=4", "train.val_every=2",
        "train.val_batches=1", "train.checkpoint_every=2", "train.log_every=1", "train.workers=0"]


def test_a_tiny_run_trains_on_a_mixture_of_two_stores(tmp_path):
    params = make_params(tmp_path, *TINY, "train.mixture={synthetic: 1, objects3: 3}")
    for name in ("synthetic", "objects3"):
        prepare.run(params, name, show_progress=False)
        extract.run(params, name, show_progress=False)
    train, val = open_training(params)
    assert train.names == ["synthetic", "objects3"] and len(train) == len(train.parts[0]) + len(train.parts[1])
    own = open_windows(make_params(tmp_path, *TINY), "objects3")[0]  # the same store, its own stats
    last = len(train) - 1
    raw = own[last - train.offsets[1]]["e"] * (own.std + 1e-6) + own.mean  # store-scale tokens
    np.testing.assert_allclose(train[last]["e"] * (train.std + 1e-6) + train.mean, raw, atol=1e-4)
    assert not torch.equal(train.mean, own.mean)  # shared stats, not objects3's own
    phase1(params, "dila", params.seed, distributed.init(), False, "stages.train")
    record = json.loads(artifacts.final_record(params, "dila", "train").read_text())
    stores = record["mixture"]["stores"]
    assert record["mixture"]["stats"] == "shared"
    assert {n: s["ratio"] for n, s in stores.items()} == {"synthetic": 1.0, "objects3": 3.0}
    assert stores["objects3"]["train_episodes"] == train.parts[1].episodes.tolist()
    assert torch.equal(open_windows(params, "synthetic")[1].mean, val.mean)  # evaluation normalises as training did
