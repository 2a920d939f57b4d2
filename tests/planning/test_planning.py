"""Planning: MPPI finds the optimum of a known cost; the action adapter recovers a known map."""
import pytest
import torch

from pipeline.planning.adapter import AdapterConfig, fit_adapter
from pipeline.planning.mppi import MPPIConfig, correlated_noise, plan, shift


def test_mppi_finds_the_optimum_of_a_quadratic_cost():
    target = torch.tensor([[0.5, -1.0], [1.5, 0.0], [-0.5, 2.0], [0.0, 0.7]])        # (H, a)

    def cost(u):                                                                    # (K, H, a) -> (K,)
        return (u - target).square().sum((1, 2))

    cfg = MPPIConfig(samples=256, horizon=4, temperature=0.05, beta=0.5, noise_std=0.5, iterations=30)
    got = plan(cost, torch.zeros(4, 2), cfg, torch.Generator().manual_seed(0))
    assert (got - target).abs().max() < 0.1
    one = plan(cost, torch.zeros(4, 2), MPPIConfig(samples=256, horizon=4, iterations=1, noise_std=0.5),
               torch.Generator().manual_seed(0))
    assert float(cost(got[None])) < float(cost(one[None])) < float(cost(torch.zeros(1, 4, 2)))


def test_mppi_respects_bounds_and_checks_the_cost_shape():
    cfg = MPPIConfig(samples=64, horizon=3, iterations=5)
    got = plan(lambda u: -(u.sum((1, 2))), torch.zeros(3, 1), cfg, torch.Generator().manual_seed(1), -1.0, 1.0)
    assert got.min() >= -1.0 and got.max() <= 1.0 and got.mean() > 0.5             # pushed to the upper bound
    with pytest.raises(ValueError, match=r"cost returned shape \(1,\); expected \(64,\)"):
        plan(lambda u: u.sum()[None], torch.zeros(3, 1), cfg, torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="mppi.beta"):
        MPPIConfig(beta=1.0).validate()


def test_correlated_noise_has_unit_variance_and_the_set_correlation():
    noise = correlated_noise(20000, 6, 1, 0.5, torch.Generator().manual_seed(0))[..., 0]  # (K, H)
    assert noise.var(0).sub(1).abs().max() < 0.05
    lag1 = (noise[:, 1:] * noise[:, :-1]).mean()
    assert abs(float(lag1) - 0.5) < 0.03
    white = correlated_noise(20000, 6, 1, 0.0, torch.Generator().manual_seed(0))[..., 0]
    assert abs(float((white[:, 1:] * white[:, :-1]).mean())) < 0.03


def test_shift_drops_the_executed_actions_and_repeats_the_last():
    u = torch.arange(8.0).reshape(4, 2)
    assert shift(u).tolist() == [[2, 3], [4, 5], [6, 7], [6, 7]]


def test_the_adapter_recovers_a_known_linear_map():
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(3, 5, generator=g), torch.randn(5, generator=g)
    a = torch.randn(600, 3, generator=g)
    z = a @ w + b
    adapter, train_mse = fit_adapter(a[:500], z[:500], AdapterConfig(action_dim=3, d_z=5, steps=1500), g)
    with torch.no_grad():
        held_out = (adapter(a[500:]) - z[500:]).square().mean() / z[500:].var()
    assert train_mse < 1e-2 * float(z.var()) and float(held_out) < 1e-2
    shuffled, _ = fit_adapter(a[:500], z[torch.randperm(500, generator=g)], AdapterConfig(3, 5, steps=300), g)
    with torch.no_grad():
        assert float((shuffled(a[500:]) - z[500:]).square().mean() / z[500:].var()) > 0.5  # nothing to recover
