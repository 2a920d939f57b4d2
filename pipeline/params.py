"""The project's params: params.yaml parsed once into typed, frozen objects.

`load_params(path, overrides)` reads the YAML file, applies `-S key=value`
overrides (values parsed as YAML, like `dvc exp run -S`), and validates the
result. Any unknown key, missing key or bad value raises `ParamsError` naming
the key, the value and what is allowed.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, Mapping

import yaml

from pipeline.config import ParamsError, build, check
from pipeline.sources import REGISTRY, DatasetParams, params_class

# DINOv2 patch size: input sizes must be multiples of it.
PATCH = 14


@dataclass(frozen=True)
class PathsParams:
    """Where each stage writes. Every path is written here once; dvc.yaml uses ${paths.*}."""

    prepared: str = "data/prepared"
    features: str = "data/features"


@dataclass(frozen=True)
class EncoderParams:
    """The frozen DINOv2 encoder.

    model: Hugging Face hub id (facebook/dinov2-*, facebook/dinov2-with-registers-*)
        or a local directory holding config.json and the weights.
    revision: hub revision (branch, tag or commit) to load.
    weights: "pretrained" loads real weights; "random" builds the same architecture
        with seeded random weights (tests, offline smoke runs) and is recorded as such.
    input_size: frames are resized to input_size x input_size (a multiple of 14).
    final_norm: "plain" drops the final LayerNorm's affine (as the reference code does);
        "affine" keeps it.
    dtype: "auto" = bfloat16 autocast on CUDA, float32 on CPU.
    """

    model: str = "facebook/dinov2-small"
    revision: str = "main"
    weights: Literal["pretrained", "random"] = "pretrained"
    input_size: int = 112
    batch_size: int = 32
    final_norm: Literal["plain", "affine"] = "plain"
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"

    def validate(self, where: str) -> None:
        check(
            self.input_size >= PATCH and self.input_size % PATCH == 0,
            f"{where}.input_size",
            self.input_size,
            f"a positive multiple of the patch size {PATCH} (e.g. 112, 224)",
        )
        check(self.batch_size >= 1, f"{where}.batch_size", self.batch_size, "an integer >= 1")
        check(bool(self.model), f"{where}.model", self.model, "a hub id or a local directory")


@dataclass(frozen=True)
class StoreParams:
    """Zarr v3 layout of the feature store.

    chunk_mb: target size of one uncompressed chunk (the unit of reading), in MB;
        a chunk holds whole frames, at least one.
    shard_frames: frames per shard (the unit of writing, and of work per rank);
        rounded up to a multiple of the chunk length.
    codec / clevel: Blosc compressor with byte shuffle on float16.
    """

    chunk_mb: float = 1.0
    shard_frames: int = 256
    codec: Literal["zstd", "lz4"] = "zstd"
    clevel: int = 3

    def validate(self, where: str) -> None:
        check(self.chunk_mb > 0, f"{where}.chunk_mb", self.chunk_mb, "a number > 0")
        check(self.shard_frames >= 1, f"{where}.shard_frames", self.shard_frames, "an integer >= 1")
        check(1 <= self.clevel <= 9, f"{where}.clevel", self.clevel, "an integer in 1..9")


@dataclass(frozen=True)
class DecodeParams:
    """CPU decoding. workers: decode processes running beside the encoder (0 = in the main process)."""

    workers: int = 2

    def validate(self, where: str) -> None:
        check(self.workers >= 0, f"{where}.workers", self.workers, "an integer >= 0")


@dataclass(frozen=True)
class Params:
    """Everything params.yaml holds. `seed` seeds every random choice (e.g. a random-init encoder)."""

    seed: int
    paths: PathsParams
    encoder: EncoderParams
    store: StoreParams
    decode: DecodeParams
    datasets: Mapping[str, DatasetParams]

    def dataset(self, name: str) -> DatasetParams:
        if name not in self.datasets:
            known = ", ".join(sorted(self.datasets)) or "none"
            raise ParamsError(f"params: no dataset named {name!r} under datasets: (defined: {known})")
        return self.datasets[name]


def _build_datasets(raw: Any) -> Mapping[str, DatasetParams]:
    if not isinstance(raw, dict) or not raw:
        raise ParamsError(f"params: datasets = {raw!r} is not allowed: expected a mapping name -> source settings")
    out = {}
    for name, entry in raw.items():
        where = f"datasets.{name}"
        if not isinstance(entry, dict):
            raise ParamsError(f"params: {where} must be a mapping, got {entry!r}")
        kind = entry.get("kind")
        check(kind in REGISTRY, f"{where}.kind", kind, "one of " + ", ".join(sorted(REGISTRY)))
        out[name] = build(params_class(kind), entry, where)
    return MappingProxyType(out)


def parse_params(raw: Mapping[str, Any]) -> Params:
    """Validate a plain mapping (the YAML document) into Params."""
    if not isinstance(raw, dict):
        raise ParamsError(f"params: the document must be a mapping, got {type(raw).__name__}")
    raw = dict(raw)
    datasets = _build_datasets(raw.pop("datasets", None))
    rest = build(_ParamsNoDatasets, raw, "")
    return Params(datasets=datasets, **{k: getattr(rest, k) for k in ("seed", "paths", "encoder", "store", "decode")})


@dataclass(frozen=True)
class _ParamsNoDatasets:
    seed: int
    paths: PathsParams
    encoder: EncoderParams
    store: StoreParams
    decode: DecodeParams


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of `raw` with each "a.b.c=value" set (value parsed as YAML)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ParamsError(f"params: override {item!r} is not of the form key=value")
        value = yaml.safe_load(text) if text else None
        node = raw
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                prefix = ".".join(parts[: depth + 1])
                raise ParamsError(f"params: override {item!r}: {prefix} is not a mapping")
            node = child
        node[parts[-1]] = value
    return raw


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params: file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ParamsError(f"params: {path} is not valid YAML: {e}") from e
    return raw if raw is not None else {}


def load_params(path: str | Path = "params.yaml", overrides: list[str] | tuple[str, ...] = ()) -> Params:
    """Read, override and validate a params file. Errors name the file and the key."""
    raw = apply_overrides(read_yaml(path), list(overrides))
    try:
        return parse_params(raw)
    except ParamsError as e:
        raise ParamsError(f"{path}: {e}") from None
