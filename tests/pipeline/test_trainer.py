"""The training loop: the LR schedule steps, kill -9 + resume equals an uninterrupted run bit for bit,
two DDP ranks equal one process, metrics reach DVCLive.

The runs that must be separate processes call this module as a script:
`python -m tests.pipeline.test_trainer '<job json>'` (see `child`)."""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from dila_core.model import DiLA
from dila_core.presets import preset
from pipeline.data.split import split_episodes
from pipeline.data.windows import Windows
from pipeline.params import OptimParams
from pipeline.training.checkpoint import save_checkpoint
from pipeline.training.distributed import init
from pipeline.training.trainer import (
    Meter,
    RunFiles,
    Trainer,
    TrainSpec,
    build_optimizer,
    load_state,
    lr_factor,
    save_state,
    seed_everything,
    train,
)
from stages import extract, prepare
from tests.conftest import make_params
from tests.stages.helpers import cli_env


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    params = make_params(tmp_path_factory.mktemp("trainer"))
    prepare.run(params, "synthetic", show_progress=False)
    return extract.run(params, "synthetic", show_progress=False)


def job(store: Path, out: Path, **changes) -> dict:
    base = {"store": str(store), "out": str(out), "steps": 10, "batch_size": 4, "seq_len": 3, "bottleneck": "gaussian",
            "loss": {}, "checkpoint_every": 5, "log_every": 1, "val_every": 4, "kill_at": None,
            "optim": {"lr": 3e-3, "schedule": "cosine", "warmup_steps": 2}}
    return {**base, **changes}


def tiny_model(bottleneck: str, data: Windows, loss: dict, dead_after: int):
    cfg = preset("tiny", bottleneck=bottleneck, grid=data.grid, token_dim=data.dim, loss=loss)
    return dataclasses.replace(cfg, bottleneck=dataclasses.replace(cfg.bottleneck, dead_after=dead_after))


def child(spec: dict) -> None:
    """Train the tiny model on the store per `spec`; SIGKILL itself after update `kill_at`; save the
    final weights to <out>/model.safetensors."""
    torch.set_num_threads(1)
    d = init()
    train_eps, val_eps = split_episodes(6, 0.2, seed=0)
    data = [Windows(Path(spec["store"]), eps, spec["seq_len"], 1) for eps in (train_eps, val_eps)]
    seed_everything(0)
    model = DiLA(tiny_model(spec["bottleneck"], data[0], spec["loss"], spec.get("dead_after", 100)))
    seed_everything(0, d.rank)
    run = TrainSpec(objective="teacher_forcing", steps=spec["steps"], batch_size=spec["batch_size"],
                    optim=OptimParams(**spec["optim"]), checkpoint_every=spec["checkpoint_every"],
                    val_every=spec["val_every"], val_batches=2, log_every=spec["log_every"], workers=1, seed=0)
    out = Path(spec["out"])

    def on_step(step: int, logs: dict) -> None:
        if step == spec["kill_at"]:
            os.kill(os.getpid(), signal.SIGKILL)

    train(model, run, *data, RunFiles(out / "state.safetensors", out / "live"), {"job": spec["bottleneck"]}, d,
          on_step=on_step, show_progress=False)
    if d.is_main:
        save_checkpoint(out / "model.safetensors", model, spec["steps"])
    if spec.get("every_rank"):
        save_checkpoint(out / f"model.rank{d.rank}.safetensors", model, spec["steps"])


def run_child(spec: dict, ranks: int = 1) -> subprocess.CompletedProcess:
    launch = [sys.executable] if ranks == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
    return subprocess.run([*launch, "-m", "tests.pipeline.test_trainer", json.dumps(spec)], env=cli_env(),
                          capture_output=True, text=True, timeout=300)


def curve(live: Path, name: str) -> list[tuple[int, float]]:
    with open(live / "plots" / "metrics" / f"{name}.tsv") as f:
        return [(int(r["step"]), float(r[name.split("/")[-1]])) for r in csv.DictReader(f, delimiter="\t")]


