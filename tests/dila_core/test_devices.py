"""The training devices of dila_core.losses (each off by default), on hand-built cases: the hinge
anti-collapse, motion-weighted L_e, the usage margin, the read term, the z-regulariser gate, the
Xavier re-initialisation and the parameter groups."""
import pytest
import torch
import torch.nn.functional as F

from dila_core.losses import (
    LossConfig,
    collapse_hinge,
    collapse_term,
    gate_scale,
    motion_weighted_mse,
    usage_hinge,
)
from dila_core.model import DiLA, other_clips
from dila_core.presets import preset
from tests.dila_core.helpers import blob_clips, clip, unzero

NOREG = {"lambda_z": 0.0, "lambda_norm": 0.0, "lambda_sym": 0.0, "collapse_scale": 0.0}


def tiny(seed: int = 0, **loss) -> DiLA:
    torch.manual_seed(seed)
    return DiLA(preset("tiny", loss=loss))


def twin(m: DiLA, **loss) -> DiLA:
    """A model with m's weights and these loss settings, in eval mode (its forward is deterministic)."""
    other = tiny(**loss)
    other.load_state_dict(m.state_dict())
    return other.eval()


def test_hinge_pays_for_dead_dimensions_only():
    z = torch.zeros(4, 1, 3)
    z[:, 0, 0] = torch.tensor([-1.0, 1.0, -1.0, 1.0])  # std 1 (population)
    z[:, 0, 1] = torch.tensor([-0.1, 0.1, -0.1, 0.1])  # std 0.1
    # dims: std 1 (>= 0.5: free), 0.1 (pays 0.4), 0 (pays 0.5); mean 0.3, scaled by 2
    torch.testing.assert_close(collapse_hinge(z, 2.0, 0.5), torch.tensor(0.6))
    assert collapse_hinge(3 * z[..., :1], 2.0, 0.5) == 0  # alive: no reward for more variation
    cfg = LossConfig(collapse="hinge", collapse_scale=2.0, collapse_target=0.5)
    torch.testing.assert_close(collapse_term(z, cfg), torch.tensor(0.6))
    torch.testing.assert_close(collapse_term(z, LossConfig()), 0.5 * torch.exp(-10 * z.std(dim=(0, 1), correction=0).mean()))


def test_motion_weighted_mse_weighs_the_tokens_that_change():
    prev = torch.zeros(1, 1, 1, 2, 3)
    target = torch.zeros(1, 1, 1, 2, 3)
    target[..., 1, :] = 1.0                        # token 1 changes (d = 3), token 0 does not (d = 0)
    pred = torch.full_like(target, 0.5)            # squared error 0.25 everywhere
    assert motion_weighted_mse(pred, target, prev, 0.0) == F.mse_loss(pred, target)
    # d / mean(d) = (0, 2): weights (1, 1 + 2α) / (1 + α); with α = 1: 0.5 and 1.5 (mean 1)
    pred2 = pred.clone()
    pred2[..., 1, :] = 1.0                         # error only on the still token
    torch.testing.assert_close(motion_weighted_mse(pred2, target, prev, 1.0), torch.tensor(0.5 * 0.25 / 2))
    torch.testing.assert_close(motion_weighted_mse(pred, target, prev, 1.0), torch.tensor(0.25))


def test_usage_hinge_and_gate_scale_values():
    own = torch.tensor(0.2)
    torch.testing.assert_close(usage_hinge(own, torch.tensor(0.2), 0.5), torch.tensor(0.5))
    torch.testing.assert_close(usage_hinge(own, torch.tensor(0.25), 0.5), torch.tensor(0.25))
    assert usage_hinge(own, torch.tensor(0.4), 0.5) == 0
    assert [gate_scale(k, -1, 4) for k in (0, 10)] == [0.0, 0.0]
    assert [gate_scale(k, 2, 4) for k in (1, 2, 3, 6, 9)] == [0.0, 0.0, 0.25, 1.0, 1.0]
    assert gate_scale(2, 2, 0) == 1.0


def test_z_regularisers_scale_with_the_gate_and_l_s_does_not():
    m = tiny()
    unzero(m)
    s = torch.randn(2, 4, 4, 4, m.cfg.d_s, generator=torch.Generator().manual_seed(3))
    _, full, logs, _ = m.dynamics(s, 1.0)
    _, off, _, _ = m.dynamics(s, 0.0)
    cfg = m.cfg.loss
    reg = cfg.lambda_z * (logs["L_z"] + logs["L_collapse"]) + cfg.lambda_norm * logs["z_norm"] + cfg.lambda_sym * logs["L_sym"]
    torch.testing.assert_close(off, cfg.lambda_s * logs["L_s"])
    torch.testing.assert_close(full, off + reg)


