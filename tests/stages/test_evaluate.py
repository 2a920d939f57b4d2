import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import zarr

from pipeline import artifacts
from pipeline.artifacts import final_record
from pipeline.data import windows
from pipeline.data.sources import build_source
from pipeline.data.sources.synthetic import MOTIONS
from pipeline.data.split import split_episodes
from pipeline.data.store import open_store
from pipeline.evaluation import clips, latent_stats, manifold, sections
from pipeline.evaluation import metrics as M
from pipeline.training import runs
from stages import evaluate, rollout
from tests.stages.conftest import ONLY_DILA
from tests.stages.helpers import private, save_decoder, save_model, stage_params


def normalized_rollouts(params):
    group = zarr.open_group(artifacts.rollout_store(params, "dila"), mode="r")
    root = open_store(artifacts.store_path(params, "synthetic"))
    mean, std = root["stats/mean"][:], root["stats/std"][:]
    return (windows.normalize(group["truth"][:], mean, std), windows.normalize(group["predicted"][:], mean, std))


def test_metrics_file_identifies_model_data_and_encoder(run):
    m = run.metrics
    assert run.path == Path(run.params.paths.eval) / "dila" / "metrics.json"
    assert (m["format"], m["variant"], m["dataset"]) == ("dila-metrics/1", "dila", "synthetic")
    assert m["encoder_weights"] == "random-init (seed 0)" and m["encoder"]["weights"] == "random-init (seed 0)"
    assert (m["model"]["phase"], m["model"]["step"], m["model"]["bottleneck"]) == ("finetune", 5, "continuous")
    assert m["model"]["family"] == "dila"
    assert m["clips"] == {"count": 2, "frames": 4, "frame_skip": 1}


def test_metrics_file_holds_the_headline_numbers_of_the_details(run):
    m, h = run.metrics, run.headline
    assert list(h) == ["rollout_mse", "repeat_mse", "z_usage", "readout", "tf_mse", "r2_synthetic"]
    assert (h["rollout_mse"], h["repeat_mse"]) == (m["rollout"]["token_mse"], m["rollout"]["baseline"]["token_mse"])
    assert h["z_usage"] == m["rollout"]["z_usage"] and h["r2_synthetic"] == m["probe"]["synthetic"]["r2"]
    assert (h["tf_mse"], h["readout"]) == (None, None) and "teacher_forced" in m["unavailable"]


def test_rollout_errors_are_computed_from_the_stored_rollouts(run):
    truth, pred = normalized_rollouts(run.params)
    r = run.metrics["rollout"]
    np.testing.assert_allclose(r["token_mse_per_step"], np.square(pred - truth[:, 1:]).mean(axis=(0, 2, 3, 4)))
    np.testing.assert_allclose(r["cosine_per_step"], M.cosine_per_step(pred, truth[:, 1:]))
    base = np.square(truth[:, :1] - truth[:, 1:]).mean(axis=(0, 2, 3, 4))
    np.testing.assert_allclose(r["baseline"]["token_mse_per_step"], base)
    assert r["token_mse"] == pytest.approx(np.mean(r["token_mse_per_step"]))
    assert (r["episodes"], r["context"], r["horizon"]) == (2, 1, 3)


def test_rollouts_under_another_clips_actions(run):
    truth, _ = normalized_rollouts(run.params)
    e = torch.from_numpy(truth)
    with torch.no_grad():
        z = run.model.infer_actions(torch.roll(e, -1, dims=0))                     # the next clip's actions
        other = run.model.rollout(e[:, :1], z, 3).e.numpy()
    got = run.metrics["rollout"]["other_z"]
    np.testing.assert_allclose(got["token_mse_per_step"], np.square(other - truth[:, 1:]).mean(axis=(0, 2, 3, 4)),
                               rtol=1e-5)
    assert got["token_mse"] == pytest.approx(np.mean(got["token_mse_per_step"]))
    r = run.metrics["rollout"]
    assert r["z_usage"] == pytest.approx(got["token_mse"] / r["token_mse"])


def val_clips(params):
    _, val = runs.open_windows(params)
    return clips.stack(val, clips.pick(val, tile=False))


