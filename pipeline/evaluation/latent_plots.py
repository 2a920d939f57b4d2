"""The latent-manifold plots: z of one variant in 2-D, coloured by transform family and by the size
of the true action.

The 2-D map is UMAP (the `umap` extra, `umap-learn`) where it is installed, else the first two
principal components; the plot's title and the returned method say which, so a PCA plot is
never read as a UMAP one. UMAP is seeded (`seed`) and single-threaded for the same map on every
run; PCA is exact.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from pipeline.evaluation.metrics import pca_2d

UMAP_NEIGHBOURS = 15  # umap-learn's default neighbourhood size (fewer when there are fewer points)


def umap_available() -> bool:
    return importlib.util.find_spec("umap") is not None


def project_2d(z: np.ndarray, seed: int, method: str | None = None) -> tuple[np.ndarray, str]:
    """z (M >= 2, d) -> (coords (M, 2), a label of the method). `method`: "umap", "pca", or None
    for UMAP where it is installed and there are enough points for a neighbourhood graph."""
    if method is None:
        method = "umap" if umap_available() and len(z) > 3 else "pca"
    if method == "pca":
        coords, ratio = pca_2d(z)
        return coords, f"PCA ({ratio[0]:.0%} + {ratio[1]:.0%} of the variance)"
    if method != "umap":
        raise ValueError(f"project_2d: unknown method {method!r} (umap or pca)")
    import umap  # the optional extra; imported here so the report works without it

    reducer = umap.UMAP(n_components=2, n_neighbors=min(UMAP_NEIGHBOURS, len(z) - 1), random_state=seed,
                        n_jobs=1)  # a seed makes UMAP single-threaded anyway; say so explicitly
    threads = torch.get_num_threads()
    try:
        return np.asarray(reducer.fit_transform(np.asarray(z, np.float64)), np.float64), "UMAP"
    finally:  # numba's OpenMP layer resets the OpenMP thread count it shares with torch: restore torch's
        torch.set_num_threads(threads)


def plot_variant(variant: str, latents: dict[str, np.ndarray], path: Path, seed: int,
                 method: str | None = None) -> str | None:
    """Write the two-panel plot of one variant's latents (z (M, d_z), family (M,), families (names),
    magnitude (M,) or absent); returns the projection's label, or None (no plot) when z has fewer
    than 2 rows."""
    z = latents["z"]
    if len(z) < 2:
        return None
    coords, label = project_2d(z, seed, method)
    fig = Figure(figsize=(9, 4), layout="constrained")
    by_family, by_size = fig.subplots(1, 2)
    names = [str(n) for n in latents["families"]]
    for fam in np.unique(latents["family"]):
        sel = latents["family"] == fam
        name = names[fam] if 0 <= fam < len(names) else "unknown"
        by_family.scatter(coords[sel, 0], coords[sel, 1], s=6, alpha=0.7, label=name)
    by_family.legend(fontsize=8, markerscale=2)
    by_family.set(title=f"{variant}: z by transform family")
    size = latents.get("magnitude")
    if size is None or not np.isfinite(size).any():
        size, what = np.linalg.norm(z, axis=-1), "‖z‖ (no true actions)"
    else:
        what = "‖true action‖"
    points = by_size.scatter(coords[:, 0], coords[:, 1], s=6, c=size, cmap="viridis")
    fig.colorbar(points, ax=by_size, label=what)
    by_size.set(title=f"{variant}: z by {what}")
    for ax in (by_family, by_size):
        ax.set(xlabel=f"{label.split()[0]} 1", ylabel=f"{label.split()[0]} 2")
    fig.suptitle(f"latent actions, {label}", fontsize=10)
    fig.savefig(path, dpi=110)
    return label
