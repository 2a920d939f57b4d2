import copy
import math

import pytest
import torch
import torch.nn.functional as F

from dila_core.mamba import (
    HAS_FUSED_SCAN,
    Mamba,
    MambaConfig,
    MambaState,
    scan_for,
    selective_scan,
)

# Axes: B batch, L time, D d_model, E d_inner, N d_state.


def naive_scan(u, delta, A, B, C, D, z=None, delta_bias=None, delta_softplus=False):
    """Element-by-element recurrence in float64: loops over batch, channel and time."""
    u, delta, A, B, C, D = (t.double() for t in (u, delta, A, B, C, D))
    out = torch.zeros_like(u)                                      # (B, E, L)
    for b in range(u.shape[0]):
        for d in range(u.shape[1]):
            h = torch.zeros(A.shape[1], dtype=torch.float64)       # (N,)
            for t in range(u.shape[2]):
                dt = delta[b, d, t] + (delta_bias[d].double() if delta_bias is not None else 0.0)
                dt = F.softplus(dt) if delta_softplus else dt
                h = torch.exp(dt * A[d]) * h + dt * B[b, :, t] * u[b, d, t]
                y = (C[b, :, t] * h).sum() + D[d] * u[b, d, t]
                out[b, d, t] = y * F.silu(z[b, d, t].double()) if z is not None else y
    return out


