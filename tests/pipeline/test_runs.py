"""pipeline.training.runs: variant names checked against the registries, with errors naming the field."""
import pytest

from pipeline.config import ParamsError
from pipeline.training import runs
from tests.conftest import make_params


@pytest.mark.parametrize("override, key", [
    ("variants.dila.bottleneck=vq", "variants.dila.bottleneck: 'vq' is not a bottleneck"),
    ("variants.dila.variant=nope", "variants.dila.variant: 'nope' is not a variant of family 'dila'"),
    ("variants.dila.family=slotformer", "variants.dila.family: 'slotformer' is not a registered model family"),
])
def test_unknown_names_are_errors_that_name_the_field(tmp_path, override, key):
    params = make_params(tmp_path, override)
    with pytest.raises(ParamsError, match=key):
        runs.check_variant(params, "dila")


def test_final_phase_follows_the_capabilities(tmp_path):
    params = make_params(tmp_path, "variants={a: {variant: dila}, b: {variant: no_latent_action}}")
    assert runs.final_phase(params, "a") == "finetune" and runs.final_phase(params, "b") == "train"
    assert runs.variant_capabilities(params, "a").latent_actions
    assert not runs.variant_capabilities(params, "b").latent_actions


def test_a_variants_regulariser_weights_reach_its_bottleneck(tmp_path):
    params = make_params(tmp_path, "variants={n: {bottleneck: gaussian, beta: 0.5}, "
                                   "s: {bottleneck: sparse, l1: 0.2, vcm: 0.3}}")
    noisy, sparse = (runs.model_config(params, v, (4, 4), 32).bottleneck for v in ("n", "s"))
    assert (noisy.kind, noisy.beta) == ("gaussian", 0.5)
    assert (sparse.kind, sparse.l1, sparse.vcm) == ("sparse", 0.2, 0.3)


def test_a_factored_familys_slots_reach_its_config_and_a_bad_count_names_the_variant(tmp_path):
    params = make_params(tmp_path, "variants={f: {family: flam, variant: flam, bottleneck: gaussian, slots: 2}, "
                                   "g: {family: flam, variant: flam, slots: 3}}")
    cfg = runs.model_config(params, "f", (4, 4), 32)
    assert (cfg.slots, cfg.bottleneck.kind, cfg.bottleneck.d_z) == (2, "gaussian", 32)
    with pytest.raises(ParamsError, match=r"variants\.g: .*slots = 3 is not allowed: expected a divisor"):
        runs.model_config(params, "g", (4, 4), 32)