def test_cycle_transfer_and_isolation_match_the_model(run):
    e = val_clips(run.params)["e"]
    with torch.no_grad():
        back = M.cycle_transfer(lambda s, t: run.model.transfer(torch.from_numpy(s), torch.from_numpy(t)).numpy(),
                                e, np.roll(e, -1, axis=0))
        frozen = run.model.isolate_motion(torch.from_numpy(e)).numpy()
    c = run.metrics["cycle_transfer"]
    assert c["pairs"] == 2 and c["token_mse"] == pytest.approx(np.square(back - e[:, 1:]).mean(), rel=1e-5)
    assert c["baseline_token_mse"] == pytest.approx(np.square(e[:, :1] - e[:, 1:]).mean(), rel=1e-6)
    iso = run.metrics["motion_isolation"]
    np.testing.assert_allclose(iso["drift_per_step"], M.isolation_drift(frozen), rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(iso["reference_per_step"], M.isolation_drift(e[:, 1:]), rtol=1e-6)


def test_ground_truth_renders_reproduce_the_store_and_score_the_model(run):
    gt = run.metrics["ground_truth"]
    assert gt["pairs"] == 2
    assert gt["reencode_mse"] < 1e-6  # render + frozen encoder reproduce the stored tokens
    for key in ("action_transfer", "rebinding"):
        assert gt[key]["token_mse"] > 0 and gt[key]["baseline_token_mse"] > 0


def test_probe_fits_on_train_episodes_and_scores_held_out_ones(run):
    probe = run.metrics["probe"]["synthetic"]
    # 10-frame episodes tiled by 4-frame windows at offsets 0, 3, 6: 9 transitions per episode
    train, val = split_episodes(6, 0.34, run.params.seed)
    assert (probe["train_samples"], probe["test_samples"]) == (9 * len(train), 9 * len(val))
    assert len(probe["r2_per_dim"]) == 4 and probe["alpha"] == 1.0
    defined = [v for i, v in enumerate(probe["r2_per_dim"]) if i in (0, 1) and v is not None]
    assert probe["r2_translation"] == pytest.approx(np.mean(defined))


def test_probe_targets_are_the_actions_at_frame_skip_one(run):
    clips = val_clips(run.params)
    ctx = SimpleNamespace(source=lambda name: build_source(run.params.dataset(name)))
    np.testing.assert_allclose(sections.probe_targets(ctx, "synthetic", clips), clips["actions"][:, :-1], atol=1e-6)
    none = SimpleNamespace(source=lambda name: SimpleNamespace(probe_targets=lambda actions, labels: None))
    with pytest.raises(sections.Unavailable, match="'synthetic' feature store has no actions"):
        sections.probe_targets(none, "synthetic", clips)


def test_probe_is_scored_per_motion_family(run):
    probe = run.metrics["probe"]["synthetic"]
    motion = val_clips(run.params)["labels"]["motion"]                              # one family per episode
    assert set(probe["groups"]) == {MOTIONS[f] for f in np.unique(motion[:, 0])}
    assert sum(g["samples"] for g in probe["groups"].values()) == probe["test_samples"]


def test_latents_file_holds_validation_z_motion_families_and_action_sizes(run):
    with np.load(artifacts.latents_path(run.params, "dila")) as f:
        z, family, names, magnitude = f["z"], f["family"], f["families"], f["magnitude"]
    assert z.shape == (18, run.model.cfg.bottleneck.d_z) and names.tolist() == list(MOTIONS)
    motion = val_clips(run.params)["labels"]["motion"]  # one family per episode
    assert set(family.tolist()) == set(motion[:, 0].tolist())
    _, val = runs.open_windows(run.params)
    tiled = clips.stack(val, clips.pick(val, tile=True))
    np.testing.assert_allclose(magnitude, np.linalg.norm(tiled["actions"][:, :-1], axis=-1).reshape(-1), rtol=1e-6)


def test_future_leakage_is_computed_from_one_step_predictions(run):
    got = run.metrics["future_leakage"]
    e = torch.from_numpy(val_clips(run.params)["e"])                               # (N, 4, h, w, D)
    now, other = np.arange(3), np.array([2, 3, 0])                                 # the shuffled future of t -> t+1

    def one_step(future):
        with torch.no_grad():
            z = run.model.infer_actions(torch.stack([e[:, now], future], dim=2).flatten(0, 1))
            return run.model.rollout(e[:, now].flatten(0, 1)[:, None], z, 1).e[:, 0]
    truth = e[:, now + 1].flatten(0, 1)
    assert got["true_z_mse"] == pytest.approx(float((one_step(e[:, now + 1]) - truth).square().mean()), rel=1e-5)
    assert got["shuffled_z_mse"] == pytest.approx(float((one_step(e[:, other]) - truth).square().mean()), rel=1e-5)
    assert got["ratio"] == pytest.approx(got["shuffled_z_mse"] / got["true_z_mse"]) and got["transitions"] == 6


class _Copy(torch.nn.Module):
    """z = the next frame itself (all the future through z) or, with ignore, z = nothing."""

    def __init__(self, ignore):
        super().__init__()
        self.ignore = ignore
        self.capabilities = SimpleNamespace(latent_actions=True)

    def infer_actions(self, e):
        return e[:, 1:].flatten(2)

    def rollout(self, e_context, z, steps):
        out = e_context[:, -1:] if self.ignore else z.reshape(e_context.shape)
        return SimpleNamespace(e=out)


def test_future_leakage_separates_a_model_that_reads_z_from_one_that_ignores_it():
    e = np.random.default_rng(0).normal(size=(3, 5, 2, 2, 4)).astype(np.float32)
    ctx = SimpleNamespace(clips={"e": e}, dev=torch.device("cpu"), require_latents=lambda what: None)
    ctx.model = _Copy(ignore=False)
    reads = manifold.future_leakage_section(ctx)
    assert reads["true_z_mse"] == 0.0 and reads["shuffled_z_mse"] > 0.5 and reads["transitions"] == 12
    ctx.model = _Copy(ignore=True)
    ignores = manifold.future_leakage_section(ctx)
    assert ignores["ratio"] == 1.0 and ignores["true_z_mse"] == pytest.approx(ignores["repeat_mse"])


def test_latent_space_numbers_are_those_of_the_latents_file_and_the_model(run):
    lat = run.metrics["latent_space"]
    with np.load(artifacts.latents_path(run.params, "dila")) as f:
        z = f["z"]
    assert (lat["transitions"], lat["d_z"]) == z.shape and "codebook" not in lat  # continuous z
    assert lat["effective_rank"] == pytest.approx(latent_stats.effective_rank(z), rel=1e-6)
    np.testing.assert_allclose(lat["dimension_variance"], z.astype(np.float64).var(0), rtol=1e-5)
    e = val_clips(run.params)["e"]                                                  # (N, T, h, w, D)
    with torch.no_grad():
        fwd = run.model.infer_actions(torch.from_numpy(e)).numpy()
        bwd = run.model.infer_actions(torch.from_numpy(np.ascontiguousarray(e[:, ::-1]))).numpy()
    # transition t -> t+1 against t+1 -> t: the reversed clip's transitions in reverse order
    assert lat["inverse_consistency"] == pytest.approx(latent_stats.inverse_consistency(fwd, bwd[:, ::-1]), abs=1e-5)


def test_codebook_statistics_count_identical_tokens_as_one_code():
    # 3 rows of 2 tokens (code_dim 2): codes A, B, A | A, A, C -> histogram A 4, B 1, C 1 of 6
    a, b, c = [1.0, 0.0], [0.0, 1.0], [2.0, 2.0]
    z = np.array([a + b, a + a, a + c])
    p = np.array([4, 1, 1]) / 6
    stats = manifold.codebook_statistics(z, code_dim=2, codebook_size=8)
    assert stats == pytest.approx({"usage": 3 / 8, "perplexity": float(np.exp(-(p * np.log(p)).sum()))})


def test_unavailable_metrics_carry_their_reason(run):
    gone = run.metrics["unavailable"]
    assert gone["rollout.ssim"].startswith("no pixel decoder at") and "rollout.ssim" not in run.metrics["rollout"]
    assert "teacher_forced" not in run.metrics
    assert gone["teacher_forced"].startswith(f"no phase-1 record at {final_record(run.params, 'dila', 'train')}")


def test_teacher_forced_mse_is_read_from_the_phase_one_record(run, tmp_path):
    params = private(run.params, tmp_path, copy=True)
    path = final_record(params, "dila", "train")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"val": {"L_e": 0.25, "loss": 0.7}, "spec": {"steps": 12}}))
    e = val_clips(run.params)["e"]
    ctx = SimpleNamespace(params=params, variant="dila", model=run.model, clips={"e": e}, dev=torch.device("cpu"),
                          verb=lambda name: getattr(run.model, name))
    got = sections.teacher_forced_section(ctx)
    assert (got["val_mse"], got["step"], got["record"]) == (0.25, 12, str(path))
    with torch.no_grad():
        own = run.model.predict(torch.from_numpy(e)).numpy()
        from_next, from_current = (x.numpy() for x in run.model.readout(torch.from_numpy(e)))
    assert got["clips_val_mse"] == pytest.approx(np.square(own - e[:, 1:]).mean(), rel=1e-5)
    assert got["baseline_val_mse"] == pytest.approx(np.square(e[:, :-1] - e[:, 1:]).mean(), rel=1e-6)
    assert got["ratio_to_baseline"] == pytest.approx(got["clips_val_mse"] / got["baseline_val_mse"])
    r = got["readout"]
    assert r["from_true_next_s"] == pytest.approx(np.square(from_next - e[:, 1:]).mean(), rel=1e-5)
    assert r["from_current_s"] == pytest.approx(np.square(from_current - e[:, 1:]).mean(), rel=1e-5)
    assert r["ratio"] == pytest.approx(r["from_current_s"] / r["from_true_next_s"])
    path.write_text(json.dumps({"val": {}, "spec": {"steps": 12}}))
    with pytest.raises(sections.Unavailable, match="no final validation L_e"):
        sections.teacher_forced_section(ctx)


