import pytest
import torch
import torch.nn.functional as F

from dila_core.model import DiLA
from dila_core.presets import preset
from tests.dila_core.helpers import clip, unzero

# Axes: B batch, T frames, h x w grid, D token width, d_s structure size, d_z latent action size.

COMBINATIONS = [("dila", "continuous"), ("dila", "gaussian"), ("dila", "nsvq"),
                ("no_content", "continuous"), ("no_latent_action", "continuous")]


def tiny(variant: str = "dila", bottleneck: str = "continuous", seed: int = 0, **overrides) -> DiLA:
    torch.manual_seed(seed)
    return DiLA(preset("tiny", variant=variant, bottleneck=bottleneck, **overrides))


@pytest.mark.parametrize(("variant", "bottleneck"), COMBINATIONS)
def test_forward_shapes_and_logs(variant, bottleneck):
    model = tiny(variant, bottleneck)
    e = clip(model)
    loss, logs = model(e)
    assert loss.shape == () and torch.isfinite(loss)
    structure_terms = {"L_s", "L_z", "L_collapse", "z_norm", "L_sym", "z_std", "motion_frac"}
    assert {"loss", "L_e"} <= logs.keys()
    assert (structure_terms <= logs.keys()) == (variant != "no_latent_action")
    assert all(v.shape == () and not v.requires_grad for v in logs.values())
    assert model.predict(e).shape == (2, 3, *model.cfg.grid, model.cfg.token_dim)


def test_any_grid_and_width():
    model = tiny(grid=(3, 5), token_dim=24)
    e = torch.randn(1, 3, 3, 5, 24)
    assert model.predict(e).shape == (1, 2, 3, 5, 24)
    model.eval()
    assert model.rollout(e[:, :2], torch.randn(1, model.cfg.bottleneck.d_z), 2).e.shape == (1, 2, 3, 5, 24)


def test_small_preset_forward_backward():
    torch.manual_seed(0)
    model = DiLA(preset("small"))
    e = torch.randn(1, 3, 8, 8, 384)
    loss, _ = model(e)
    loss.backward()
    assert torch.isfinite(loss) and model.backbone.proj_in.weight.grad is not None


@pytest.mark.parametrize(("variant", "bottleneck"), COMBINATIONS)
def test_gradients_reach_every_trainable_parameter(variant, bottleneck):
    model = tiny(variant, bottleneck)
    unzero(model)
    loss, _ = model(clip(model))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
    assert missing == []


def test_phase2_objective_gradients_reach_every_trainable_parameter():
    model = tiny()
    unzero(model)
    loss, logs = model.phase2_objective(clip(model))
    loss.backward()
    # the rollout uses neither the symmetry nor the consistency terms, so every module is reached via L_e
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
    assert missing == [] and "L_e_rollout" in logs


def test_encodings_are_causal_in_time():
    model = tiny().eval()
    e = clip(model, T=5)

    def encode(e):
        x = model.backbone(e)
        return (x, model.structure(x), *model.content(x))

    base = encode(e)
    for k in range(5):
        changed = e.clone()
        changed[:, k] += torch.randn_like(changed[:, k])
        for a, b in zip(base, encode(changed), strict=True):
            torch.testing.assert_close(b[:, :k], a[:, :k], rtol=0, atol=0)
            assert (b[:, k] - a[:, k]).abs().max() > 1e-6


def test_next_frame_prediction_depends_on_it_only_through_z():
    model = tiny()
    unzero(model)
    model.eval()
    e = clip(model)
    z = model.infer_actions(e)
    first = model.rollout(e[:, :1], z[:, :1], 1).e[:, 0]  # a function of e_0 and z_0 alone
    torch.testing.assert_close(model.predict(e)[:, 0], first, rtol=1e-5, atol=1e-6)


def test_rollout_prefixes_agree_and_one_action_is_repeated():
    model = tiny()
    unzero(model)
    model.eval()
    e, z = clip(model), torch.randn(2, 3, model.cfg.bottleneck.d_z)
    long, short = model.rollout(e[:, :2], z, 3), model.rollout(e[:, :2], z[:, :2], 2)
    assert long.e.shape == (2, 3, 4, 4, 32) and long.s.shape == (2, 3, 4, 4, model.cfg.d_s)
    torch.testing.assert_close(long.e[:, :2], short.e, rtol=1e-5, atol=1e-6)
    assert (long.e[:, 1] - long.e[:, 0]).abs().max() > 1e-4
    same = model.rollout(e[:, :2], z[:, 0], 3).e
    torch.testing.assert_close(same, model.rollout(e[:, :2], z[:, :1].expand(-1, 3, -1), 3).e)
    with pytest.raises(ValueError, match=r"z has shape \(2, 2, 16\); expected \(2, 3, 16\)"):
        model.rollout(e[:, :2], z[:, :2], 3)


def test_phase2_objective_is_the_rollout_error_under_inferred_actions():
    model = tiny()
    unzero(model)
    model.eval()
    e = clip(model)
    loss, logs = model.phase2_objective(e)
    out = model.rollout(e[:, :1], model.infer_actions(e), 3).e
    want = F.mse_loss(out, e[:, 1:])
    torch.testing.assert_close(logs["L_e_rollout"], want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss.detach(), model.cfg.loss.lambda_e * want, rtol=1e-5, atol=1e-6)


