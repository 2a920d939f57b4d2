"""The params sections of what comes after training: rollouts, evaluation, planning, the
replicas over seeds and the dry run's budget (`pipeline.params` assembles every section into
`Params`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from pipeline.config import check


@dataclass(frozen=True)
class RolloutParams:
    """Autoregressive rollouts of held-out episodes: `context` true frames, then `horizon` steps."""

    horizon: int = 16
    context: int = 1
    episodes: int = 8

    def validate(self, where: str) -> None:
        check(self.horizon >= 1, f"{where}.horizon", self.horizon, "an integer >= 1")
        check(self.context >= 1, f"{where}.context", self.context, "an integer >= 1")
        check(self.episodes >= 1, f"{where}.episodes", self.episodes, "an integer >= 1")


@dataclass(frozen=True)
class EvaluateParams:
    """probe_alpha: ridge penalty of the linear probe z -> true actions; probe_datasets: feature
    stores (keys of `datasets:`) on which to probe every variant (out of domain unless it is
    train.dataset); held_out: other feature stores whose held-out (validation) episodes every
    variant is also rolled out on, beside train.dataset's (the paper: held-out SSv2 and RT-1)."""

    probe_alpha: float = 1.0
    probe_datasets: tuple[str, ...] = ("synthetic",)
    held_out: tuple[str, ...] = ()

    def validate(self, where: str) -> None:
        check(self.probe_alpha >= 0, f"{where}.probe_alpha", self.probe_alpha, "a number >= 0")
        check(len(set(self.held_out)) == len(self.held_out), f"{where}.held_out", list(self.held_out),
              "distinct dataset names")


@dataclass(frozen=True)
class PlanParams:
    """Planning toward goal states in train.dataset's own simulator (its source's `simulator_at`).

    goals: held-out episodes, one task each; start: the kept frame a task starts at (its
    `context` frames end there); goal_offset: the goal is the state this many kept frames later;
    max_steps: actions executed per task. adapter_trajectories: train episodes whose (true action,
    z) pairs fit the action adapter (a -> adapter_hidden -> d_z, adapter_steps AdamW steps; paper
    100 and 256). context: frames the world model is given (paper 2). MPPI: samples, horizon,
    temperature, beta (noise correlation in time), noise_std (in actions scaled to [-1, 1]),
    iterations per plan, a new plan every replan_every steps. The defaults are the paper's where
    it gives one (200 samples, horizon 10, temperature 0.05, beta 0.5, replan every step, 2
    context frames); params.yaml lowers the search for 2 CPU cores and says so."""

    goals: int = 8
    start: int = 1
    goal_offset: int = 25
    max_steps: int = 25
    adapter_trajectories: int = 100
    adapter_hidden: int = 256
    adapter_steps: int = 2000
    context: int = 2
    samples: int = 200
    horizon: int = 10
    temperature: float = 0.05
    beta: float = 0.5
    noise_std: float = 0.1
    iterations: int = 3
    replan_every: int = 1

    def validate(self, where: str) -> None:
        for name in ("goals", "goal_offset", "max_steps", "adapter_trajectories", "adapter_hidden", "adapter_steps",
                     "context", "samples", "horizon", "iterations"):
            check(getattr(self, name) >= 1, f"{where}.{name}", getattr(self, name), "an integer >= 1")
        check(self.start >= self.context - 1, f"{where}.start", self.start,
              f"an integer >= context - 1 = {self.context - 1} (the context frames end at the start)")
        check(1 <= self.replan_every <= self.horizon, f"{where}.replan_every", self.replan_every,
              f"an integer in 1..horizon ({self.horizon})")
        check(self.temperature > 0, f"{where}.temperature", self.temperature, "a number > 0")
        check(0 <= self.beta < 1, f"{where}.beta", self.beta, "a number in [0, 1)")
        check(self.noise_std > 0, f"{where}.noise_std", self.noise_std, "a number > 0")


@dataclass(frozen=True)
class ReplicasParams:
    """The comparison over training seeds (`replicas@<variant>`, the report's seeds table):
    every variant trained again, both phases, from each of `seeds` (its initial weights and batch
    order; the data, split and encoder stay those of the top-level `seed`, whose run is the
    first replica). An empty list leaves the main run alone in the table (no spread)."""

    seeds: tuple[int, ...] = ()

    def validate(self, where: str) -> None:
        check(len(set(self.seeds)) == len(self.seeds), f"{where}.seeds", list(self.seeds), "distinct seeds")


@dataclass(frozen=True)
class BudgetParams:
    """What `dila dry-run` needs beyond the other params: frames: {dataset: expected kept frames}
    for datasets it cannot count here (the data absent, or countable only by decoding);
    store_bytes: the measured stored/raw bytes per frame (benchmarks/extract.py); measured: GPU
    steps recorded by `benchmarks/model.py --out`; gpu_peak_tflops: the GPU's dense bf16 peak (the
    H200's datasheet value), for lower bounds; gpus: GPUs (ranks) the run is spread over."""

    frames: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    store_bytes: str = "benchmarks/results/store_bytes.json"
    measured: str = "benchmarks/results/model_cuda.jsonl"
    gpu_peak_tflops: float = 989.0
    gpus: int = 1

    def validate(self, where: str) -> None:
        for name, n in self.frames.items():
            check(n >= 1, f"{where}.frames.{name}", n, "an integer >= 1")
        check(self.gpu_peak_tflops > 0, f"{where}.gpu_peak_tflops", self.gpu_peak_tflops, "a number > 0")
        check(self.gpus >= 1, f"{where}.gpus", self.gpus, "an integer >= 1")
