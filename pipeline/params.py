"""The project's params: params.yaml parsed once into typed, frozen objects.

`load_params(path, overrides)` reads the YAML file, applies `-S key=value`
overrides (values parsed as YAML, like `dvc exp run -S`), and validates the
result. Any unknown key, missing key or bad value raises `ParamsError` naming
the key, the value and what is allowed.
"""
from __future__ import annotations

import copy
import math
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, Mapping

import yaml

from pipeline.config import ParamsError, build, check
from pipeline.data.sources import REGISTRY, DatasetParams, params_class
from pipeline.params_eval import BudgetParams, EvaluateParams, PlanParams, ReplicasParams, RolloutParams

# DINOv2 patch size: input sizes must be multiples of it.
PATCH = 14


@dataclass(frozen=True)
class PathsParams:
    """Where each stage writes. Every path is written here once; dvc.yaml uses ${paths.*}."""

    prepared: str = "data/prepared"
    features: str = "data/features"
    models: str = "data/models"
    logs: str = "data/logs"
    eval: str = "data/eval"
    plan: str = "data/plan"
    replicas: str = "data/replicas"
    report: str = "data/report"


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
class ModelParams:
    """The world model: a named size preset of dila_core (paper | small | tiny). The token grid
    and width come from the feature store, so any encoder size works with any preset."""

    preset: Literal["paper", "small", "tiny"] = "small"


@dataclass(frozen=True)
class VariantParams:
    """One trained model: a registered model family (`dila_core.world_model.FAMILIES`), one of its
    named variants, and a latent-action bottleneck (`dila_core.bottleneck.BOTTLENECKS`). The names
    are checked against those registries when a model is built (`pipeline.training.runs`), so
    the stages that never build one do not depend on the model code. `beta` (gaussian: KL
    weight), `l1` and `vcm` (sparse: sparsity and variance-covariance-mean weights) are the
    bottleneck's regulariser weights; a bottleneck ignores the ones it does not have. `slots` is
    the number of scene factors K of a factored family (FLAM; each slot gets d_z / K of the latent
    action); families without slots ignore it (`Family.params` lists what a family takes).
    `reference` turns on every switch of the authors' reference code (DiLA family:
    dila_core.presets.reference_switches; README "Deviations from the reference code").
    `config` then replaces fields of the family's preset config, nested as the config nests them (DiLA:
    `{loss: {lambda_z: 0.0}, init: xavier}`; dila_core.presets, README "Training devices"); the
    family's config checks them when the model is built."""

    family: str = "dila"
    variant: str = "dila"
    bottleneck: str = "continuous"
    beta: float = 1e-4
    l1: float = 1e-2
    vcm: float = 1e-2
    slots: int = 4
    reference: bool = False
    config: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def validate(self, where: str) -> None:
        for name in ("beta", "l1", "vcm"):
            value = getattr(self, name)
            check(math.isfinite(value) and value >= 0, f"{where}.{name}", value, "a finite number >= 0")
        check(self.slots >= 1, f"{where}.slots", self.slots, "an integer >= 1")


@dataclass(frozen=True)
class OptimParams:
    """AdamW with gradient clipping and an optional schedule (cosine decays to 0 after warm-up).
    lr_scale: {group: factor}, the learning rate of a parameter group of the model (DiLA: idm,
    fdm, content, structure; see its `param_groups`) as a multiple of lr; unnamed groups use lr."""

    lr: float = 3e-4
    weight_decay: float = 1e-5
    grad_clip: float = 6.0
    schedule: Literal["constant", "cosine"] = "cosine"
    warmup_steps: int = 0
    lr_scale: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    def validate(self, where: str) -> None:
        for name, factor in self.lr_scale.items():
            check(isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 0,
                  f"{where}.lr_scale.{name}", factor, "a finite number > 0")
        check(self.lr > 0, f"{where}.lr", self.lr, "a number > 0")
        check(self.weight_decay >= 0, f"{where}.weight_decay", self.weight_decay, "a number >= 0")
        check(self.grad_clip > 0, f"{where}.grad_clip", self.grad_clip, "a number > 0")
        check(self.warmup_steps >= 0, f"{where}.warmup_steps", self.warmup_steps, "an integer >= 0")


@dataclass(frozen=True)
class TrainParams:
    """Phase 1, teacher forcing, on windows of `seq_len` kept frames `frame_skip` apart.

    dataset: a key of `datasets:` whose feature store the models train on.
    mixture: {dataset: ratio}; non-empty, training windows come from these stores at these ratios
        (train.dataset among them; it stays the one rollouts, evaluation and planning use), see
        `pipeline.data.mixture`. mixture_stats: "shared" (one ratio-weighted set of token
        statistics for every store, as the reference normalises) or "own" (each store's own).
    val_fraction: share of episodes held out (split by episode, seeded) for validation,
        rollouts and probes. batch_size is global (split over torchrun ranks).
    """

    dataset: str = "synthetic"
    mixture: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    mixture_stats: Literal["shared", "own"] = "shared"
    seq_len: int = 8
    frame_skip: int = 1
    batch_size: int = 8
    steps: int = 1000
    val_fraction: float = 0.125
    val_every: int = 250
    val_batches: int = 4
    checkpoint_every: int = 250
    log_every: int = 25
    workers: int = 1
    optim: OptimParams = OptimParams()

    def validate(self, where: str) -> None:
        for name in ("seq_len", "frame_skip", "batch_size", "steps", "val_every", "val_batches",
                     "checkpoint_every", "log_every"):
            check(getattr(self, name) >= (2 if name == "seq_len" else 1), f"{where}.{name}", getattr(self, name),
                  "an integer >= 2" if name == "seq_len" else "an integer >= 1")
        check(0 < self.val_fraction < 1, f"{where}.val_fraction", self.val_fraction, "a number in (0, 1)")
        check(self.workers >= 0, f"{where}.workers", self.workers, "an integer >= 0")
        for name, ratio in self.mixture.items():
            check(ratio > 0, f"{where}.mixture.{name}", ratio, "a ratio > 0")
        check(not self.mixture or self.dataset in self.mixture, f"{where}.mixture", dict(self.mixture),
              f"a mapping that includes train.dataset ({self.dataset!r}), the store evaluation uses")


