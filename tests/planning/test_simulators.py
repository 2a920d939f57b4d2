"""Planning benchmarks in simulators: exact save / restore, an oracle planner that reaches easy
goals while random actions do not, and a verdict that never enters a cost."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from pipeline.config import ParamsError
from pipeline.data.sources.base import EpisodeRef
from pipeline.data.sources.synthetic import SyntheticParams, SyntheticSource
from pipeline.planning.benchmark import (
    Observation,
    PlanningConfig,
    closed_loop,
    evaluate,
    oracle_controller,
    random_controller,
    run_tasks,
    simulator_cost,
    success_rate,
)
from pipeline.planning.mppi import MPPIConfig
from pipeline.planning.simulators import Dynamics
from pipeline.planning.synthetic_sim import SyntheticSim

# Sizes measured to keep each benchmark test well under a minute on one thread.
SYNTHETIC_PLAN = PlanningConfig(max_steps=10, mppi=MPPIConfig(samples=64, horizon=3, iterations=2, noise_std=0.1))
PUSHT_PLAN = PlanningConfig(max_steps=8, mppi=MPPIConfig(samples=32, horizon=5, iterations=2, noise_std=0.1))
BENCH = {"synthetic": (SYNTHETIC_PLAN, 20), "pusht": (PUSHT_PLAN, 20)}  # planner, number of easy goals


def make_sim(name: str):
    if name == "synthetic":
        return SyntheticSim()
    pytest.importorskip("gym_pusht")
    from pipeline.planning.pusht_sim import PushTSim

    return PushTSim()


def busy_actions(sim, steps: int, seed: int) -> np.ndarray:
    """(steps, a) actions that move things; for Push-T, targets around the block's centre."""
    rng = np.random.default_rng(seed)
    if isinstance(sim, SyntheticSim):
        return rng.uniform(sim.action_low, sim.action_high, (steps, sim.action_dim))
    return sim.block_centre(sim.state()) + rng.normal(0.0, 10.0, (steps, 2))


def run(sim, actions) -> list[tuple[bytes, bytes]]:
    out = []
    for a in actions:
        sim.step(a)
        out.append((sim.state().tobytes(), sim.frame().tobytes()))
    return out


@pytest.mark.parametrize("name", ["synthetic", "pusht"])
def test_a_restored_state_replays_exactly(name):
    sim = make_sim(name)
    sim.set_state(sim.easy_goal(0).start)
    actions = busy_actions(sim, 12, seed=1)
    run(sim, actions[:4])
    saved = sim.state()
    first = run(sim, actions[4:])
    run(sim, busy_actions(sim, 3, seed=2))                 # anything in between leaves no trace
    sim.set_state(saved)
    assert run(sim, actions[4:]) == first
    fresh = make_sim(name)                                  # another instance, from the vector alone
    fresh.set_state(saved)
    assert run(fresh, actions[4:]) == first
    moved = np.frombuffer(first[-1][0]) - saved.reshape(-1)
    assert np.abs(moved).max() > 0
    if name == "pusht":
        assert np.hypot(moved[2], moved[3]) > 5             # the block was pushed: contacts were replayed


@pytest.mark.parametrize("name", ["synthetic", "pusht"])
def test_the_oracle_planner_reaches_easy_goals_and_random_actions_do_not(name):
    cfg, n = BENCH[name]
    sim, model = make_sim(name), make_sim(name)
    tasks = [sim.easy_goal(i) for i in range(n)]
    assert not any(sim.success(t.start, t.goal) for t in tasks)  # no goal is reached by doing nothing
    begin = time.perf_counter()
    oracle = success_rate(run_tasks(sim, tasks, oracle_controller(model, cfg, torch.Generator().manual_seed(0))))
    seconds = time.perf_counter() - begin
    rand = success_rate(run_tasks(sim, tasks, random_controller(cfg.max_steps, np.random.default_rng(0))))
    print(f"{name}: oracle {oracle:.2f}, random {rand:.2f} on {n} easy goals; oracle {seconds:.1f} s")
    assert oracle >= 0.9
    assert rand <= 0.1 and oracle - rand >= 0.8


@pytest.mark.parametrize("name", ["synthetic", "pusht"])
def test_the_verdict_never_enters_a_cost(name, monkeypatch):
    sim = make_sim(name)
    task = sim.easy_goal(3)
    cfg = PlanningConfig(max_steps=2, mppi=MPPIConfig(samples=8, horizon=3, iterations=1))

    def forbidden(*args, **kwargs):
        raise AssertionError("the verdict was consulted while planning")

    monkeypatch.setattr(type(sim), "success", forbidden)
    monkeypatch.setattr(type(sim), "score", forbidden)
    # The cost sees a Dynamics view and the distance, nothing else; the model is the env itself.
    dynamics = Dynamics(sim.state, sim.set_state, sim.step)
    traj = closed_loop(sim, simulator_cost(dynamics, sim.distance, task.goal), cfg, torch.Generator().manual_seed(0))
    assert traj.states.shape[0] == 3 and traj.actions.shape == (2, sim.action_dim)
    assert sim.state().tobytes() == traj.final.tobytes()   # rollouts restored the env's own state
    monkeypatch.undo()
    assert set(evaluate(sim, traj, task.goal)) >= {"success"}


