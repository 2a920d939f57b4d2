import json

import numpy as np
import pytest

from pipeline.evaluation import latent_plots, report
from pipeline.evaluation import report_figures as figures
from pipeline.evaluation.seeds import seed_table

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

## Headline

| model | z usage: other-z / own-z rollout MSE | decoder read-out: MSE from s_t / from true s_{t+1} | rollout \
/ repeat last | teacher-forced / repeat last | probe R² on synthetic (the training store) |
|---|---|---|---|---|---|
| dila | 1.800 | 3.500 | 0.5000 | 0.5000 | 0.9500 |
| no_content | n/a [1] | n/a [2] | n/a [1] | n/a [2] | n/a [1] |

- dila: z usage at or above the target (1.5).
- no_content: no rollout (no rollouts).

z usage: the rollout's token MSE under another clip's z over that under the clip's own z; 1 means the model \
ignores its latent action (target: 1.5). Decoder read-out: the decoder's MSE reading s_t over reading the true \
s_{t+1}; 1 means it reads no motion from structure. Rollout / repeat last and teacher-forced / repeat last: \
the model's token MSE over repeating the last true frame on the same clips; below 1 beats that trivial \
baseline. Probe R²: a ridge probe from z to the true actions, scored on held-out episodes; 1 is perfect, 0 is \
no better than predicting the mean action, below 0 worse.

## Ablation, in detail (lower is better, except SSIM, cosine and R²)

| model | z usage: other-z / own-z rollout MSE | decoder read-out: MSE from s_t / from true s_{t+1} | rollout \
token MSE | rollout SSIM | rollout LPIPS | rollout token MSE, another clip's z | cycle transfer token MSE | \
cycle transfer SSIM | teacher-forced val MSE | teacher-forced MSE, rollout clips | probe synthetic MSE | probe \
synthetic R² | probe synthetic R² (dx, dy) |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
| dila | 1.800 | 3.500 | 0.2500 | 0.8123 | n/a [3] | 0.4500 | 0.3333 | 0.7500 | 0.2160 (step 1000) | 0.2000 | \
0.009000 | 0.9500 | 0.9900 |
| no_content | n/a [1] | n/a [2] | n/a [1] | n/a [1] | n/a [1] | n/a [1] | n/a [1] | n/a [1] | n/a [2] | n/a \
[2] | n/a [1] | n/a [1] | n/a [1] |
| repeat last frame | — | — | 0.5000 | 0.7000 | n/a [3] | — | 0.6000 | — | — | 0.4000 | — | — | — |

Token errors are on normalized tokens; SSIM/LPIPS compare decoded rollouts with decoded true tokens; probe MSE \
is in train-set standard deviations of each action dimension.

## Synthetic ground truth (token MSE, lower is better)

| model | action transfer | static target (baseline) | rebinding | structure clip (baseline) | re-encoding \
check | motion-isolation drift | true clip change |
|---|---|---|---|---|---|---|---|
| dila | 0.3000 | 0.5000 | 0.4000 | 0.7000 | 0 | 0.001000 | 0.2000 |
| no_content | n/a [4] | n/a [4] | n/a [4] | n/a [4] | n/a [4] | 0 | 0.2000 |

## Latent space (the shape of z; no eyes needed)

Effective rank: exp of the entropy of z's singular values (d_z when isotropic, 1 on a line). Active dims: \
variance >= 1% of the largest. Inverse consistency: -1 when reversing a transition gives the opposite action. \
Future leakage: above 1 when z carries the true next frame's motion; 1 means z is ignored, or (if the one-step \
error beats repeating the frame) the future reaches the prediction another way.

| model | d_z | effective rank | active dims | inverse consistency cos(z(t→t+1), z(t+1→t)) | future leakage: \
shuffled-future z / true z one-step MSE |
|---|---|---|---|---|---|
| dila | 6 | 4.251 | 5 | -0.6123 | 2.500 |
| no_content | n/a [1] | n/a [1] | n/a [1] | n/a [1] | n/a [1] |

## Notes

