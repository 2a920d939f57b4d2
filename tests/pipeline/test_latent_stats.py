"""The latent-manifold numbers against cases whose answer is known."""
import numpy as np
import pytest

from pipeline.evaluation import latent_stats as L


def test_effective_rank_counts_the_dimensions_in_use():
    rng = np.random.default_rng(0)
    assert L.effective_rank(rng.normal(size=(4000, 6))) == pytest.approx(6.0, abs=0.1)
    line = rng.normal(size=(500, 1)) * np.array([[1.0, -2.0, 0.5, 3.0]])
    assert L.effective_rank(line) == pytest.approx(1.0, abs=1e-6)
    assert L.effective_rank(np.ones((10, 3))) == 0.0
    var = L.dimension_variance(np.stack([np.zeros(100), rng.normal(size=100) * 3], 1))
    assert var[0] == 0 and var[1] == pytest.approx(9.0, rel=0.3)


def test_inverse_consistency_is_minus_one_for_opposite_actions():
    z = np.random.default_rng(1).normal(size=(50, 4))
    assert L.inverse_consistency(z, -z) == pytest.approx(-1.0)
    assert L.inverse_consistency(z, z) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="differ"):
        L.inverse_consistency(z, z[:, :3])


def test_dci_of_a_perfect_and_of_a_mixed_code():
    assert L.dci(np.eye(3)) == pytest.approx({"disentanglement": 1.0, "completeness": 1.0})
    assert L.dci(np.ones((3, 3))) == pytest.approx({"disentanglement": 0.0, "completeness": 0.0})
    half = L.dci(np.array([[1.0, 1.0], [0.0, 0.0]]))     # one code explains both factors
    assert half["disentanglement"] == pytest.approx(0.0) and half["completeness"] == pytest.approx(1.0)


def test_linear_importance_finds_which_code_carries_which_factor():
    rng = np.random.default_rng(2)
    factors = rng.normal(size=(2000, 2))
    z = np.stack([rng.normal(size=2000), factors[:, 1], factors[:, 0]], 1)   # code 1 <- factor 1, code 2 <- 0
    r = L.linear_importance(z, factors)
    assert r.shape == (3, 2) and r[2, 0] > 0.9 and r[1, 1] > 0.9 and r[0].max() < 0.05
    assert L.dci(r)["disentanglement"] > 0.95


def test_best_assignment_recovers_a_permutation():
    score = np.array([[0.1, 0.9, 0.0], [0.8, 0.2, 0.1], [0.0, 0.1, 0.7]])     # slot x object
    assert L.best_assignment(score) == ((1, 0, 2), pytest.approx(2.4))
    assert L.best_assignment(score[:, :2])[0] == (1, 0)
    with pytest.raises(ValueError, match="cannot cover"):
        L.best_assignment(score[:2])
