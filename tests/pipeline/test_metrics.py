import math

import numpy as np
import pytest

from pipeline.evaluation import metrics as M


def steps(values, shape=(2, 3, 2)):
    """(1, T, h, w, D) clip whose step k is the constant values[k]."""
    return np.stack([np.full(shape, v, np.float64) for v in values])[None]


def test_token_mse_per_step_is_the_mean_squared_error_of_each_step():
    truth = steps([1.0, 2.0, -3.0])
    pred = np.zeros_like(truth)
    np.testing.assert_allclose(M.token_mse_per_step(pred, truth), [1.0, 4.0, 9.0])
    # two clips: step 0 errors 1 and 3 -> mean of squares (1 + 9) / 2
    both = np.concatenate([steps([1.0]), steps([3.0])])
    np.testing.assert_allclose(M.token_mse_per_step(np.zeros_like(both), both), [5.0])


def test_token_mse_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same 5-d shape"):
        M.token_mse_per_step(np.zeros((1, 2, 1, 1, 3)), np.zeros((1, 3, 1, 1, 3)))


def test_cosine_per_step_hand_values():
    truth = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]]).reshape(1, 3, 1, 1, 2)
    pred = np.array([[1.0, 1.0], [-3.0, 0.0], [5.0, 0.0]]).reshape(1, 3, 1, 1, 2)
    np.testing.assert_allclose(M.cosine_per_step(pred, truth), [1 / math.sqrt(2), -1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(M.cosine_per_step(truth, truth), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(M.cosine_per_step(np.zeros_like(truth), truth), [0.0, 0.0, 0.0])


def test_repeat_last_repeats_the_last_context_frame():
    context = np.arange(2 * 3 * 1 * 1 * 2, dtype=float).reshape(2, 3, 1, 1, 2)
    out = M.repeat_last(context, 4)
    assert out.shape == (2, 4, 1, 1, 2)
    for k in range(4):
        np.testing.assert_array_equal(out[:, k], context[:, -1])


def test_fit_probe_recovers_a_known_linear_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)) * [1, 2, 3, 4, 5] + 7
    w = rng.normal(size=(5, 3))
    y = x @ w + [1.0, -2.0, 0.5]
    probe = M.fit_probe(x, y, alpha=0.0)
    x_new = rng.normal(size=(20, 5))
    np.testing.assert_allclose(probe.predict(x_new), x_new @ w + [1.0, -2.0, 0.5], atol=1e-8)


def test_fit_probe_ridge_shrinkage_by_hand():
    # standardised x = [-1, 1]; w = x.y / (x.x + alpha) = 4 / (2 + 2) = 1; intercept = mean y = 3
    probe = M.fit_probe(np.array([[0.0], [4.0]]), np.array([[1.0], [5.0]]), alpha=2.0)
    np.testing.assert_allclose(probe.predict(np.array([[0.0], [2.0], [4.0]])), [[2.0], [3.0], [4.0]])
    assert probe.x_mean.tolist() == [2.0] and probe.x_scale.tolist() == [2.0]


def test_fit_probe_constant_input_column_is_harmless():
    x = np.stack([np.arange(6.0), np.full(6, 3.0)], axis=1)
    probe = M.fit_probe(x, 2 * x[:, :1], alpha=0.0)
    np.testing.assert_allclose(probe.predict(x), 2 * x[:, :1], atol=1e-10)


def test_regression_scores_by_hand():
    y_true = np.array([[0.0, 5.0], [2.0, 5.0]])
    y_pred = np.array([[1.0, 5.0], [1.0, 7.0]])
    s = M.regression_scores(y_true, y_pred)
    # dim 0: mse 1, variance 1 -> R² 0; dim 1: mse 2, constant truth -> R² undefined
    assert s["mse_per_dim"] == [1.0, 2.0] and s["mse"] == 1.5
    assert s["r2_per_dim"] == [0.0, None] and s["r2"] == 0.0


def test_linear_probe_scores_held_out_data_in_train_std_units():
    rng = np.random.default_rng(1)
    x_train, x_test = rng.normal(size=(300, 4)), rng.normal(size=(100, 4))
    w = rng.normal(size=(4, 2))
    out = M.linear_probe(x_train, x_train @ w * 10, x_test, x_test @ w * 10, alpha=0.0)
    assert out["r2"] == pytest.approx(1.0) and out["mse"] == pytest.approx(0.0, abs=1e-12)
    assert (out["train_samples"], out["test_samples"], out["alpha"]) == (300, 100, 0.0)
    # predicting nothing (z independent of y): MSE ~ 1 train std, R² ~ 0
    y = rng.normal(size=(400, 1)) * 3
    out = M.linear_probe(x_train, y[:300], x_test, y[300:], alpha=1.0)
    assert 0.7 < out["mse"] < 1.4 and out["r2"] < 0.05


def test_linear_probe_scores_each_group_with_the_one_probe():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 3))
    y = x[:, :1] * 2.0                                        # y is linear in x everywhere ...
    y[300:][x[300:, 1] > 0] = rng.normal(size=((x[300:, 1] > 0).sum(), 1))  # ... but noise in group "b"
    test_b = x[300:, 1] > 0
    out = M.linear_probe(x[:300], y[:300], x[300:], y[300:], alpha=0.0, groups={"a": ~test_b, "b": test_b,
                                                                                "empty": np.zeros(100, bool)})
    assert set(out["groups"]) == {"a", "b"}                   # fewer than 2 samples: no scores
    assert out["groups"]["a"]["r2"] == pytest.approx(1.0)
    assert out["groups"]["b"]["r2"] < 0.2 and out["groups"]["b"]["samples"] == int(test_b.sum())


