import math

import pytest
import torch

from dila_core.bottleneck import (
    NSVQ,
    BottleneckConfig,
    Continuous,
    Gaussian,
    Sparse,
    build_bottleneck,
    code_statistics,
    vcm_terms,
)
from dila_core.model import DiLA
from dila_core.presets import preset

# Axes: B batch, T transitions, n latent tokens, d code size, K codebook size.


def nsvq(dead_after: int = 100) -> NSVQ:
    torch.manual_seed(0)
    return NSVQ(BottleneckConfig(kind="nsvq", d_z=6, codebook_size=4, code_dim=2, dead_after=dead_after))


def test_continuous_is_the_identity():
    b = build_bottleneck(BottleneckConfig(kind="continuous", d_z=5))
    r = torch.randn(2, 3, 5)
    z, loss, logs = b(r)
    assert isinstance(b, Continuous) and b.in_dim == 5
    assert z is r and loss == 0 and logs == {}
    assert b.infer(r) is r and b.features(r) is r


def test_gaussian_kl_and_sampling():
    b = build_bottleneck(BottleneckConfig(kind="gaussian", d_z=3, beta=0.5))
    assert isinstance(b, Gaussian) and b.in_dim == 6
    mu = torch.tensor([[[1.0, -2.0, 0.0]]])
    logvar = torch.tensor([[[0.0, math.log(4.0), 0.0]]])
    r = torch.cat([mu, logvar], -1)
    # KL(N(mu, var) || N(0, 1)) = 0.5 * sum(mu^2 + var - 1 - log var)
    want = 0.5 * ((1 + 1 - 1 - 0) + (4 + 4 - 1 - math.log(4.0)) + 0)
    b.eval()
    z, loss, logs = b(r)
    torch.testing.assert_close(z, mu)
    torch.testing.assert_close(logs["kl"], torch.tensor(want))
    torch.testing.assert_close(loss, torch.tensor(0.5 * want))
    b.train()
    torch.manual_seed(1)
    samples = torch.cat([b(r.expand(4000, 1, 6))[0] for _ in range(5)])
    torch.testing.assert_close(samples.mean((0, 1)), mu[0, 0], atol=0.05, rtol=0)
    torch.testing.assert_close(samples.std((0, 1)), torch.tensor([1.0, 2.0, 1.0]), atol=0.05, rtol=0)
    torch.testing.assert_close(b.infer(r), mu)


def test_nsvq_infer_snaps_each_token_to_its_nearest_code():
    b = nsvq()
    with torch.no_grad():
        b.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
    r = torch.tensor([[[0.9, 0.2, -0.7, -0.9, 0.1, 0.05]]])
    torch.testing.assert_close(b.infer(r), torch.tensor([[[1.0, 0.0, -1.0, -1.0, 0.0, 0.0]]]))
    b.eval()
    z, _, logs = b(r)
    torch.testing.assert_close(z, b.infer(r))
    torch.testing.assert_close(logs["codebook_usage"], torch.tensor(0.75))
    torch.testing.assert_close(logs["perplexity"], torch.tensor(3.0))


def test_nsvq_training_noise_has_the_quantisation_error_norm_and_trains_the_codebook():
    b = nsvq().train()
    r = torch.randn(5, 3, 6, requires_grad=True)
    z, _, _ = b(r)
    q = b.infer(r).reshape(5, 3, 3, 2)
    error = (r.reshape(5, 3, 3, 2) - q).norm(dim=-1)
    moved = (z - r).reshape(5, 3, 3, 2).norm(dim=-1)
    torch.testing.assert_close(moved, error, rtol=1e-5, atol=1e-6)
    z.square().sum().backward()
    assert r.grad.abs().sum() > 0 and b.codebook.grad.abs().sum() > 0


def test_code_statistics_on_a_hand_built_histogram():
    stats = code_statistics(torch.tensor([0, 0, 1, 1, 1, 1, 3, 3]), 4)
    p = torch.tensor([0.25, 0.5, 0.25])
    torch.testing.assert_close(stats["codebook_usage"], torch.tensor(0.75))
    torch.testing.assert_close(stats["perplexity"], torch.exp(-(p * p.log()).sum()))


