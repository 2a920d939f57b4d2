import math

import pytest
import torch

from dila_core.losses import (
    LossConfig,
    anti_collapse,
    latent_norm,
    latent_std,
    motion_mask,
    symmetry_loss,
)
from dila_core.model import DiLA
from dila_core.presets import preset

# Axes: B batch, T transitions, h x w grid, d_s structure size, d_z latent action size.


def test_motion_mask_thresholds_the_rms_of_each_transition():
    ds = torch.zeros(2, 3, 2, 2, 4)
    ds[0, 0] = 0.02            # rms 0.02 > 0.01
    ds[0, 1, 0, 0, 0] = 0.03   # rms 0.03 / sqrt(16) = 0.0075 <= 0.01
    ds[1, 2, 1, 1] = -0.05     # rms 0.05 / 2 = 0.025 > 0.01
    mask = motion_mask(ds, 0.01)
    assert mask.tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]


def test_symmetry_loss_on_hand_built_actions():
    z_fwd = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]]])
    z_bwd = torch.tensor([[[-3.0, 0.0], [0.0, 1.0], [0.0, 5.0]]])  # cos = -1, 0, 1
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    # masked terms (cos + 1)^2: 0 and 1; the third (cos = 1 -> 4) is masked out
    torch.testing.assert_close(symmetry_loss(z_fwd, z_bwd, mask, 1e-6), torch.tensor(1.0 / (2 + 1e-6)))
    all_on = torch.ones(1, 3)
    torch.testing.assert_close(symmetry_loss(z_fwd, z_bwd, all_on, 0.0), torch.tensor(5.0 / 3))
    assert symmetry_loss(z_fwd, z_bwd, torch.zeros(1, 3), 1e-6) == 0


def test_anti_collapse_norm_and_std_on_hand_built_latents():
    z = torch.tensor([[[1.0, 0.0], [3.0, 0.0]], [[5.0, 0.0], [7.0, 0.0]]])  # (B=2, T=2, d_z=2)
    std0 = torch.tensor(5.0).sqrt()  # population std of 1, 3, 5, 7; dimension 2 is constant
    torch.testing.assert_close(latent_std(z), std0 / 2)
    torch.testing.assert_close(anti_collapse(z, 0.5, 10.0), 0.5 * torch.exp(-10 * std0 / 2))
    torch.testing.assert_close(anti_collapse(torch.ones(2, 2, 3), 0.5, 10.0), torch.tensor(0.5))
    torch.testing.assert_close(latent_norm(z), torch.tensor(4.0))
    torch.testing.assert_close(latent_std(z[:1, :1]), torch.tensor(0.0))  # one transition: 0, not NaN


def test_loss_is_the_weighted_sum_of_the_logged_terms():
    torch.manual_seed(0)
    weights = dict(lambda_e=1.5, lambda_s=0.2, lambda_z=0.3, lambda_norm=0.05, lambda_sym=0.7)
    cfg = preset("tiny", bottleneck="gaussian", loss=weights)
    model = DiLA(cfg).eval()
    loss, logs = model(torch.randn(2, 4, *cfg.grid, cfg.token_dim))
    want = (1.5 * logs["L_e"] + 0.2 * logs["L_s"] + 0.3 * (logs["L_z"] + logs["L_collapse"])
            + 0.05 * logs["z_norm"] + 0.7 * logs["L_sym"] + cfg.bottleneck.beta * logs["kl"])
    torch.testing.assert_close(loss.detach(), want)
    assert logs["loss"] == loss.detach()


def grads_by_module(cfg, e):
    model = DiLA(cfg)
    with torch.no_grad():  # leave the FDM's zero initialisation, so that it uses s and z
        for p in model.dynamics.fdm.parameters():
            p.add_(0.05 * torch.randn_like(p))
    loss, _ = model(e)
    loss.backward()
    def norm(module):
        return sum(p.grad.abs().sum().item() for p in module.parameters() if p.grad is not None)

    return {"structure": norm(model.structure), "idm": norm(model.dynamics.idm),
            "fdm": norm(model.dynamics.fdm), "decoder": norm(model.decoder)}


def test_symmetry_term_trains_the_idm_only():
    only_sym = dict(lambda_e=0.0, lambda_s=0.0, lambda_z=0.0, lambda_norm=0.0, lambda_sym=1.0)
    cfg = preset("tiny", loss=only_sym)
    torch.manual_seed(1)
    g = grads_by_module(cfg, torch.randn(2, 4, *cfg.grid, cfg.token_dim))
    assert g["idm"] > 0 and g["structure"] == 0 and g["fdm"] == 0 and g["decoder"] == 0


def test_structure_term_trains_fdm_and_structure_not_decoder():
    only_s = dict(lambda_e=0.0, lambda_s=1.0, lambda_z=0.0, lambda_norm=0.0, lambda_sym=0.0)
    cfg = preset("tiny", loss=only_s)
    torch.manual_seed(2)
    g = grads_by_module(cfg, torch.randn(2, 4, *cfg.grid, cfg.token_dim))
    assert g["fdm"] > 0 and g["structure"] > 0 and g["idm"] > 0 and g["decoder"] == 0


@pytest.mark.parametrize(("field", "value"), [("lambda_e", -1.0), ("eps", 0.0), ("lambda_sym", math.inf)])
def test_config_errors_name_the_key(field, value):
    with pytest.raises(ValueError, match=rf"model\.loss\.{field} = .* is not allowed"):
        LossConfig(**{field: value}).validate("model.loss")
