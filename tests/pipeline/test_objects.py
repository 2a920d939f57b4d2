"""Per-object probes, slot matching and DCI on latents whose answer is known."""
from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.evaluation import objects
from pipeline.evaluation.sections import Latents, Unavailable


def scene(seed, m=400, mix=None):
    """Two objects with 2-D actions; z = 2 slots of 3 dims; slot 0 encodes object 1, slot 1 object 0
    (or z = the same mixed by `mix`). Object 1 exists in the second half only."""
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(m, 2, 2))
    present = np.ones((m, 2), bool)
    present[: m // 2, 1] = False
    y[~present] = 0.0
    z = np.zeros((m, 6))
    z[:, :2], z[:, 3:5] = y[:, 1], y[:, 0]
    z[:, [2, 5]] = rng.normal(size=(m, 2)) * 0.01
    if mix is not None:
        z = z @ mix
    return Latents(z=z, y=y.reshape(m, -1), family=np.zeros(m, np.int32), objects=y, present=present)


def ctx(slots):
    return SimpleNamespace(params=SimpleNamespace(evaluate=SimpleNamespace(probe_alpha=1e-3)),
                           model=SimpleNamespace(cfg=SimpleNamespace(slots=slots)),
                           require_latents=lambda what: None)


def test_a_factored_z_is_matched_slot_by_slot_and_scores_as_disentangled():
    cache = {"multi/train": scene(0), "multi": scene(1)}
    out = objects.objects_section(ctx(2), "multi", cache)
    assert out["per_object"]["r2"] == pytest.approx([1.0, 1.0], abs=1e-3)
    assert out["per_object"]["objects"] == 2
    assert out["per_object"]["r2_by_count"]["1"] == pytest.approx(1.0, abs=1e-3)  # object 0 alone
    slots = out["slots"]
    assert slots["assignment"] == [1, 0] and slots["assigned_r2"] == pytest.approx([1.0, 1.0], abs=1e-3)
    assert slots["r2"][0][0] < 0.05 and slots["r2"][1][1] < 0.05           # a slot knows nothing of the other object
    assert out["dci_slots"]["disentanglement"] > 0.95 and out["dci"]["disentanglement"] > 0.9
    assert out["transitions"] == 200                                        # both objects exist in half


def test_an_entangled_z_predicts_as_well_but_is_not_disentangled():
    mix = np.eye(6)                                                          # slot 0: y1 + y0, slot 1: y1 - y0
    mix[3:5, 0:2], mix[0:2, 3:5], mix[3:5, 3:5] = np.eye(2), np.eye(2), -np.eye(2)
    cache = {"multi/train": scene(0, mix=mix), "multi": scene(1, mix=mix)}
    out = objects.objects_section(ctx(2), "multi", cache)
    assert out["per_object"]["r2"] == pytest.approx([1.0, 1.0], abs=1e-3)  # the whole z still knows both
    assert max(out["slots"]["assigned_r2"]) < 0.9                            # no slot holds one object
    assert out["dci_slots"]["disentanglement"] < 0.5


def test_a_monolithic_model_gets_no_slot_scores_and_one_object_sources_are_unavailable():
    cache = {"multi/train": scene(0), "multi": scene(1)}
    out = objects.objects_section(ctx(1), "multi", cache)
    assert out["slots"] is None and out["dci_slots"] is None and out["dci"] is not None
    single = Latents(z=np.zeros((4, 2)), y=np.zeros((4, 2)), family=np.zeros(4, np.int32))
    with pytest.raises(Unavailable, match="does not split its actions per object"):
        objects.objects_section(ctx(1), "one", {"one/train": single, "one": single})


def test_a_count_missing_from_the_held_out_episodes_is_null_and_says_how_many_transitions_there_were():
    fit, test = scene(0), scene(1)
    test.present[:, 1] = False                                               # no held-out 2-object transition
    test.objects[:, 1] = 0.0
    out = objects.objects_section(ctx(1), "multi", {"multi/train": fit, "multi": test})["per_object"]
    assert out["r2_by_count"]["2"] is None and out["r2_by_count"]["1"] is not None
    assert out["transitions_by_count"] == {"1": {"fit": 200, "test": 400}, "2": {"fit": 200, "test": 0}}