def test_ssim_of_identical_images_is_one():
    x = np.random.default_rng(2).random((3, 20, 24, 3))
    np.testing.assert_allclose(M.ssim(x, x), [1.0, 1.0, 1.0], atol=1e-12)


def test_ssim_of_constant_images_is_the_luminance_term():
    a, b = 0.2, 0.7
    x, y = np.full((1, 16, 16, 3), a), np.full((1, 16, 16, 3), b)
    c1 = 0.01**2
    np.testing.assert_allclose(M.ssim(x, y), [(2 * a * b + c1) / (a * a + b * b + c1)], rtol=1e-10)
    # images smaller than the window use a window of their size
    np.testing.assert_allclose(M.ssim(x[:, :5, :5], y[:, :5, :5]), [(2 * a * b + c1) / (a * a + b * b + c1)])


def test_ssim_falls_with_noise_and_is_symmetric():
    rng = np.random.default_rng(3)
    x = rng.random((1, 32, 32, 3))
    small, large = (np.clip(x + rng.normal(0, s, x.shape), 0, 1) for s in (0.02, 0.3))
    assert 1.0 > M.ssim(x, small)[0] > M.ssim(x, large)[0]
    np.testing.assert_allclose(M.ssim(x, large), M.ssim(large, x))


def additive(source, target):
    """A perfect transfer for additive motion: target's first frame + source's displacements."""
    return target[:, :1] + (source[:, 1:] - source[:, :1])


def test_cycle_transfer_of_a_perfect_transfer_returns_the_source():
    rng = np.random.default_rng(4)
    source, target = rng.normal(size=(2, 3, 5, 1, 1, 2))
    np.testing.assert_allclose(M.cycle_transfer(additive, source, target), source[:, 1:])


def test_cycle_transfer_accumulates_a_biased_transfer_twice():
    rng = np.random.default_rng(5)
    source, target = rng.normal(size=(2, 2, 4, 1, 1, 3))
    out = M.cycle_transfer(lambda s, t: additive(s, t) + 1.0, source, target)
    np.testing.assert_allclose(out, source[:, 1:] + 2.0)


def test_isolation_drift_is_change_from_the_first_frame():
    np.testing.assert_allclose(M.isolation_drift(steps([3.0, 3.0, 3.0])), [0.0, 0.0])
    np.testing.assert_allclose(M.isolation_drift(steps([0.0, 1.0, 2.0, -1.0])), [1.0, 4.0, 1.0])


def test_pca_2d_by_hand():
    x = np.array([[-1.0, 0.0], [1.0, 0.0], [0.0, -0.5], [0.0, 0.5]]) + 10
    coords, ratio = M.pca_2d(x)
    np.testing.assert_allclose(ratio, [0.8, 0.2])
    np.testing.assert_allclose(np.abs(coords), [[1, 0], [1, 0], [0, 0.5], [0, 0.5]], atol=1e-12)
    # the sign makes the largest loading positive: PC1 = +x, so the point at x = 1 is at +1
    assert coords[1, 0] == pytest.approx(1.0) and coords[3, 1] == pytest.approx(0.5)


def test_pca_2d_of_one_dimensional_data_pads_the_second_axis():
    coords, ratio = M.pca_2d(np.array([[1.0], [3.0]]))
    np.testing.assert_allclose(coords, [[-1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(ratio, [1.0, 0.0])


def test_finite_or_none():
    assert M.finite_or_none(1.5) == 1.5
    assert M.finite_or_none(float("nan")) is None and M.finite_or_none(float("inf")) is None


def test_teacher_forced_baseline_predicts_each_frame_by_the_one_before():
    e = np.arange(2 * 3 * 1 * 1 * 2, dtype=np.float32).reshape(2, 3, 1, 1, 2)
    base = M.teacher_forced_baseline(e)
    np.testing.assert_array_equal(base, e[:, :2])
    # frames step by 2 per channel, so the baseline is off by exactly 2 everywhere: MSE 4
    assert M.token_mse_per_step(base, e[:, 1:]).tolist() == [4.0, 4.0]
    with pytest.raises(ValueError, match="T >= 2"):
        M.teacher_forced_baseline(e[:, :1])


def test_error_ratio_reads_z_usage_and_decoder_read_out():
    assert M.error_ratio(0.3, 0.2) == pytest.approx(1.5)       # other-z error 1.5 x own-z: z is used
    assert M.error_ratio(0.2, 0.2) == 1.0                      # z ignored
    assert M.error_ratio(0.1, 0.0) is None                     # undefined, never inf or nan