def test_simulator_cost_restores_the_model_and_reduces_as_asked():
    sim = SyntheticSim()
    task = sim.easy_goal(1)
    sim.set_state(task.start)
    candidates = torch.from_numpy(busy_actions(sim, 8, seed=0)).float().reshape(2, 4, -1)  # (K=2, H=4, a)
    costs = {}
    for reduce in ("final", "min", "mean"):
        cost = simulator_cost(sim.dynamics(), sim.distance, task.goal, reduce)(Observation(sim.frame(), sim.state()))
        costs[reduce] = cost(candidates).numpy()
        assert sim.state().tobytes() == task.start.tobytes()
    for k in range(2):
        sim.set_state(task.start)
        reached = []
        for a in candidates[k].double().numpy():
            sim.step(a)
            reached.append(sim.distance(sim.state(), task.goal))
        assert costs["final"][k] == reached[-1] and costs["min"][k] == min(reached)
        assert costs["mean"][k] == pytest.approx(np.mean(reached))
    with pytest.raises(ValueError, match="reduce = 'max'"):
        simulator_cost(sim.dynamics(), sim.distance, task.goal, "max")


def test_planning_is_seeded():
    def once(seed):
        sim = SyntheticSim()
        task = sim.easy_goal(2)
        build = simulator_cost(sim.dynamics(), sim.distance, task.goal)
        return closed_loop(sim, build, SYNTHETIC_PLAN, torch.Generator().manual_seed(seed)).actions

    assert once(0).tobytes() == once(0).tobytes() != once(1).tobytes()


@pytest.mark.parametrize("changes, key", [
    ({"max_steps": 0}, "planning.max_steps = 0 is not allowed"),
    ({"replan_every": 0}, "planning.replan_every = 0 is not allowed"),
    ({"replan_every": 11}, r"planning.replan_every = 11 is not allowed: expected an integer in 1..mppi.horizon \(10\)"),
    ({"mppi": MPPIConfig(samples=0)}, "mppi.samples"),
])
def test_planning_config_errors_name_the_field(changes, key):
    with pytest.raises((ParamsError, ValueError), match=key):
        PlanningConfig(**changes).validate()


def test_synthetic_frames_are_the_sources_frames():
    params = SyntheticParams(episodes=4, frames=6, size=32, max_objects=2)
    source = SyntheticSource(params)
    for index in range(4):
        episode = source.load(EpisodeRef(f"episode_{index:06d}", "test"))
        for frame in (0, 3, 5):
            sim = SyntheticSim.at_episode(source, index, frame)
            assert sim.frame().tobytes() == episode.frames[frame].tobytes()
            n = len(sim.state())
            sim.step(episode.actions[frame])              # the source's actions move the sim alike
            if frame + 1 < 6:
                want = episode.labels["pose"][frame + 1, :n]
                assert np.allclose(sim.state(), want, atol=1e-6)


def test_synthetic_bounds_follow_the_step_sizes():
    sim = SyntheticSim(SyntheticParams(max_objects=2, translate_step=0.05, rotate_step=0.3))
    assert sim.action_dim == 8
    assert sim.action_high[:4].tolist() == pytest.approx([0.15, 0.15, 0.24, 0.9])
    assert sim.action_high[4:].tolist() == [0, 0, 0, 0]                         # the absent second object
    sim.set_state(np.array([[0.5, 0.5, 0.0, 0.0]]))
    sim.step(np.full(8, 10.0))                                                 # clipped to one bounded step
    assert sim.state()[0].tolist() == pytest.approx([0.65, 0.65, 0.24, 0.9])


def test_pusht_physics_and_verdict_follow_gym_pusht():
    pytest.importorskip("gym_pusht")
    from gym_pusht.envs.pusht import PushTEnv

    from pipeline.planning.pusht_sim import SUCCESS_COVERAGE, PushTSim

    sim, env = PushTSim(), PushTEnv(obs_type="state")
    env.reset(seed=0)
    env.agent.position, env.agent.velocity = (100.0, 100.0), (0.0, 0.0)
    env.block.position, env.block.angle = (350.0, 350.0), 0.5
    sim.set_state(np.array([100, 100, *env.block.position, 0.5, 0, 0, 0, 0, 0], dtype=np.float64))
    for target in ([150.0, 120.0], [180.0, 90.0], [160.0, 160.0]):              # no contact: same agent law
        env.step(np.array(target, dtype=np.float32))
        sim.step(np.array(target))
        assert sim.state()[0:2].tolist() == list(env.agent.position)
        assert sim.state()[5:7].tolist() == list(env.agent.velocity)
    goal = np.array([0, 0, 256, 256, 0.0, 0, 0, 0, 0, 0])
    assert sim.score(goal, goal) == pytest.approx({"coverage": 1.0, "position_error": 0.0, "angle_error": 0.0})
    shifted = goal + np.eye(10)[3] * 30                                        # down by the bar's height
    assert sim.score(shifted, goal)["coverage"] == pytest.approx(3 / 7)        # (900 + 1800) / 6300 px^2
    turned = goal + np.eye(10)[4] * 2 * math.pi
    assert sim.success(turned, goal) and not sim.success(shifted, goal)
    assert SUCCESS_COVERAGE == 0.9
    frame = sim.frame()
    assert frame.shape == (96, 96, 3) and frame.dtype == np.uint8
