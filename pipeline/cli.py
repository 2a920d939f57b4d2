"""The `dila` command line: one command per stage, each a thin shell over `run(...)`.

Every command reads params.yaml (or --params FILE) and accepts repeated
`-S key=value` overrides, like `dvc exp run -S`.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipeline.config import ParamsError
from pipeline.params import Params, load_params

app = typer.Typer(add_completion=False, no_args_is_help=True, help="DiLA: feature cache and world-model pipeline.")
err = Console(stderr=True)
out = Console()

ParamsOpt = Annotated[Path, typer.Option("--params", help="params file to read")]
SetOpt = Annotated[list[str], typer.Option("-S", "--set", help="override a param: key=value (repeatable)")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")]


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _params(path: Path, overrides: list[str] | None) -> Params:
    try:
        return load_params(path, overrides or [])
    except ParamsError as e:
        _fail(str(e), 2)


def _guard(fn, *args, **kwargs):
    """Run a stage; expected failures (bad params or data, a missing or stale input, a damaged
    store or checkpoint) become one clear line and exit status 1. Anything else is a bug and keeps
    its traceback."""
    from pipeline.artifacts import MissingInput
    from pipeline.data.encoder import EncoderUnavailable
    from pipeline.data.sources import EpisodeError, SourceError
    from pipeline.data.store import StoreError
    from pipeline.training.checkpoint import CheckpointError

    try:
        return fn(*args, **kwargs)
    except (ParamsError, SourceError, EpisodeError, StoreError, EncoderUnavailable, CheckpointError,
            MissingInput, FloatingPointError) as e:  # FloatingPointError: training diverged (lower the LR)
        _fail(str(e))


@app.command()
def prepare(name: str, params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None, quiet: QuietOpt = False):
    """List and check every episode of dataset NAME; write its manifest."""
    from pipeline.artifacts import manifest_path
    from stages import prepare as stage

    p = _params(params, set_)
    manifest = _guard(stage.run, p, name, show_progress=not quiet)
    n = sum(e["frames"] for e in manifest["episodes"])
    out.print(f"prepare {name}: {len(manifest['episodes'])} episodes, {n} frames, "
              f"{len(manifest['failures'])} skipped -> {manifest_path(p, name)}")
    for f in manifest["failures"]:
        err.print(f"[yellow]skipped[/] {f['origin']}: {f['reason']}", highlight=False, soft_wrap=True)


@app.command()
def extract(name: str, params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None, quiet: QuietOpt = False):
    """Encode dataset NAME with the frozen DINOv2 into its Zarr feature store (resumable)."""
    from stages import extract as stage

    p = _params(params, set_)
    path = _guard(stage.run, p, name, show_progress=not quiet)
    out.print(f"extract {name}: wrote {path}")


@app.command()
def train(variant: str, params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None, quiet: QuietOpt = False):
    """Phase 1: train model VARIANT with teacher forcing on the cached tokens (resumable)."""
    from stages import train as stage

    path = _guard(stage.run, _params(params, set_), variant, show_progress=not quiet)
    out.print(f"train {variant}: wrote {path}")


@app.command()
def finetune(variant: str, params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None, quiet: QuietOpt = False):
    """Phase 2: fine-tune VARIANT on latent rollouts, from its phase-1 weights (resumable)."""
    from stages import finetune as stage

    path = _guard(stage.run, _params(params, set_), variant, show_progress=not quiet)
    out.print(f"finetune {variant}: wrote {path}")


@app.command()
def replicas(variant: str, params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None, quiet: QuietOpt = False):
    """Train VARIANT again from each of replicas.seeds (both phases) and score each replica."""
    from stages import replicas as stage

    path = _guard(stage.run, _params(params, set_), variant, show_progress=not quiet)
    out.print(f"replicas {variant}: wrote {path}")


@app.command("pixel-decoder")
def pixel_decoder(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None, quiet: QuietOpt = False):
    """Train the pixel decoder (cached tokens -> frames) used for image grids and SSIM/LPIPS."""
    from stages import pixel_decoder as stage

    path = _guard(stage.run, _params(params, set_), show_progress=not quiet)
    out.print(f"pixel-decoder: wrote {path}")


@app.command()
def rollout(variant: str, params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None):
    """Roll VARIANT out autoregressively on held-out episodes; write tokens and image grids."""
    from stages import rollout as stage

    path = _guard(stage.run, _params(params, set_), variant)
    out.print(f"rollout {variant}: wrote {path}")


@app.command()
def evaluate(variant: str, params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None):
    """Score VARIANT: rollout error vs the repeat-last-frame baseline, transfer, probe, ground truth."""
    from stages import evaluate as stage

    path = _guard(stage.run, _params(params, set_), variant)
    out.print(f"evaluate {variant}: wrote {path}")


@app.command()
def plan(variant: str, params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None):
    """Plan with VARIANT's latent actions toward held-out goals in train.dataset's simulator."""
    from stages import plan as stage

    path = _guard(stage.run, _params(params, set_), variant)
    out.print(f"plan {variant}: wrote {path}")


@app.command("plan-baselines")
def plan_baselines(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None):
    """The planning tasks solved by random actions and by the planner with the simulator as its model."""
    from stages import plan_baselines as stage

    path = _guard(stage.run, _params(params, set_))
    out.print(f"plan-baselines: wrote {path}")


@app.command()
def report(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None):
    """Write the ablation table (Markdown) and plots from every variant's metrics."""
    from stages import report as stage

    path = _guard(stage.run, _params(params, set_))
    out.print(f"report: wrote {path}")


@app.command("dry-run")
def dry_run(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None,
            json_out: Path = typer.Option(None, "--json", help="also write the numbers to this JSON file")):
    """What the params file's run will cost: stores and their size on disk, extraction and training
    compute and GPU time, GPU memory per rank. Decodes, encodes and trains nothing; needs no GPU."""
    from pipeline import dry_run as plan

    p = _params(params, set_)
    numbers = _guard(plan.dry_run, p)
    typer.echo(plan.format_dry_run(numbers, p), nl=False)  # plain text: Markdown tables, unwrapped
    if json_out is not None:
        json_out.write_text(json.dumps(numbers, indent=1) + "\n")


@app.command()
def verify(store: Path, quiet: QuietOpt = False):
    """Check a feature store: schema, completeness, NaN/Inf, episode bookkeeping."""
    from pipeline.data.inspect import verify as check

    problems = check(store, show_progress=not quiet)
    for problem in problems:
        err.print(f"[bold red]{store}:[/] {problem}", highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    out.print(f"{store}: OK")


@app.command()
def info(store: Path):
    """Describe a feature store: sizes, layout, encoder, provenance."""
    from pipeline.data.inspect import info as describe

    summary = _guard(describe, store)
    table = Table(title=str(store), show_header=False)
    for key, value in summary.items():
        table.add_row(key, str(value))
    out.print(table)


def main() -> None:  # pragma: no cover - console entry point for `python -m pipeline.cli`
    app()


if __name__ == "__main__":
    sys.exit(main())