def test_lr_factor_values():
    cosine = OptimParams(lr=1.0, schedule="cosine", warmup_steps=2)
    assert [lr_factor(cosine, 6, k) for k in range(6)] == pytest.approx(
        [0.5, 1.0, 1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4))])
    constant = OptimParams(lr=1.0, schedule="constant", warmup_steps=4)
    assert [lr_factor(constant, 6, k) for k in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_the_schedule_steps_once_per_update(tiny_store, tmp_path, schedule):
    optim = OptimParams(lr=1e-3, schedule=schedule, warmup_steps=2)
    train_eps, val_eps = split_episodes(6, 0.2, seed=0)
    data = [Windows(tiny_store, eps, 3, 1) for eps in (train_eps, val_eps)]
    seed_everything(0)
    model = DiLA(preset("tiny", grid=data[0].grid, token_dim=data[0].dim))
    spec = TrainSpec("teacher_forcing", steps=7, batch_size=2, optim=optim, checkpoint_every=100, val_every=100,
                     val_batches=1, log_every=1, workers=0, seed=0)
    seen = []
    train(model, spec, *data, RunFiles(tmp_path / "state.safetensors", tmp_path / "live"), {}, init(),
          on_step=lambda step, logs: seen.append(logs["lr"]), show_progress=False)
    want = [1e-3 * lr_factor(optim, 7, k) for k in range(7)]
    assert seen == pytest.approx(want, rel=1e-12)
    assert [lr for _, lr in curve(tmp_path / "live", "train/lr")] == pytest.approx(want, rel=1e-12)
    assert seen[:2] == [5e-4, 1e-3]  # warm-up
    assert (seen[-1] < seen[-2] < seen[2]) if schedule == "cosine" else seen[2:] == [1e-3] * 5


def test_state_round_trip_restores_optimizer_and_schedule(tmp_path):
    d = init()
    seed_everything(0)
    model = DiLA(preset("tiny"))
    opt, sched = build_optimizer(model, OptimParams(lr=1e-3, warmup_steps=1), steps=10)
    for _ in range(3):
        loss, _ = model(torch.randn(2, 3, 4, 4, 32))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    meter = Meter()
    meter.add({"loss": 0.1, "lr": 1 / 3})
    meter.add({"loss": 0.2, "lr": 2 / 3})
    for name in ("s", "again"):
        save_state(tmp_path / f"{name}.safetensors", model, opt, sched, 3, {"a": 1}, d, meter)
    assert (tmp_path / "s.safetensors").read_bytes() == (tmp_path / "again.safetensors").read_bytes()
    fresh, restored = DiLA(preset("tiny")), Meter()
    opt2, sched2 = build_optimizer(fresh, OptimParams(lr=1e-3, warmup_steps=1), steps=10)
    assert load_state(tmp_path / "s.safetensors", fresh, opt2, sched2, {"a": 2}, d, restored) == 0  # another plan
    assert restored.count == 0
    assert load_state(tmp_path / "s.safetensors", fresh, opt2, sched2, {"a": 1}, d, restored) == 3
    assert restored.state() == {"sums": {"loss": 0.1 + 0.2, "lr": 1 / 3 + 2 / 3}, "count": 2} == meter.state()
    for k, v in model.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k]), k
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for i in a["state"]:
        for key in a["state"][i]:
            assert torch.equal(a["state"][i][key], b["state"][i][key])
    assert sched2.last_epoch == 3 and sched2.get_last_lr() == sched.get_last_lr()
    (tmp_path / "s.safetensors").write_bytes(b"cut short by a kill")
    with pytest.raises(ValueError, match="s.safetensors: unreadable training state"):
        load_state(tmp_path / "s.safetensors", fresh, opt2, sched2, {"a": 1}, d)


def test_a_non_finite_loss_stops_training(tmp_path):
    seed_everything(0)
    spec = TrainSpec("teacher_forcing", steps=3, batch_size=2, optim=OptimParams(), checkpoint_every=1, val_every=1,
                     val_batches=1, log_every=1, workers=0, seed=0)
    run = Trainer(DiLA(preset("tiny")), spec, RunFiles(tmp_path / "s.safetensors", tmp_path / "live"), {}, init())
    run.step(torch.randn(2, 3, 4, 4, 32))
    with pytest.raises(FloatingPointError, match="training diverged at update 2"):
        run.step(torch.full((2, 3, 4, 4, 32), float("nan")))


TIMINGS = ("data_wait_s", "step_time_s", "data_wait_share")  # wall-clock: the only logs that may differ


def live_files(live: Path) -> dict[str, bytes]:
    """Every DVCLive file of a run but the timing curves, and its summary without the timings."""
    files = {p.relative_to(live).as_posix(): p.read_bytes() for p in sorted(live.rglob("*.tsv"))
             if p.stem not in TIMINGS}
    summary = json.loads((live / "metrics.json").read_text())
    files["metrics.json"] = {k: v for k, v in summary["train"].items() if k not in TIMINGS}, summary["val"], \
        summary["step"]
    return files


