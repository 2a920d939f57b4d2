"""pipeline.training.runs: variant names checked against the registries, with errors naming the field."""
import pytest

from pipeline.config import ParamsError
from pipeline.training import runs
from tests.conftest import make_params


@pytest.mark.parametrize("override, key", [
    ("variants.dila.bottleneck=vq", "variants.dila.bottleneck: 'vq' is not a bottleneck"),
    ("variants.dila.variant=nope", "variants.dila.variant: 'nope' is not a variant of family 'dila'"),
    ("variants.dila.family=flam", "variants.dila.family: 'flam' is not a registered model family"),
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
