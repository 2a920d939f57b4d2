"""The `dila` CLI: commands, -S overrides, exit codes and error messages."""
from __future__ import annotations

from importlib import metadata

import pytest
import typer
import zarr
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.params import load_params
from pipeline.provenance import code_version
from tests.conftest import TINY_STAGE_TWO
from tests.stages.helpers import write_params

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_prepare_extract_verify_info(tmp_path):
    params = str(write_params(tmp_path))
    result = invoke("prepare", "synthetic", "--params", params, "-q")
    assert result.exit_code == 0 and "6 episodes, 60 frames, 0 skipped" in result.output
    result = invoke("extract", "synthetic", "--params", params, "-q", "-S", "store.clevel=5")
    assert result.exit_code == 0, result.output
    store = tmp_path / "features" / "synthetic.zarr"
    assert zarr.open_group(store, mode="r")["tokens"].metadata.codecs[0].codecs[-1].clevel == 5
    result = invoke("verify", str(store))
    assert result.exit_code == 0 and "OK" in result.output
    result = invoke("info", str(store))
    assert result.exit_code == 0 and "random-init (seed 0)" in result.output and "(60, 3, 3, 384)" in result.output


def test_bad_param_exits_2_naming_the_key(tmp_path):
    params = str(write_params(tmp_path))
    result = runner.invoke(app, ["prepare", "synthetic", "--params", params, "-S", "encoder.input_size=100"])
    assert result.exit_code == 2
    assert "encoder.input_size = 100" in result.output and "multiple of the patch size 14" in result.output
    result = runner.invoke(app, ["prepare", "nosuch", "--params", params])
    assert result.exit_code == 2 and "no dataset named 'nosuch'" in result.output


def one_line(output: str) -> str:
    return " ".join(output.split())  # rich wraps long lines


@pytest.mark.parametrize("args, problem", [
    (["prepare", "synthetic", "-S", "encoder.input_size=100"], "encoder.input_size = 100 is not allowed"),
    (["prepare", "synthetic", "-S", "encoder.nosuch=1"], "unknown key encoder.nosuch"),
    (["prepare", "nosuch"], "no dataset named 'nosuch' under datasets:"),
    (["extract", "nosuch"], "no dataset named 'nosuch' under datasets:"),
    (["train", "nosuch"], "no variant named 'nosuch' under variants:"),
    (["list", "-S", "evaluate.probe_datasets=[nosuch]"], "evaluate.probe_datasets[0] = 'nosuch' is not allowed"),
])
def test_every_params_error_exits_2_with_one_line_naming_the_file_once(tmp_path, args, problem):
    params = str(write_params(tmp_path))
    result = runner.invoke(app, [*args, "--params", params])
    assert result.exit_code == 2, result.output
    text = one_line(result.output)
    assert text == f"error: {params}: {problem}" + text.split(problem, 1)[1]
    assert text.count("error:") == 1 and text.count(params) == 1 and "params:" not in text


