"""Named model configurations, all built by `preset(name, ...)`.

- ``paper``: DiLA at the reference configuration on 16 x 16 x 768 tokens:
  123,005,768 trainable parameters (reference 123,006,040). Per module, ours against the
  reference's instantiated counts: ST-Transformer 51,103,008 / 51,129,864 (-0.05%), IDM
  36,022,208 / 36,021,312 (+0.002%), FDM 8,114,624 / 8,085,416 (+0.36%), structure +
  content encoders + memory + fusion decoder 27,765,928 / 27,769,448 (-0.01%). Each
  module's docstring gives the layer shapes that produce its count; README "Deviations
  from the reference code" lists where the layouts differ.
- ``small``: the CPU demo on 8 x 8 x 384 tokens (DINOv2-S width). Its decoder adds the
  first-frame tokens to its output (`DecoderConfig.skip`, not in the paper): trained for a
  few hundred steps, the paper's decoder does not yet reach the "repeat the last frame"
  baseline, which this residual starts from.
- ``tiny``: for tests and CI, on 4 x 4 x 32 tokens.

`reference_switches(cfg)` sets every architecture switch to the authors' reference code
(needs the ST-Transformer's and decoder's width equal to token_dim: `paper`, `tiny`). On
`paper` it has 122,080,024 parameters, 926,016 (0.75%) fewer than the reference: ST-Transformer
50,598,432, IDM 36,022,208, FDM 8,247,232, encoders + memory + decoder 27,212,152;
tests/dila_core/test_presets.py accounts for the differences layer by layer.

`variant` selects DiLA or a pathway ablation ("no_content" raises the structure
size 4x, the paper's 32 -> 128; "no_latent_action"); `bottleneck` selects the
latent-action bottleneck ("continuous", "gaussian" with β = 1e-4, "sparse" with l1 = vcm =
1e-2, or "nsvq" with a codebook of 8 and 4 x 4 latent tokens of code_dim, paper 32), and
`weights` replaces its regulariser weights (β, l1, vcm). Remaining keyword
arguments replace top-level fields; a dict replaces fields of a nested config:
``preset("tiny", d_s=4, loss={"lambda_e": 1.0})``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from dila_core.bottleneck import BottleneckConfig
from dila_core.content import MemoryConfig
from dila_core.fusion import DecoderConfig
from dila_core.layers import ResidualMLPConfig
from dila_core.losses import LossConfig
from dila_core.model import DiLAConfig
from dila_core.st_transformer import STConfig
from dila_core.structure import FDMConfig, IDMConfig

# Per preset: token grid and width, pathway sizes, and (width, depth, heads, head_dim,
# ffn_hidden, bias_hidden, dropout) of the three transformers.
SIZES: dict[str, dict[str, Any]] = {
    "paper": dict(grid=(16, 16), token_dim=768, d_s=32, d_c=256, d_z=256, code_dim=32,
                  st=(768, 4, 8, 64, 2048, 512, 0.1), encoder_hidden=768, encoder_depth=2,
                  memory=(2, 32, 4, 2, 256), idm=((64, 128, 256, 512, 512), (2, 2, 2, 1, 0), 32, 1024),
                  fdm=(256, 4, 8, 32, 1024, 512, 0.1), fdm_head=128,
                  decoder=(768, 3, 8, 32, 2048, 512, 0.0), decoder_skip="none"),
    # small: the CPU demo size. Sized so a training step of 8 clips x 8 frames of 8x8x384 tokens
    # costs ~30 GFLOP (a few tenths of a second on 2 cores): 1.1M parameters.
    "small": dict(grid=(8, 8), token_dim=384, d_s=16, d_c=32, d_z=32, code_dim=2,
                  st=(96, 1, 4, 24, 192, 32, 0.0), encoder_hidden=96, encoder_depth=1,
                  memory=(1, 16, 4, 2, 32), idm=((32, 64, 64), (1, 1, 0), 8, 128),
                  fdm=(64, 1, 4, 16, 128, 32, 0.0), fdm_head=32,
                  decoder=(96, 1, 4, 24, 192, 32, 0.0), decoder_skip="first_frame"),
    "tiny": dict(grid=(4, 4), token_dim=32, d_s=8, d_c=16, d_z=16, code_dim=2,
                 st=(32, 1, 2, 16, 64, 16, 0.0), encoder_hidden=32, encoder_depth=1,
                 memory=(2, 8, 4, 2, 16), idm=((8, 16, 16), (1, 1, 0), 4, 32),
                 fdm=(32, 1, 2, 16, 64, 16, 0.0), fdm_head=16,
                 decoder=(32, 1, 2, 16, 64, 16, 0.0), decoder_skip="none"),
}
NSVQ_TOKENS = 16  # 4 x 4 latent tokens
NO_CONTENT_STRUCTURE_FACTOR = 4  # paper: structure 32 -> 128 without the content pathway


def _transformer(cls, sizes: tuple, **extra):
    width, depth, heads, head_dim, ffn_hidden, bias_hidden, dropout = sizes
    return cls(width=width, depth=depth, heads=heads, head_dim=head_dim, ffn_hidden=ffn_hidden,
               bias_hidden=bias_hidden, dropout=dropout, **extra)


def _bottleneck(kind: str, size: dict[str, Any]) -> BottleneckConfig:
    if kind == "nsvq":
        code_dim = size["code_dim"]
        return BottleneckConfig(kind="nsvq", d_z=NSVQ_TOKENS * code_dim, codebook_size=8, code_dim=code_dim)
    return BottleneckConfig(kind=kind, d_z=size["d_z"], beta=1e-4)


def replace_fields(cfg: Any, overrides: Mapping[str, Any], where: str = "") -> Any:
    """cfg with fields replaced; a mapping value replaces fields of that nested config (at any
    depth), a list becomes a tuple. Unknown fields raise ValueError naming their path."""
    fields = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"preset: unknown field {where}{unknown[0]!r} (allowed: {', '.join(sorted(fields))})")

    def value(name: str, v: Any) -> Any:
        if isinstance(v, Mapping) and dataclasses.is_dataclass(getattr(cfg, name)):
            return replace_fields(getattr(cfg, name), v, f"{where}{name}.")
        return tuple(v) if isinstance(v, list) else v

    return dataclasses.replace(cfg, **{k: value(k, v) for k, v in overrides.items()})


def preset(name: str, variant: str = "dila", bottleneck: str = "continuous",
           weights: dict[str, float] | None = None, reference: bool = False, **overrides: Any) -> DiLAConfig:
    """The named configuration, for one model variant and bottleneck (with its regulariser
    `weights`, e.g. {"beta": 1e-3}), with every reference switch on where `reference`
    (`reference_switches`), then fields replaced."""
    if name not in SIZES:
        raise ValueError(f"preset: unknown name {name!r} (known: {', '.join(SIZES)})")
    size = SIZES[name]
    d_s = size["d_s"] * (NO_CONTENT_STRUCTURE_FACTOR if variant == "no_content" else 1)
    channels, blocks, groups, idm_head = size["idm"]
    encoder = ResidualMLPConfig(hidden=size["encoder_hidden"], depth=size["encoder_depth"])
    cfg = DiLAConfig(
        grid=size["grid"], token_dim=size["token_dim"], d_s=d_s, d_c=size["d_c"], variant=variant,
        st=_transformer(STConfig, size["st"], layout="space-ffn-time-ffn"),
        structure_encoder=encoder, content_encoder=encoder,
        memory=MemoryConfig(*size["memory"]),
        idm=IDMConfig(channels=channels, blocks=blocks, groups=groups, head_hidden=idm_head),
        fdm=FDMConfig(st=_transformer(STConfig, size["fdm"], layout="space-time-ffn"), head_hidden=size["fdm_head"]),
        bottleneck=dataclasses.replace(_bottleneck(bottleneck, size), **(weights or {})),
        decoder=_transformer(DecoderConfig, size["decoder"], fusion="sequential", skip=size["decoder_skip"]),
        loss=LossConfig(),
    )
    cfg = replace_fields(cfg, overrides)  # first, so the reference switches see the store's token width
    if reference:
        cfg = replace_fields(reference_switches(cfg), overrides)  # the caller's fields win over the switches
    cfg.validate(f"preset:{name}")
    return cfg


def reference_switches(cfg: DiLAConfig) -> DiLAConfig:
    """cfg with every switch set the way the authors' reference code builds and trains the model
    (README "Deviations from the reference code"; module docstrings give each switch): the
    architecture, Xavier re-initialisation, L_z with gradient into both sides, and the full
    phase-2 objective with one-step FDM rollouts. The reference has no input projection and takes
    the decoder's final norm as its output, which needs widths equal to token_dim (`paper`,
    `tiny`); where they differ (`small`) the projections stay, the only way to change width."""
    same_st, same_dec = cfg.st.width == cfg.token_dim, cfg.decoder.width == cfg.token_dim
    return replace_fields(cfg, {
        "st": {"layout": "space-then-time", "proj_in": not same_st, "attention": "cosine", "peg": "layer",
               "dropout": 0.1, "attention_dropout": False},
        "idm": {"head_dropout": 0.1},
        "fdm": {"z_path": "layernorm", "st": {"dropout": 0.1}},
        "decoder": {"fusion": "parallel", "skip": "none", "position": "causal_peg", "null_kv": 2,
                    "cross_bias": False, "output": "norm" if same_dec else "projection", "dropout": 0.1,
                    "attention_dropout": False},
        "loss": {"lz_target": "both"},
        "init": "xavier", "phase2": "full", "rollout_history": False,
    })