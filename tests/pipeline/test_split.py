"""The episode split shared by training, rollouts and probes."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.split import episode_bounds, split_episodes


def test_split_is_a_seeded_partition_by_episode():
    train, val = split_episodes(64, 0.125, seed=0)
    assert len(val) == 8 and len(train) == 56
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(64))
    again_train, again_val = split_episodes(64, 0.125, seed=0)
    np.testing.assert_array_equal(val, again_val)
    np.testing.assert_array_equal(train, again_train)
    assert not np.array_equal(split_episodes(64, 0.125, seed=1)[1], val)


def test_split_keeps_at_least_one_episode_on_each_side():
    assert [len(x) for x in split_episodes(2, 0.01, 0)] == [1, 1]
    assert [len(x) for x in split_episodes(3, 0.99, 0)] == [1, 2]
    with pytest.raises(ValueError, match="at least 2 episodes"):
        split_episodes(1, 0.5, 0)


def test_episode_bounds_from_exclusive_ends():
    np.testing.assert_array_equal(episode_bounds(np.array([3, 7, 10])), [[0, 3], [3, 7], [7, 10]])
