"""Stage `replicas@<variant>`: the variant trained again from each of `replicas.seeds`, both
phases as `train@` and `finetune@` run them (initial weights and batch order from the seed; data,
split and encoder from the top-level `seed`), each replica then scored in memory as `rollout@` and
`evaluate@` score the main run (`pipeline.evaluation.replicas`). The report puts the main run
and the replicas side by side as mean and spread over seeds.

Outputs: `<paths.replicas>/<variant>.json` (headline numbers per seed, what was unavailable, and
the rollout's token MSE per horizon step under its own and another clip's z, the report's seed bands)
and each replica's weights, records and curves under `<paths.replicas>/<variant>/seed<k>/`. Run
again, it trains every replica again (as `train@` does); a killed run resumes the replica it was
training from its last checkpoint.
"""
from __future__ import annotations

from pathlib import Path

from pipeline import artifacts
from pipeline.evaluation.replicas import replica_headline
from pipeline.params import Params
from pipeline.provenance import code_version
from pipeline.training import distributed
from pipeline.training.runs import check_variant, phase1, phase2


def run(params: Params, variant: str, show_progress: bool = True) -> Path:
    """Train and score every replica of `variant`; returns the replicas file's path."""
    check_variant(params, variant)
    d = distributed.init()
    seeds, unavailable, curves = {}, {}, {}
    for seed in params.replicas.seeds:
        p = artifacts.replica_params(params, variant, seed)
        phase1(p, variant, seed, d, show_progress, __name__)
        phase2(p, variant, seed, d, show_progress, __name__)
        if d.is_main:
            seeds[str(seed)], unavailable[str(seed)], curves[str(seed)] = replica_headline(p, variant)
    out = artifacts.replicas_path(params, variant)
    if d.is_main:
        artifacts.replicas_dir(params, variant).mkdir(parents=True, exist_ok=True)  # declared even with no seeds
        artifacts.write_json(out, {"variant": variant, "dataset": params.train.dataset, "split_seed": params.seed,
                                   "seeds": seeds, "unavailable": unavailable, "curves": curves,
                                   "code_version": code_version()})
    distributed.barrier(d)
    return out