def test_pixel_metrics_with_a_pixel_decoder(run, tmp_path):
    p = private(run.params, tmp_path, copy=True)
    save_decoder(p, open_store(artifacts.store_path(p, "synthetic")).attrs["dila"]["plan_sha256"])
    evaluate.run(p, "dila")
    m = json.loads(artifacts.details_path(p, "dila").read_text())
    for section in (m["rollout"], m["rollout"]["baseline"], m["cycle_transfer"]):
        assert -1 <= section["ssim"] <= 1
    assert len(m["rollout"]["ssim_per_step"]) == 3
    assert ("lpips" in m["rollout"]) != ("rollout.lpips" in m["unavailable"])


def test_stale_or_missing_rollouts_are_errors(run):
    p = stage_params(run.tmp, ONLY_DILA, "rollout.horizon=2")
    with pytest.raises(artifacts.MissingInput, match=r"rollouts made with .* run `dila rollout dila` again"):
        evaluate.run(p, "dila")
    p = stage_params(run.tmp, ONLY_DILA, f"paths.eval={run.tmp}/elsewhere")
    with pytest.raises(artifacts.MissingInput, match="run `dila rollout dila` first"):
        evaluate.run(p, "dila")


def test_variant_without_latent_actions(run, tmp_path):
    p = private(stage_params(run.tmp, "variants.nola.variant=no_latent_action"), tmp_path)
    save_model(p, "nola", kind="no_latent_action", phase="train")
    rollout.run(p, "nola")
    headline = json.loads(evaluate.run(p, "nola").read_text())
    m = json.loads(artifacts.details_path(p, "nola").read_text())
    assert headline.keys() == run.headline.keys()  # the same columns for every variant
    assert headline["z_usage"] is None and headline["rollout_mse"] is None
    gone = m["unavailable"]
    for key in ("rollout", "cycle_transfer", "probe.synthetic", "ground_truth.action_transfer", "latent_space"):
        assert "has no latent actions" in gone[key], key
    assert m["ground_truth"]["rebinding"]["token_mse"] > 0 and "drift" in m["motion_isolation"]
    with np.load(artifacts.latents_path(p, "nola")) as f:
        assert f["z"].shape == (0, 0) and f["family"].shape == (0,)
