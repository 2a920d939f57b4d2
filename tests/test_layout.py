"""The shape of the house: stages import only `pipeline` and `dila_core`, never each other; nothing
below the CLI imports the CLI or a stage; `dila_core` imports nothing of the pipeline."""
import pytest

from pipeline.provenance import ROOT, stage_code

STAGES = sorted(p.stem for p in (ROOT / "stages").glob("*.py") if p.stem != "__init__")
LIBRARY = sorted(str(p.relative_to(ROOT).with_suffix("")).replace("/", ".")
                 for top in ("pipeline", "dila_core") for p in (ROOT / top).rglob("*.py")
                 if p.name != "__init__.py" and p.stem != "cli")


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_imports_no_other_stage(stage):
    others = [f for f in stage_code(f"stages.{stage}") if f.startswith("stages/") and
              f not in ("stages/__init__.py", f"stages/{stage}.py")]
    assert others == []


@pytest.mark.parametrize("module", LIBRARY)
def test_nothing_below_the_cli_imports_it_or_a_stage(module):
    files = stage_code(module)
    assert "pipeline/cli.py" not in files and not [f for f in files if f.startswith("stages/")]
    if module.startswith("dila_core."):
        assert not [f for f in files if f.startswith("pipeline/")]  # the models know no files or stages
