import json
from types import SimpleNamespace

import pytest

from pipeline import artifacts
from stages import evaluate, extract, prepare, rollout
from tests.stages.helpers import save_model, stage_params

ONLY_DILA = "variants={dila: {variant: dila}}"  # the whole mapping: just DiLA


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Store, an untrained tiny dila model, its rollouts and its metrics (no pixel decoder); built
    afresh for each test module that uses it."""
    tmp = tmp_path_factory.mktemp("evaluate")
    params = stage_params(tmp, ONLY_DILA)
    prepare.run(params, "synthetic", show_progress=False)
    extract.run(params, "synthetic", show_progress=False)
    model = save_model(params, "dila")
    rollout.run(params, "dila")
    path = evaluate.run(params, "dila")
    details = json.loads(artifacts.details_path(params, "dila").read_text())
    return SimpleNamespace(params=params, tmp=tmp, model=model, path=path, metrics=details,
                           headline=json.loads(path.read_text()))
