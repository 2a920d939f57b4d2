import json

import numpy as np
import pytest

from pipeline.evaluation import latent_plots, report

PNG = b"\x89PNG\r\n\x1a\n"


def dila_metrics():
    return {
        "variant": "dila", "dataset": "synthetic", "encoder_weights": "pretrained@abc123",
        "encoder": {"model": "facebook/dinov2-small", "weights": "pretrained@abc123"},
        "rollout": {"episodes": 8, "context": 1, "horizon": 3, "frame_skip": 1,
                    "token_mse": 0.25, "token_mse_per_step": [0.1, 0.25, 0.4],
                    "cosine": 0.9, "cosine_per_step": [0.95, 0.9, 0.85],
                    "ssim": 0.81234, "ssim_per_step": [0.9, 0.8, 0.74],
                    "other_z": {"token_mse": 0.45, "token_mse_per_step": [0.2, 0.45, 0.7]}, "z_usage": 1.8,
                    "baseline": {"token_mse": 0.5, "token_mse_per_step": [0.3, 0.5, 0.7], "cosine": 0.8,
                                 "cosine_per_step": [0.9, 0.8, 0.7], "ssim": 0.7, "ssim_per_step": [0.8, 0.7, 0.6]}},
        "cycle_transfer": {"pairs": 8, "frames": 8, "token_mse": 0.3333333, "baseline_token_mse": 0.6, "ssim": 0.75},
        "teacher_forced": {"val_mse": 0.216, "step": 1000, "record": "x", "clips_val_mse": 0.2,
                           "baseline_val_mse": 0.4, "ratio_to_baseline": 0.5,
                           "readout": {"from_true_next_s": 0.1, "from_current_s": 0.35, "ratio": 3.5}},
        "probe": {"synthetic": {"mse": 0.009, "r2": 0.95, "r2_translation": 0.99}},
        "motion_isolation": {"drift": 0.001, "reference": 0.2},
        "latent_space": {"transitions": 40, "d_z": 6, "effective_rank": 4.2512, "active_dims": 5,
                         "dimension_variance": [1.0, 0.5, 0.2, 0.1, 0.05, 0.001], "inverse_consistency": -0.61234},
        "future_leakage": {"transitions": 21, "true_z_mse": 0.1, "shuffled_z_mse": 0.25, "repeat_mse": 0.3,
                           "ratio": 2.5},
        "ground_truth": {"pairs": 8, "reencode_mse": 0.0, "rebinding": {"token_mse": 0.4, "baseline_token_mse": 0.7},
                         "action_transfer": {"token_mse": 0.3, "baseline_token_mse": 0.5}},
        "unavailable": {"rollout.lpips": "lpips not installed", "rollout.baseline.lpips": "lpips not installed",
                        "cycle_transfer.lpips": "lpips not installed"},
    }


def no_content_metrics():
    return {
        "variant": "no_content", "dataset": "synthetic", "encoder_weights": "pretrained@abc123",
        "encoder": {"model": "facebook/dinov2-small", "weights": "pretrained@abc123"},
        "probe": {},
        "motion_isolation": {"drift": 0.0, "reference": 0.2},
        "unavailable": {"rollout": "no rollouts", "cycle_transfer": "no rollouts",
                        "teacher_forced": "no phase-1 record at m.json", "probe.synthetic": "no rollouts",
                        "ground_truth": "needs a synthetic train.dataset", "latent_space": "no rollouts",
                        "future_leakage": "no rollouts"},
    }