def test_transfer_applies_source_actions_to_target_first_frame():
    model = tiny()
    unzero(model)
    model.eval()
    source, target = clip(model, seed=2), clip(model, seed=3)
    want = model.rollout(target[:, :1], model.infer_actions(source), 3).e
    torch.testing.assert_close(model.transfer(source, target), want)


def test_rebind_matches_teacher_forcing_without_latent_action():
    model = tiny("no_latent_action").eval()
    e = clip(model)
    torch.testing.assert_close(model.rebind(e, e), model.predict(e))


def test_readout_decodes_true_next_and_current_structure():
    no_action = tiny("no_latent_action").eval()
    e = clip(no_action)
    from_next, from_current = no_action.readout(e)
    torch.testing.assert_close(from_next, no_action.predict(e))       # that variant decodes s_{t+1} itself
    model = tiny().eval()
    x = model.backbone(e)
    s = model.structure(x)
    [memory] = model.content(x)
    first = e[:, :1].expand(-1, 3, -1, -1, -1)
    from_next, from_current = model.readout(e)
    torch.testing.assert_close(from_next, model.decoder(s[:, 1:], [first, memory[:, :-1]]))
    torch.testing.assert_close(from_current, model.decoder(s[:, :-1], [first, memory[:, :-1]]))
    assert (from_next - from_current).abs().max() > 1e-5


def test_rebind_takes_structure_from_one_clip_and_content_from_the_other():
    model = tiny().eval()
    a, b = clip(model, seed=4), clip(model, seed=5)
    base = model.rebind(a, b)
    a2, b2 = a.clone(), b.clone()
    a2[:, 2] += torch.randn_like(a2[:, 2])
    b2[:, -1] += torch.randn_like(b2[:, -1])  # content of the last frame is never used
    changed = model.rebind(a2, b)
    torch.testing.assert_close(changed[:, 0], base[:, 0], rtol=0, atol=0)
    assert (changed[:, 1] - base[:, 1]).abs().max() > 1e-5
    torch.testing.assert_close(model.rebind(a, b2), base, rtol=0, atol=0)


def test_isolate_motion_freezes_structure_at_the_first_frame():
    model = tiny().eval()
    e = clip(model)
    x = model.backbone(e)
    s0 = model.structure(x[:, :1]).expand(-1, 3, -1, -1, -1)
    [memory] = model.content(x)
    want = model.decoder(s0, [e[:, :1].expand(-1, 3, -1, -1, -1), memory[:, :-1]])
    torch.testing.assert_close(model.isolate_motion(e), want)


def test_no_latent_action_variant_has_no_actions():
    model = tiny("no_latent_action")
    e = clip(model)
    for call in (lambda: model.infer_actions(e), lambda: model.phase2_objective(e),
                 lambda: model.rollout(e[:, :1], torch.randn(2, 3, 16), 3), lambda: model.transfer(e, e)):
        with pytest.raises(ValueError, match="has no latent actions"):
            call()


def test_wrong_input_shape_is_a_clear_error():
    model = tiny()
    with pytest.raises(ValueError, match=r"e has shape \(2, 4, 4, 4, 31\); expected \(B, T, 4, 4, 32\) with T >= 2"):
        model(torch.randn(2, 4, 4, 4, 31))
    with pytest.raises(ValueError, match="T >= 2"):
        model(torch.randn(2, 1, 4, 4, 32))


def test_inputs_are_not_mutated():
    model = tiny("dila", "nsvq")
    e, z = clip(model), torch.randn(2, 3, model.cfg.bottleneck.d_z)
    e_kept, z_kept = e.clone(), z.clone()
    model(e)[0].backward()
    model.phase2_objective(e)[0].backward()
    model.eval()
    for call in (lambda: model.predict(e), lambda: model.rollout(e[:, :2], z, 3), lambda: model.transfer(e, e),
                 lambda: model.rebind(e, e), lambda: model.isolate_motion(e), lambda: model.infer_actions(e)):
        call()
    assert torch.equal(e, e_kept) and torch.equal(z, z_kept)


def moving_patterns() -> torch.Tensor:
    """4 clips of 4 frames: a random 4x4x32 pattern shifting left or right one token per frame."""
    g = torch.Generator().manual_seed(1)
    base = torch.randn(4, 4, 4, 32, generator=g)
    return torch.stack([torch.stack([base[b].roll(t * (1 if b % 2 else -1), dims=1) for t in range(4)])
                        for b in range(4)])


def test_tiny_preset_overfits_a_fixed_batch():
    model = tiny()
    e = moving_patterns()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        loss, _ = model(e)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-10:]) < 0.1 * losses[0]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_and_runs_in_bf16():
    model = tiny().eval()
    e = clip(model)
    cpu = model.predict(e)
    gpu_model = model.cuda()
    torch.testing.assert_close(gpu_model.predict(e.cuda()).cpu(), cpu, rtol=1e-3, atol=1e-3)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, _ = gpu_model.train()(e.cuda())
    loss.backward()
    assert torch.isfinite(loss)
