"""The shared contract of every registered model family (`dila_core.world_model.FAMILIES`), run
over each family, each of its variants and each bottleneck: what the trainer, rollout and
evaluation call, with the shapes they expect, exact save/load, inputs left untouched."""
import itertools

import pytest
import torch

from dila_core.bottleneck import BOTTLENECKS
from dila_core.world_model import (
    FAMILIES,
    PREDICTION_LOSS,
    build_model,
    capabilities,
    family_of,
)
from pipeline.training.checkpoint import load_checkpoint, save_checkpoint

GRID, DIM, T = (3, 3), 16, 4
CASES = [(f, v, b) for f, fam in FAMILIES.items() for v, b in itertools.product(fam.variants, BOTTLENECKS)]


def tiny(family, variant, bottleneck):
    torch.manual_seed(0)
    cfg = FAMILIES[family].build_config("tiny", variant, bottleneck, grid=GRID, token_dim=DIM)
    return build_model(cfg)


def clip(batch=2, frames=T):
    return torch.randn(batch, frames, *GRID, DIM, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("family, variant, bottleneck", CASES)
def test_objectives_report_the_prediction_loss_and_leave_inputs_alone(family, variant, bottleneck):
    model, e = tiny(family, variant, bottleneck), clip()
    before = e.clone()
    assert family_of(model) == family and model.capabilities == capabilities(model.cfg)
    loss, logs = model.objective(e)
    assert loss.dim() == 0 and torch.isfinite(loss) and PREDICTION_LOSS in logs
    loss.backward()
    if model.capabilities.phase2:
        loss2, logs2 = model.phase2_objective(e)
        assert loss2.dim() == 0 and torch.isfinite(loss2)
    assert torch.equal(e, before)


@pytest.mark.parametrize("family, variant, bottleneck", CASES)
def test_inference_verbs_have_the_interface_shapes(family, variant, bottleneck):
    model, e = tiny(family, variant, bottleneck).eval(), clip()
    with torch.no_grad():
        assert model.predict(e).shape == (2, T - 1, *GRID, DIM)
        if model.capabilities.latent_actions:
            z = model.infer_actions(e)
            assert z.shape[:2] == (2, T - 1)
            out = model.rollout(e[:, :2], z[:, 1:], T - 2)
            assert out.e.shape == (2, T - 2, *GRID, DIM)


@pytest.mark.parametrize("family, variant, bottleneck", CASES)
def test_checkpoints_round_trip_exactly_and_record_the_family(tmp_path, family, variant, bottleneck):
    model = tiny(family, variant, bottleneck).eval()
    loaded, step = load_checkpoint(save_checkpoint(tmp_path / "m.safetensors", model, 3), family=family)
    assert step == 3 and loaded.cfg == model.cfg and type(loaded) is type(model)
    e = clip(1)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval().predict(e), model.predict(e), rtol=0, atol=0)
