"""The training loop shared by phase 1 (teacher forcing) and phase 2 (latent-rollout fine-tuning).

One optimisation step: read this rank's slice of the global batch (the time blocked
on the loader is the step's data wait), run the objective under bf16 autocast on CUDA
(fp32 on CPU), backward, clip the gradient norm, AdamW step, LR schedule step. Steps
are counted as completed updates: "step k" is the state after k updates.

Resume state (one safetensors file, written atomically by rank 0 every
`checkpoint_every` steps): the model's weights (`model/*`), AdamW's tensors
(`optim/<param>/<key>`), every rank's RNG states (`rng/<device>/<rank>`); its string
metadata holds the step, the plan (everything the result depends on, as JSON), the
optimizer's param groups, the scheduler's state and every rank's partial logging window
(the sums of the steps since the last logged one, so a checkpoint between two logged
steps does not change what the next one logs). A run whose plan differs from the
state's starts fresh. On CPU a run killed at any point and re-run ends with the same
losses, weights and logged metrics as an uninterrupted one: the batches of step k
depend only on (seed, k) (see windows.py) and the RNG states are restored. Files are
written with sorted metadata (`pipeline.safefile`), so equal states give equal bytes.

Metrics go to DVCLive (rank 0 only): `train/*` means over the last `log_every` steps
(averaged over ranks), `val/*` on fixed held-out windows every `val_every` steps and
at the end. A resumed run first drops the rows logged after its checkpoint.
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from dila_core.world_model import PREDICTION_LOSS
from pipeline import safefile
from pipeline.data.windows import (
    FixedBatches,
    Windows,
    fixed_windows,
    loader,
)
from pipeline.config import ParamsError, to_dict
from pipeline.params import OptimParams
from pipeline.training.checkpoint import CheckpointError
from pipeline.training.distributed import Dist, barrier

FORMAT = "dila-train-state/1"


@dataclass(frozen=True)
class TrainSpec:
    """What one training run does; batch_size is global (split over ranks)."""

    objective: Literal["teacher_forcing", "phase2"]  # the model's `objective` or `phase2_objective`
    steps: int
    batch_size: int
    optim: OptimParams
    checkpoint_every: int
    val_every: int
    val_batches: int
    log_every: int
    workers: int
    seed: int


@dataclass(frozen=True)
class RunFiles:
    state: Path         # resume state (safetensors), removed by the caller once the final weights exist
    live: Path | None   # DVCLive directory: metrics.json, plots/metrics/{train,val}/*.tsv (None: no curves)


def lr_factor(optim: OptimParams, steps: int, k: int) -> float:
    """LR multiplier for update k (0-based): linear warm-up over warmup_steps to 1, then 1
    (constant) or a cosine decay that reaches 0 at update `steps`."""
    if k < optim.warmup_steps:
        return (k + 1) / optim.warmup_steps
    if optim.schedule == "constant":
        return 1.0
    progress = (k - optim.warmup_steps) / max(1, steps - optim.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def param_groups(model: nn.Module, optim: OptimParams) -> list[dict]:
    """AdamW's parameter groups: one group of every parameter at optim.lr, or with optim.lr_scale the
    model's named groups (`model.param_groups()`), each at lr times its factor (1 where unnamed)."""
    if not optim.lr_scale:
        return [{"params": list(model.parameters())}]
    groups = model.param_groups() if hasattr(model, "param_groups") else {}
    for name in optim.lr_scale:
        if name not in groups:
            raise ParamsError(f"params: optim.lr_scale.{name}: the model ({type(model).__name__}) has no parameter "
                              f"group {name!r} (its groups: {', '.join(groups) or 'none'})")
    return [{"params": ps, "lr": optim.lr * optim.lr_scale.get(name, 1.0)} for name, ps in groups.items() if ps]


def build_optimizer(model: nn.Module, optim: OptimParams, steps: int):
    """AdamW and its LR schedule (stepped once per update; it scales every group's own lr)."""
    opt = torch.optim.AdamW(param_groups(model, optim), lr=optim.lr, weight_decay=optim.weight_decay)

    def factor(k: int) -> float:  # a plain function: LambdaLR leaves it out of its state dict
        return lr_factor(optim, steps, k)

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


