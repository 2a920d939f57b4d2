"""The train/validation split of a feature store's episodes, shared by every stage two stage.

The split is by episode (never by window), seeded, and depends only on the number of
episodes, the fraction and the seed, so training, rollouts and probes agree on it.
"""
from __future__ import annotations

import numpy as np


def split_episodes(n_episodes: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) episode indices, each sorted; val has round(n * fraction) episodes, at least 1."""
    if n_episodes < 2:
        raise ValueError(f"need at least 2 episodes to hold some out for validation, got {n_episodes}")
    n_val = min(n_episodes - 1, max(1, round(n_episodes * val_fraction)))
    order = np.random.default_rng([seed, 0x5EED]).permutation(n_episodes)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def episode_bounds(episode_ends: np.ndarray) -> np.ndarray:
    """(E, 2) [start, stop) frame offsets of each episode from the store's exclusive ends."""
    ends = np.asarray(episode_ends, dtype=np.int64)
    return np.stack([np.concatenate([[0], ends[:-1]]), ends], axis=1)




def split_frames(episode_ends: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices of the train episodes and of the validation episodes (`split_episodes`)."""
    bounds = episode_bounds(episode_ends)                                   # (E, 2)
    train, val = split_episodes(len(bounds), val_fraction, seed)
    return tuple(np.concatenate([np.arange(*bounds[e]) for e in eps]) for eps in (train, val))
