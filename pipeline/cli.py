"""The `dila` command line: one command per stage, each a thin shell over `run(...)`.

Every command that runs a stage reads params.yaml (or --params FILE) and accepts repeated
`-S key=value` overrides, like `dvc exp run -S`. Exit status: 0 done, 1 the run failed (bad
or missing data, a missing or damaged input, a diverged training run), 2 the params (or the
command line) are wrong; either failure prints one line "error: <file>: <problem>".
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand

from pipeline.config import ParamsError
from pipeline.params import Params, load_params


class _Command(TyperCommand):
    """Usage lines that name a required argument as the help does (`dila prepare [OPTIONS] NAME`), not in
    the braces typer puts around it (`{NAME}`), which read as a placeholder to fill in braces and all."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in super().collect_usage_pieces(ctx)]


app = typer.Typer(add_completion=False, no_args_is_help=True, help="DiLA: feature cache and world-model pipeline.")
err = Console(stderr=True)
out = Console()


def command(name: str | None = None):
    """`app.command`, with usage lines as `_Command` writes them."""
    return app.command(name, cls=_Command)


PARAMS_EXIT, RUNTIME_EXIT = 2, 1  # a wrong params file or key; a run that failed on its data or inputs

ParamsOpt = Annotated[Path, typer.Option("--params", metavar="FILE", help="The params file to read.")]
SetOpt = Annotated[list[str], typer.Option(
    "-S", "--set", metavar="KEY=VALUE",
    help="Override one param, e.g. -S train.steps=10 (the value is read as YAML; repeatable).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Draw no progress bars.")]
DatasetArg = Annotated[str, typer.Argument(
    metavar="NAME", help="A dataset: a key of `datasets:` in the params file (`dila list` shows them).",
    show_default=False)]
VariantArg = Annotated[str, typer.Argument(
    metavar="VARIANT", help="A model: a key of `variants:` in the params file (`dila list` shows them).",
    show_default=False)]
StoreArg = Annotated[Path, typer.Argument(
    metavar="STORE", help="A feature store folder, e.g. data/features/synthetic.zarr.", show_default=False)]


def _fail(message: str, code: int = RUNTIME_EXIT) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _params_problem(error: ParamsError, path: Path) -> str:
    """'<file>: <problem>', the file named once: ParamsError messages start "params: " (and those of
    load_params also with the file), which read twice over once this line names the file."""
    text = str(error)
    for prefix in (f"{path}: ", "params: "):
        text = text.removeprefix(prefix)
    return text if text.startswith(f"{path} ") else f"{path}: {text}"


def _params(path: Path, overrides: list[str] | None) -> Params:
    """The params file read, overridden and validated; any problem with it exits 2."""
    if not path.is_file():
        _fail(f"{path}: no such params file (name one with --params FILE)", PARAMS_EXIT)
    try:
        return load_params(path, overrides or [])
    except ParamsError as e:
        _fail(_params_problem(e, path), PARAMS_EXIT)


def _guard(params_file: Path | None, fn, *args, **kwargs):
    """Run a stage; expected failures become one clear line: a params problem found while running (a
    name that is not in the file, a key the data contradicts) exits 2 naming `params_file`, bad or
    missing data or inputs (a missing or stale input, a damaged store or checkpoint) exit 1. Anything
    else is a bug and keeps its traceback."""
    from pipeline.artifacts import MissingInput
    from pipeline.data.encoder import EncoderUnavailable
    from pipeline.data.sources import EpisodeError, SourceError
    from pipeline.data.store import StoreError
    from pipeline.training.checkpoint import CheckpointError

    try:
        return fn(*args, **kwargs)
    except ParamsError as e:
        _fail(_params_problem(e, params_file) if params_file is not None else str(e), PARAMS_EXIT)
    except (SourceError, EpisodeError, StoreError, EncoderUnavailable, CheckpointError,
            MissingInput, FloatingPointError) as e:  # FloatingPointError: training diverged (lower the LR)
        _fail(str(e))


def _version_line() -> str:
    """The package version and the code version every artifact records (`provenance.code_version`)."""
    from pipeline.provenance import code_version

    version = code_version()
    if version["git_commit"] is None:
        code = "code: not a git checkout"
    else:
        code = f"code: git {version['git_commit']}" + (" with uncommitted changes" if version["git_dirty"] else "")
    return f"dila {version['package'] or '(not installed)'} ({code})"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(_version_line())
        raise typer.Exit()


VersionOpt = Annotated[bool, typer.Option(
    "--version", callback=_show_version, is_eager=True,
    help="Print the package version and the code version (git commit) that artifacts record, and exit.")]


@app.callback()
def _main(version: VersionOpt = False):
    """DiLA: feature cache and world-model pipeline."""


@command("list")
def list_(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None):
    """List the datasets and model variants the params file defines (the NAME and VARIANT other commands take).

    Datasets with their kind and path, variants as family/variant/bottleneck, after any -S override.
    """
    typer.echo(_listing(_params(params, set_), params), nl=False)


def _listing(p: Params, path: Path) -> str:
    """Plain text, one name a line, aligned: what `dila list` prints."""
    width = max(map(len, [*p.datasets, *p.variants]))
    lines = [f"datasets in {path} (NAME, kind, path):"]
    lines += [f"  {name:<{width}}  {ds.kind:<12}  {ds.path}" for name, ds in p.datasets.items()]
    lines.append(f"variants in {path} (VARIANT, family/variant/bottleneck):")
    lines += [f"  {name:<{width}}  {v.family}/{v.variant}/{v.bottleneck}" for name, v in p.variants.items()]
    return "\n".join(lines) + "\n"


