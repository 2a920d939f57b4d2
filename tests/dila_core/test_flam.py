import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from dila_core.flam import FLAM, FLAMConfig, preset
from dila_core.world_model import FAMILIES, Capabilities, capabilities
from pipeline.config import build, to_dict
from tests.dila_core.helpers import blob_clips, clip, unzero

# Axes: B batch, T frames, h x w grid, D token width, K slots, W slot width, d = d_z / K.


def tiny(slots: int = 4, bottleneck: str = "gaussian", seed: int = 0, **overrides) -> FLAM:
    torch.manual_seed(seed)
    return FLAM(preset("tiny", bottleneck=bottleneck, slots=slots, **overrides))


def test_per_slot_shapes_masks_and_the_order_of_z():
    model = tiny().eval()
    e = clip(model)
    W, K, d = model.cfg.slot_attention.width, 4, model.cfg.bottleneck.d_z // 4
    with torch.no_grad():
        assert model.slots(e).shape == (2, 4, K, W)
        per_slot, z = model.slot_actions(e), model.infer_actions(e)
        masks = model.slot_masks(e)
        assert model.predict(e).shape == (2, 3, 4, 4, 32)
    assert per_slot.shape == (2, 3, K, d) and z.shape == (2, 3, model.cfg.bottleneck.d_z)
    for k in range(K):  # z[..., k*d:(k+1)*d] is slot k's action
        torch.testing.assert_close(z[..., k * d:(k + 1) * d], per_slot[:, :, k], rtol=0, atol=0)
    assert (per_slot[:, :, 0] - per_slot[:, :, 1]).abs().max() > 1e-4
    assert masks.shape == (2, 4, K, 4, 4) and masks.min() >= 0
    torch.testing.assert_close(masks.sum(2), torch.ones(2, 4, 4, 4))


def test_slots_are_causal_in_time():
    model = tiny().eval()
    e = clip(model, T=5)
    with torch.no_grad():
        base = (model.slots(e), model.slot_masks(e))
        for k in range(5):
            changed = e.clone()
            changed[:, k] += torch.randn_like(changed[:, k])
            for a, b in zip(base, (model.slots(changed), model.slot_masks(changed)), strict=True):
                torch.testing.assert_close(b[:, :k], a[:, :k], rtol=0, atol=0)
                assert (b[:, k] - a[:, k]).abs().max() > 1e-6


def test_next_frame_prediction_depends_on_it_only_through_z():
    model = tiny()
    unzero(model)
    model.eval()
    e = clip(model)
    with torch.no_grad():
        z = model.infer_actions(e)
        first = model.rollout(e[:, :1], z[:, :1], 1).e[:, 0]  # a function of e_0 and z_0 alone
        torch.testing.assert_close(model.predict(e)[:, 0], first, rtol=1e-5, atol=1e-6)


def test_each_slot_moves_under_its_own_action_only():
    model = tiny()
    unzero(model)
    model.eval()
    e, d = clip(model), model.cfg.bottleneck.d_z // 4
    z = torch.randn(2, 1, model.cfg.bottleneck.d_z)
    with torch.no_grad():
        base = model.rollout(e[:, :2], z, 1).s[:, 0]                              # (B, K, W)
        for j in range(4):
            other = z.clone()
            other[..., j * d:(j + 1) * d] += 1.0
            moved = model.rollout(e[:, :2], other, 1).s[:, 0]
            change = (moved - base).abs().amax((0, 2))                            # (K,)
            assert change[j] > 1e-4 and all(change[k] == 0 for k in range(4) if k != j)


