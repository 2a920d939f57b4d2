"""The `dila` CLI: commands, -S overrides, exit codes and error messages."""
from __future__ import annotations

import zarr
from typer.testing import CliRunner

from pipeline.cli import app
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
    assert result.exit_code == 1 and "no dataset named 'nosuch'" in result.output


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