def test_a_missing_params_file_exits_2_and_a_missing_input_exits_1(tmp_path):
    result = runner.invoke(app, ["list", "--params", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2
    assert one_line(result.output) == (f"error: {tmp_path / 'none.yaml'}: no such params file "
                                       "(name one with --params FILE)")
    params = str(write_params(tmp_path))
    result = runner.invoke(app, ["extract", "synthetic", "--params", params, "-q"])  # never prepared
    assert result.exit_code == 1 and one_line(result.output).startswith("error: ") and "Traceback" not in result.output


def test_list_shows_every_dataset_and_variant_of_the_params_file_with_overrides(tmp_path):
    params = write_params(tmp_path)
    overrides = ["-S", "datasets.extra.kind=video_folder", "-S", "datasets.extra.path=clips",
                 "-S", "variants.wide.bottleneck=nsvq", "-S", "variants.flam.slots=2"]
    result = invoke("list", "--params", str(params), *overrides)
    assert result.exit_code == 0
    p = load_params(params, overrides[1::2])
    lines = result.output.splitlines()
    assert lines[0] == f"datasets in {params} (NAME, kind, path):"
    rows = {line.split()[0]: line.split()[1:] for line in lines if line.startswith("  ")}
    assert set(rows) == {*p.datasets, *p.variants} and {"extra", "wide"} <= set(rows)
    for name, ds in p.datasets.items():
        assert rows[name] == [ds.kind, ds.path]
    for name, v in p.variants.items():
        assert rows[name] == [f"{v.family}/{v.variant}/{v.bottleneck}"]
    assert rows["extra"] == ["video_folder", "clips"] and rows["wide"] == ["dila/dila/nsvq"]


def test_version_prints_the_package_and_the_code_version():
    result = invoke("--version")
    version = code_version()
    assert result.exit_code == 0 and result.output.startswith(f"dila {metadata.version('dila')} (code: ")
    if version["git_commit"] is not None:
        assert version["git_commit"] in result.output


def usage(command: str) -> str:
    return next(line.strip() for line in invoke(command, "--help").output.splitlines() if "Usage:" in line)


def test_every_argument_and_option_has_help_and_usage_names_arguments_plainly():
    for name, command in typer.main.get_command(app).commands.items():
        assert command.help, name
        for param in command.params:
            assert param.help, f"{name} {param.name}"
        assert "{" not in usage(name), usage(name)
    assert usage("prepare").endswith("prepare [OPTIONS] NAME") and usage("extract").endswith("[OPTIONS] NAME")
    assert usage("train").endswith("train [OPTIONS] VARIANT") and usage("verify").endswith("verify [OPTIONS] STORE")
    assert "--version" in invoke("--help").output


def test_verify_of_a_missing_path_prints_one_error_naming_it_once(tmp_path):
    missing = str(tmp_path / "nonexistent.zarr")
    for command in ("verify", "info"):
        result = runner.invoke(app, [command, missing])
        assert result.exit_code == 1
        text = one_line(result.output)
        assert text == f"error: {missing}: no feature store here (run `dila extract` first)", command


def test_prepare_of_an_absent_push_t_says_where_it_comes_from_and_how_to_drop_it(tmp_path):
    params = str(write_params(tmp_path, f"datasets.pusht.path={tmp_path / 'absent.zarr'}"))
    result = runner.invoke(app, ["prepare", "pusht", "--params", params, "-q"])
    assert result.exit_code == 1
    text = one_line(result.output)
    assert text.startswith(f"error: {tmp_path / 'absent.zarr'}: no replay buffer here "
                           "(the path datasets.pusht.path gives)")
    assert "pusht_cchi_v7_replay.zarr" in text and "MIT licence" in text and "`evaluate.probe_datasets`" in text


def test_pretrained_weights_offline_exit_1_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    params = str(write_params(tmp_path))
    assert invoke("prepare", "synthetic", "--params", params, "-q").exit_code == 0
    result = runner.invoke(app, ["extract", "synthetic", "--params", params, "-S", "encoder.weights=pretrained",
                                 "-S", "encoder.model=facebook/dinov2-base"])
    assert result.exit_code == 1
    assert "facebook/dinov2-base" in result.output and "encoder.weights=random" in result.output


def test_verify_exits_1_naming_the_problem(tmp_path):
    params = str(write_params(tmp_path))
    invoke("prepare", "synthetic", "--params", params, "-q")
    invoke("extract", "synthetic", "--params", params, "-q")
    store = tmp_path / "features" / "synthetic.zarr"
    zarr.open_group(store, mode="r+")["episode_ends"][-1] = 59
    result = runner.invoke(app, ["verify", str(store)])
    assert result.exit_code == 1
    assert "damaged: episode_ends/c/0 has changed since it was written (sha256); run `dila extract synthetic` to " \
           "rebuild the store" in result.output
    result = runner.invoke(app, ["info", str(tmp_path / "nothing.zarr")])
    assert result.exit_code == 1 and "no feature store here" in result.output


def test_a_cut_short_shard_is_named_by_verify_stops_train_and_extract_rewrites_it(tmp_path):
    params = str(write_params(tmp_path, *TINY_STAGE_TWO))
    invoke("prepare", "synthetic", "--params", params, "-q")
    invoke("extract", "synthetic", "--params", params, "-q")
    store = tmp_path / "features" / "synthetic.zarr"
    shard = store / "tokens" / "c" / "1" / "0" / "0" / "0"
    written = shard.stat().st_size
    shard.write_bytes(shard.read_bytes()[:1000])
    damaged = f"shard 1 (frames [18, 36)): tokens/c/1/0/0/0 has 1000 bytes, {written} were written"
    result = runner.invoke(app, ["verify", str(store), "-q"])
    assert result.exit_code == 1 and f"damaged: {damaged}; run `dila extract synthetic` to rewrite it" in result.output
    result = runner.invoke(app, ["train", "dila", "--params", params, "-q"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"the feature store is damaged: {damaged} run `dila extract synthetic` to rewrite what is damaged" \
        in " ".join(result.output.split())
    result = invoke("extract", "synthetic", "--params", params, "-q")
    assert result.exit_code == 0 and f"rewriting exactly those: damaged, rewriting: {damaged}" in \
        " ".join(result.output.split())
    assert invoke("verify", str(store)).exit_code == 0