[1] no rollouts
[2] no phase-1 record at m.json
[3] lpips not installed
[4] needs a synthetic train.dataset
"""


def test_format_table_exact_output():
    table = report.format_table({"dila": dila_metrics(), "no_content": no_content_metrics()})
    assert table == EXPECTED


def ignoring(variant, usage=1.0002, own=0.5):
    """A variant that ignores z: its other-z rollout error equals its own (z usage about 1)."""
    m = dila_metrics()
    m["variant"] = variant
    m["rollout"]["token_mse"] = own
    m["rollout"]["z_usage"] = usage
    return m


@pytest.mark.parametrize("value, text", [(1.0002, "1.000"), (0.0569, "0.05690"), (1329.0, "1329"), (0.875, "0.8750"),
                                         (-0.006683, "-0.006683"), (1.76e-5, "1.760e-5"), (32, "32"), (0.0, "0"),
                                         (0, "0"), (-25.47, "-25.47")])
def test_numbers_have_four_significant_digits(value, text):
    assert report.number(value) == text


def test_a_spread_gives_the_mean_four_digits_and_the_sd_two():
    assert report.spread_text(1.0003568, 0.0004608) == "1.000 ± 0.00046"
    assert report.spread_text(0.9014, 0.006683) == "0.9014 ± 0.0067"
    assert report.spread_text(1.0, 1.76e-5) == "1.000 ± 1.8e-5"
    assert report.spread_text(0.5, None) == "0.5000" and report.spread_text(0.5, 0.0) == "0.5000 ± 0"


def test_the_headline_table_comes_first_with_one_row_per_variant():
    table = report.format_table({"dila": dila_metrics(), "no_content": no_content_metrics()}, plans=plans())
    head = table.index("## Headline")
    assert head < table.index("## Ablation, in detail") < table.index("## Synthetic ground truth")
    assert "| model | z usage: other-z / own-z rollout MSE | decoder read-out: MSE from s_t / from true s_{t+1} | " \
           "rollout / repeat last | teacher-forced / repeat last | probe R² on synthetic (the training store) | " \
           "planning success |" in table
    assert "\n| dila | 1.800 | 3.500 | 0.5000 | 0.5000 | 0.9500 | 0.4000 |" in table  # 0.25 / 0.5, tf 0.2 / 0.4
    assert "\n| no_content | n/a [1] | n/a [2] | n/a [1] | n/a [2] | n/a [1] | n/a [3] |" in table
    assert "[3] variant 'no_content' has no latent actions" in table
    assert "Planning success: the share of held-out goals reached" in table


def test_the_findings_say_in_words_that_no_variant_uses_z():
    metrics = {"a": ignoring("a", 1.0002), "b": ignoring("b", 0.9999), "c": no_content_metrics()}
    table = report.format_table(metrics)
    assert "- **No variant uses its latent action z.** Rolled out under another clip's z, every model with a z " \
           "predicts as well as under its own (z usage 0.9999 to 1.000; 1 means z is ignored; target: 1.5)." in table
    assert "- c: no rollout (no rollouts)." in table
    assert "must reach" not in table and "target: 1.5" in table
    mixed = report.format_table({"a": ignoring("a", 1.0002), "used": dila_metrics()})
    assert "No variant uses" not in mixed and "- **a: z is not used** (z usage below 1.05; target: 1.5)." in mixed
    assert "- dila: z usage at or above the target (1.5)." in report.format_table({"dila": dila_metrics()})
    assert "No variant uses" not in report.format_table({"dila": dila_metrics()})


def test_the_findings_name_a_variant_no_better_than_repeating_the_last_frame_and_failed_planning():
    metrics = {"dila": dila_metrics(), "flam": ignoring("flam", own=0.5)}  # rollout = repeat-last: ratio 1
    failed = plans()
    failed["variants"]["dila"]["success_rate"] = 0.0
    table = report.format_table(metrics, plans=failed)
    assert "- **flam: rollouts no better than repeating the last frame** (rollout / repeat last at or above 1)." \
        in table
    assert "\n| flam | 1.000 | 3.500 | 1.000 | " in table
    assert "- **No world model reached a planning goal** (success 0 for every variant that planned; the simulator " \
           "as model: 0.8000, random actions: 0)." in table
    assert "rollouts no better" not in report.format_table({"dila": dila_metrics()}, plans=plans())
    assert "No world model reached" not in report.format_table({"dila": dila_metrics()}, plans=plans())


def test_a_negative_r2_carries_a_note_that_says_what_it_means():
    m = dila_metrics()
    m["probe"]["synthetic"]["r2"] = -0.07905
    table = report.format_table({"dila": m})
    note = table.split("\n| dila | 1.800 | 3.500 | 0.5000 | 0.5000 | -0.07905 [")[1].split("]")[0]
    assert f"\n[{note}] A negative R² (or explained variance) means the fit predicts its targets worse than their " \
           "mean would" in table
    assert f"| -0.07905 [{note}] | 0.9900 |" in table  # the same note in the detailed table
    assert "A negative R²" not in report.format_table({"dila": dila_metrics()})


def test_codebook_columns_appear_with_a_codebook_and_read_a_dash_without():
    discrete = dila_metrics()
    discrete["latent_space"] = {**discrete["latent_space"], "codebook": {"usage": 0.75, "perplexity": 5.5}}
    table = report.format_table({"dila": dila_metrics(), "discrete": discrete})
    assert "| codebook usage | codebook perplexity |" in table
    assert "\n| dila | 6 | 4.251 | 5 | -0.6123 | 2.500 | — | — |" in table
    assert "\n| discrete | 6 | 4.251 | 5 | -0.6123 | 2.500 | 0.7500 | 5.500 |" in table


def objects_entry(slots, by_count=None, transitions=None):
    per_object = {"r2": [0.9, 0.5], "r2_by_count": by_count or {"1": 0.9, "2": 0.7}, "objects": 2}
    if transitions is not None:
        per_object["transitions_by_count"] = transitions
    return {"per_object": per_object,
            "slots": None if slots is None else {"r2": [[0.1, 0.8], [0.85, 0.2]], "assignment": [1, 0],
                                                 "assigned_r2": slots},
            "dci": {"disentanglement": 0.4, "completeness": 0.3}, "transitions": 12,
            "dci_slots": None if slots is None else {"disentanglement": 0.75, "completeness": 0.7}}


def test_objects_table_has_per_count_r2_slot_matching_and_dci():
    flat, factored = dila_metrics(), dila_metrics()
    flat["objects"], factored["objects"] = {"multi": objects_entry(None)}, {"multi": objects_entry([0.85, -0.8])}
    table = report.format_table({"dila": flat, "flam": factored, "no_content": no_content_metrics()})
    assert "| model (store) | R², 1 object | R², 2 objects | slots: assigned R² | DCI disentanglement | " \
           "DCI of slots |" in table
    assert "\n| dila (multi) | 0.9000 | 0.7000 | — | 0.4000 | — |" in table
    assert "\n| flam (multi) | 0.9000 | 0.7000 | 0.8500, -0.8000 [" in table
    assert "\n| no_content (multi) | n/a [" in table
    assert "objects of multi: the evaluation of variant 'no_content' records neither a value nor a reason" in table
    assert "## Objects" not in report.format_table({"dila": dila_metrics()})


def test_an_object_count_without_an_r2_is_explained_in_words():
    recorded, old = dila_metrics(), dila_metrics()
    recorded["objects"] = {"multi": objects_entry(None, {"1": 0.9, "2": None},
                                                  {"1": {"fit": 40, "test": 12}, "2": {"fit": 30, "test": 0}})}
    old["objects"] = {"multi": objects_entry(None, {"1": 0.9, "2": None})}
    table = report.format_table({"dila": recorded})
    assert "\n| dila (multi) | 0.9000 | n/a [2] | — | 0.4000 | — |" in table
    assert "[2] multi: none of its held-out episodes holds 2 objects (the held-out episodes are a small seeded " \
           "random draw; 30 training transitions have 2), so there is no R² for 2." in table
    assert "multi: no R² for episodes with 2 objects: fewer than 2 of the probe's held-out (or training) " \
           "transitions come from such episodes." in report.format_table({"dila": old})
    assert "r2_by_count" not in table and "not recorded in details.json" not in report.format_table({"dila": old})


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
    assert "\n| dila | 0.4000 | 0.5000 | 0.2500 |" in table
    assert "\n| no_content | n/a [3] | — | — |" in table
    assert "[3] variant 'no_content' has no latent actions" in table
    assert "\n| random actions | 0 | 0 | — |\n| simulator as model (upper bound) | 0.8000 | 1.000 | — |" in table
    assert "## Planning" not in report.format_table({"dila": dila_metrics()})
    negative = plans()
    negative["variants"]["dila"]["adapter"]["explained"] = -0.5239
    assert "\n| dila | 0.4000 | 0.5000 | -0.5239 [" in report.format_table({"dila": dila_metrics()}, plans=negative)


def test_the_seeds_table_gives_mean_and_sd_at_four_and_two_digits_and_notes_negative_r2():
    table = {"dila": {"seeds": [0, 1, 2], "rollout_ratio": {"mean": 0.9014, "sd": 0.006683, "n": 3},
                      "z_usage": {"mean": 1.0003568, "sd": 0.0004608, "n": 3},
                      "readout": {"mean": None, "sd": None, "n": 0}, "tf_mse": {"mean": 0.06582, "sd": None, "n": 1},
                      "r2_synthetic": {"mean": -0.08083, "sd": 0.003432, "n": 3}}}
    text = report.format_table({"dila": dila_metrics()}, seeds={"table": table, "missing": {}})
    assert "\n| dila | 0, 1, 2 | 0.9014 ± 0.0067 | 1.000 ± 0.00046 | — | 0.06582 | -0.08083 ± 0.0034 [2] |" in text
    assert "[2] A negative R²" in text


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


def test_missing_value_without_a_recorded_reason_says_so_in_words():
    m = dila_metrics()
    del m["cycle_transfer"]["ssim"]
    table = report.format_table({"dila": m})
    assert "| 0.3333 | n/a [2] |" in table
    assert "[2] cycle transfer SSIM: the evaluation of variant 'dila' records neither a value nor a reason (run " \
           "`dila evaluate dila` again)" in table
    assert "cycle_transfer.ssim" not in table


def test_a_recorded_reason_loses_the_unavailable_prefix():
    m = no_content_metrics()
    m["unavailable"]["rollout"] = "unavailable: variant 'no_content' has no latent actions to roll out"
    table = report.format_table({"no_content": m})
    assert "[1] variant 'no_content' has no latent actions to roll out" in table and "unavailable:" not in table


def test_baseline_row_without_any_rollout():
    table = report.format_table({"no_content": no_content_metrics()})
    assert "| repeat last frame | — | — | n/a [3] | n/a [3] | n/a [3] | — | n/a [3] | — | — | n/a [3] | — | — |" in table
    assert "[3] no variant has rollouts" in table


def latents():
    rng = np.random.default_rng(0)
    return {"z": rng.normal(size=(40, 6)).astype(np.float32), "family": np.repeat(np.arange(4), 10).astype(np.int32),
            "families": np.array(["translate", "scale", "rotate", "compose"])}


def learning():
    return {"dila": {"step": [100, 200, 300], "value": [0.07, 0.06, 0.057]},
            "no_content": {"unavailable": "no validation L_e logged at x.tsv"}}


def test_write_report_writes_table_curves_figures_and_plots_and_drops_stale_plots(tmp_path):
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "old.png").write_bytes(PNG)
    metrics = {"dila": dila_metrics(), "no_content": no_content_metrics()}
    figures = tmp_path / "docs" / "figures"
    path = report.write_report(tmp_path, metrics, {"dila": latents()}, learning=learning(), figures=figures)
    assert path == tmp_path / "table.md" and path.read_text() == EXPECTED
    assert json.loads((tmp_path / "metrics.json").read_text()) == report.headline(metrics)
    assert not (tmp_path / "seeds.json").exists()  # no seeds given
    pngs = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert pngs == ["latents_dila.png", "learning.png", "rollout_error.png"]
    assert sorted(p.name for p in figures.iterdir()) == ["learning.png", "rollout_error.png"]
    for png in [*(tmp_path / "plots").iterdir(), *figures.iterdir()]:
        assert png.read_bytes()[:8] == PNG
    assert (figures / "rollout_error.png").stat().st_size < (tmp_path / "plots" / "rollout_error.png").stat().st_size
    rollout = (tmp_path / "curves" / "rollout.tsv").read_text().splitlines()
    assert rollout[0] == "variant\tcurve\tstep\ttoken_mse" and len(rollout) == 1 + 3 * 3  # own, other z, baseline
    assert "dila\town z\t2\t0.25" in rollout and "dila\tanother clip's z\t3\t0.7" in rollout
    assert "repeat last frame\trepeat last frame\t1\t0.3" in rollout
    assert (tmp_path / "curves" / "learning.tsv").read_text().splitlines() == [
        "variant\tcurve\tstep\tL_e", "dila\tphase 1\t100\t0.07", "dila\tphase 1\t200\t0.06", "dila\tphase 1\t300\t0.057"]
    seeds = {"table": seed_table({"dila": {0: {"rollout_mse": 0.25, "repeat_mse": 0.5, "z_usage": 1.8,
                                               "readout": 3.5, "tf_mse": 0.2}}}), "missing": {}}
    report.write_report(tmp_path, metrics, {}, seeds=seeds)
    assert json.loads((tmp_path / "seeds.json").read_text()) == seeds["table"]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["rollout_error.png"]  # no curves: no learning


def test_plots_are_skipped_without_data(tmp_path):
    assert report.plot_rollout_error({"no_content": no_content_metrics()}) is None
    assert figures.learning({"dila": dila_metrics()}, {"dila": {"unavailable": "none"}}) is None
    empty = {**latents(), "z": np.zeros((0, 0), np.float32), "family": np.zeros(0, np.int32)}
    assert latent_plots.plot_variant("x", empty, tmp_path / "b.png", seed=0) is None
    unknown = {**latents(), "family": np.full(40, -1, np.int32), "families": np.array([], dtype=str)}
    assert latent_plots.plot_variant("x", unknown, tmp_path / "c.png", seed=0, method="pca").startswith("PCA")
    assert not (tmp_path / "b.png").exists()
    assert (tmp_path / "c.png").read_bytes()[:8] == PNG


def lines_by_label(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_the_rollout_error_figure_draws_own_and_other_z_per_variant_and_names_the_missing():
    flam = ignoring("flam", usage=1.0, own=0.5)
    flam["rollout"]["token_mse_per_step"] = [0.3, 0.5, 0.7]                     # on the repeat-last baseline
    flam["rollout"]["other_z"]["token_mse_per_step"] = [0.3, 0.5, 0.7]
    m = dila_metrics()
    m["encoder_weights"] = "random-init (seed 0)"
    fig = report.plot_rollout_error({"dila": m, "no_content": no_content_metrics(), "flam": flam})
    error, ratio, usage = fig.axes
    drawn = lines_by_label(error)
    for variant, own, other in (("dila", [0.1, 0.25, 0.4], [0.2, 0.45, 0.7]), ("flam", [0.3, 0.5, 0.7], [0.3, 0.5, 0.7])):
        assert list(drawn[f"{variant}: own z"].get_ydata()) == own
        assert list(drawn[f"{variant}: another clip's z"].get_ydata()) == other
        assert drawn[f"{variant}: another clip's z"].get_linestyle() == "--"
        assert drawn[f"{variant}: own z"].get_linestyle() == "-"
    assert list(drawn["repeat last frame"].get_ydata()) == [0.3, 0.5, 0.7]
    assert not any(label.startswith("no_content") for label in drawn)
    # flam lies on the baseline: its markers are shifted sideways, so they are not hidden under it or dila's
    assert list(drawn["flam: own z"].get_xdata()) != list(drawn["repeat last frame"].get_xdata())
    assert list(drawn["flam: own z"].get_xdata()) != list(drawn["dila: own z"].get_xdata())
    assert drawn["flam: own z"].get_marker() not in ("", "None") and drawn["flam: own z"].get_zorder() > 1
    np.testing.assert_allclose(lines_by_label(ratio)["flam: own z"].get_ydata(), [1, 1, 1])
    np.testing.assert_allclose(lines_by_label(usage)["dila: z usage"].get_ydata(), [2, 1.8, 1.75])
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "no_content: no rollout (no rollouts)" in legend and "dila (z usage 1.8000)" in legend
    title = fig.get_suptitle()
    assert "synthetic" in title and "8 held-out episodes" in title and "random-init (seed 0)" in title
    assert "facebook/dinov2-small" in title
    assert not error.collections  # no replicas: no seed band


def test_the_rollout_error_figure_draws_a_seed_band_where_replicas_have_curves():
    curves = {"dila": {0: {"token_mse_per_step": [0.1, 0.25, 0.4]}, 1: {"token_mse_per_step": [0.2, 0.3, 0.5]},
                       2: {"token_mse_per_step": [0.15, 0.2, 0.45]}},
              "flam": {0: {"token_mse_per_step": [0.3, 0.5, 0.7]}}}                 # one seed: no band
    fig = report.plot_rollout_error({"dila": dila_metrics(), "flam": ignoring("flam")}, curves)
    error = fig.axes[0]
    bands = [c for c in error.collections if c.get_label().endswith("seeds, min to max")]
    assert [b.get_label() for b in bands] == ["dila: 3 seeds, min to max"]
    low, high = bands[0].get_paths()[0].vertices[:, 1].min(), bands[0].get_paths()[0].vertices[:, 1].max()
    assert (low, high) == pytest.approx((0.1, 0.5))
    assert "training seeds: min to max" in [t.get_text() for t in fig.legends[0].get_texts()]
    old = {"dila": {0: {"token_mse_per_step": [0.1, 0.25, 0.4]}, 1: {}}}    # replicas written before curves were
    legend = [t.get_text() for t in report.plot_rollout_error({"dila": dila_metrics()}, old).legends[0].get_texts()]
    assert "no seed bands: the replicas hold no per-step curves" in legend
    one = {"dila": {0: {"token_mse_per_step": [0.1, 0.25, 0.4]}}}
    legend = [t.get_text() for t in report.plot_rollout_error({"dila": dila_metrics()}, one).legends[0].get_texts()]
    assert "no seed bands: one training seed" in legend


def test_the_learning_figure_draws_every_logged_curve_and_names_the_rest():
    fig = figures.learning({"dila": dila_metrics()}, learning())
    ax = fig.axes[0]
    drawn = lines_by_label(ax)
    assert list(drawn["dila"].get_ydata()) == [0.07, 0.06, 0.057]
    assert "no_content: no curve (no validation L_e logged at x.tsv)" in [t.get_text() for t in fig.legends[0].get_texts()]
    assert "synthetic" in fig.get_suptitle() and "pretrained@abc123" in fig.get_suptitle()


def test_headline_has_only_the_ratio_and_z_usage_per_variant():
    metrics = {"dila": dila_metrics(), "no_content": no_content_metrics()}
    assert report.headline(metrics) == {"dila": {"rollout_ratio": 0.5, "z_usage": 1.8},
                                        "no_content": {"rollout_ratio": None, "z_usage": None}}
    assert report.headline({"no_content": no_content_metrics()}) == {
        "no_content": {"rollout_ratio": None, "z_usage": None}}


def test_headline_refuses_variants_with_different_baselines():
    other = dila_metrics()
    other["rollout"]["baseline"]["token_mse"] = 0.6
    with pytest.raises(ValueError, match=r"disagree on the repeat-last-frame baseline: \[0.5, 0.6\]"):
        report.headline({"dila": dila_metrics(), "dila2": other})