def test_kill_9_then_resume_equals_an_uninterrupted_run(tiny_store, tmp_path):
    # Logged every 3 steps, checkpointed every 5: the logging window of step 6 spans the checkpoint.
    whole = run_child(job(tiny_store, tmp_path / "whole", log_every=3))
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = run_child(job(tiny_store, tmp_path / "resumed", log_every=3, kill_at=7))
    assert killed.returncode == -signal.SIGKILL
    state = tmp_path / "resumed" / "state.safetensors"
    with safe_open(str(state), framework="pt") as f:
        assert f.metadata()["step"] == "5"
    assert curve(tmp_path / "resumed" / "live", "train/loss")[-1][0] == 6  # logged past the checkpoint
    resumed = run_child(job(tiny_store, tmp_path / "resumed", log_every=3))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = ((tmp_path / run / "model.safetensors").read_bytes() for run in ("whole", "resumed"))
    assert a == b  # the same weights, the same bytes
    want, got = live_files(tmp_path / "whole" / "live"), live_files(tmp_path / "resumed" / "live")
    assert sorted(want) == sorted(got) and "plots/metrics/train/loss.tsv" in want
    for name in want:
        assert want[name] == got[name], name
    assert [s for s, _ in curve(tmp_path / "whole" / "live", "train/loss")] == [3, 6, 9, 10]
    summary = json.loads((tmp_path / "whole" / "live" / "metrics.json").read_text())
    assert summary["step"] == 10 and {"loss", "data_wait_s", "step_time_s"} <= set(summary["train"])
    waits, times = curve(tmp_path / "whole" / "live", "train/data_wait_s"), curve(tmp_path / "whole" / "live",
                                                                                  "train/step_time_s")
    assert all(0 <= w <= t for (_, w), (_, t) in zip(waits, times))


def test_two_ranks_equal_one(tiny_store, tmp_path):
    # The whole objective, including the terms that are statistics of the whole batch (anti-collapse
    # σ_z, the symmetry normaliser): they are gathered over the ranks. The continuous bottleneck draws
    # no noise (the others' noise comes from each rank's own generator). Adam turns rounding
    # differences of near-zero gradients into steps of up to lr, so the lr is kept small.
    spec = dict(steps=4, checkpoint_every=100, val_every=2, bottleneck="continuous",
                loss={"lambda_sym": 0.5, "lambda_z": 0.5},
                optim={"lr": 3e-4, "schedule": "constant", "warmup_steps": 0})
    one = run_child(job(tiny_store, tmp_path / "one", **spec))
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_child(job(tiny_store, tmp_path / "two", **spec), ranks=2)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (load_file(tmp_path / run / "model.safetensors") for run in ("one", "two"))
    for name in a:
        np.testing.assert_allclose(a[name].numpy(), b[name].numpy(), atol=2e-5, rtol=0, err_msg=name)
    for name in ("train/loss", "train/L_collapse", "train/L_sym", "train/z_std", "val/L_e"):
        left, right = curve(tmp_path / "one" / "live", name), curve(tmp_path / "two" / "live", name)
        assert [s for s, _ in left] == [s for s, _ in right]
        np.testing.assert_allclose([v for _, v in left], [v for _, v in right], rtol=1e-4, err_msg=name)
    losses = [v for _, v in curve(tmp_path / "one" / "live", "train/loss")]
    assert len(set(losses)) == len(losses)  # the weights moved: equality is not the initialisation's


def test_two_ranks_keep_one_nsvq_codebook(tiny_store, tmp_path):
    # dead_after=1: every code unused in the global batch is replaced at the next step, from tokens
    # that differ per rank; the ranks must still hold the same codebook (and the same weights).
    spec = dict(steps=6, checkpoint_every=100, val_every=100, bottleneck="nsvq", every_rank=True, dead_after=1)
    two = run_child(job(tiny_store, tmp_path / "two", **spec), ranks=2)
    assert two.returncode == 0, two.stderr[-3000:]
    seed_everything(0)
    init_codes = DiLA(tiny_model("nsvq", Windows(tiny_store, np.arange(6), 3, 1), {}, 1)).state_dict()
    r0, r1 = (load_file(tmp_path / "two" / f"model.rank{r}.safetensors") for r in (0, 1))
    assert sorted(r0) == sorted(r1)
    for name in r0:
        assert torch.equal(r0[name], r1[name]), name
    codebook = next(name for name in r0 if name.endswith("codebook"))
    assert not torch.allclose(r0[codebook], init_codes[codebook].to(r0[codebook].dtype))  # codes were reset


if __name__ == "__main__":
    child(json.loads(sys.argv[1]))