def test_gate_opens_after_reg_after_updates_and_ramps_in():
    m = tiny(reg_after=3, reg_ramp=2).train()
    e = clip(m)
    scales = [float(m(e)[1]["reg_scale"]) for _ in range(7)]
    assert scales == [0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 1.0]
    assert int(m.gate_open) == 3 and int(m.gate_updates) == 7
    m.eval()
    m(e)
    assert int(m.gate_updates) == 7  # validation passes do not count as updates


def test_gate_opens_when_the_running_usage_reaches_its_threshold():
    m = tiny(reg_gate=1.5)
    for _ in range(3):  # running usage 1.2, 1.36, 1.488: still closed
        m._step_gate(2.0)
    assert int(m.gate_open) == -1
    m._step_gate(2.0)   # 1.59 >= 1.5
    assert int(m.gate_open) == 0
    torch.testing.assert_close(m.gate_usage, torch.tensor(1.5904))


def test_gate_state_is_saved_with_the_weights_and_absent_when_off():
    assert "gate_open" in tiny(reg_gate=1.2).state_dict()
    assert not any(k.startswith("gate_") for k in tiny().state_dict())


def test_usage_margin_adds_its_hinge_on_another_clip_s_z():
    m = tiny()
    unzero(m)
    m.eval()  # deterministic: the same forward twice
    e = clip(m, B=3)
    with torch.no_grad():
        own = F.mse_loss(m.predict(e), e[:, 1:])
        other = F.mse_loss(m.predict(e, other=other_clips(3, e.device)), e[:, 1:])
        base, _ = m(e)
    with torch.no_grad():
        loss, logs = twin(m, usage_margin=2.0, margin=0.5)(e)
    torch.testing.assert_close(loss, base + 2.0 * torch.relu(1.5 - other / own))
    torch.testing.assert_close(logs["usage"], other / own)


def test_read_weight_adds_the_decoder_s_error_from_the_true_next_structure():
    m = tiny()
    unzero(m)
    m.eval()
    e = clip(m, B=3)
    with torch.no_grad():
        base, _ = m(e)
        from_next, _ = m.readout(e)
    with torch.no_grad():
        loss, logs = twin(m, read_weight=0.7)(e)
    expected = F.mse_loss(from_next, e[:, 1:])
    torch.testing.assert_close(logs["L_read"], expected)
    torch.testing.assert_close(loss, base + 0.7 * expected)


def test_read_weight_trains_the_structure_encoder_without_any_other_term():
    m = tiny(read_weight=1.0, lambda_e=0.0, lambda_s=0.0, **NOREG)
    unzero(m)
    loss, _ = m(clip(m, B=3))
    loss.backward()
    assert loss > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.structure.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in m.dynamics.idm.parameters())


def test_usage_margin_sends_gradient_to_the_idm():
    m = tiny(usage_margin=1.0, margin=10.0, lambda_e=0.0, lambda_s=0.0, **NOREG)
    unzero(m)
    loss, _ = m(clip(m, B=3))
    loss.backward()
    assert m.dynamics.idm.head[-1].weight.grad.abs().sum() > 0


def test_predict_under_other_clips_z_is_the_same_model_with_swapped_actions():
    m = tiny()
    unzero(m)
    m.eval()
    e = clip(m, B=3)
    with torch.no_grad():
        z = m.infer_actions(e)
        swapped = m.predict(e, other=other_clips(3, e.device))
        x = m.backbone(e)
        s = m.structure(x)
        memory = [c[:, :-1] for c in m.content(x)]
        manual = m._decode(s[:, :-1] + m.dynamics.predict(s[:, :-1], z[[2, 0, 1]]), e[:, 0], memory)
    torch.testing.assert_close(swapped, manual)
    assert other_clips(3, e.device).tolist() == [2, 0, 1]