class Objective(nn.Module):
    """The phase's loss as the module's forward, so DDP (wrapped around this, from outside the
    model) sees every call: phase 1 = model.objective, phase 2 = model.phase2_objective (the
    dila_core.world_model interface)."""

    def __init__(self, model: nn.Module, objective: str):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, e: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return self.model.objective(e) if self.objective == "teacher_forcing" else self.model.phase2_objective(e)


# -- resume state ---------------------------------------------------------------------------------

def _rank_states(d: Dist, meter: Meter | None) -> list[tuple[dict[str, Tensor], dict | None]]:
    """Every rank's RNG states and partial logging window (gathered; a collective under torchrun)."""
    rng = {"cpu": torch.get_rng_state()}
    if d.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(d.device)
    mine = (rng, None if meter is None else meter.state())
    if d.world == 1:
        return [mine]
    every: list = [None] * d.world
    dist.all_gather_object(every, mine)
    return every


def save_state(path: Path, model: nn.Module, opt, sched, step: int, plan: dict, d: Dist,
               meter: Meter | None = None, notes: dict | None = None) -> None:
    """Write the resume state of `step` (all ranks call it; rank 0 writes). `notes`: JSON-able values
    a caller's loop keeps across a resume (floats round-trip exactly)."""
    ranks = _rank_states(d, meter)
    if not d.is_main:
        return
    optim = opt.state_dict()
    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    scalars = {}
    for idx, entry in optim["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim/{idx}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}/{key}"] = value
    for rank, (states, _) in enumerate(ranks):
        tensors.update({f"rng/{dev}/{rank}": s.cpu() for dev, s in states.items()})
    meta = {"format": FORMAT, "step": str(step), "plan": json.dumps(plan, sort_keys=True),
            "optim_groups": json.dumps(optim["param_groups"]), "optim_scalars": json.dumps(scalars),
            "scheduler": json.dumps(sched.state_dict()), "meters": json.dumps([m for _, m in ranks]),
            "notes": json.dumps(notes or {})}
    safefile.save(path, tensors, meta)


def load_state(path: Path, model: nn.Module, opt, sched, plan: dict, d: Dist, meter: Meter | None = None,
               notes: dict | None = None) -> int:
    """Restore the state at `path` if it exists and was made under `plan`; returns its step
    (0: nothing to resume; a state of another plan is ignored and later overwritten). `meter`
    gets this rank's partial logging window back, `notes` (updated in place) the saved notes."""
    if not path.is_file():
        return 0
    try:
        f = safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: unreadable training state ({err}); delete it to start afresh") from err
    with f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a training state (metadata format = {meta.get('format')!r}); "
                                  "delete it to start afresh")
        if json.loads(meta["plan"]) != json.loads(json.dumps(plan, sort_keys=True)):
            if d.is_main:
                print(f"{path}: made under another plan (params, data, code or world size); starting fresh")
            return 0
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    model.load_state_dict({k[6:]: v.to(d.device) for k, v in tensors.items() if k.startswith("model/")}, strict=True)
    opt.load_state_dict(_optim_state(tensors, meta))
    sched.load_state_dict(json.loads(meta["scheduler"]))
    torch.set_rng_state(tensors[f"rng/cpu/{d.rank}"])
    if d.device.type == "cuda":
        torch.cuda.set_rng_state(tensors[f"rng/cuda/{d.rank}"], d.device)
    saved = json.loads(meta.get("meters", "null")) or [None] * d.world
    if meter is not None and saved[d.rank] is not None:
        meter.restore(saved[d.rank])
    if notes is not None:
        notes.update(json.loads(meta.get("notes", "{}")))
    return int(meta["step"])


