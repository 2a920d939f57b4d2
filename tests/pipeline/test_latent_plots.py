"""The latent-manifold maps: which projection, what it preserves, and that the plot says which."""
import subprocess
import sys

import numpy as np
import pytest

from pipeline.evaluation import latent_plots
from pipeline.evaluation.metrics import pca_2d
from tests.stages.helpers import cli_env

PNG = b"\x89PNG\r\n\x1a\n"


def clusters(seed=0, per=30):
    """Three well-separated clusters in 8-D, labelled 0, 1, 2."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 8)) * 10
    z = np.concatenate([c + rng.normal(size=(per, 8)) for c in centres]).astype(np.float32)
    return z, np.repeat(np.arange(3), per).astype(np.int32)


def test_pca_is_the_exact_principal_plane_and_says_so():
    z, _ = clusters()
    coords, label = latent_plots.project_2d(z, seed=0, method="pca")
    np.testing.assert_allclose(coords, pca_2d(z)[0])
    assert label.startswith("PCA (") and "variance" in label


def test_without_umap_the_default_is_pca(monkeypatch):
    monkeypatch.setattr(latent_plots, "umap_available", lambda: False)
    z, _ = clusters()
    assert latent_plots.project_2d(z, seed=0)[1].startswith("PCA")
    with pytest.raises(ValueError, match="unknown method 'tsne'"):
        latent_plots.project_2d(z, seed=0, method="tsne")


def test_umap_is_seeded_and_keeps_clusters_apart():
    pytest.importorskip("umap")
    z, label = clusters()
    a, name = latent_plots.project_2d(z, seed=3)
    b, _ = latent_plots.project_2d(z, seed=3)
    assert name == "UMAP" and a.shape == (90, 2)
    np.testing.assert_array_equal(a, b)
    centres = np.stack([a[label == k].mean(0) for k in range(3)])
    spread = max(np.linalg.norm(a[label == k] - centres[k], axis=1).mean() for k in range(3))
    gaps = [np.linalg.norm(centres[i] - centres[j]) for i in range(3) for j in range(i + 1, 3)]
    assert min(gaps) > 2 * spread  # each cluster stays a cluster, away from the others


def test_plot_has_both_panels_and_falls_back_to_the_size_of_z(tmp_path):
    z, family = clusters()
    lat = {"z": z, "family": family, "families": np.array(["translate", "scale", "rotate"]),
           "magnitude": np.full(len(z), np.nan, np.float32)}
    label = latent_plots.plot_variant("dila", lat, tmp_path / "p.png", seed=0, method="pca")
    assert label.startswith("PCA") and (tmp_path / "p.png").read_bytes()[:8] == PNG


def test_umap_leaves_torch_threads_alone():
    """numba's OpenMP layer resets, when it first starts, the OpenMP thread count torch shares; a
    later encoder pass would then sum in another order (stores would not be byte-identical within
    one process). A fresh process, as only the first UMAP fit in a process shows it."""
    pytest.importorskip("umap")
    code = ("import numpy as np, torch; from pipeline.evaluation import latent_plots; torch.set_num_threads(1); "
            "assert torch.get_num_threads() == 1; "  # torch's OpenMP state touched first, as after an encoder pass
            "latent_plots.project_2d(np.random.default_rng(0).normal(size=(60, 8)), seed=0); "
            "print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "1"
