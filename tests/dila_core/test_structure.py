import dataclasses

import pytest
import torch

from dila_core.layers import ResidualMLP, ResidualMLPConfig
from dila_core.presets import preset
from dila_core.st_transformer import STConfig
from dila_core.structure import FDM, IDM, FDMConfig, IDMConfig

# Axes: B batch, T time, h x w grid, d_s structure size, d_z latent action size.


def fdm_config() -> FDMConfig:
    st = STConfig(width=16, depth=2, heads=2, head_dim=8, ffn_hidden=24, bias_hidden=8, dropout=0.0,
                  layout="space-time-ffn")
    return FDMConfig(st=st, head_hidden=8)


def jitter(module: torch.nn.Module, scale: float = 0.1) -> None:
    """Move every parameter off its (possibly zero) initial value."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


def test_residual_mlp_maps_every_token():
    torch.manual_seed(0)
    mlp = ResidualMLP(ResidualMLPConfig(hidden=20, depth=2), 12, 5)
    x = torch.randn(2, 3, 4, 4, 12)
    y = mlp(x)
    assert y.shape == (2, 3, 4, 4, 5)
    torch.testing.assert_close(mlp(x[1, 2, 3, 1]), y[1, 2, 3, 1])


@pytest.mark.parametrize(("grid", "steps"), [((8, 8), 3), ((4, 4), 1), ((6, 5), 2)])
def test_idm_shapes_on_any_grid_and_length(grid, steps):
    torch.manual_seed(1)
    idm = IDM(IDMConfig(channels=(8, 16, 16), blocks=(1, 1, 0), groups=4, head_hidden=12), d_s=6, out_dim=7)
    r = idm(torch.randn(2, steps, *grid, 6))
    assert r.shape == (2, steps, 7) and torch.isfinite(r).all()


def test_idm_downsamples_space_not_time_and_is_bidirectional():
    torch.manual_seed(2)
    idm = IDM(IDMConfig(channels=(8, 8, 16), blocks=(1, 1, 1), groups=4, head_hidden=12), d_s=4, out_dim=3).eval()
    ds = torch.randn(1, 5, 4, 4, 4)
    assert idm.body(ds.permute(0, 4, 1, 2, 3)).shape == (1, 16, 5, 1, 1)
    changed = ds.clone()
    changed[:, 3] += torch.randn_like(changed[:, 3])
    diff = (idm(ds) - idm(changed)).abs().amax(-1)[0]                            # (T,)
    assert diff[2] > 1e-5 and diff[3] > 1e-5 and diff[4] > 1e-5  # sees the past and the future


def test_fdm_update_is_exactly_zero_at_init():
    torch.manual_seed(3)
    fdm = FDM(fdm_config(), (3, 3), d_s=4, d_z=5)
    update = fdm(torch.randn(2, 4, 3, 3, 4), torch.randn(2, 4, 5))
    assert update.shape == (2, 4, 3, 3, 4)
    assert torch.all(update == 0)


def test_fdm_is_causal_and_uses_the_latent_action():
    torch.manual_seed(4)
    fdm = FDM(fdm_config(), (3, 3), d_s=4, d_z=5).eval()
    jitter(fdm)
    s, z = torch.randn(2, 5, 3, 3, 4), torch.randn(2, 5, 5)
    base = fdm(s, z)
    for k in range(5):
        s2, z2 = s.clone(), z.clone()
        s2[:, k] += torch.randn_like(s2[:, k])
        z2[:, k] += torch.randn_like(z2[:, k])
        for out in (fdm(s2, z), fdm(s, z2)):
            torch.testing.assert_close(out[:, :k], base[:, :k], rtol=0, atol=0)
            assert (out[:, k] - base[:, k]).abs().max() > 1e-5


@pytest.mark.parametrize(("cfg", "message"), [
    (IDMConfig(channels=(8, 12), blocks=(1, 1), groups=8, head_hidden=4), r"idm\.groups = 8 is not allowed"),
    (IDMConfig(channels=(8, 16), blocks=(1,), groups=4, head_hidden=4), r"idm\.blocks = \(1,\) is not allowed"),
    (IDMConfig(channels=(), blocks=(), groups=4, head_hidden=4), r"idm\.channels = \(\) is not allowed"),
])
def test_idm_config_errors_name_the_key(cfg, message):
    with pytest.raises(ValueError, match=message):
        cfg.validate("idm")


def test_fdm_config_error_names_nested_key():
    cfg = FDMConfig(st=fdm_config().st, head_hidden=0)
    with pytest.raises(ValueError, match=r"model\.fdm\.head_hidden = 0 is not allowed"):
        cfg.validate("model.fdm")


def moving_token(n: int, grid: int, d_s: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """s (n, 4, grid, grid, d_s): one token holding a fixed vector, moved each step by one of stay/up/
    down/left/right (i.i.d., clamped to the grid), and the moves (n, 3, 2)."""
    moves = torch.tensor([[0, 0], [0, 1], [0, -1], [1, 0], [-1, 0]])
    pos = [torch.randint(0, grid, (n, 2), generator=g)]
    for k in torch.randint(0, 5, (3, n), generator=g):
        pos.append((pos[-1] + moves[k]).clamp(0, grid - 1))
    pos = torch.stack(pos, 1)                                                      # (n, 4, 2)
    s = torch.zeros(n, 4, grid, grid, d_s)
    s[torch.arange(n)[:, None], torch.arange(4)[None], pos[..., 0], pos[..., 1]] = 1.0
    return s, (pos[:, 1:] - pos[:, :-1]).float()


def test_fdm_learns_from_zero_init_to_move_structure_by_the_action():
    torch.manual_seed(5)
    fdm = FDM(fdm_config(), (4, 4), d_s=4, d_z=2)
    opt = torch.optim.Adam(fdm.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(6)
    for _ in range(300):
        s, moves = moving_token(16, 4, 4, g)
        loss = (fdm(s[:, :-1], moves) - (s[:, 1:] - s[:, :-1])).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    s, moves = moving_token(256, 4, 4, torch.Generator().manual_seed(7))
    ds = s[:, 1:] - s[:, :-1]
    with torch.no_grad():
        own = (fdm(s[:, :-1], moves) - ds).square().mean()
        shuffled = (fdm(s[:, :-1], moves[torch.randperm(256)]) - ds).square().mean()
    assert own < 0.1 * ds.square().mean() and own < 0.2 * shuffled


# -- the reference code's switches, on the `tiny` preset ---------------------------------------------

def test_layernorm_z_path_makes_the_update_all_but_blind_to_the_scale_of_z():
    """z -> 10 z moves the update by < 1% on the "layernorm" path, while another z moves it by > 10%;
    on our "mlp" path the scale matters. The first Linear's bias is zeroed (as the reference's Xavier
    re-init leaves it): that bias is the path's one scale-dependent term, measured separately below."""
    cfg = preset("tiny")
    changes = {}
    for z_path in ("mlp", "layernorm"):
        torch.manual_seed(10)
        fdm = FDM(dataclasses.replace(cfg.fdm, z_path=z_path), cfg.grid, cfg.d_s, cfg.bottleneck.d_z).eval()
        jitter(fdm)
        with torch.no_grad():
            s, z = torch.randn(4, 3, *cfg.grid, cfg.d_s), torch.randn(4, 3, cfg.bottleneck.d_z)
            base = fdm(s, z)
            change = lambda other: float((fdm(s, other) - base).norm() / base.norm())  # noqa: E731
            with_bias = change(10 * z)
            for path in (fdm.z_token, fdm.z_cond):
                path[0].bias.zero_()
            base = fdm(s, z)
            changes[z_path] = (change(10 * z), change(z.roll(1, 0)), with_bias)
    scaled, other, with_bias = changes["layernorm"]
    assert scaled < 0.01 < 0.1 < other and with_bias < 0.1
    assert changes["mlp"][0] > 0.5 and changes["mlp"][2] > 0.5
    assert [type(m).__name__ for m in fdm.z_token] == ["Linear", "LayerNorm", "Linear", "GELU", "Linear"]


def test_idm_head_dropout_acts_in_training_only_and_keeps_checkpoint_keys():
    cfg = preset("tiny").idm
    torch.manual_seed(11)
    plain = IDM(cfg, d_s=4, out_dim=6)
    dropped = IDM(dataclasses.replace(cfg, head_dropout=0.5), d_s=4, out_dim=6)
    dropped.load_state_dict(plain.state_dict(), strict=True)                     # same keys and shapes
    ds = torch.randn(2, 3, 4, 4, 4)
    plain.train(), dropped.train()
    assert torch.equal(plain(ds), plain(ds)) and not torch.equal(dropped(ds), dropped(ds))
    plain.eval(), dropped.eval()
    torch.testing.assert_close(dropped(ds), plain(ds), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"idm\.head_dropout = 1\.0 is not allowed"):
        dataclasses.replace(cfg, head_dropout=1.0).validate("idm")


def test_fdm_z_path_error_names_the_key():
    with pytest.raises(ValueError, match=r"model\.fdm\.z_path = 'film' is not allowed: expected one of"):
        dataclasses.replace(fdm_config(), z_path="film").validate("model.fdm")
