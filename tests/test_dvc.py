"""The DVC pipeline: dvc.yaml agrees with params.yaml and the code, `dvc repro` runs stage one,
and a local-directory remote round-trips one dataset's features into a fresh clone."""
from __future__ import annotations

import filecmp
import json
import re
import shutil
import subprocess

import pytest
import yaml

from pipeline import artifacts
from pipeline.params import apply_overrides, read_yaml
from pipeline.provenance import stage_code
from tests.conftest import ROOT, SHARED, TINY_STAGE_TWO, requires_shared, tiny_overrides, with_variants
from tests.stages.helpers import cli_env

GIT = ["git", "-c", "user.name=dila-test", "-c", "user.email=test@dila.invalid", "-c", "init.defaultBranch=main"]


def sh(*args, cwd, timeout=900, threads=1):
    env = {**cli_env(), "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def code_deps(stage: dict) -> list[str]:
    return [d for d in stage.get("deps", []) if "${" not in d]


def dvc_stages(dvc: dict) -> dict[str, dict]:
    """Each stage of dvc.yaml (a foreach's `do` body) by name."""
    return {name: body.get("do", body) for name, body in dvc["stages"].items()}


def covers(dep: str, file: str) -> bool:
    """Whether dvc.yaml dep `dep` (a file or a folder) covers project file `file`."""
    return file == dep or file.startswith(dep.rstrip("/") + "/")


def missing_code_deps(dvc: dict) -> dict[str, list[str]]:
    """Per stage: the project files its module `stages.<name>` runs (`stage_code`) that none of its
    dvc.yaml deps covers (the file itself or a folder above it)."""
    missing = {}
    for name, stage in dvc_stages(dvc).items():
        deps = code_deps(stage)
        files = [f for f in stage_code(f"stages.{name}") if not f.endswith("__init__.py")]
        gone = [f for f in files if not any(covers(d, f) for d in deps)]
        if gone:
            missing[name] = gone
    return missing


def stale_code_deps(dvc: dict) -> dict[str, list[str]]:
    """Per stage: code deps that cover nothing its module runs (missing paths included)."""
    stale = {}
    for name, stage in dvc_stages(dvc).items():
        files = stage_code(f"stages.{name}")
        extra = [d for d in code_deps(stage) if not any(covers(d, f) for f in files)]
        if extra:
            stale[name] = extra
    return stale


def test_every_stage_lists_exactly_the_code_it_runs():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    modules = {p.stem for p in (ROOT / "stages").glob("*.py") if p.stem != "__init__"}
    assert set(dvc_stages(dvc)) == modules  # one stage module per DVC stage
    assert missing_code_deps(dvc) == {}
    assert stale_code_deps(dvc) == {}


@pytest.mark.parametrize("stage, dep", [("pixel_decoder", "pipeline/training/trainer.py"),
                                        ("evaluate", "pipeline/evaluation/lpips.py"),
                                        ("train", "dila_core"), ("extract", "pipeline/data/sources")])
def test_the_deps_check_fails_when_a_dep_is_removed(stage, dep):
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    body = dvc_stages(dvc)[stage]
    body["deps"] = [d for d in body["deps"] if d != dep]
    missing = missing_code_deps(dvc)[stage]
    assert missing and all(covers(dep, f) for f in missing)


def test_every_dvc_path_comes_from_params():
    text = (ROOT / "dvc.yaml").read_text()
    assert not re.search(r"(?<![\w/])data/", text)  # data paths live in params.yaml only
    params = read_yaml(ROOT / "params.yaml")
    assert {"prepared", "features"} <= set(params["paths"])


def resolve(text: str, params: dict, key: str | None = None) -> str:
    """A dvc.yaml path with its ${...} filled from params.yaml (and a foreach's ${key})."""
    def value(match: re.Match) -> str:
        name = match.group(1)
        if name == "key":
            return key
        node = params
        for part in name.split("."):
            node = node[part]
        return str(node)

    return re.sub(r"\$\{([\w.]+)\}", value, text)


def declared_outputs(dvc: dict, params: dict) -> dict[str, list[str]]:
    """Every output path (outs, metrics, plots) of every stage, with foreach stages expanded over
    their params mapping."""
    found = {}
    for name, body in dvc["stages"].items():
        keys = [None] if "foreach" not in body else list(params[body["foreach"].strip("${}")])
        stage = body.get("do", body)
        paths = [next(iter(o)) if isinstance(o, dict) else o
                 for kind in ("outs", "metrics", "plots") for o in stage.get(kind, [])]
        for key in keys:
            found[name if key is None else f"{name}@{key}"] = [resolve(o, params, key) for o in paths]
    return found


def plot_files(dvc: dict, params: dict) -> dict[str, list[str]]:
    """The data files each top-level plot draws (its y files, or its id when that is the file)."""
    files = {}
    for entry in dvc.get("plots", []):
        (plot_id, props), = entry.items() if isinstance(entry, dict) else ((entry, None),)
        ys = (props or {}).get("y")
        files[plot_id] = [resolve(f, params) for f in ys] if isinstance(ys, dict) else [resolve(plot_id, params)]
    return files


def unproduced_plot_files(dvc: dict, params: dict) -> list[str]:
    outs = [o for stage in declared_outputs(dvc, params).values() for o in stage]
    return [f for files in plot_files(dvc, params).values() for f in files if not any(covers(o, f) for o in outs)]


def test_every_top_level_plot_draws_files_some_stage_writes():
    dvc, params = yaml.safe_load((ROOT / "dvc.yaml").read_text()), read_yaml(ROOT / "params.yaml")
    files = plot_files(dvc, params)
    assert set(files) == {"learning", "rollout_error"}  # the DVC views: every variant overlaid
    assert unproduced_plot_files(dvc, params) == []
    dvc["stages"]["report"]["outs"] = [o for o in dvc["stages"]["report"]["outs"]
                                       if "curves" not in (next(iter(o)) if isinstance(o, dict) else o)]
    assert sorted(unproduced_plot_files(dvc, params)) == sorted(f for fs in files.values() for f in fs)


def test_the_top_level_plots_use_the_projects_template_which_colours_by_variant():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for entry in dvc["plots"]:
        (_, props), = entry.items()
        template = json.loads((ROOT / ".dvc" / "plots" / f"{props['template']}.json").read_text())
        assert template["encoding"]["color"]["field"] == "variant"     # the report's curves/ columns
        assert template["encoding"]["strokeDash"]["field"] == "curve"


# Phases a variant may skip: finetune@ of a model without phase 2 (runs.skip_phase2) logs no curves.
MAY_SKIP = {"finetune"}


def stages_declaring_plots_of_a_skippable_phase(dvc: dict) -> list[str]:
    return [name for name, stage in dvc_stages(dvc).items() if stage.get("plots") and name in MAY_SKIP]


def test_no_stage_declares_plots_for_a_phase_that_may_be_skipped():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert stages_declaring_plots_of_a_skippable_phase(dvc) == []
    assert not any(stage.get("plots") for stage in dvc_stages(dvc).values())  # the views are the top-level plots
    for phase in ("train", "finetune"):  # DVCLive's curve folders stay outputs, so DVC still tracks them
        outs = [next(iter(o)) if isinstance(o, dict) else o for o in dvc_stages(dvc)[phase]["outs"]]
        assert f"${{paths.logs}}/${{key}}/{phase}/plots/metrics" in outs
    dvc_stages(dvc)["finetune"]["plots"] = [{"${paths.logs}/${key}/finetune/plots/metrics": {"x": "step"}}]
    assert stages_declaring_plots_of_a_skippable_phase(dvc) == ["finetune"]


def test_the_report_commits_its_figures_and_keeps_one_narrow_metrics_file():
    report = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["report"]
    outs = {next(iter(o)): o[next(iter(o))] for o in report["outs"] if isinstance(o, dict)}
    assert outs[str(artifacts.FIGURES)] == {"cache": False}                # git tracks docs/figures
    assert outs["${paths.report}/seeds.json"] == {"cache": False}          # a plain file, not DVC metrics
    assert [next(iter(m)) for m in report["metrics"]] == ["${paths.report}/metrics.json"]
    assert "${paths.logs}" in report["deps"]                                # the learning curves


def copy_project(repo):
    repo.mkdir()
    for part in ("pipeline", "stages", "dila_core"):
        shutil.copytree(ROOT / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, repo / name)


def link_shared(tmp_path) -> bool:
    """Make ../shared of a repo at tmp_path/repo the real one; False when there is none."""
    if not SHARED.exists():
        return False
    (tmp_path / "shared").symlink_to(SHARED, target_is_directory=True)
    return True


def make_repo(tmp_path, *extra: str):
    repo = tmp_path / "repo"
    copy_project(repo)
    relative = [o for o in tiny_overrides(tmp_path) + TINY_STAGE_TWO + list(extra) if not o.startswith("paths.")]
    (repo / "params.yaml").write_text(yaml.safe_dump(apply_overrides(read_yaml(ROOT / "params.yaml"), relative)))
    sh(*GIT, "init", "-q", cwd=repo)
    sh("dvc", "init", "-q", cwd=repo)
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots")  # the top-level plots' template
    sh("dvc", "config", "core.analytics", "false", cwd=repo)
    sh(*GIT, "add", "-A", cwd=repo)
    sh(*GIT, "commit", "-qm", "project", cwd=repo)
    return repo


# The variants the default job leaves out, added back from params.yaml's commented lines so the tiny
# DAG runs every family, bottleneck and ablation (each joins every foreach by its params entry alone);
# the no-latent-action ablation under a name of its own.
EVERY_FAMILY = [*with_variants("no_content", "discrete_z", "gaussian_z", "flam"),
                "variants.no_action={variant: no_latent_action, bottleneck: continuous}"]


@pytest.mark.slow
def test_repro_of_the_whole_dag_on_a_tiny_config(tmp_path):
    # Push-T (outside the repo, read in place) joins as a probed dataset when ../shared is there.
    pusht = link_shared(tmp_path)
    probe = "[synthetic, pusht]" if pusht else "[synthetic]"
    datasets = [] if pusht else ["datasets={synthetic: {kind: synthetic, path: pipeline/data/sources/synthetic.py, "
                                 "episodes: 6, frames: 10, size: 32}}"]
    held = "[objects3]" if pusht else "[]"  # objects3 is among the default datasets
    repo = make_repo(tmp_path, f"evaluate.probe_datasets={probe}", f"evaluate.held_out={held}", *datasets,
                     *EVERY_FAMILY)
    out = sh("dvc", "repro", cwd=repo, timeout=1800)  # about 10 min alone on 2 cores
    stages = ["prepare@synthetic", "extract@synthetic", "pixel_decoder", "train@dila", "finetune@gaussian_z",
              "rollout@discrete_z", "evaluate@no_content", "finetune@no_action", "evaluate@no_action", "train@flam",
              "plan@dila", "plan@no_action", "plan_baselines", "replicas@dila", "replicas@no_action", "report"]
    for stage in stages + (["prepare@pusht", "extract@pusht"] if pusht else []):
        assert f"Running stage '{stage}'" in out, stage
    table = (repo / "data/report/table.md").read_text()
    assert "random-init (seed 0)" in table and "| dila |" in table and "| repeat last frame |" in table
    assert "| no_action |" in table and "## Against the paper" in table and "## Planning" in table
    assert "\n| dila | 0, 1 | " in table  # the main run and replica seed 1 (TINY_STAGE_TWO)
    assert "| simulator as model (upper bound) |" in table and "| flam |" in table
    if pusht:
        assert "probe pusht R²" in table and "| DiLA | 0.009 |" in table
        assert "## Held-out stores" in table and "| dila (objects3) |" in table
    assert "Running stage" not in sh("dvc", "repro", cwd=repo)  # a re-run is a no-op
    raw = sh("dvc", "plots", "show", "--json", cwd=repo)  # the top-level views, none failing to load
    plots = json.loads(raw[raw.index("{"):raw.rindex("}") + 1])
    assert not plots.get("errors") and sorted(plots["data"]) == ["learning", "rollout_error"]
    assert sorted(p.name for p in (repo / "docs/figures").iterdir()) == ["learning.png", "rollout_error.png"]


@pytest.mark.slow
def test_repro_push_pull_into_a_fresh_clone(tmp_path):
    repo = make_repo(tmp_path)
    out = sh("dvc", "repro", "extract@synthetic", cwd=repo)
    assert "Running stage 'prepare@synthetic'" in out and "Running stage 'extract@synthetic'" in out
    sh("dila", "verify", "data/features/synthetic.zarr", cwd=repo)
    assert "Running stage" not in sh("dvc", "repro", "extract@synthetic", cwd=repo)  # a re-run is a no-op

    sh("dvc", "remote", "add", "-d", "shared", str(tmp_path / "remote"), cwd=repo)
    sh(*GIT, "add", "-A", cwd=repo)
    sh(*GIT, "commit", "-qm", "features", cwd=repo)
    sh("dvc", "push", cwd=repo)

    clone = tmp_path / "clone"
    sh(*GIT, "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    sh("dvc", "pull", "extract@synthetic", cwd=clone)
    store = "data/features/synthetic.zarr"
    compare = filecmp.dircmp(repo / store, clone / store)
    assert not _differences(compare), _differences(compare)
    out = sh("dvc", "repro", "extract@synthetic", cwd=clone)
    assert "Running stage 'extract@synthetic'" not in out, out
    sh("dila", "verify", store, cwd=clone)


def _differences(cmp: filecmp.dircmp) -> list[str]:
    """Files that differ (byte by byte) or exist on one side only, recursively."""
    _, mismatch, errors = filecmp.cmpfiles(cmp.left, cmp.right, cmp.common_files, shallow=False)
    found = [*cmp.left_only, *cmp.right_only, *mismatch, *errors]
    for sub in cmp.subdirs.values():
        found += _differences(sub)
    return found


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci_last = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line.strip()][-1]
    assert f"```bash\n{ci_last}\n```" in readme


# The README's main job on the default params at a reduced budget, as CI can spend on one test (the
# whole job takes most of an hour; README): every stage and default dataset, with shorter training on
# an eighth of the plain store, shorter Push-T episodes and 2 planning goals (the tiny-DAG test above
# runs every variant).
REDUCED = ["train.steps=40", "train.val_every=20", "train.checkpoint_every=20", "finetune.steps=10",
           "finetune.checkpoint_every=5", "pixel_decoder.steps=100", "pixel_decoder.checkpoint_every=50",
           "plan.adapter_steps=200", "plan.goals=2", "datasets.pusht.max_frames=12",
           "datasets.pusht_sim.episodes=16", "datasets.plain.episodes=64"]


@pytest.mark.slow
@requires_shared(SHARED / "data" / "pusht_cchi_v7_replay.zarr")
def test_readme_offline_main_job_on_default_params(tmp_path):
    """`dvc exp run -S encoder.weights=random` from the README: the default job, Push-T included, at the
    reduced budget above."""
    link_shared(tmp_path)
    repo = tmp_path / "repo"
    copy_project(repo)
    params = apply_overrides(read_yaml(ROOT / "params.yaml"), REDUCED)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(*GIT, "init", "-q", cwd=repo)
    sh("dvc", "init", "-q", cwd=repo)
    sh(*GIT, "add", "-A", cwd=repo)
    sh(*GIT, "commit", "-qm", "project", cwd=repo)
    sh(*GIT, "config", "user.name", "dila-test", cwd=repo)
    sh(*GIT, "config", "user.email", "test@dila.invalid", cwd=repo)
    sh("dvc", "exp", "run", "-S", "encoder.weights=random", cwd=repo, timeout=4800, threads=2)  # both cores
    out = sh("dila", "info", "data/features/synthetic.zarr", cwd=repo)
    assert "random-init (seed 0)" in out and "(2048, 8, 8, 384)" in out
    sh("dila", "verify", "data/features/plain.zarr", cwd=repo)
    table = (repo / "data/report/table.md").read_text()
    assert "| dila |" in table and "Dataset: plain." in table
    assert "random-init" in table and "probe pusht R²" in table and "## Objects" in table
    assert "| simulator as model (upper bound) |" in table and "## Over training seeds" in table
    seeds = json.loads((repo / "data/report/seeds.json").read_text())
    assert seeds["dila"]["seeds"] == [0] and seeds["dila"]["z_usage"]["n"] == 1  # replicas.seeds: [] by default
