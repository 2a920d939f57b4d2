"""params.yaml -> typed, frozen Params; errors name the key, the value and what is allowed."""
from __future__ import annotations

import dataclasses

import pytest

from pipeline.config import ParamsError
from pipeline.params import apply_overrides, load_params, parse_params, read_yaml
from tests.conftest import ROOT, commented_variants, with_variants


def raw_defaults():
    return read_yaml(ROOT / "params.yaml")


def test_defaults_parse_into_frozen_typed_objects():
    p = load_params(ROOT / "params.yaml")
    assert p.encoder.model == "facebook/dinov2-small" and p.encoder.weights == "pretrained"
    assert p.encoder.input_size % 14 == 0
    assert set(p.datasets) == {"plain", "synthetic", "objects3", "pusht_sim", "pusht"}
    assert p.datasets["pusht_sim"].kind == "gym_pusht"
    assert p.datasets["synthetic"].kind == "synthetic" and p.datasets["objects3"].max_objects == 3
    assert (p.datasets["pusht"].kind, p.datasets["pusht"].path) == ("pusht_zarr", "../shared/data/pusht_cchi_v7_replay.zarr")
    assert p.evaluate.probe_datasets == ("plain", "synthetic", "objects3", "pusht")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.encoder.input_size = 224
    with pytest.raises(TypeError):
        p.datasets["other"] = p.datasets["synthetic"]


@pytest.mark.parametrize(
    "override, key, fragment",
    [
        ("encoder.input_size=100", "encoder.input_size", "multiple of the patch size 14"),
        ("encoder.weights=imagenet", "encoder.weights", "'pretrained', 'random'"),
        ("encoder.batch_size=0", "encoder.batch_size", ">= 1"),
        ("encoder.batch_size=abc", "encoder.batch_size", "int"),
        ("store.codec=gzip", "store.codec", "'zstd', 'lz4'"),
        ("store.clevel=12", "store.clevel", "1..9"),
        ("decode.workers=-1", "decode.workers", ">= 0"),
        ("datasets.synthetic.frame_stride=0", "datasets.synthetic.frame_stride", ">= 1"),
        ("datasets.synthetic.episodes=0", "datasets.synthetic.episodes", ">= 1"),
        ("datasets.synthetic.kind=youtube", "datasets.synthetic.kind", "lerobot"),
        ("datasets.synthetic.resize=[10]", "datasets.synthetic.resize", "[height, width]"),
        ("seed=1.5", "seed", "int"),
    ],
)
def test_bad_values_name_key_value_and_allowed(override, key, fragment):
    with pytest.raises(ParamsError) as info:
        parse_params(apply_overrides(raw_defaults(), [override]))
    message = str(info.value)
    assert key in message and fragment in message
    assert repr(override.split("=", 1)[1]) in message or override.split("=", 1)[1] in message


def test_unknown_keys_are_rejected_with_allowed_keys():
    with pytest.raises(ParamsError, match=r"unknown key encoder\.input_sise .*input_size"):
        parse_params(apply_overrides(raw_defaults(), ["encoder.input_sise=224"]))
    with pytest.raises(ParamsError, match=r"unknown key datasets\.synthetic\.n_episodes"):
        parse_params(apply_overrides(raw_defaults(), ["datasets.synthetic.n_episodes=3"]))
    with pytest.raises(ParamsError, match="unknown key trainn"):
        parse_params(apply_overrides(raw_defaults(), ["trainn.lr=1"]))


def test_missing_keys_are_named():
    raw = raw_defaults()
    del raw["seed"]
    with pytest.raises(ParamsError, match="missing key seed"):
        parse_params(raw)
    raw = raw_defaults()
    raw["datasets"]["folder"] = {"kind": "video_folder"}
    with pytest.raises(ParamsError, match=r"missing key datasets\.folder\.path"):
        parse_params(raw)


def test_overrides_set_nested_values_and_add_datasets():
    raw = apply_overrides(
        raw_defaults(),
        ["encoder.input_size=224", "datasets.clips.kind=video_folder", "datasets.clips.path=/videos",
         "datasets.synthetic.resize=[48, 64]"],
    )
    p = parse_params(raw)
    assert p.encoder.input_size == 224
    assert p.datasets["clips"].path == "/videos" and p.datasets["clips"].kind == "video_folder"
    assert p.datasets["synthetic"].resize == (48, 64)
    assert raw_defaults()["encoder"]["input_size"] != 224  # the override did not touch the file's mapping


