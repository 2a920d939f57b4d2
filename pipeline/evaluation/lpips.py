"""LPIPS (learned perceptual distance) of decoded frames, when it can be computed honestly.

LPIPS needs the optional `lpips` package (extra `dila[lpips]`, which brings torchvision),
its linear-layer weights (shipped inside the package) and the ImageNet AlexNet weights in
the torch hub cache. `load_lpips()` checks each of these without touching the network and
returns either a metric or None with the reason, so that callers report "not computed:
<reason>" and never a made-up number. `frame_lpips()` is the same metric on numpy frames,
loaded once per process.
"""
from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

NET = "alex"  # the backbone the LPIPS paper recommends as a metric
INSTALL = "optional extra `pip install dila[lpips]`"

LpipsFn = Callable[[Tensor, Tensor], Tensor]


def _import(name: str):
    try:
        return importlib.import_module(name), None
    except ImportError as err:
        return None, f"{name} is not installed ({INSTALL}): {err}"


def _backbone_weights() -> tuple[Path | None, str | None]:
    """Path of the cached torchvision AlexNet weights LPIPS builds on, or why they are unusable."""
    torchvision, reason = _import("torchvision")
    if torchvision is None:
        return None, reason
    url = importlib.import_module("torchvision.models").AlexNet_Weights.IMAGENET1K_V1.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if not path.is_file():
        return None, (f"the AlexNet weights LPIPS needs are not in the torch hub cache ({path}); "
                      f"download {url} there on a machine with internet, or set TORCH_HOME")
    return path, None


def load_lpips(device: str | torch.device = "cpu") -> tuple[LpipsFn | None, str]:
    """(metric, "") where LPIPS can run offline, else (None, reason).

    metric(a, b): frames (N, 3, H, W) in [0, 1] -> LPIPS distance per frame (N,), float32 on the
    frames' device; no gradients. Reason names what is missing and how to supply it."""
    lpips, reason = _import("lpips")
    if lpips is None:
        return None, reason
    linear = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{NET}.pth"
    if not linear.is_file():
        return None, f"the lpips package has no linear-layer weights at {linear} (reinstall it: {INSTALL})"
    _, reason = _backbone_weights()
    if reason is not None:
        return None, reason
    try:
        net = lpips.LPIPS(net=NET, verbose=False).eval().requires_grad_(False).to(device)
    except (OSError, RuntimeError, ValueError, TypeError, AttributeError, ImportError) as err:
        return None, f"lpips failed to build its {NET} network: {type(err).__name__}: {err}"

    def metric(a: Tensor, b: Tensor) -> Tensor:
        if a.shape != b.shape or a.dim() != 4 or a.shape[1] != 3:
            raise ValueError(f"lpips: expected two (N, 3, H, W) batches of one shape, got {tuple(a.shape)} "
                             f"and {tuple(b.shape)}")
        with torch.no_grad():
            d = net(a.to(device, torch.float32), b.to(device, torch.float32), normalize=True)  # (N, 1, 1, 1)
        return d.reshape(-1).to(a.device)

    return metric, ""


@functools.cache
def frame_lpips() -> tuple[Callable[[np.ndarray, np.ndarray], np.ndarray] | None, str]:
    """`load_lpips()` once per process, as a function of numpy frames (N, H, W, 3) in [0, 1] -> (N,);
    or (None, reason)."""
    metric, reason = load_lpips()
    if metric is None:
        return None, reason

    def on_frames(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ta, tb = (torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float() for x in (a, b))
        return metric(ta, tb).cpu().numpy()

    return on_frames, ""