EXPECTED = """\
# Evaluation

Dataset: synthetic. Encoder: facebook/dinov2-small, weights pretrained@abc123.
Rollouts: 8 held-out episodes, 1 context frame(s), horizon 3, frame_skip 1.

## Ablation (lower is better, except SSIM, cosine and R²)

| model | z used: other-z / own-z rollout MSE | decoder read-out: MSE from s_t / from true s_{t+1} | \
rollout token MSE | rollout SSIM | rollout LPIPS | rollout token MSE, another clip's z | \
cycle transfer token MSE | cycle transfer SSIM | teacher-forced val MSE | teacher-forced MSE, rollout clips | \
probe synthetic MSE | probe synthetic R² | probe synthetic R² (dx, dy) |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
| dila | 1.8 | 3.5 | 0.25 | 0.8123 | n/a [1] | 0.45 | 0.3333 | 0.75 | 0.216 @ 1000 steps | 0.2 | 0.009 | 0.95 | \
0.99 |
| no_content | n/a [2] | n/a [3] | n/a [2] | n/a [2] | n/a [2] | n/a [2] | n/a [2] | n/a [2] | n/a [3] | \
n/a [3] | n/a [2] | n/a [2] | n/a [2] |
| repeat last frame | — | — | 0.5 | 0.7 | n/a [1] | — | 0.6 | — | — | 0.4 | — | — | — |

Read the first two columns first. z used: 1.00 means the model ignores its latent action (the default run must \
reach 1.5). Decoder read-out: 1.00 means the decoder does not read motion from structure. A model at 1.00 on \
either describes no learned dynamics, whatever its other numbers.

Token errors are on normalized tokens; SSIM/LPIPS compare decoded rollouts with decoded true tokens; probe MSE \
is in train-set standard deviations of each action dimension.

## Synthetic ground truth (token MSE, lower is better)

| model | action transfer | static target (baseline) | rebinding | structure clip (baseline) | \
re-encoding check | motion-isolation drift | true clip change |
|---|---|---|---|---|---|---|---|
| dila | 0.3 | 0.5 | 0.4 | 0.7 | 0 | 0.001 | 0.2 |
| no_content | n/a [4] | n/a [4] | n/a [4] | n/a [4] | n/a [4] | 0 | 0.2 |

## Latent space (the shape of z; no eyes needed)

Effective rank: exp of the entropy of z's singular values (d_z when isotropic, 1 on a line). Active dims: \
variance >= 1% of the largest. Inverse consistency: -1 when reversing a transition gives the opposite action. \
Future leakage: above 1 when z carries the true next frame's motion; 1 means z is ignored, or (if the one-step \
error beats repeating the frame) the future reaches the prediction another way.

| model | d_z | effective rank | active dims | inverse consistency cos(z(t→t+1), z(t+1→t)) | \
future leakage: shuffled-future z / true z one-step MSE |
|---|---|---|---|---|---|
| dila | 6 | 4.251 | 5 | -0.6123 | 2.5 |
| no_content | n/a [2] | n/a [2] | n/a [2] | n/a [2] | n/a [2] |

## Notes

[1] lpips not installed
[2] no rollouts
[3] no phase-1 record at m.json
[4] needs a synthetic train.dataset
"""


def test_format_table_exact_output():
    table = report.format_table({"dila": dila_metrics(), "no_content": no_content_metrics()})
    assert table == EXPECTED


def test_codebook_columns_appear_with_a_codebook_and_read_a_dash_without():
    discrete = dila_metrics()
    discrete["latent_space"] = {**discrete["latent_space"], "codebook": {"usage": 0.75, "perplexity": 5.5}}
    table = report.format_table({"dila": dila_metrics(), "discrete": discrete})
    assert "| codebook usage | codebook perplexity |" in table
    assert "\n| dila | 6 | 4.251 | 5 | -0.6123 | 2.5 | — | — |" in table
    assert "\n| discrete | 6 | 4.251 | 5 | -0.6123 | 2.5 | 0.75 | 5.5 |" in table


def objects_entry(slots):
    return {"per_object": {"r2": [0.9, 0.5], "r2_by_count": {"1": 0.9, "2": 0.7}, "objects": 2},
            "slots": None if slots is None else {"r2": [[0.1, 0.8], [0.85, 0.2]], "assignment": [1, 0],
                                                 "assigned_r2": slots},
            "dci": {"disentanglement": 0.4, "completeness": 0.3}, "transitions": 12,
            "dci_slots": None if slots is None else {"disentanglement": 0.75, "completeness": 0.7}}


def test_objects_table_has_per_count_r2_slot_matching_and_dci():
    flat, factored = dila_metrics(), dila_metrics()
    flat["objects"], factored["objects"] = {"multi": objects_entry(None)}, {"multi": objects_entry([0.85, 0.8])}
    table = report.format_table({"dila": flat, "flam": factored, "no_content": no_content_metrics()})
    assert "| model (store) | R², 1 object(s) | R², 2 object(s) | slots: assigned R² | DCI disentanglement | " \
           "DCI of slots |" in table
    assert "\n| dila (multi) | 0.9 | 0.7 | — | 0.4 | — |" in table
    assert "\n| flam (multi) | 0.9 | 0.7 | 0.85, 0.8 | 0.4 | 0.75 |" in table
    assert "\n| no_content (multi) | n/a [" in table and "objects.multi not recorded in details.json" in table
    assert "## Objects" not in report.format_table({"dila": dila_metrics()})


def plans():
    task = {"episode": "episode_000001", "success": True}
    return {"baselines": {"dataset": "synthetic", "goals": 4, "random": {"success_rate": 0.0, "tasks": [task]},
                          "simulator": {"success_rate": 0.8, "tasks": [task]}},
            "variants": {"dila": {"success_rate": 0.4, "goals": 4, "adapter": {"explained": 0.25}},
                         "no_content": {"success_rate": None,
                                        "unavailable": "variant 'no_content' has no latent actions"}}}


