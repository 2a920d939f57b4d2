"""The comparison with the paper: row mapping, orderings and verdicts, the Markdown it writes."""
from pipeline.evaluation import paper


def metrics(variant: str, bottleneck: str, rollout: float, cycle: float, tf: float, probe: float | None):
    m = {"model": {"variant": variant, "bottleneck": bottleneck},
         "rollout": {"token_mse": rollout}, "cycle_transfer": {"token_mse": cycle},
         "teacher_forced": {"val_mse": tf}, "probe": {}}
    if probe is not None:
        m["probe"]["pusht"] = {"mse": probe, "r2": 1 - probe}
    return m


def test_paper_rows_and_orders():
    assert paper.paper_row(metrics("dila", "nsvq", 0, 0, 0, None)) == "Discrete z"
    assert paper.paper_row(metrics("no_latent_action", "continuous", 0, 0, 0, None)) is None
    assert paper.paper_row({}) is None
    assert paper.order({"a": 0.3, "b": 0.1, "c": 0.2}) == ["b", "c", "a"]
    assert paper.order(paper.ABLATION["rollouts"][0]) == ["DiLA", "Discrete z", "w/o content", "Gaussian z"]


def test_verdicts():
    want = {"DiLA": 0.1, "Discrete z": 0.2, "Gaussian z": 0.3}
    assert paper.verdict(want, {"DiLA": 1.0, "Discrete z": 2.0, "Gaussian z": 3.0}) == "agrees (same order)"
    assert paper.verdict(want, {"DiLA": 1.0, "Discrete z": 3.0, "Gaussian z": 2.0}) == "disagrees (same best model)"
    assert paper.verdict(want, {"DiLA": 3.0, "Discrete z": 1.0, "Gaussian z": 2.0}) == \
        "disagrees (paper's best (DiLA) is #3 here)"
    assert paper.verdict(want, {"DiLA": 3.0}) == "fewer than two comparable models"


def test_comparison_lines():
    ms = {"dila": metrics("dila", "continuous", 0.1, 0.5, 0.05, 0.2),
          "no_content": metrics("no_content", "continuous", 0.2, 0.4, 0.06, None),
          "discrete_z": metrics("dila", "nsvq", 0.3, 0.6, 0.07, 0.1),
          "other": metrics("no_latent_action", "continuous", 0.0, 0.0, 0.0, 0.0)}
    lines = paper.comparison(ms)
    assert lines[0].startswith("## Against the paper")
    assert "| rollouts | rollout.token_mse | DiLA < Discrete z < w/o content < Gaussian z | " \
           "DiLA < w/o content < Discrete z | disagrees (same best model) |" in lines
    assert "| cycle transfer | cycle_transfer.token_mse | DiLA < Gaussian z < Discrete z < w/o content | " \
           "w/o content < DiLA < Discrete z | disagrees (paper's best (DiLA) is #2 here) |" in lines
    assert "| MSE @ N steps | teacher_forced.val_mse | DiLA < w/o content < Discrete z < Gaussian z | " \
           "DiLA < w/o content < Discrete z | agrees (same order) |" in lines
    assert "| DiLA | 0.009 | 0.2 | 0.8 |" in lines
    assert "| Discrete z | 0.023 | 0.1 | 0.9 |" in lines
    assert "| Gaussian z | 0.041 | — | — |" in lines
    assert lines[-1] == "Probe ordering: disagrees (paper's best (DiLA) is #2 here)."
    assert "random-init" not in "\n".join(lines)
    ms["dila"]["encoder_weights"] = "random-init (seed 0)"
    assert "**a random-init encoder, not pretrained DINOv2**" in "\n".join(paper.comparison(ms))
    assert not any("Probe ordering" in line for line in paper.comparison(ms, None))
    assert paper.comparison({"x": {"probe": {}}}) == []


def test_lpips_is_preferred_where_every_model_has_it():
    ms = {"a": metrics("dila", "continuous", 0.1, 0.5, 0.05, None),
          "b": metrics("dila", "nsvq", 0.3, 0.6, 0.07, None)}
    ms["a"]["rollout"]["lpips"], ms["b"]["rollout"]["lpips"] = 0.4, 0.2
    assert any(line.startswith("| rollouts | rollout.lpips |") and "Discrete z < DiLA" in line
               for line in paper.comparison(ms))
    del ms["b"]["rollout"]["lpips"]
    assert any(line.startswith("| rollouts | rollout.token_mse |") for line in paper.comparison(ms))
