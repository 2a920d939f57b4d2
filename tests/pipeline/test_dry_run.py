"""`dila dry-run`: the stores' frames and size on disk, the counted compute and its GPU time, memory
per rank, from params alone (nothing decoded or trained), on a fixture layout."""
from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dila_core import world_model
from pipeline import dry_run
from pipeline.data.sources import build_source
from pipeline.data.sources import lerobot as lerobot_source
from pipeline.data.sources import recon as recon_source
from pipeline.data.sources import ssv2 as ssv2_source
from pipeline.params import load_params
from pipeline.training.runs import model_config
from tests.conftest import ROOT, make_params
from tests.pipeline.media import make_lerobot_v3
from tests.stages.helpers import dila, write_params

ABSENT = ["datasets.far.kind=video_folder", "datasets.far.path=/nonexistent/videos", "budget.frames.far=5000",
          "datasets.gone.kind=video_folder", "datasets.gone.path=/nonexistent/other"]
TINY = ["model.preset=tiny", "train.seq_len=4", "train.batch_size=2", "train.steps=10", "finetune.steps=3",
        "variants={dila: {variant: dila}, nsvq: {variant: dila, bottleneck: nsvq}, no_z: {variant: no_latent_action}}",
        "replicas.seeds=[1]"]


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dry")
    params = make_params(tmp, *TINY, *ABSENT)
    return params, dry_run.dry_run(params)


def test_stores_are_counted_where_they_can_be_and_declared_where_not(plan):
    params, r = plan
    s = r["stores"]
    assert s["synthetic"]["frames"] == 6 * 10 and s["synthetic"]["frames_from"] == "counted (6 episodes)"
    assert s["far"]["frames"] == 5000 and "budget.frames.far" in s["far"]["frames_from"]
    assert s["gone"]["frames"] is None and "set budget.frames.gone" in s["gone"]["frames_from"]
    measured = json.loads(open(params.budget.store_bytes).read())
    per_frame = 3 * 3 * 384 * 2 * measured["stored_bytes_per_frame"] / measured["raw_bytes_per_frame"]
    assert r["bytes_per_frame"] == pytest.approx(per_frame)
    assert s["far"]["bytes"] == pytest.approx(5000 * per_frame) and s["gone"]["bytes"] is None
    assert r["frames_known"] == sum(v["frames"] for v in s.values() if v["frames"] is not None)


def test_counted_flops_match_a_count_on_real_tensors(plan):
    params, r = plan
    torch.manual_seed(0)
    model = world_model.build_model(model_config(params, "dila", (3, 3), 384)).eval()
    with FlopCounterMode(display=False) as counter:
        model.objective(torch.randn(2, 4, 3, 3, 384))[0].backward()
    t = r["training"]["dila"]
    # the meta device's kernels decompose a few ops differently from the CPU's (0.3% here)
    assert t["counted_on"] == "meta" and t["train"] == pytest.approx(counter.get_total_flops(), rel=0.01)
    nsvq = r["training"]["nsvq"]  # bincount has no meta kernel: counted with a continuous z in its place
    assert nsvq["counted_on"] == "meta, nsvq counted as continuous" and nsvq["train"] == t["train"]
    assert "finetune" not in r["training"]["no_z"]
    runs = 2  # the main run and replica seed 1
    assert t["flops"] == runs * (10 * t["train"] + 3 * t["finetune"])
    assert r["training_flops"] == sum(v["flops"] for v in r["training"].values())
    assert r["gpu_hours_at_peak"] == pytest.approx(r["training_flops"] / 989e12 / 3600)
    n = max(v["params"] for v in r["training"].values())
    assert r["static_bytes_per_rank"] == 16 * n