def monolithic(model: FLAM, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """FLAM's weights used as a monolithic model, written out: one state vector s_t per frame
    (every token pooled with equal weight), z_t = bottleneck(IDM(s_t, s_{t+1})),
    ŝ_{t+1} = s_t + FDM(s_t, z_t), ê_{t+1} = MLP(ŝ_{t+1} at each grid position). Returns (z, ê)."""
    enc, sa, dec = model.encoder, model.encoder.attention, model.decoder
    B, T, h = e.shape[0], e.shape[1], e.shape[2]
    x = enc.tokens(rearrange(enc.proj_in(e), "b t h w c -> b t (h w) c") + enc.position)
    pooled = sa.to_v(sa.norm_x(x)).mean(2)                                        # (B, T, W)
    u, states = sa.init[0].expand(B, -1), []
    for t in range(T):
        for _ in range(sa.iters):
            u = sa.gru(pooled[:, t], u)
            u = u + sa.mlp(u)
        states.append(u)
    s = enc.temporal(torch.stack(states, 1)[:, :, None])[:, :, 0]                 # (B, T, W)

    def mlp(net, s_t, own):  # attention over one slot returns that slot's value
        y = net.lift(torch.cat([s_t, own], -1))
        for block in net.blocks:
            inner = block.attention.to_out.in_features
            value = block.attention.to_kv(block.context_norm(s_t))[..., inner:]
            y = block.ffn(y + block.attention.to_out(value))
        return net.head(net.norm(y))

    z = model.bottleneck.infer(mlp(model.idm, s[:, :-1], s[:, 1:]))              # (B, T-1, d_z)
    s_next = s[:, :-1] + mlp(model.fdm, s[:, :-1], z)
    out = dec.body(dec.slot_in(s_next)[:, :, None] + dec.position)[..., :-1]      # (B, T-1, N, D)
    return z, rearrange(out, "b t (h w) d -> b t h w d", h=h)


@pytest.mark.parametrize("bottleneck", ["gaussian", "continuous"])
def test_one_slot_is_a_monolithic_model(bottleneck):
    model = tiny(slots=1, bottleneck=bottleneck)
    unzero(model)
    model.eval()
    e = clip(model)
    with torch.no_grad():
        assert torch.equal(model.slot_masks(e), torch.ones(2, 4, 1, 4, 4))
        z = model.infer_actions(e)
        want_z, want_e = monolithic(model, e)
        assert z.shape == (2, 3, model.cfg.bottleneck.d_z) and model.slot_actions(e).shape == (2, 3, 1, 16)
        torch.testing.assert_close(z, want_z, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.predict(e), want_e, rtol=1e-5, atol=1e-5)


def test_gaussian_regulariser_is_beta_times_the_kl_summed_over_slots():
    model = tiny()
    e = clip(model)
    _, logs = model(e)
    s = model.slots(e)
    mu, logvar = model.idm(s[:, :-1], s[:, 1:]).chunk(2, dim=-1)                  # (B, T-1, K, d) each
    kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(-1)                  # (B, T-1, K)
    torch.testing.assert_close(logs["L_reg"], model.cfg.bottleneck.beta * kl.sum(-1).mean())
    torch.testing.assert_close(logs["loss"], logs["L_e"] + logs["L_reg"])


@pytest.mark.parametrize("bottleneck", ["gaussian", "continuous"])
def test_gradients_reach_every_trainable_parameter(bottleneck):
    model = tiny(bottleneck=bottleneck)
    unzero(model)
    for objective in (model.objective, model.phase2_objective):
        model.zero_grad()
        objective(clip(model))[0].backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
        assert missing == []


def test_rollout_re_encodes_generated_frames_and_repeats_one_action():
    model = tiny()
    unzero(model)
    model.eval()
    e, z = clip(model), torch.randn(2, 3, 16)
    with torch.no_grad():
        long, short = model.rollout(e[:, :2], z, 3), model.rollout(e[:, :2], z[:, :2], 2)
        assert long.e.shape == (2, 3, 4, 4, 32) and long.s.shape == (2, 3, 4, model.cfg.slot_attention.width)
        torch.testing.assert_close(long.e[:, :2], short.e, rtol=1e-5, atol=1e-6)
        # step 2 starts from the slots of [context, generated frame 1], encoded like a real clip
        s1 = model.slots(torch.cat([e[:, :2], long.e[:, :1]], 1))[:, -1:]
        z1 = rearrange(z[:, 1:2], "b t (k d) -> b t k d", k=4)
        torch.testing.assert_close(long.s[:, 1:2], s1 + model.fdm(s1, z1), rtol=1e-5, atol=1e-6)
        same = model.rollout(e[:, :2], z[:, 0], 3).e
        torch.testing.assert_close(same, model.rollout(e[:, :2], z[:, :1].expand(-1, 3, -1), 3).e)
    with pytest.raises(ValueError, match=r"FLAM.rollout: z has shape \(2, 2, 16\); expected \(2, 3, 16\)"):
        model.rollout(e[:, :2], z[:, :2], 3)


def test_phase2_objective_is_the_rollout_error_under_inferred_actions_and_transfer_applies_them():
    model = tiny()
    unzero(model)
    model.eval()
    e, other = clip(model), clip(model, seed=2)
    with torch.no_grad():
        _, logs = model.phase2_objective(e)
        out = model.rollout(e[:, :1], model.infer_actions(e), 3).e
        torch.testing.assert_close(logs["L_e_rollout"], F.mse_loss(out, e[:, 1:]), rtol=1e-5, atol=1e-6)
        want = model.rollout(other[:, :1], model.infer_actions(e), 3).e
        torch.testing.assert_close(model.transfer(e, other), want)


def test_tiny_preset_fits_a_fixed_batch():
    model = tiny()
    e = torch.randn(8, 3, 4, 4, 32, generator=torch.Generator().manual_seed(1))
    e = e - e.mean((0, 1), keepdim=True)  # no constant prediction beats predicting zero
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(100):
        loss, logs = model.objective(e)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(logs["L_e"].item())
    assert min(losses[-5:]) < 0.7 * losses[0]  # measured ~0.53; no training leaves it at 1


def test_z_is_used_after_training_on_action_dependent_blobs():
    # The continuous bottleneck: with the gaussian one's noise the same schedule escapes the z-less
    # solution (next frame = the average of the 4 moves) for only some seeds.
    model = tiny(slots=2, bottleneck="continuous", grid=(4, 4), token_dim=16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(500):  # at 300 steps seed 0 had only begun to escape on one thread (own / other 0.76)
        loss, _ = model.objective(blob_clips(32, 3, g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    e = blob_clips(64, 3, torch.Generator().manual_seed(99))
    with torch.no_grad():
        z = model.infer_actions(e)
        own = F.mse_loss(model.rollout(e[:, :1], z, 2).e, e[:, 1:])
        other = F.mse_loss(model.rollout(e[:, :1], z.roll(1, 0), 2).e, e[:, 1:])
    # ignoring z gives own == other; measured over seeds 0-5 on one thread at 500 steps: own / other
    # 0.001 - 0.28 and own / (repeat the last frame) 0.0005 - 0.20
    assert own < 0.5 * other and own < 0.5 * F.mse_loss(e[:, :-1], e[:, 1:])


def test_small_preset_forward_backward():
    torch.manual_seed(0)
    model = FLAM(preset("small"))
    loss, _ = model(torch.randn(1, 3, 8, 8, 384))
    loss.backward()
    assert torch.isfinite(loss) and model.encoder.proj_in.weight.grad is not None


def test_registry_entry_params_and_capabilities():
    fam = FAMILIES["flam"]
    assert fam.params == ("slots",) and FAMILIES["dila"].params == ("reference",)
    cfg = fam.build_config("tiny", "flam", "gaussian", {"beta": 1e-2}, slots=2)
    assert cfg.slots == 2 and cfg.bottleneck.beta == 1e-2 and cfg.bottleneck.kind == "gaussian"
    assert capabilities(cfg) == Capabilities(latent_actions=True, phase2=True) == FLAM(cfg).capabilities
    fam.build_config("paper", "flam", "nsvq", grid=(1, 1), token_dim=1)  # as the pipeline asks for capabilities


@pytest.mark.parametrize("name", ["paper", "small", "tiny"])
def test_every_preset_sizes_nsvq_per_slot_and_round_trips_through_the_params_parser(name):
    for kind in ("continuous", "gaussian", "sparse", "nsvq"):
        for slots in (1, 2, 4, 8):
            cfg = preset(name, bottleneck=kind, slots=slots)
            if kind == "nsvq":
                assert cfg.bottleneck.d_z % (slots * cfg.bottleneck.code_dim) == 0
            assert build(FLAMConfig, json.loads(json.dumps(to_dict(cfg))), "model") == cfg
    assert preset(name).bottleneck.d_z == {"paper": 256, "small": 32, "tiny": 16}[name]
    assert preset(name, bottleneck="nsvq", slots=3).bottleneck.d_z % 3 == 0


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"preset:tiny\.slots = 3 is not allowed: expected a divisor of "
                                         r"bottleneck\.d_z = 16"):
        preset("tiny", slots=3)
    cfg = preset("tiny", bottleneck="nsvq")                                        # d_z 32, code_dim 2
    with pytest.raises(ValueError, match=r"model\.bottleneck\.d_z = 36 is not allowed: expected a multiple of "
                                         r"slots x bottleneck\.code_dim = 8"):
        FLAM(dataclasses.replace(cfg, bottleneck=dataclasses.replace(cfg.bottleneck, d_z=36)))
    with pytest.raises(ValueError, match=r"preset:tiny\.slot_attention\.iters = 0 is not allowed"):
        preset("tiny", slot_attention={"iters": 0})
    with pytest.raises(ValueError, match=r"preset:tiny\.decoder\.skip = 'first_frame' is not allowed"):
        preset("tiny", decoder={"skip": "first_frame"})
    with pytest.raises(ValueError, match=r"preset:tiny\.variant = 'dila' is not allowed"):
        FAMILIES["flam"].build_config("tiny", "dila", "gaussian")
    with pytest.raises(ValueError, match="unknown field 'colour'"):
        preset("tiny", colour=1)
    with pytest.raises(ValueError, match="unknown name 'huge'"):
        preset("huge")


def test_wrong_input_shape_is_a_clear_error():
    model = tiny()
    with pytest.raises(ValueError, match=r"FLAM: e has shape \(2, 4, 4, 4, 31\); expected \(B, T, 4, 4, 32\) "
                                         r"with T >= 2"):
        model(torch.randn(2, 4, 4, 4, 31))
    with pytest.raises(ValueError, match="T >= 2"):
        model.infer_actions(torch.randn(2, 1, 4, 4, 32))