def test_xavier_init_leaves_no_zero_linear_and_the_fdm_reads_z_at_step_zero():
    torch.manual_seed(0)
    m = DiLA(preset("tiny", init="xavier"))
    for mod in m.modules():
        if isinstance(mod, torch.nn.Linear):
            assert mod.weight.abs().min() > 0 or mod.weight.numel() > 1e5  # xavier draws are never exactly 0
            assert mod.bias is None or torch.all(mod.bias == 0)
    s = torch.randn(2, 3, 4, 4, m.cfg.d_s)
    z = torch.randn(2, 3, m.cfg.bottleneck.d_z)
    with torch.no_grad():
        assert (m.dynamics.predict(s, z) - m.dynamics.predict(s, 2 * z)).abs().max() > 1e-3
    torch.manual_seed(0)
    default = DiLA(preset("tiny"))
    with torch.no_grad():  # ours: the zero-initialised FDM head ignores z at step 0
        assert torch.all(default.dynamics.predict(s, z) == 0)


def test_param_groups_cover_every_parameter_once():
    for variant in ("dila", "no_content", "no_latent_action"):
        m = DiLA(preset("tiny", variant=variant))
        groups = m.param_groups()
        ids = [id(p) for ps in groups.values() for p in ps]
        assert len(ids) == len(set(ids)) == len(list(m.parameters()))
    m = DiLA(preset("tiny"))
    assert {id(p) for p in m.param_groups()["idm"]} == {id(p) for p in m.dynamics.idm.parameters()}


@pytest.mark.parametrize("bad", [{"collapse": "linear"}, {"motion_weight": -1.0}, {"reg_ramp": -2},
                                 {"reg_check_every": 0}, {"read_weight": -0.5}])
def test_device_values_are_checked(bad):
    with pytest.raises(ValueError, match=f"loss.{next(iter(bad))}"):
        preset("tiny", loss=bad)


def test_gated_motion_weight_ramps_out_as_the_regularisers_ramp_in():
    zero = {**NOREG, "lambda_s": 0.0}
    m = tiny(reg_after=1, reg_ramp=2, motion_weight=3.0, motion_gated=True, **zero).train()
    e = clip(m)
    with torch.no_grad():
        pred = m.predict(e)
    alphas = []
    for _ in range(4):
        loss, logs = m(e)
        for alpha in (3.0, 1.5, 0.0):
            if torch.allclose(loss, m.cfg.loss.lambda_e * motion_weighted_mse(pred, e[:, 1:], e[:, :-1], alpha)):
                alphas.append(alpha)
    assert alphas == [3.0, 3.0, 1.5, 0.0]  # scale 0, 0 (opened at 1), 0.5, 1
    with pytest.raises(ValueError, match="loss.motion_gated"):
        preset("tiny", loss={"motion_gated": True, "motion_weight": 1.0})  # no gate to follow


def blob_usage(cut_z: bool = False, steps: int = 300) -> tuple[float, float]:
    """Train DiLA tiny on the blob toy (z regularisers off, motion weight 1: benchmarks/z_toy.py's
    best setting) and return (usage = other-z / own-z MSE, own / repeat-last) on fresh clips;
    with `cut_z` the FDM sees zeros instead of z."""
    torch.manual_seed(0)
    m = DiLA(preset("tiny", grid=(4, 4), token_dim=16, loss={**NOREG, "motion_weight": 1.0}))
    if cut_z:
        fdm = m.dynamics.fdm
        forward = fdm.forward
        fdm.forward = lambda s, z: forward(s, torch.zeros_like(z))
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3, weight_decay=1e-5)
    g = torch.Generator().manual_seed(1000)
    for _ in range(steps):
        loss, _ = m(blob_clips(32, 4, g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    e = blob_clips(64, 4, torch.Generator().manual_seed(99))
    with torch.no_grad():
        own = F.mse_loss(m.predict(e), e[:, 1:])
        other = F.mse_loss(m.predict(e, other=other_clips(64, e.device)), e[:, 1:])
    return float(other / own), float(own / F.mse_loss(e[:, :-1], e[:, 1:]))


def test_a_learned_idm_s_z_is_used_on_the_blob_toy_and_not_when_cut_from_the_fdm():
    usage, own = blob_usage()
    # measured (seed 0, one thread): usage 1.9, own / repeat-last 0.45; the paper's objective
    # leaves usage at 1.00 here (BENCHMARKS.md, "Learning the latent action")
    assert usage >= 1.3 and own < 0.6
    cut, _ = blob_usage(cut_z=True)
    assert cut < 1.01  # the control: without z reaching the FDM nothing can use it
