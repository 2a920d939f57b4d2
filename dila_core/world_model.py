"""The one interface the trainer, rollout, evaluation and a planner rely on, and the registry of
model families that implement it.

A world model on cached tokens e (B, T, h, w, D) is an `nn.Module` with
- `objective(e) -> (loss, logs)`: the phase-1 (teacher-forced) training objective; `logs` holds
  `PREDICTION_LOSS`, the teacher-forced token MSE every family reports the same way;
- `phase2_objective(e) -> (loss, logs)`: the phase-2 objective, where `capabilities.phase2`;
- `predict(e)`: teacher-forced predictions of frames 1..T-1, (B, T-1, h, w, D);
- `infer_actions(e) -> z (B, T-1, d_z)` and `rollout(e_context, z, steps) -> Rollout`, where
  `capabilities.latent_actions`;
- `capabilities`: what the model can do, read from its config alone (so a stage can decide
  without building the model);
- `cfg`: its frozen config, which records `grid`, `token_dim`, `variant` and `bottleneck.kind`
  (what a `variants:` entry selects, so a checkpoint can be checked against params).

A family is registered once, in `FAMILIES` below, with its config class, its model class, its
named variants and how to build a config from a size preset. Adding a family means one new
module plus one entry here; tests/dila_core/test_families.py runs over every entry.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

from torch import Tensor

PREDICTION_LOSS = "L_e"  # the key of the teacher-forced token MSE in every family's objective logs


class Rollout(NamedTuple):
    e: Tensor  # (B, steps, h, w, D) generated tokens
    s: Tensor  # the model's own state of each generated frame: DiLA (B, steps, h, w, d_s),
    #            FLAM its slots (B, steps, K, W)


@dataclass(frozen=True)
class Capabilities:
    latent_actions: bool  # infer_actions / rollout / transfer exist
    phase2: bool          # phase2_objective exists (latent-rollout fine-tuning)


@dataclass(frozen=True)
class Family:
    """A registered model family: `module` holds `config` and `model` (imported when used)."""

    module: str
    config: str
    model: str
    variants: tuple[str, ...]              # the family's named variants (ablations), first = default
    preset: str                            # "module:function" building a config (see build_config)
    capabilities: Callable[[Any], Capabilities]
    params: tuple[str, ...] = ()           # extra per-variant settings build_config accepts as fields (FLAM: slots)

    def _get(self, name: str, module: str | None = None):
        import importlib

        return getattr(importlib.import_module(module or self.module), name)

    def config_class(self) -> type:
        return self._get(self.config)

    def model_class(self) -> type:
        return self._get(self.model)

    def build_config(self, preset: str, variant: str, bottleneck: str, weights: dict[str, float] | None = None,
                     **fields: Any):
        """The named preset's config for `variant` with `bottleneck` (its regulariser `weights`,
        fields of dila_core.bottleneck.BottleneckConfig) and other fields replaced."""
        module, function = self.preset.split(":")
        return self._get(function, module)(preset, variant=variant, bottleneck=bottleneck, weights=weights, **fields)


def _dila_capabilities(cfg) -> Capabilities:
    has_z = cfg.variant != "no_latent_action"
    return Capabilities(latent_actions=has_z, phase2=has_z)


def _flam_capabilities(cfg) -> Capabilities:
    return Capabilities(latent_actions=True, phase2=True)


FAMILIES: dict[str, Family] = {
    "dila": Family(module="dila_core.model", config="DiLAConfig", model="DiLA",
                   variants=("dila", "no_content", "no_latent_action"), preset="dila_core.presets:preset",
                   capabilities=_dila_capabilities, params=("reference",)),
    "flam": Family(module="dila_core.flam", config="FLAMConfig", model="FLAM", variants=("flam",),
                   preset="dila_core.flam:preset", capabilities=_flam_capabilities, params=("slots",)),
}


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r} (registered: {', '.join(FAMILIES)})")
    return FAMILIES[name]


def family_of(model_or_cfg: Any) -> str:
    """The registered family name of a model or config instance."""
    cfg = getattr(model_or_cfg, "cfg", model_or_cfg)
    for name, fam in FAMILIES.items():
        if type(cfg).__name__ == fam.config and type(cfg).__module__ == fam.module:
            return name
    raise ValueError(f"{type(cfg).__name__} is not the config of a registered model family")


def capabilities(cfg: Any) -> Capabilities:
    return FAMILIES[family_of(cfg)].capabilities(cfg)


def build_model(cfg: Any):
    """The model of a registered family's config."""
    return FAMILIES[family_of(cfg)].model_class()(cfg)