def _optim_state(tensors: dict[str, Tensor], meta: dict[str, str]) -> dict:
    groups = json.loads(meta["optim_groups"])
    for group in groups:
        group["betas"] = tuple(group["betas"])
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optim/"):
            _, idx, key = name.split("/", 2)
            state.setdefault(int(idx), {})[key] = value
    for name, value in json.loads(meta["optim_scalars"]).items():
        idx, key = name.split("/", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": groups}


# -- metrics ---------------------------------------------------------------------------------------

def open_live(directory: Path, resumed_from: int):
    """DVCLive logger for `directory` (no dvc.yaml, no experiment; works inside dvc repro). When
    resuming, rows logged after step `resumed_from` (by the killed run) are dropped first."""
    from dvclive import Live

    if resumed_from:
        for tsv in (directory / "plots" / "metrics").rglob("*.tsv"):
            with open(tsv, newline="") as f:
                header, *rows = list(csv.reader(f, delimiter="\t")) or [[]]
            keep = [r for r in rows if _logged_by(r, header, resumed_from)]
            with open(tsv, "w", newline="") as f:
                csv.writer(f, delimiter="\t", lineterminator=os.linesep).writerows([header, *keep])
    return Live(str(directory), resume=bool(resumed_from), save_dvc_exp=False, dvcyaml=None, report=None)


def _logged_by(row: list[str], header: list[str], step: int) -> bool:
    """Whether a metrics row is complete and belongs to a step <= `step` (a kill can cut a row)."""
    if "step" not in header or len(row) != len(header):
        return False
    try:
        return int(row[header.index("step")]) <= step
    except ValueError:
        return False


class Meter:
    """Per-step floats accumulated over a logging window; means are averaged over ranks."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, logs: dict[str, float]) -> None:
        for k, v in logs.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def state(self) -> dict:
        """The partial window as JSON-able values (floats round-trip exactly through JSON)."""
        return {"sums": dict(self.sums), "count": self.count}

    def restore(self, state: dict) -> None:
        self.sums, self.count = dict(state["sums"]), int(state["count"])

    def means(self, d: Dist) -> dict[str, float]:
        keys = sorted(self.sums)
        values = torch.tensor([self.sums[k] / self.count for k in keys], dtype=torch.float64)
        if d.world > 1:
            values = _all_mean(values, d)
        self.sums, self.count = {}, 0
        return dict(zip(keys, values.tolist()))


def _all_mean(values: Tensor, d: Dist) -> Tensor:
    values = values.to(d.device)
    dist.all_reduce(values)
    return values.cpu() / d.world


# -- the loop --------------------------------------------------------------------------------------

def _floats(logs: dict[str, Tensor]) -> dict[str, float]:
    return {k: float(v) for k, v in logs.items()}


def _autocast(d: Dist):
    return torch.autocast(device_type=d.device.type, dtype=torch.bfloat16, enabled=d.device.type == "cuda")


@torch.no_grad()
def validate(model: nn.Module, val: Windows, spec: TrainSpec, d: Dist) -> dict[str, float]:
    """Means over the fixed held-out batches of the phase objective's logs in eval mode, plus the
    teacher-forced embedding MSE `L_e` (read in this process: a few batches)."""
    model.eval()
    rows = fixed_windows(len(val), spec.val_batches * spec.batch_size).reshape(spec.val_batches, spec.batch_size)
    meter = Meter()
    for batch in loader(val, FixedBatches(rows, d.rank, d.world), 0, d.device):
        e = batch["e"].to(d.device, non_blocking=True)                     # (b, T, h, w, D)
        with _autocast(d):
            logs = _floats(Objective(model, spec.objective)(e)[1])
            if spec.objective == "phase2":
                logs[PREDICTION_LOSS] = float(model.objective(e)[1][PREDICTION_LOSS])
        meter.add(logs)
    model.train()
    return meter.means(d)


class Trainer:
    """One run: the model, AdamW and its schedule, resumed from files.state when the plan matches.
    The loss is `objective` (a module: batch -> (loss, logs)), by default the world model's
    phase objective (`Objective`); `notes` survive a resume (see save_state)."""

    def __init__(self, model: nn.Module, spec: TrainSpec, files: RunFiles, plan: dict, d: Dist,
                 objective: nn.Module | None = None):
        self.model, self.spec, self.files, self.d = model.to(d.device).train(), spec, files, d
        self.plan = {**plan, "spec": to_dict(spec), "world": d.world}
        self.opt, self.sched = build_optimizer(model, spec.optim, spec.steps)
        self.meter, self.notes = Meter(), {}
        self.start = load_state(files.state, model, self.opt, self.sched, self.plan, d, self.meter, self.notes)
        net = objective if objective is not None else Objective(model, spec.objective)
        self.net = DistributedDataParallel(net, device_ids=[d.device] if d.device.type == "cuda" else None) \
            if d.world > 1 else net
        self.live = open_live(files.live, self.start) if d.is_main and files.live is not None else None

    def step(self, e) -> dict[str, float]:
        """One update on batch e (for the world model: tokens (b, T, h, w, D)): the objective's logs,
        grad norm and the step's LR."""
        lr = self.opt.param_groups[0]["lr"]
        with _autocast(self.d):
            loss, logs = self.net(e)
        if not math.isfinite(float(loss.detach())):
            raise FloatingPointError(f"training diverged at update {self.sched.last_epoch + 1}: "
                                     f"{_floats(logs)}; lower the learning rate")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.spec.optim.grad_clip)
        self.opt.step()
        self.sched.step()
        return {**_floats(logs), "grad_norm": float(grad_norm), "lr": lr}

    def checkpoint(self, step: int) -> None:
        """Write the resume state of update `step` (all ranks call it)."""
        save_state(self.files.state, self.model, self.opt, self.sched, step, self.plan, self.d, self.meter, self.notes)
        barrier(self.d)

    def log(self, step: int, prefix: str, logs: dict[str, float], show: bool) -> None:
        if self.live is not None:
            self.live.step = step
            for name, value in logs.items():
                self.live.log_metric(f"{prefix}/{name}", float(value))
            self.live.make_summary()
        if self.d.is_main and show:
            shown = " ".join(f"{k} {v:.4g}" for k, v in sorted(logs.items()))
            print(f"step {step}/{self.spec.steps} {prefix}: {shown}", flush=True)

    def after_step(self, step: int, val_set: Windows, show: bool) -> dict[str, float] | None:
        """Logging, validation and checkpointing due after update `step`; the validation metrics if run."""
        spec, last, val = self.spec, step == self.spec.steps, None
        if step % spec.log_every == 0 or last:
            means = self.meter.means(self.d)
            means["data_wait_share"] = means["data_wait_s"] / max(means["step_time_s"], 1e-12)
            self.log(step, "train", means, show)
        if step % spec.val_every == 0 or last:
            val = validate(self.model, val_set, spec, self.d)
            self.log(step, "val", val, show)
        if step % spec.checkpoint_every == 0 and not last:
            self.checkpoint(step)
        return val


