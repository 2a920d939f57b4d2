import dataclasses
import types
import typing

import pytest
import torch

from dila_core.model import DiLA, DiLAConfig
from dila_core.presets import SIZES, preset

REFERENCE_TOTAL = 123_006_040
# The reference's instantiated per-module counts (../shared/DESIGN.md) and ours, which the docs state.
REFERENCE_MODULES = {"st_transformer": 51_129_864, "idm": 36_021_312, "fdm": 8_085_416,
                     "encoders_memory_fusion": 27_769_448}
OURS = {"st_transformer": 51_103_008, "idm": 36_022_208, "fdm": 8_114_624, "encoders_memory_fusion": 27_765_928}


def count(*modules: torch.nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters() if p.requires_grad)


def test_paper_preset_matches_the_reference_parameter_counts():
    torch.manual_seed(0)
    model = DiLA(preset("paper"))
    counts = {
        "st_transformer": count(model.backbone),
        "idm": count(model.dynamics.idm),
        "fdm": count(model.dynamics.fdm),
        "encoders_memory_fusion": count(model.structure, model.content, model.decoder),
    }
    total = count(model)
    assert total == sum(counts.values()) + count(model.dynamics.bottleneck)
    assert total == 123_005_768 and abs(total - REFERENCE_TOTAL) <= 0.0001 * REFERENCE_TOTAL
    assert counts == OURS
    for name, reference in REFERENCE_MODULES.items():                 # the FDM is the farthest: +0.36%
        assert abs(counts[name] - reference) <= 0.004 * reference, (name, counts[name])
    assert count(model.content.memory) == 1_057_792  # reference ~1.06M


def test_paper_preset_shapes():
    cfg = preset("paper")
    assert (tuple(cfg.grid), cfg.token_dim, cfg.d_s, cfg.d_c, cfg.bottleneck.d_z) == ((16, 16), 768, 32, 256, 256)
    assert (cfg.st.width, cfg.st.depth, cfg.st.heads, cfg.st.head_dim) == (768, 4, 8, 64)
    assert (cfg.fdm.st.width, cfg.fdm.st.depth, cfg.fdm.st.heads, cfg.fdm.st.head_dim) == (256, 4, 8, 32)
    assert (cfg.decoder.width, cfg.decoder.depth, cfg.decoder.heads, cfg.decoder.head_dim) == (768, 3, 8, 32)
    assert cfg.idm.channels == (64, 128, 256, 512, 512)
    assert (cfg.memory.layers, cfg.memory.d_state, cfg.memory.d_conv, cfg.memory.expand) == (2, 32, 4, 2)


def test_ablation_and_bottleneck_presets():
    assert preset("paper", variant="no_content").d_s == 128
    nsvq = preset("paper", bottleneck="nsvq").bottleneck
    assert (nsvq.d_z, nsvq.codebook_size, nsvq.code_dim, nsvq.d_z // nsvq.code_dim) == (512, 8, 32, 16)
    gaussian = preset("paper", bottleneck="gaussian").bottleneck
    assert (gaussian.kind, gaussian.d_z, gaussian.beta) == ("gaussian", 256, 1e-4)
    assert preset("paper", variant="no_latent_action").variant == "no_latent_action"


@pytest.mark.parametrize("name", ["small", "tiny"])
@pytest.mark.parametrize("variant", ["dila", "no_content", "no_latent_action"])
@pytest.mark.parametrize("bottleneck", ["continuous", "gaussian", "nsvq"])
def test_every_small_combination_builds_and_runs(name, variant, bottleneck):
    torch.manual_seed(0)
    model = DiLA(preset(name, variant=variant, bottleneck=bottleneck)).eval()
    cfg = model.cfg
    e = torch.randn(1, 2, *cfg.grid, cfg.token_dim)
    assert model.predict(e).shape == (1, 1, *cfg.grid, cfg.token_dim)
    loss, _ = model(e)  # one transition of one clip: every term stays finite
    assert torch.isfinite(loss)


def test_presets_use_their_token_grid():
    assert (SIZES["small"]["grid"], SIZES["small"]["token_dim"]) == ((8, 8), 384)
    assert preset("small").grid == (8, 8) and preset("tiny").grid == (4, 4)


ALLOWED = (int, float, bool, str)


def field_types_are_plain(cls) -> list[str]:
    """Names of fields whose type is not int/float/bool/str/Literal/tuple[int, ...]/nested config."""
    bad = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        origin = typing.get_origin(tp)
        if dataclasses.is_dataclass(tp):
            bad += [f"{f.name}.{b}" for b in field_types_are_plain(tp)]
        elif not (tp in ALLOWED or origin is typing.Literal or tp == tuple[int, ...]):
            bad.append(f.name)
    return bad


def test_config_fields_are_plain_types_and_frozen():
    assert field_types_are_plain(DiLAConfig) == []
    cfg = preset("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.d_s = 3
    assert not isinstance(cfg.grid, types.GenericAlias)


def test_overrides_replace_fields_and_nested_fields():
    cfg = preset("tiny", d_s=6, loss={"lambda_e": 1.0}, decoder={"fusion": "parallel"})
    assert (cfg.d_s, cfg.loss.lambda_e, cfg.loss.lambda_s, cfg.decoder.fusion) == (6, 1.0, 0.03, "parallel")


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(name="huge"), "preset: unknown name 'huge'"),
    (dict(name="tiny", width=3), "preset: unknown field 'width'"),
    (dict(name="tiny", d_s=0), r"preset:tiny\.d_s = 0 is not allowed: expected an integer >= 1"),
    (dict(name="tiny", variant="none"), r"preset:tiny\.variant = 'none' is not allowed"),
    (dict(name="tiny", grid=(4,)), r"preset:tiny\.grid = \(4,\) is not allowed: expected a list of 2 integers"),
    (dict(name="tiny", idm={"groups": 3}), r"preset:tiny\.idm\.groups = 3 is not allowed"),
])
def test_bad_presets_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        preset(**kwargs)
