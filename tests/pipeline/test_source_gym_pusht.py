"""GymPushTSource: scripted Push-T episodes simulated in gym-pusht (params, alignment, determinism)."""
from __future__ import annotations

import re
import sys

import numpy as np
import pytest

from pipeline.config import ParamsError, build
from pipeline.data.sources import build_source, params_class
from pipeline.data.sources.base import EpisodeError, EpisodeRef, LabelSpec, SourceError
from pipeline.data.sources.gym_pusht import GymPushTParams, GymPushTSource, moving_fraction

WHERE = "datasets.gym_pusht"
SMALL = {"episodes": 3, "frames": 10}


def make(**changes) -> GymPushTSource:
    return GymPushTSource(build(GymPushTParams, {**SMALL, **changes}, WHERE))


def needs_gym_pusht():
    pytest.importorskip("gym_pusht")


def test_defaults_are_valid_and_registered():
    params = build(params_class("gym_pusht"), {}, WHERE)
    assert params == GymPushTParams()
    assert (params.kind, params.path, params.episodes, params.frames, params.policy, params.seed) == (
        "gym_pusht", "pipeline/data/sources/gym_pusht.py", 32, 64, "random_walk", 0)
    assert isinstance(build_source(params), GymPushTSource)


@pytest.mark.parametrize("changes, key", [
    ({"episodes": 0}, "episodes"),
    ({"frames": 1}, "frames"),
    ({"policy": "spin"}, "policy"),
    ({"seed": -1}, "seed"),
    ({"kind": "synthetic"}, "kind"),
    ({"frame_stride": 0}, "frame_stride"),
    ({"max_frames": 1}, "max_frames"),
    ({"agent": 1}, "agent"),
])
def test_bad_values_name_the_key(changes, key):
    with pytest.raises(ParamsError, match=re.escape(f"{WHERE}.{key}")):
        build(GymPushTParams, changes, WHERE)


def test_without_gym_pusht_the_error_names_the_extra(monkeypatch):
    for name in ("gym_pusht", "gym_pusht.envs", "gym_pusht.envs.pusht"):
        monkeypatch.setitem(sys.modules, name, None)                              # as if not installed
    source = make()
    with pytest.raises(SourceError, match=re.escape("pip install -e '.[sim]'")):
        source.refs()
    with pytest.raises(SourceError, match="gym-pusht"):
        source.load(EpisodeRef("episode_000000", "x"))
    assert source.count(EpisodeRef("episode_000000", "x")) == 10                 # counting needs no simulator


def test_refs_schema_and_count():
    needs_gym_pusht()
    source = make(max_frames=6)
    refs = source.refs()
    assert [r.key for r in refs] == ["episode_000000", "episode_000001", "episode_000002"]
    assert source.schema().action_dim == 2
    assert source.schema().labels == {"state": LabelSpec((5,), "float32"), "sim_state": LabelSpec((10,), "float64")}
    assert [source.count(r) for r in refs] == [6, 6, 6]
    assert make().count(refs[0]) == 10 == make(frame_stride=3).count(refs[0])   # a stride holds actions longer
    episode = source.load(refs[1])
    assert episode.frames.shape == (6, 96, 96, 3) and episode.frames.dtype == np.uint8
    assert episode.actions.shape == (6, 2) and episode.actions.dtype == np.float32
    assert episode.labels["state"].tobytes() == episode.labels["sim_state"][:, :5].astype(np.float32).tobytes()


@pytest.mark.parametrize("stride", [1, 2])
def test_replaying_the_actions_reproduces_the_episode(stride):
    needs_gym_pusht()
    from pipeline.planning.pusht_sim import PushTSim

    source = make(frame_stride=stride)
    episode = source.load(source.refs()[2])
    sim = PushTSim(action_repeat=stride)
    sim.set_state(episode.labels["sim_state"][0])
    for t in range(len(episode.frames)):
        assert sim.state().tobytes() == episode.labels["sim_state"][t].tobytes(), t
        assert sim.frame().tobytes() == episode.frames[t].tobytes(), t
        sim.step(episode.actions[t])           # actions[t] leads from frame t to frame t + 1
    at = source.simulator_at(source.refs()[2], 4)
    assert at.state().tobytes() == episode.labels["sim_state"][4].tobytes()
    at.step(episode.actions[4])
    assert at.state().tobytes() == episode.labels["sim_state"][5].tobytes()


def test_same_params_give_identical_bytes_and_another_seed_differs():
    needs_gym_pusht()
    a, b, other = make(), make(), make(seed=1)
    for ref in a.refs()[:2]:
        first, second, changed = a.load(ref), b.load(ref), other.load(ref)
        assert first.frames.tobytes() == second.frames.tobytes()
        assert first.actions.tobytes() == second.actions.tobytes()
        for name in first.labels:
            assert first.labels[name].tobytes() == second.labels[name].tobytes()
        assert not np.array_equal(first.frames, changed.frames)
        assert not np.array_equal(first.actions, changed.actions)
    assert a.fingerprint() == b.fingerprint() != other.fingerprint()
    assert a.fingerprint() != make(frames=11).fingerprint()


def test_a_slice_equals_the_same_slice_of_the_full_episode():
    needs_gym_pusht()
    source = make()
    ref = source.refs()[0]
    full = source.load(ref)
    longer = make(frames=14).load(ref)                      # a longer episode extends a shorter one
    assert longer.frames[:10].tobytes() == full.frames.tobytes()
    assert longer.actions[:10].tobytes() == full.actions.tobytes()
    for start, stop in [(0, 1), (3, 7), (9, 10), (5, None)]:
        part = source.load(ref, start, stop)
        window = slice(start, stop)
        assert part.frames.tobytes() == full.frames[window].tobytes()
        assert part.actions.tobytes() == full.actions[window].tobytes()
        for name, values in full.labels.items():
            assert part.labels[name].tobytes() == values[window].tobytes(), name


def test_bad_refs_and_ranges_name_the_episode():
    needs_gym_pusht()
    source = make()
    with pytest.raises(EpisodeError, match=r"gym_pusht episode 7: 'episode_000007' is not one of"):
        source.load(EpisodeRef("episode_000007", "gym_pusht episode 7"))
    ref = source.refs()[0]
    with pytest.raises(EpisodeError, match=re.escape(f"{ref.origin}: frames [4, 11) requested")):
        source.load(ref, 4, 11)
    with pytest.raises(EpisodeError, match=re.escape(f"{ref.origin}: frame 10 requested")):
        source.simulator_at(ref, 10)


def test_the_policy_moves_the_block_and_probe_targets_are_the_actions():
    needs_gym_pusht()
    source = make(episodes=4, frames=32)
    episodes = [source.load(r) for r in source.refs()]
    states = np.stack([e.labels["sim_state"] for e in episodes])                 # (N, T, 10)
    assert moving_fraction(states) > 0.4
    actions = np.stack([e.actions for e in episodes])                             # (N, T, 2)
    targets = source.probe_targets(actions, {"state": np.stack([e.labels["state"] for e in episodes])})
    assert targets.shape == (4, 31, 2) and np.array_equal(targets, actions[:, :-1])
