"""LPIPS loader: None with a reason that says what to install or download, never a number it
cannot compute; the metric itself where the optional extra and its weights are present."""
from __future__ import annotations

import importlib.util
import sys
import types

import pytest
import torch

from pipeline.evaluation.lpips import frame_lpips, load_lpips


def fake_lpips(monkeypatch, tmp_path, with_linear_weights: bool) -> None:
    """An importable `lpips` module whose package folder is tmp_path/lpips."""
    folder = tmp_path / "lpips"
    (folder / "weights" / "v0.1").mkdir(parents=True)
    if with_linear_weights:
        (folder / "weights" / "v0.1" / "alex.pth").write_bytes(b"")
    module = types.ModuleType("lpips")
    module.__file__ = str(folder / "__init__.py")
    monkeypatch.setitem(sys.modules, "lpips", module)


def test_missing_package_gives_none_and_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "lpips", None)                      # makes `import lpips` fail
    metric, reason = load_lpips()
    assert metric is None
    assert reason.startswith("lpips is not installed") and "pip install dila[lpips]" in reason


def test_frame_lpips_loads_once_and_passes_the_reason_on(monkeypatch):
    monkeypatch.setitem(sys.modules, "lpips", None)
    frame_lpips.cache_clear()
    try:
        fn, reason = frame_lpips()
        assert fn is None and reason == load_lpips()[1]
        assert frame_lpips() is frame_lpips()                              # loaded once per process
    finally:
        frame_lpips.cache_clear()


def test_package_without_its_linear_weights_gives_none(monkeypatch, tmp_path):
    fake_lpips(monkeypatch, tmp_path, with_linear_weights=False)
    metric, reason = load_lpips()
    assert metric is None and "no linear-layer weights" in reason and str(tmp_path / "lpips") in reason


def test_missing_backbone_gives_none_without_the_network(monkeypatch, tmp_path):
    fake_lpips(monkeypatch, tmp_path, with_linear_weights=True)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))       # an empty hub cache
    metric, reason = load_lpips()
    assert metric is None
    if importlib.util.find_spec("torchvision") is None:
        assert reason.startswith("torchvision is not installed") and "dila[lpips]" in reason
    else:
        assert "AlexNet weights" in reason and str(tmp_path / "torch_home") in reason


def test_lpips_distance_where_available():
    pytest.importorskip("lpips", reason="lpips is not installed (optional extra dila[lpips])")
    metric, reason = load_lpips()
    if metric is None:
        pytest.skip(reason)
    torch.manual_seed(0)
    a = torch.rand(3, 3, 64, 64)
    b = (a + 0.3 * torch.randn_like(a)).clamp(0, 1)
    same, diff = metric(a, a.clone()), metric(a, b)
    assert same.shape == diff.shape == (3,)
    assert torch.all(same < 1e-4) and torch.all(diff > 0.01)
    with pytest.raises(ValueError, match="expected two"):
        metric(a, b[:2])