def test_a_measured_gpu_step_gives_the_time_and_memory(tmp_path, plan):
    params, _ = plan
    steps = tmp_path / "model_cuda.jsonl"
    steps.write_text(json.dumps({"device": "cuda", "preset": "tiny", "batch": 2, "frames": 4, "step_s": 0.5,
                                 "peak_mib": 2048.0}) + "\n")
    p = make_params(tmp_path, *TINY, f"budget.measured={steps}", "budget.gpus=2")
    r = dry_run.dry_run(p)
    text = dry_run.format_dry_run(r, p)
    # 3 variants x 2 runs x 10 steps, plus 3 phase-2 steps for the two with a phase 2, at 0.5 s on 2 GPUs
    assert r["measured"]["step_s"] == 0.5
    assert f"about {(3 * 2 * 10 + 2 * 2 * 3) * 0.5 / 3600 / 2:,.1f} h wall-clock" in text
    assert "2.0 GiB measured peak" in text


def test_the_cli_prints_the_tables_and_writes_json(tmp_path):
    path = write_params(tmp_path, *TINY, *ABSENT)
    out = dila("dry-run", "--params", str(path), "--json", str(tmp_path / "dry.json")).stdout
    assert "| synthetic | synthetic | 60 |" in out and "| far | video_folder | 5,000 |" in out
    assert "lower bounds" in out and "not measured" in out
    assert json.loads((tmp_path / "dry.json").read_text())["stores"]["far"]["frames"] == 5000


def test_real_layouts_are_counted_from_metadata_without_decoding(tmp_path, monkeypatch):
    """SSv2 (split file, labels), RT-1 as LeRobot (parquet rows), RECON (HDF5 shapes) are counted
    without decoding a frame, to the frames prepare keeps; LoopNav's videos need decoding, so the
    declared budget.frames is used and said to be."""
    e2e = pytest.importorskip("tests.test_paper_profile_e2e")  # its fixtures need h5py (the recon extra)
    ssv2 = e2e.make_ssv2(tmp_path / "ssv2", clips=3, frames=20)
    rt1 = make_lerobot_v3(tmp_path / "rt1", (10, 12, 9), cameras=("observation.images.image",))
    recon = e2e.make_recon(tmp_path / "recon", lengths=(10, 7))
    loopnav = e2e.make_loopnav(tmp_path / "loopnav", lengths=(8,))
    params = load_params(ROOT / "profiles" / "paper.yaml", [
        *(f"paths.{k}={tmp_path}/{k}" for k in ("prepared", "features", "models", "logs", "eval", "plan",
                                                "replicas", "report")),
        f"datasets.ssv2.path={ssv2['path']}", "datasets.ssv2.clip_frames=6", f"datasets.rt1.path={rt1.root}",
        f"datasets.recon.path={recon}", f"datasets.loopnav.path={loopnav}", "budget.frames.loopnav=1234",
        "datasets.pusht.path=/nonexistent/pusht.zarr", "evaluate.probe_datasets=[rt1]"])
    decoded = {}
    for name in ("ssv2", "rt1", "recon"):
        source = build_source(params.dataset(name))
        decoded[name] = sum(source.count(ref) for ref in source.refs())  # by decoding every frame

    def no_decoding(*args, **kwargs):
        raise AssertionError("the dry run decoded a frame")

    for module, name in ((ssv2_source, "decode"), (ssv2_source, "count_frames"), (lerobot_source, "decode"),
                         (recon_source.Image, "open")):
        monkeypatch.setattr(module, name, no_decoding)
    counted = {name: dry_run.count_frames(params, name) for name in ("ssv2", "rt1", "recon", "loopnav")}
    assert decoded == {"ssv2": 3 * 6, "rt1": 5 + 6 + 5, "recon": 10 + 7}  # RT-1 at frame stride 2
    for name in decoded:
        assert counted[name][0] == decoded[name], (name, counted[name])
    assert counted["ssv2"][1] == "counted (3 episodes; at most: clips shorter than clip_frames are skipped " \
                                 "when prepared)"
    assert counted["rt1"][1] == "counted (3 episodes)" and counted["recon"][1] == "counted (2 episodes)"
    assert counted["loopnav"][0] == 1234 and "video_folder counts frames only by decoding them" in counted["loopnav"][1]