def test_nsvq_resets_codes_idle_for_dead_after_steps():
    b = nsvq(dead_after=3).train()
    with torch.no_grad():
        b.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [50.0, 50.0]]))
    r = torch.tensor([[[0.1, 0.0, 0.9, 0.1, 0.1, 0.8]]])  # always nearest to codes 0, 1, 2
    for _ in range(3):
        b(r)
    assert b.idle_steps.tolist() == [0, 0, 0, 3]
    assert torch.equal(b.codebook[3], torch.tensor([50.0, 50.0]))
    b(r)  # code 3 is dead: it becomes one of this batch's tokens
    tokens = r.reshape(-1, 2)
    assert any(torch.equal(b.codebook[3].detach(), t) for t in tokens)
    assert b.idle_steps[3] <= 1
    b.eval()
    before = b.codebook.detach().clone()
    for _ in range(5):
        b(r)
    assert torch.equal(b.codebook.detach(), before)  # no reset and no counting outside training


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"m\.bottleneck\.d_z = 10 is not allowed: expected a multiple of code_dim"):
        BottleneckConfig(kind="nsvq", d_z=10, code_dim=4).validate("m.bottleneck")
    with pytest.raises(ValueError, match=r"m\.bottleneck\.kind = 'vq' is not allowed"):
        BottleneckConfig(kind="vq", d_z=10).validate("m.bottleneck")


def test_vcm_terms_on_hand_built_samples():
    # Two dimensions over four samples: x = (-1, 1, -1, 1) has sample std 2/sqrt(3) > 1 (no hinge);
    # y = 0.5 + 0.1 x has std 0.2/sqrt(3), so its hinge is 1 - that; cov(x, y) = 0.1 var(x).
    x = torch.tensor([-1.0, 1.0, -1.0, 1.0])
    z = torch.stack([x, 0.5 + 0.1 * x], -1).reshape(2, 2, 2)            # any leading axes are samples
    var_x = 4 / 3
    t = vcm_terms(z, eps=0.0)
    torch.testing.assert_close(t["variance"], torch.tensor((0 + 1 - (0.01 * var_x) ** 0.5) / 2))
    torch.testing.assert_close(t["covariance"], torch.tensor(2 * (0.1 * var_x) ** 2 / 2))
    torch.testing.assert_close(t["mean"], torch.tensor((0 + 0.25) / 2))


def test_sparse_z_is_the_identity_with_its_weighted_terms():
    b = build_bottleneck(BottleneckConfig(kind="sparse", d_z=2, l1=0.3, vcm=0.7))
    r = torch.tensor([[[-1.0, 0.0], [1.0, 0.5], [-1.0, 0.005], [1.0, 0.5]]])
    z, loss, logs = b(r)
    t = vcm_terms(r)
    assert isinstance(b, Sparse) and z is r and b.infer(r) is r and b.features(r) is r
    torch.testing.assert_close(loss, 0.3 * r.abs().mean() + 0.7 * (t["variance"] + t["covariance"] + t["mean"]))
    assert logs["active"] == 6 / 8  # the 0.0 and the 0.005 count as inactive


def descend(kind_weights: dict, r: torch.Tensor, steps: int = 300, lr: float = 20.0) -> torch.Tensor:
    """r after gradient descent on the bottleneck's regulariser alone."""
    b = build_bottleneck(BottleneckConfig(kind="sparse", d_z=r.shape[-1], **kind_weights))
    r = r.clone().requires_grad_()
    for _ in range(steps):
        (g,) = torch.autograd.grad(b(r)[1], r)
        r = (r - lr * g).detach().requires_grad_()
    return r.detach()


def test_sparse_z_variance_term_keeps_a_dimension_alive_against_l1():
    torch.manual_seed(0)
    r = torch.stack([torch.randn(64), 1e-3 * torch.randn(64)], -1)[None]   # dimension 1 nearly dead
    assert descend({"l1": 0.1, "vcm": 0.0}, r)[..., 1].abs().max() < 1e-2   # L1 alone kills it
    assert descend({"l1": 0.1, "vcm": 1.0}, r)[..., 1].std() > 0.9          # the hinge revives it
    with pytest.raises(ValueError, match=r"m\.bottleneck\.l1 = -1 is not allowed"):
        BottleneckConfig(kind="sparse", d_z=2, l1=-1).validate("m.bottleneck")


@pytest.mark.parametrize("kind", ["continuous", "gaussian", "sparse", "nsvq"])
def test_every_bottleneck_variant_trains(kind):
    torch.manual_seed(0)
    cfg = preset("tiny", bottleneck=kind)
    model = DiLA(cfg)
    e = torch.randn(2, 3, *cfg.grid, cfg.token_dim)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss, logs = model(e)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.6 * losses[0]
    want = {"continuous": set(), "gaussian": {"kl"}, "sparse": {"l1", "active", "vcm_variance"},
            "nsvq": {"codebook_usage", "perplexity"}}[kind]
    assert want <= logs.keys()
