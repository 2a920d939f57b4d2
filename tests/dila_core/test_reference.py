"""The reference code's training switches that live in the model (L_z into both sides, the full
phase-2 objective, one-step FDM rollouts, the temporal decoder in rollouts) and the one setting that
turns every switch on."""
import torch
import torch.nn.functional as F

from dila_core.dynamics import transitions
from dila_core.model import DiLA
from dila_core.presets import preset, reference_switches
from tests.dila_core.helpers import clip, unzero


def built(seed: int = 0, **overrides) -> DiLA:
    torch.manual_seed(seed)
    m = DiLA(preset("tiny", **overrides))
    unzero(m)
    return m


def test_lz_with_both_sides_sends_gradient_into_the_target_branch():
    m = built(loss={"lz_target": "both", "lambda_norm": 0.0, "lambda_sym": 0.0, "collapse_scale": 0.0})
    d = built(loss={"lz_target": "detached", "lambda_norm": 0.0, "lambda_sym": 0.0, "collapse_scale": 0.0})
    grads = []
    for model in (m, d):
        ds = torch.randn(2, 3, 4, 4, model.cfg.d_s, generator=torch.Generator().manual_seed(2))
        z = model.dynamics.idm(ds).detach().requires_grad_(True)  # the target branch IDM(Δs)
        update = torch.randn_like(ds)
        loss, _ = model.dynamics.objective(ds, update, z, ds.new_zeros(()))
        loss.backward()
        grads.append(float(z.grad.norm()))
    assert grads[0] > 0 and grads[1] == 0


def test_full_phase2_adds_the_structure_terms_with_lz_on_the_rollout():
    e = clip(built(), B=2, T=4)
    full, ours = built(phase2="full"), built()
    _, logs_full = full.phase2_objective(e)
    _, logs_ours = ours.phase2_objective(e)
    assert {"L_s", "L_z", "z_norm", "L_sym"} <= set(logs_full) and "L_s" not in logs_ours
    torch.testing.assert_close(logs_full["L_e_rollout"], logs_ours["L_e_rollout"])
    # L_s is teacher-forced on the true s; L_z reads the rollout's Δŝ
    full.eval()
    with torch.no_grad():
        s = full.structure(full.backbone(e))
        z = full.infer_actions(e)
        torch.testing.assert_close(full.phase2_objective(e)[1]["L_s"],
                                   F.mse_loss(full.dynamics.fdm(s[:, :-1], z), transitions(s)))
        rolled = full._rollout(e[:, :1], full.backbone(e[:, :1]), s[:, :1], z, 3).s
        lz = F.mse_loss(full.dynamics.idm(transitions(torch.cat([s[:, :1], rolled], 1))), z)
        torch.testing.assert_close(full.phase2_objective(e)[1]["L_z"], lz)


def test_one_step_rollouts_apply_the_fdm_to_the_last_state_alone():
    m = built(rollout_history=False).eval()
    e = clip(m, B=2, T=4)
    z = torch.randn(2, 3, m.cfg.bottleneck.d_z, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = m.rollout(e[:, :1], z, 3)
        s = m.structure(m.backbone(e[:, :1]))
        first = s + m.dynamics.predict(s, z[:, :1])
        torch.testing.assert_close(out.s[:, :1], first)
        with_history = built().eval()
        with_history.load_state_dict(m.state_dict())
        assert (with_history.rollout(e[:, :1], z, 3).s[:, 1:] - out.s[:, 1:]).abs().max() > 1e-4


def test_a_temporal_decoder_decodes_each_rolled_out_frame_as_teacher_forcing_would():
    m = built(decoder={"position": "causal_peg"}).eval()
    H = m.decoder.history
    assert H > 0
    g = torch.Generator().manual_seed(4)
    n = H + 3                                                         # more frames than the window
    s_all = torch.randn(2, n + 1, 4, 4, m.cfg.d_s, generator=g)
    past = [[torch.randn(2, 4, 4, c.shape[-1], generator=g) for _ in range(n)]
            for c in m.content(m.backbone(clip(m, B=2, T=2)))]
    e0 = clip(m, B=2, T=1)[:, 0]
    with torch.no_grad():
        whole = m._decode(s_all[:, 1:], e0, [torch.stack(f, 1) for f in past])[:, -1:]
        torch.testing.assert_close(m._decode_last(s_all, e0, [f[-1] for f in past], past), whole)
        plain = m._decode(s_all[:, -1:], e0, [f[-1][:, None] for f in past])
        assert (plain - whole).abs().max() > 1e-4                     # the window matters


def test_the_reference_setting_turns_every_switch_on_and_keeps_small_buildable():
    cfg = preset("tiny", reference=True)
    assert cfg == reference_switches(preset("tiny"))
    assert (cfg.init, cfg.phase2, cfg.rollout_history, cfg.loss.lz_target) == ("xavier", "full", False, "both")
    assert (cfg.st.proj_in, cfg.decoder.output, cfg.fdm.z_path) == (False, "norm", "layernorm")
    small = preset("small", reference=True, grid=(8, 8), token_dim=384)
    assert (small.st.proj_in, small.decoder.output) == (True, "projection")  # widths 96 != 384
    torch.manual_seed(0)
    m = DiLA(preset("tiny", reference=True, loss={"lambda_z": 0.0}))
    assert m.cfg.loss.lambda_z == 0.0 and m.cfg.loss.lz_target == "both"  # overrides apply after it
    loss, _ = m.phase2_objective(clip(m, B=2, T=3))
    loss.backward()