@command()
def prepare(name: DatasetArg, params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None, quiet: QuietOpt = False):
    """List and check every episode of dataset NAME; write its manifest."""
    from pipeline.artifacts import manifest_path
    from stages import prepare as stage

    p = _params(params, set_)
    manifest = _guard(params, stage.run, p, name, show_progress=not quiet)
    n = sum(e["frames"] for e in manifest["episodes"])
    out.print(f"prepare {name}: {len(manifest['episodes'])} episodes, {n} frames, "
              f"{len(manifest['failures'])} skipped -> {manifest_path(p, name)}")
    for f in manifest["failures"]:
        err.print(f"[yellow]skipped[/] {f['origin']}: {f['reason']}", highlight=False, soft_wrap=True)


@command()
def extract(name: DatasetArg, params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None, quiet: QuietOpt = False):
    """Encode dataset NAME with the frozen DINOv2 into its Zarr feature store (resumable)."""
    from stages import extract as stage

    p = _params(params, set_)
    path = _guard(params, stage.run, p, name, show_progress=not quiet)
    out.print(f"extract {name}: wrote {path}")


@command()
def train(variant: VariantArg, params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None, quiet: QuietOpt = False):
    """Phase 1: train model VARIANT with teacher forcing on the cached tokens (resumable)."""
    from stages import train as stage

    path = _guard(params, stage.run, _params(params, set_), variant, show_progress=not quiet)
    out.print(f"train {variant}: wrote {path}")


@command()
def finetune(variant: VariantArg, params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None,
             quiet: QuietOpt = False):
    """Phase 2: fine-tune VARIANT on latent rollouts, from its phase-1 weights (resumable)."""
    from stages import finetune as stage

    path = _guard(params, stage.run, _params(params, set_), variant, show_progress=not quiet)
    out.print(f"finetune {variant}: wrote {path}")


@command()
def replicas(variant: VariantArg, params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None,
             quiet: QuietOpt = False):
    """Train VARIANT again from each of replicas.seeds (both phases) and score each replica."""
    from stages import replicas as stage

    path = _guard(params, stage.run, _params(params, set_), variant, show_progress=not quiet)
    out.print(f"replicas {variant}: wrote {path}")


@command("pixel-decoder")
def pixel_decoder(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None, quiet: QuietOpt = False):
    """Train the pixel decoder (cached tokens -> frames) used for image grids and SSIM/LPIPS."""
    from stages import pixel_decoder as stage

    path = _guard(params, stage.run, _params(params, set_), show_progress=not quiet)
    out.print(f"pixel-decoder: wrote {path}")


@command()
def rollout(variant: VariantArg, params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None):
    """Roll VARIANT out autoregressively on held-out episodes; write tokens and image grids."""
    from stages import rollout as stage

    path = _guard(params, stage.run, _params(params, set_), variant)
    out.print(f"rollout {variant}: wrote {path}")


@command()
def evaluate(variant: VariantArg, params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None):
    """Score VARIANT: rollout error vs the repeat-last-frame baseline, transfer, probe, ground truth."""
    from stages import evaluate as stage

    path = _guard(params, stage.run, _params(params, set_), variant)
    out.print(f"evaluate {variant}: wrote {path}")


@command()
def plan(variant: VariantArg, params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None):
    """Plan with VARIANT's latent actions toward held-out goals in train.dataset's simulator."""
    from stages import plan as stage

    path = _guard(params, stage.run, _params(params, set_), variant)
    out.print(f"plan {variant}: wrote {path}")


@command("plan-baselines")
def plan_baselines(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None):
    """The planning tasks solved by random actions and by the planner with the simulator as its model."""
    from stages import plan_baselines as stage

    path = _guard(params, stage.run, _params(params, set_))
    out.print(f"plan-baselines: wrote {path}")


@command()
def report(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None):
    """Write the ablation table (Markdown) and plots from every variant's metrics."""
    from stages import report as stage

    path = _guard(params, stage.run, _params(params, set_))
    out.print(f"report: wrote {path}")


@command("dry-run")
def dry_run(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None,
            json_out: Annotated[Path, typer.Option("--json", metavar="FILE",
                                                  help="Also write the numbers to this JSON file.")] = None):
    """What the params file's run will cost, before it runs: stores, compute, GPU time and memory.

    Stores and their size on disk, extraction and training compute and GPU time, GPU memory per rank.
    Decodes, encodes and trains nothing; needs no GPU.
    """
    from pipeline import dry_run as plan

    p = _params(params, set_)
    numbers = _guard(params, plan.dry_run, p)
    typer.echo(plan.format_dry_run(numbers, p), nl=False)  # plain text: Markdown tables, unwrapped
    if json_out is not None:
        json_out.write_text(json.dumps(numbers, indent=1) + "\n")


@command()
def verify(store: StoreArg, quiet: QuietOpt = False):
    """Check a feature store: schema, completeness, NaN/Inf, episode bookkeeping."""
    from pipeline.data.inspect import verify as check
    from pipeline.data.store import open_store

    _guard(None, open_store, store)  # no store at all: one error line, as `dila info` gives
    problems = check(store, show_progress=not quiet)
    for problem in problems:
        err.print(f"[bold red]{store}:[/] {problem}", highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(RUNTIME_EXIT)
    out.print(f"{store}: OK")


@command()
def info(store: StoreArg):
    """Describe a feature store: sizes, layout, encoder, provenance."""
    from pipeline.data.inspect import info as describe

    summary = _guard(None, describe, store)
    table = Table(title=str(store), show_header=False)
    for key, value in summary.items():
        table.add_row(key, str(value))
    out.print(table)


def main() -> None:  # pragma: no cover - console entry point for `python -m pipeline.cli`
    app()


if __name__ == "__main__":
    sys.exit(main())