def train(model: nn.Module, spec: TrainSpec, train_set: Windows, val_set: Windows, files: RunFiles, plan: dict,
          d: Dist, on_step: Callable[[int, dict[str, float]], None] | None = None,
          show_progress: bool = True) -> dict[str, float]:
    """Train `model` (initialised, on any device) per `spec`, resuming from files.state when it was
    made under the same `plan` (a JSON-able dict of everything else the result depends on).
    Returns the final validation metrics. `on_step(step, logs)` runs on every rank after each update."""
    run = Trainer(model, spec, files, plan, d)
    if d.is_main and show_progress:
        print(f"train: {spec.objective}, steps {run.start}..{spec.steps}" + (" (resumed)" if run.start else ""),
              flush=True)
    order = train_set.step_batches(spec.batch_size, spec.seed, run.start, spec.steps, d.rank, d.world)
    batches = iter(loader(train_set, order, spec.workers, d.device))
    val: dict[str, float] = {}
    for step in range(run.start + 1, spec.steps + 1):
        t0 = time.perf_counter()
        e = next(batches)["e"].to(d.device, non_blocking=True)                 # (b, T, h, w, D)
        t1 = time.perf_counter()
        logs = run.step(e)
        run.meter.add({**logs, "data_wait_s": t1 - t0, "step_time_s": time.perf_counter() - t0})
        val = run.after_step(step, val_set, show_progress) or val
        if on_step is not None:
            on_step(step, logs)
    if run.live is not None:
        run.live.end()
    return val


def clear_state(files: RunFiles, d: Dist) -> None:
    """Drop the resume state once the final weights are written (rank 0)."""
    if d.is_main:
        files.state.unlink(missing_ok=True)
        files.state.with_name(files.state.name + ".tmp").unlink(missing_ok=True)
        if files.state.parent.is_dir() and not any(files.state.parent.iterdir()):
            files.state.parent.rmdir()


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed torch's CPU and CUDA generators and numpy's for this rank."""
    torch.manual_seed(seed + 1_000_003 * rank)
    np.random.seed((seed + rank) % 2**32)