def random_scan_inputs(Bsz=2, E=3, N=4, L=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return dict(u=r(Bsz, E, L), delta=r(Bsz, E, L), A=-torch.rand(E, N, generator=g) * 2,
                B=r(Bsz, N, L), C=r(Bsz, N, L), D=r(E), z=r(Bsz, E, L), delta_bias=r(E))


def tiny(d_model=16, d_state=8, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return Mamba(MambaConfig(d_model=d_model, d_state=d_state)).to(dtype)


def run_steps(model, x, state):
    ys = []
    for t in range(x.shape[1]):
        y, state = model.step(x[:, t], state)
        ys.append(y)
    return torch.stack(ys, dim=1), state


@pytest.mark.parametrize("softplus", [False, True])
def test_selective_scan_matches_naive_recurrence(softplus):
    inp = random_scan_inputs()
    if not softplus:
        inp["delta"] = inp["delta"].abs()
        inp["delta_bias"] = inp["delta_bias"].abs()
    got = selective_scan(**inp, delta_softplus=softplus)
    want = naive_scan(**inp, delta_softplus=softplus)
    assert got.shape == inp["u"].shape and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_selective_scan_without_gate_or_bias_matches_naive():
    inp = random_scan_inputs(seed=1)
    inp["delta"] = inp["delta"].abs()
    del inp["z"], inp["delta_bias"]
    torch.testing.assert_close(selective_scan(**inp).double(), naive_scan(**inp), rtol=1e-5, atol=1e-5)


def test_selective_scan_bf16_keeps_dtype_and_accumulates_in_fp32():
    inp = random_scan_inputs(L=24, seed=2)
    low = {k: v.bfloat16() if k in ("u", "delta", "B", "C", "z") else v for k, v in inp.items()}
    got = selective_scan(**low, delta_softplus=True)
    ref = selective_scan(**{k: v.float() for k, v in low.items()}, delta_softplus=True)
    assert got.dtype == torch.bfloat16
    # Only the final rounding to bf16 separates the two: relative error within bf16 eps.
    torch.testing.assert_close(got.float(), ref, rtol=8e-3, atol=1e-5)


def test_step_by_step_equals_full_sequence():
    model = tiny()
    x = torch.randn(3, 9, 16)                                      # (B, L, D)
    with torch.no_grad():
        full = model(x)
        stepped, _ = run_steps(model, x, model.init_state(3))
    assert full.shape == (3, 9, 16)
    torch.testing.assert_close(stepped, full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("split", [1, 3, 6])
def test_state_carried_across_a_split(split):
    model = tiny(seed=1)
    x = torch.randn(2, 8, 16)
    with torch.no_grad():
        full = model(x)
        y1, s1 = model.forward_with_state(x[:, :split], model.init_state(2))
        y2, s2 = model.forward_with_state(x[:, split:], s1)
        z1, t1 = run_steps(model, x[:, :split], model.init_state(2))
        z2, t2 = run_steps(model, x[:, split:], t1)
        w2, _ = run_steps(model, x[:, split:], s1)               # chunk prefix, then step
    torch.testing.assert_close(torch.cat([y1, y2], 1), full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([z1, z2], 1), full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w2, full[:, split:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s2.ssm, t2.ssm, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s2.conv, t2.conv)
    torch.testing.assert_close(s2.conv, model.in_proj(x[:, -4:]).chunk(2, -1)[0].transpose(1, 2))


def test_step_does_not_mutate_state_and_forward_does_not_mutate_input():
    model = tiny()
    state = MambaState(conv=torch.randn(2, 32, 4), ssm=torch.randn(2, 32, 8))
    before = copy.deepcopy(state)
    x = torch.randn(2, 5, 16)
    x_before = x.clone()
    with torch.no_grad():
        _, new = model.step(x[:, 0], state)
        model.forward_with_state(x, state)
        model(x)
    assert torch.equal(state.conv, before.conv) and torch.equal(state.ssm, before.ssm)
    assert not torch.equal(new.ssm, state.ssm)
    assert torch.equal(x, x_before)


def test_init_state_shapes_and_dtypes():
    model = tiny()
    s = model.init_state(5)
    assert s.conv.shape == (5, 32, 4) and s.ssm.shape == (5, 32, 8)
    assert not s.conv.any() and not s.ssm.any()
    half = model.init_state(2, dtype=torch.bfloat16)
    assert half.conv.dtype == torch.bfloat16 and half.ssm.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_dtype_preserved_and_close_to_fp32(dtype):
    ref = tiny()
    model = copy.deepcopy(ref).to(dtype)
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        y = model(x.to(dtype))
        ys, state = run_steps(model, x.to(dtype), model.init_state(2, dtype=dtype))
        want = ref(x)
    assert y.dtype == dtype and ys.dtype == dtype
    assert state.ssm.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    tol = 1e-5 if dtype == torch.float64 else 6e-2
    torch.testing.assert_close(y.float(), want, rtol=tol, atol=tol)
    torch.testing.assert_close(ys.float(), want, rtol=tol, atol=tol)


def test_gradients_reach_every_parameter():
    model = tiny()
    x = torch.randn(2, 5, 16, requires_grad=True)
    (model(x) ** 2).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_step_gradients_match_forward_gradients():
    model = tiny(seed=3)
    x = torch.randn(2, 4, 16)
    (model(x) ** 2).sum().backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    (run_steps(model, x, model.init_state(2))[0] ** 2).sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, want[n], rtol=1e-4, atol=1e-5, msg=n)


def test_state_dict_names_and_shapes_match_mamba_ssm():
    model = Mamba(MambaConfig(d_model=16))                         # E = 32, N = 32, K = 4, R = 1
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == {
        "A_log": (32, 32), "D": (32,),
        "in_proj.weight": (64, 16),
        "conv1d.weight": (32, 1, 4), "conv1d.bias": (32,),
        "x_proj.weight": (1 + 2 * 32, 32),
        "dt_proj.weight": (32, 1), "dt_proj.bias": (32,),
        "out_proj.weight": (16, 32),
    }
    assert model.conv1d.padding == (3,) and model.conv1d.groups == 32
    other = Mamba(MambaConfig(d_model=16))
    other.load_state_dict(model.state_dict(), strict=True)


def test_initialisation():
    torch.manual_seed(0)
    model = Mamba(MambaConfig(d_model=256))                        # E = 512
    torch.testing.assert_close(model.A_log, torch.log(torch.arange(1.0, 33.0)).expand(512, 32))
    assert torch.equal(model.D, torch.ones(512))
    dt = F.softplus(model.dt_proj.bias.detach())
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 1e-1 * (1 + 1e-5)
    log_dt = dt.log()                                             # uniform in [log 1e-3, log 1e-1]
    assert abs(log_dt.mean().item() - math.log(1e-2)) < 0.2
    assert dt.min() < 2e-3 and dt.max() > 5e-2


def test_causality():
    model = tiny()
    x = torch.randn(2, 8, 16)
    t = 4
    x2 = x.clone()
    x2[:, t + 1:] = torch.randn(2, 8 - t - 1, 16)
    with torch.no_grad():
        y, y2 = model(x), model(x2)
    torch.testing.assert_close(y[:, :t + 1], y2[:, :t + 1], rtol=0, atol=0)
    assert not torch.allclose(y[:, t + 1:], y2[:, t + 1:])


def test_learns_to_recall_a_past_token():
    """The layer can learn a memory task: output the input from two steps back."""
    model = tiny(d_model=8, d_state=8, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(300):
        x = torch.randn(16, 12, 8, generator=g)
        loss = F.mse_loss(model(x)[:, 2:], x[:, :-2])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.55 * sum(losses[:10]) / 10  # no learning stays near 1.0


def test_config_validation():
    with pytest.raises(ValueError, match=r"^mem\.d_state = 0 is not allowed: expected an integer >= 1"):
        MambaConfig(d_model=8, d_state=0).validate("mem")
    with pytest.raises(ValueError, match=r"MambaConfig\.expand = 1\.5 is not allowed"):
        Mamba(MambaConfig(d_model=8, expand=1.5))
    with pytest.raises(ValueError, match=r"mem\.dt_rank = True is not allowed"):
        MambaConfig(d_model=8, dt_rank=True).validate("mem")
    MambaConfig(d_model=8, dt_rank=3).validate("mem")
    assert MambaConfig(d_model=40).resolved_dt_rank == 3 and MambaConfig(d_model=40).d_inner == 80


def test_parameter_count_paper_configuration():
    model = Mamba(MambaConfig(d_model=256, d_state=32, d_conv=4, expand=2))
    D, E, N, K, R = 256, 512, 32, 4, 16
    expected = (D * 2 * E          # in_proj
                + E * K + E        # conv1d
                + E * (R + 2 * N)  # x_proj
                + R * E + E        # dt_proj
                + E * N + E        # A_log, D
                + E * D)           # out_proj
    assert sum(p.numel() for p in model.parameters()) == expected == 462_336


def test_cpu_tensors_use_the_pure_scan():
    assert scan_for(torch.zeros(1)) is selective_scan


@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and HAS_FUSED_SCAN),
                    reason="needs CUDA and the optional mamba_ssm kernels")
def test_fused_forward_matches_pure_path(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    model = tiny(d_model=64, d_state=16)
    x = torch.randn(4, 12, 64)
    gpu = copy.deepcopy(model).cuda()
    with torch.no_grad():
        want = model(x)
        got = gpu(x.cuda())
    assert scan_for(x.cuda()) is not selective_scan
    torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-4)
    inp = {k: v.cuda() for k, v in random_scan_inputs(Bsz=3, E=8, N=5, L=16).items()}
    torch.testing.assert_close(scan_for(inp["u"])(**inp, delta_softplus=True),
                               selective_scan(**inp, delta_softplus=True), rtol=1e-4, atol=1e-4)
