from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from matplotlib import image as mpimg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from pipeline import artifacts
from pipeline.data import windows
from pipeline.data.split import episode_bounds, split_episodes
from pipeline.data.store import open_store
from pipeline.data.windows import EPS
from pipeline.evaluation import clips, pixels
from pipeline.training import runs
from pipeline.training.checkpoint import CheckpointError
from stages import extract, prepare, rollout
from tests.conftest import with_variants
from tests.stages.helpers import (
    DIM,
    GRID,
    private,
    save_decoder,
    save_model,
    stage_params,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The tiny store, shared by the tests of this file (read only)."""
    p = stage_params(tmp_path_factory.mktemp("rollout"))
    prepare.run(p, "synthetic", show_progress=False)
    extract.run(p, "synthetic", show_progress=False)
    return p


@pytest.fixture
def params(store, tmp_path):
    """The shared store, with this test's own models and rollouts."""
    return private(store, tmp_path)


def store_arrays(params):
    root = open_store(artifacts.store_path(params, "synthetic"))
    return root["tokens"][:], episode_bounds(root["episode_ends"][:]), root["stats/mean"][:], root["stats/std"][:]


def test_rollout_store_holds_the_true_windows_and_the_models_rollout(params):
    model = save_model(params, "dila")
    out = rollout.run(params, "dila")
    group = zarr.open_group(out / "tokens.zarr", mode="r")
    tokens, bounds, mean, std = store_arrays(params)
    _, val = split_episodes(len(bounds), 0.34, params.seed)
    assert group["episodes"][:].tolist() == val.tolist() and len(val) == 2  # 2 held out, 5 asked for
    frames = bounds[val, :1] + np.arange(4)
    np.testing.assert_array_equal(group["frames"][:], frames)
    np.testing.assert_array_equal(group["truth"][:], tokens[frames])
    e = torch.from_numpy((tokens[frames].astype(np.float32) - mean) / (std + EPS))
    with torch.no_grad():
        want = model.rollout(e[:, :1], model.infer_actions(e), 3).e.numpy() * (std + EPS) + mean
    assert group["predicted"].shape == (2, 3, *GRID, DIM) and group["predicted"].dtype == np.float16
    np.testing.assert_allclose(group["predicted"][:].astype(np.float32), want, rtol=2e-3, atol=2e-3)
    attrs = group.attrs["dila_rollout"]
    assert attrs["checkpoint"]["step"] == 5 and attrs["checkpoint"]["phase"] == "finetune"
    assert (attrs["context"], attrs["horizon"], attrs["frame_skip"]) == (1, 3, 1)
    assert attrs["predicted"] == "ok" and attrs["pixels"].startswith("unavailable: no pixel decoder at")
    assert attrs["encoder"]["weights"] == "random-init (seed 0)"
    assert not list(out.glob("*.png"))


def test_png_grids_are_written_with_a_pixel_decoder_and_dropped_without(params):
    save_model(params, "dila")
    path = artifacts.store_path(params, "synthetic")
    save_decoder(params, open_store(path).attrs["dila"]["plan_sha256"])
    try:
        out = rollout.run(params, "dila")
        pngs = sorted(out.glob("episode_*.png"))
        episodes = zarr.open_group(out / "tokens.zarr", mode="r")["episodes"][:]
        assert [p.name for p in pngs] == [f"episode_{e:04d}.png" for e in episodes]
        height, width = mpimg.imread(pngs[0]).shape[:2]
        assert height > 4 * 2 * 8 and width > 4 * 2 * 8  # 4 labelled rows x 4 frames, each 8-px frame at 16 px
        assert zarr.open_group(out / "tokens.zarr", mode="r").attrs["dila_rollout"]["pixels"] == "2 PNG grids"
        save_decoder(params, "another store")
        out = rollout.run(params, "dila")
        assert not list(out.glob("*.png"))
        assert "trained on another feature store" in \
            zarr.open_group(out / "tokens.zarr", mode="r").attrs["dila_rollout"]["pixels"]
    finally:
        artifacts.pixel_decoder_weights(params).unlink()  # (this test's own models folder)


def test_variant_without_latent_actions_stores_the_truth_only(params):
    p = private(stage_params(Path(params.paths.features).parent, "variants.nola.variant=no_latent_action"),
                Path(params.paths.models).parent)
    save_model(p, "nola", kind="no_latent_action", phase="train")
    group = zarr.open_group(rollout.run(p, "nola") / "tokens.zarr", mode="r")
    assert "predicted" not in group and group["truth"].shape == (2, 4, *GRID, DIM)
    assert "has no latent actions" in group.attrs["dila_rollout"]["predicted"]


def test_missing_or_mismatched_weights_are_clear_errors(store, tmp_path):
    params = private(stage_params(Path(store.paths.features).parent, *with_variants("discrete_z", "gaussian_z")),
                     tmp_path)
    missing = artifacts.final_weights(params, "discrete_z", "finetune")
    with pytest.raises(artifacts.MissingInput, match=f"{missing}.*run `dila finetune discrete_z` first"):
        rollout.run(params, "discrete_z")
    save_model(params, "gaussian_z")  # a continuous model under the gaussian variant's name
    with pytest.raises(CheckpointError, match="holds a dila/dila/continuous model .*, but variants.gaussian_z is dila/dila/gaussian"):
        rollout.run(params, "gaussian_z")
    artifacts.final_weights(params, "gaussian_z", "finetune").unlink()


def test_normalize_matches_the_training_windows_and_inverts(params):
    tokens, bounds, mean, std = store_arrays(params)
    train, val = runs.open_windows(params, length=4)
    item = val[0]
    first = item["frame"]
    np.testing.assert_allclose(windows.normalize(tokens[first:first + 4], mean, std), item["e"].numpy(), rtol=1e-6)
    back = windows.denormalize(windows.normalize(tokens[:3], mean, std), mean, std)
    np.testing.assert_allclose(back, tokens[:3].astype(np.float32), rtol=1e-5, atol=1e-5)


def test_pick_starts_at_the_episode_start_or_tiles_the_episode(params):
    _, val = runs.open_windows(params, length=4)
    start = val.bounds[val.windows[:, 1], 0]
    first = clips.pick(val, tile=False)
    assert (val.windows[first, 0] == start[first]).all() and len(first) == 2
    assert len(clips.pick(val, tile=False, limit=1)) == 1
    tiled = clips.pick(val, tile=True)  # 10 frames, windows of 4 sharing one frame: offsets 0, 3, 6
    assert sorted((val.windows[tiled, 0] - start[tiled]).tolist()) == [0, 0, 3, 3, 6, 6]


def test_rollout_grid_labels_its_rows_numbers_its_steps_and_marks_the_context():
    frames = np.zeros((4, 8, 8, 3))
    labels = [pixels.TRUTH, pixels.OWN, pixels.OTHER, pixels.REPEAT]
    fig = pixels.rollout_grid([(label, frames) for label in labels], context=2, title="dila, episode 3")
    axes = np.array(fig.axes).reshape(4, 4)
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["truth", "prediction\n(own z)",
                                                       "prediction\n(another clip's z)", "repeat last\nframe"]
    assert [ax.get_title() for ax in axes[0]] == ["t=-1\ncontext", "t=0\ncontext", "t=1", "t=2"]
    context = to_rgba(pixels.CONTEXT_COLOUR)
    assert all(ax.spines["left"].get_edgecolor() == context for ax in axes[:, :2].ravel())
    assert not any(ax.spines["left"].get_edgecolor() == context for ax in axes[:, 2:].ravel())
    assert fig.get_suptitle() == "dila, episode 3"
    assert fig.get_size_inches()[0] * fig.dpi >= 4 * 2 * 8  # every 8-px frame at twice its size at least


def test_write_grids_rows_are_truth_own_z_other_z_and_the_repeated_last_context_frame(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(pixels, "rollout_grid", lambda rows, context, title: drawn.append((rows, title)) or Figure())
    truth = np.arange(2 * 4, dtype=np.float32).reshape(2, 4, 1, 1, 1)          # (N, T, h, w, D)
    predicted, other = truth[:, 2:] + 100, truth[:, 2:] + 200                  # (N, H, h, w, D)

    def decode(e):                                                             # token value -> a flat frame
        return np.broadcast_to(e.reshape(-1, 1, 1, 1), (len(e), 8, 8, 3))

    paths = pixels.write_grids(tmp_path, decode, truth, predicted, 2, np.array([5, 9]), other, "dila on synthetic")
    assert [p.name for p in paths] == ["episode_0005.png", "episode_0009.png"] and all(p.is_file() for p in paths)
    rows, title = drawn[1]
    assert [label for label, _ in rows] == [pixels.TRUTH, pixels.OWN, pixels.OTHER, pixels.REPEAT]
    firsts = {label: frames[:, 0, 0, 0].tolist() for label, frames in rows}
    assert firsts == {pixels.TRUTH: [4, 5, 6, 7], pixels.OWN: [4, 5, 106, 107], pixels.OTHER: [4, 5, 206, 207],
                      pixels.REPEAT: [4, 5, 5, 5]}
    assert title.startswith("dila on synthetic, held-out episode 9: 2 true context frame(s), then 2 predicted")
    pixels.write_grids(tmp_path, decode, truth, predicted, 2, np.array([5, 9]))
    assert [label for label, _ in drawn[-1][0]] == [pixels.TRUTH, pixels.OWN, pixels.REPEAT]