def test_override_errors():
    with pytest.raises(ParamsError, match="key=value"):
        apply_overrides({}, ["encoder.input_size"])
    with pytest.raises(ParamsError, match="seed is not a mapping"):
        apply_overrides({"seed": 0}, ["seed.x=1"])


def test_dataset_lookup_names_known_datasets():
    p = load_params(ROOT / "params.yaml")
    with pytest.raises(ParamsError, match=r"no dataset named 'franka'.*synthetic"):
        p.dataset("franka")


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ParamsError, match="does not exist"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ParamsError, match="bad.yaml is not valid YAML"):
        load_params(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text((ROOT / "params.yaml").read_text().replace("clevel: 3", "clevel: 0"))
    with pytest.raises(ParamsError, match=r"wrong\.yaml: .*store\.clevel"):
        load_params(wrong)


def test_stage_two_sections_default_and_validate():
    p = load_params(ROOT / "params.yaml")
    assert p.model.preset == "small" and p.train.dataset == "plain" and list(p.variants) == ["dila"]
    assert p.variant("dila").config["loss"]["read_weight"] == 2.0
    # each variant left out of the default job is one commented params line that parses as it is
    every = sorted(commented_variants())
    assert every == ["dila_paper", "dila_reference", "discrete_z", "flam", "gaussian_z", "no_content", "no_z",
                     "sparse_z"]
    p = parse_params(apply_overrides(raw_defaults(), with_variants(*every)))
    assert (p.variant("flam").family, p.variant("flam").slots, p.variant("no_z").variant) == (
        "flam", 4, "no_latent_action")
    assert p.variant("discrete_z").bottleneck == "nsvq" and p.variant("no_content").variant == "no_content"
    assert (p.variant("sparse_z").bottleneck, p.variant("sparse_z").l1, p.variant("gaussian_z").beta) == (
        "sparse", 0.01, 1e-4)
    with pytest.raises(ParamsError, match=r"variants\.sparse_z\.vcm = -0\.5 is not allowed: expected a finite"):
        parse_params(apply_overrides(raw_defaults(), [*with_variants("sparse_z"), "variants.sparse_z.vcm=-0.5"]))
    custom = parse_params(apply_overrides(raw_defaults(), [
        "variants={big: {variant: dila, bottleneck: gaussian}}", "train.optim.schedule=constant",
        "finetune.optim.lr=0.001"]))
    assert list(custom.variants) == ["big"] and custom.variants["big"].bottleneck == "gaussian"
    assert custom.train.optim.schedule == "constant" and custom.finetune.optim.lr == 0.001
    with pytest.raises(ParamsError, match="no variant named 'dila'"):
        custom.variant("dila")


@pytest.mark.parametrize(
    "override, key",
    [("train.dataset=franka", "train.dataset"), ("evaluate.probe_datasets=[synthetic, franka]",
                                                "evaluate.probe_datasets[1]"),
     ("train.seq_len=1", "train.seq_len"),
     ("train.optim.lr=0", "train.optim.lr"), ("train.val_fraction=1.0", "train.val_fraction"),
     ("model.preset=huge", "model.preset"), ("rollout.horizon=0", "rollout.horizon"),
     ("replicas.seeds=[1, 1]", "replicas.seeds"), ("replicas.seeds=[3, 0]", "replicas.seeds[1]")],
)
def test_stage_two_errors_name_the_key(override, key):
    with pytest.raises(ParamsError, match=key.replace("[", r"\[").replace("]", r"\]")):
        parse_params(apply_overrides(raw_defaults(), [override]))


def test_floats_written_without_a_dot_are_floats():
    p = parse_params(apply_overrides(raw_defaults(), ["train.optim.lr=3e-3", "store.chunk_mb=2"]))
    assert p.train.optim.lr == 0.003 and p.store.chunk_mb == 2.0
    with pytest.raises(ParamsError, match="train.optim.lr = 'fast'"):
        parse_params(apply_overrides(raw_defaults(), ["train.optim.lr=fast"]))