@dataclass(frozen=True)
class FinetuneParams:
    """Phase 2, latent-rollout fine-tuning from the phase-1 weights (windows as in train)."""

    steps: int = 200
    checkpoint_every: int = 100
    optim: OptimParams = OptimParams(lr=1e-4, schedule="constant")

    def validate(self, where: str) -> None:
        check(self.steps >= 1, f"{where}.steps", self.steps, "an integer >= 1")
        check(self.checkpoint_every >= 1, f"{where}.checkpoint_every", self.checkpoint_every, "an integer >= 1")


@dataclass(frozen=True)
class PixelDecoderParams:
    """A small decoder from cached tokens back to frames (image grids, SSIM, LPIPS)."""

    size: int = 64
    width: int = 64
    steps: int = 1500
    batch_size: int = 32
    checkpoint_every: int = 500
    optim: OptimParams = OptimParams(lr=1e-3)

    def validate(self, where: str) -> None:
        for name in ("size", "width", "steps", "batch_size", "checkpoint_every"):
            check(getattr(self, name) >= 1, f"{where}.{name}", getattr(self, name), "an integer >= 1")


DEFAULT_VARIANTS = MappingProxyType({
    "dila": VariantParams(),
    "no_content": VariantParams(variant="no_content"),
    "discrete_z": VariantParams(bottleneck="nsvq"),
    "gaussian_z": VariantParams(bottleneck="gaussian"),
    "sparse_z": VariantParams(bottleneck="sparse"),
    "no_z": VariantParams(variant="no_latent_action"),
    "flam": VariantParams(family="flam", variant="flam", bottleneck="gaussian"),
})


@dataclass(frozen=True)
class Params:
    """Everything params.yaml holds. `seed` seeds every random choice (e.g. a random-init encoder)."""

    seed: int
    paths: PathsParams
    encoder: EncoderParams
    store: StoreParams
    decode: DecodeParams
    datasets: Mapping[str, DatasetParams]
    model: ModelParams = ModelParams()
    variants: dict[str, VariantParams] = field(default_factory=lambda: DEFAULT_VARIANTS)
    train: TrainParams = TrainParams()
    finetune: FinetuneParams = FinetuneParams()
    pixel_decoder: PixelDecoderParams = PixelDecoderParams()
    rollout: RolloutParams = RolloutParams()
    evaluate: EvaluateParams = EvaluateParams()
    plan: PlanParams = PlanParams()
    replicas: ReplicasParams = ReplicasParams()
    budget: BudgetParams = BudgetParams()

    def dataset(self, name: str) -> DatasetParams:
        if name not in self.datasets:
            known = ", ".join(sorted(self.datasets)) or "none"
            raise ParamsError(f"params: no dataset named {name!r} under datasets: (defined: {known})")
        return self.datasets[name]

    def variant(self, name: str) -> VariantParams:
        if name not in self.variants:
            raise ParamsError(f"params: no variant named {name!r} under variants: (defined: "
                              f"{', '.join(sorted(self.variants))})")
        return self.variants[name]

    def check_references(self) -> None:
        """Keys that name other entries must name existing ones."""
        known = "one of the datasets: " + ", ".join(sorted(self.datasets))
        check(self.train.dataset in self.datasets, "train.dataset", self.train.dataset, known)
        for name in self.train.mixture:
            check(name in self.datasets, f"train.mixture.{name}", name, known)
        for name in self.budget.frames:
            check(name in self.datasets, f"budget.frames.{name}", name, known)
        for i, name in enumerate(self.evaluate.probe_datasets):
            check(name in self.datasets, f"evaluate.probe_datasets[{i}]", name, known)
        for i, name in enumerate(self.evaluate.held_out):
            check(name in self.datasets, f"evaluate.held_out[{i}]", name, known)
            check(name != self.train.dataset, f"evaluate.held_out[{i}]", name,
                  f"a dataset other than train.dataset ({self.train.dataset}), whose held-out episodes "
                  "the rollout stage already scores")
        check(len(self.variants) > 0, "variants", {}, "at least one variant")
        for i, seed in enumerate(self.replicas.seeds):
            check(seed != self.seed, f"replicas.seeds[{i}]", seed,
                  f"a seed other than `seed` ({self.seed}), whose run is the main one")


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
    datasets = _build_datasets(raw.get("datasets"))  # each entry's class depends on its kind
    params = dataclasses.replace(build(Params, {**raw, "datasets": {}}, ""), datasets=datasets)
    params.check_references()
    return params


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
