"""Stages plan@<variant> and plan_baselines on the tiny store: the held-out tasks, the adapter's
pairs, the world-model cost against a hand computation, determinism, and the reasons written
where planning is impossible."""
import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline import artifacts
from pipeline.data.sources import EpisodeRef, Source, build_source
from pipeline.params import PlanParams
from pipeline.planning import latent
from pipeline.planning.benchmark import Observation
from pipeline.training import runs
from stages import plan, plan_baselines
from tests.stages.helpers import private

TINY_PLAN = PlanParams(goals=2, start=1, goal_offset=3, max_steps=3, adapter_steps=50, adapter_hidden=16,
                       samples=8, horizon=2, iterations=1)


@pytest.fixture(scope="module")
def planned(run, tmp_path_factory):
    params = private(run.params, tmp_path_factory.mktemp("plan"), copy=True)
    params = dataclasses.replace(params, plan=TINY_PLAN, paths=dataclasses.replace(
        params.paths, plan=str(tmp_path_factory.mktemp("plan-out"))))
    return params, plan.run(params, "dila"), plan_baselines.run(params)


def val_keys(params):
    _, val = runs.open_windows(params)
    return [val.attrs["episodes"][i] for i in val.episodes]


def test_baselines_solve_the_held_out_tasks_in_the_simulator(planned):
    params, _, path = planned
    out = json.loads(path.read_text())
    assert path == artifacts.plan_baselines_path(params) and out["goals"] == 2
    for name in ("random", "simulator"):
        tasks = out[name]["tasks"]
        assert [t["episode"] for t in tasks] == val_keys(params)[:2]
        assert out[name]["success_rate"] == np.mean([t["success"] for t in tasks])
        assert {"position_error", "scale_error", "angle_error"} <= set(tasks[0])
    # the simulator as its own model ends closer to the goal than random actions do
    err = {n: np.mean([t["position_error"] for t in out[n]["tasks"]]) for n in ("random", "simulator")}
    assert err["simulator"] < err["random"]


def test_the_world_model_planner_records_its_adapter_and_the_simulators_verdict(planned):
    params, path, _ = planned
    out = json.loads(path.read_text())
    assert path == artifacts.plan_path(params, "dila") and (out["variant"], out["goals"]) == ("dila", 2)
    assert [t["episode"] for t in out["tasks"]] == val_keys(params)[:2]
    assert out["success_rate"] == np.mean([t["success"] for t in out["tasks"]])
    train, _ = runs.open_windows(params, length=2)
    assert out["adapter"]["episodes"] == len(train.episodes)            # fewer than 100 train episodes exist
    assert out["adapter"]["pairs"] == len(train.windows) and out["adapter"]["train_mse"] >= 0


def test_planning_is_deterministic(planned):
    params, path, base = planned
    first, first_base = path.read_bytes(), base.read_bytes()
    assert plan.run(params, "dila").read_bytes() == first
    assert plan_baselines.run(params).read_bytes() == first_base


def test_a_variant_without_latent_actions_gets_the_reason(planned):
    params, _, _ = planned
    params = dataclasses.replace(params, variants={**params.variants, "no_z": dataclasses.replace(
        params.variant("dila"), variant="no_latent_action")})
    out = json.loads(plan.run(params, "no_z").read_text())
    assert out["success_rate"] is None and out["unavailable"] == "variant 'no_z' has no latent actions to plan with"


def test_adapter_pairs_are_the_stored_actions_and_the_models_z(run):
    train, _ = runs.open_windows(run.params, length=2)
    a, z, used = latent.adapter_pairs(run.model, train, 2, torch.device("cpu"))
    first = [i for i in range(len(train.windows)) if train.windows[i, 1] in np.unique(train.windows[:, 1])[:2]]
    assert used == 2 and len(a) == len(z) == len(first)
    item = train[first[0]]
    np.testing.assert_allclose(a[0].numpy(), item["actions"][0].numpy())
    with torch.no_grad():
        np.testing.assert_allclose(z[0].numpy(), run.model.infer_actions(item["e"][None])[0, 0].numpy(), rtol=1e-5)


def test_the_world_model_cost_is_the_mean_token_error_of_the_adapted_rollout(run):
    model = run.model
    d_z, (h, w), dim = model.cfg.bottleneck.d_z, model.cfg.grid, model.cfg.token_dim
    adapter = torch.nn.Linear(4, d_z)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (8, 8, 3), dtype=np.uint8) for _ in range(3)]
    tokens = {f.tobytes(): rng.normal(size=(h, w, dim)).astype(np.float32) for f in frames}
    encode = lambda batch: np.stack([tokens[f.tobytes()] for f in batch])  # noqa: E731
    goal = torch.randn(h, w, dim)
    cost = latent.WorldModelCost(model, adapter, encode, goal, 2, torch.device("cpu"))
    u = torch.randn(5, 3, 4)
    got = cost(Observation(frames[-1], None, tuple(frames)))(u)       # the state is never read
    with torch.no_grad():
        e = torch.from_numpy(encode(frames[-2:]))[None].expand(5, -1, -1, -1, -1)
        out = model.rollout(e, adapter(u), 3).e
    torch.testing.assert_close(got, (out - goal).square().mean(dim=(2, 3, 4)).mean(1))


def test_tasks_start_and_end_on_the_episodes_own_states(run):
    source = build_source(run.params.dataset("synthetic"))
    keys = val_keys(run.params)
    tasks = latent.held_out_tasks(source, keys, TINY_PLAN)
    spec = source.spec(int(keys[0].split("_")[1]))
    np.testing.assert_array_equal(tasks[0].task.start, spec.motion.poses[1])
    np.testing.assert_array_equal(tasks[0].task.goal, spec.motion.poses[4])
    np.testing.assert_array_equal(tasks[0].goal_frame, source.load(tasks[0].ref, 4, 5).frames[0])
    with pytest.raises(latent.NoPlanning, match="no held-out episode has the 21 kept frames"):
        latent.held_out_tasks(source, keys, dataclasses.replace(TINY_PLAN, goal_offset=19))


def test_a_source_without_a_simulator_says_so_before_any_length_check():
    class Clips(Source):  # a dataset of short clips and no simulator (e.g. SSv2)
        params = SimpleNamespace(kind="ssv2")

        def refs(self):
            return [EpisodeRef(key="a", origin="a.webm")]

        def count(self, ref):
            return 3

        schema = load = fingerprint = None

    with pytest.raises(latent.NoPlanning, match="'ssv2' source has no simulator"):
        latent.held_out_tasks(Clips(), ["a"], dataclasses.replace(TINY_PLAN, goal_offset=19))
