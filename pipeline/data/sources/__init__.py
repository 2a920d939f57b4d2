"""Data sources: every kind that may appear as `kind:` of a `datasets:` entry.

`REGISTRY` maps kind -> (params dataclass, source class), imported lazily so a
missing optional decoder only matters when that kind is used.
"""
from __future__ import annotations

import importlib

from pipeline.data.sources.base import (  # noqa: F401  (re-exported)
    Counterfactuals,
    DatasetParams,
    Episode,
    EpisodeError,
    EpisodeRef,
    LabelSpec,
    Schema,
    Source,
    SourceError,
)

# kind -> (module, params class name, source class name)
REGISTRY: dict[str, tuple[str, str, str]] = {
    "synthetic": ("pipeline.data.sources.synthetic", "SyntheticParams", "SyntheticSource"),
    "video_folder": ("pipeline.data.sources.video_folder", "VideoFolderParams", "VideoFolderSource"),
    "pusht_zarr": ("pipeline.data.sources.pusht", "PushTParams", "PushTSource"),
    "lerobot": ("pipeline.data.sources.lerobot", "LeRobotParams", "LeRobotSource"),
    "gym_pusht": ("pipeline.data.sources.gym_pusht", "GymPushTParams", "GymPushTSource"),
    "ssv2": ("pipeline.data.sources.ssv2", "SSv2Params", "SSv2Source"),
    "recon_hdf5": ("pipeline.data.sources.recon", "ReconParams", "ReconSource"),
}


def _lookup(kind: str, index: int):
    module, *names = REGISTRY[kind]
    return getattr(importlib.import_module(module), names[index])


def params_class(kind: str) -> type[DatasetParams]:
    return _lookup(kind, 0)


def build_source(params: DatasetParams) -> Source:
    """The source described by one validated `datasets:` entry."""
    return _lookup(params.kind, 1)(params)