def test_planning_table_normalises_by_the_simulator_and_keeps_reasons():
    table = report.format_table({"dila": dila_metrics(), "no_content": no_content_metrics()}, plans=plans())
    assert "## Planning: success rate on 4 held-out goals in synthetic's simulator" in table
    assert "\n| dila | 0.4 | 0.5 | 0.25 |" in table
    assert "\n| no_content | n/a [5] | — | — |" in table
    assert "[5] variant 'no_content' has no latent actions" in table
    assert "\n| random actions | 0 | 0 | — |\n| simulator as model (upper bound) | 0.8 | 1 | — |" in table
    assert "## Planning" not in report.format_table({"dila": dila_metrics()})


def test_headline_carries_the_planning_success_rates():
    h = report.headline({"dila": dila_metrics(), "no_content": no_content_metrics()}, plans())
    assert (h["plan_random"], h["plan_simulator"]) == (0.0, 0.8)
    assert (h["dila"]["plan_success"], h["no_content"]["plan_success"]) == (0.4, None)


def test_random_init_encoder_is_flagged_in_the_header():
    m = dila_metrics()
    m["encoder_weights"] = "random-init (seed 0)"
    table = report.format_table({"dila": m})
    assert "weights random-init (seed 0)." in table
    assert "**Random-init encoder: these tokens do not come from pretrained DINOv2 weights" in table
    assert "Random-init" not in report.format_table({"dila": dila_metrics()})


def test_missing_value_without_a_recorded_reason_says_so():
    m = dila_metrics()
    del m["cycle_transfer"]["ssim"]
    table = report.format_table({"dila": m})
    assert "| 0.3333 | n/a [2] |" in table
    assert "[2] cycle_transfer.ssim not recorded in details.json" in table


def test_baseline_row_without_any_rollout():
    table = report.format_table({"no_content": no_content_metrics()})
    assert "| repeat last frame | — | — | n/a [3] | n/a [3] | n/a [3] | — | n/a [3] | — | — | n/a [3] | — | — |" in table
    assert "[3] no variant has rollouts" in table


def latents():
    rng = np.random.default_rng(0)
    return {"z": rng.normal(size=(40, 6)).astype(np.float32), "family": np.repeat(np.arange(4), 10).astype(np.int32),
            "families": np.array(["translate", "scale", "rotate", "compose"])}


def test_write_report_writes_table_and_plots_and_drops_stale_plots(tmp_path):
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "old.png").write_bytes(PNG)
    metrics = {"dila": dila_metrics(), "no_content": no_content_metrics()}
    path = report.write_report(tmp_path, metrics, {"dila": latents()})
    assert path == tmp_path / "table.md" and path.read_text() == EXPECTED
    assert json.loads((tmp_path / "metrics.json").read_text()) == report.headline(metrics)
    pngs = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert pngs == ["latents_dila.png", "rollout_error.png"]
    for name in pngs:
        assert (tmp_path / "plots" / name).read_bytes()[:8] == PNG


def test_plots_are_skipped_without_data(tmp_path):
    assert report.plot_rollout_error({"no_content": no_content_metrics()}, tmp_path / "a.png") is None
    empty = {**latents(), "z": np.zeros((0, 0), np.float32), "family": np.zeros(0, np.int32)}
    assert latent_plots.plot_variant("x", empty, tmp_path / "b.png", seed=0) is None
    unknown = {**latents(), "family": np.full(40, -1, np.int32), "families": np.array([], dtype=str)}
    assert latent_plots.plot_variant("x", unknown, tmp_path / "c.png", seed=0, method="pca").startswith("PCA")
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "b.png").exists()
    assert (tmp_path / "c.png").read_bytes()[:8] == PNG


def test_headline_is_the_baseline_once_and_two_numbers_per_variant():
    metrics = {"dila": dila_metrics(), "no_content": no_content_metrics()}
    assert report.headline(metrics) == {"repeat_mse": 0.5, "dila": {"rollout_mse": 0.25, "z_usage": 1.8},
                                        "no_content": {"rollout_mse": None, "z_usage": None}}
    assert report.headline({"no_content": no_content_metrics()}) == {
        "repeat_mse": None, "no_content": {"rollout_mse": None, "z_usage": None}}


def test_headline_refuses_variants_with_different_baselines():
    other = dila_metrics()
    other["rollout"]["baseline"]["token_mse"] = 0.6
    with pytest.raises(ValueError, match=r"disagree on the repeat-last-frame baseline: \[0.5, 0.6\]"):
        report.headline({"dila": dila_metrics(), "dila2": other})
