"""Pixel decoder: shapes on any grid/width/size, config checks, per-frame independence, learning."""
import pytest
import torch

from dila_core.pixel_decoder import PixelDecoder, PixelDecoderConfig

# Axes: B batch, h x w token grid, D token width, S output size.


@pytest.mark.parametrize(("grid", "dim", "size", "upsample", "head"), [
    ((8, 8), 384, 64, "pixel_shuffle", 3),   # the default store: 8 = 3 doublings, all in the head
    ((3, 3), 16, 32, "bilinear", 1),         # 3 -> 48 (4 doublings) then resized down to 32
    ((6, 5), 8, 20, "pixel_shuffle", 0),     # non-square grid, every doubling a conv stage
    ((16, 16), 12, 8, "bilinear", 2),        # output smaller than the grid
    ((4, 4), 8, 16, "pixel_shuffle", 5),     # more head doublings than needed
])
def test_output_shape_and_range_on_any_grid(grid, dim, size, upsample, head):
    torch.manual_seed(0)
    cfg = PixelDecoderConfig(in_dim=dim, grid=grid, size=size, width=16, min_width=8, upsample=upsample,
                             head_doublings=head)
    x = 3 * torch.randn(2, *grid, dim)
    y = PixelDecoder(cfg)(x)
    assert y.shape == (2, 3, size, size)
    assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1


def test_doublings_and_channel_schedule():
    cfg = PixelDecoderConfig(in_dim=4, grid=(3, 3), size=32, width=64, min_width=16)
    assert cfg.doublings == 4                      # 3 * 2^4 = 48 >= 32 > 24
    assert [cfg.channels(i) for i in range(4)] == [64, 32, 16, 16]
    assert PixelDecoderConfig(in_dim=4, grid=(8, 8), size=64).doublings == 3
    assert PixelDecoderConfig(in_dim=4, grid=(16, 16), size=8).doublings == 0
    assert PixelDecoderConfig(in_dim=4, grid=(2, 2), size=8, width=8, min_width=32).channels(0) == 8


@pytest.mark.parametrize(("field", "value"), [
    ("in_dim", 0), ("size", 0), ("width", -1), ("blocks", -1), ("head_doublings", -2),
    ("grid", (8, 8, 8)), ("grid", (0, 4)), ("upsample", "nearest"), ("min_width", 0),
])
def test_invalid_config_names_the_field(field, value):
    cfg = PixelDecoderConfig(**{"in_dim": 4, "grid": (2, 2), "size": 8, field: value})
    with pytest.raises(ValueError, match=rf"^decoder\.{field} = "):
        cfg.validate("decoder")


def test_wrong_token_shape_is_an_error():
    model = PixelDecoder(PixelDecoderConfig(in_dim=8, grid=(4, 4), size=16, width=8))
    with pytest.raises(ValueError, match=r"expected tokens \(B, 4, 4, 8\)"):
        model(torch.randn(2, 4, 4, 9))


def test_frames_are_decoded_independently_and_input_is_kept():
    torch.manual_seed(1)
    model = PixelDecoder(PixelDecoderConfig(in_dim=8, grid=(4, 4), size=16, width=16, min_width=8,
                                            head_doublings=1))
    x = torch.randn(3, 4, 4, 8)
    before = x.clone()
    y = model(x)
    torch.testing.assert_close(model(x[1:2]), y[1:2])
    torch.testing.assert_close(model(x.flip(0)), y.flip(0))
    assert torch.equal(x, before)


@pytest.mark.parametrize("upsample", ["pixel_shuffle", "bilinear"])
def test_learns_a_fixed_batch(upsample):
    torch.manual_seed(2)
    model = PixelDecoder(PixelDecoderConfig(in_dim=16, grid=(3, 3), size=12, width=32, min_width=16,
                                            upsample=upsample, head_doublings=1))
    x = torch.randn(4, 3, 3, 16)                                   # (B, h, w, D)
    target = torch.rand(4, 3, 12, 12)                              # (B, 3, S, S)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        loss = torch.nn.functional.mse_loss(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10
