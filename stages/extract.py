"""Stage `extract@<dataset>`: encode every kept frame once with the frozen DINOv2 and
write the patch tokens to a sharded Zarr v3 store.

Work is split by shard: shard k holds frames [k*S, (k+1)*S) of the concatenated
episodes. Decode workers (a DataLoader) read and resize the frames of upcoming
shards while the encoder runs; under torchrun, rank r writes shards r, r+N, ...
Batches are formed inside each shard, so the result does not depend on the number
of workers or ranks. A killed run resumes at the first unwritten shard; a store
made under another plan (params, source, encoder, code) is rebuilt from scratch.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from pipeline.artifacts import failures_path, read_manifest, store_path
from pipeline.config import to_dict
from pipeline.data import store
from pipeline.data.encoder import EncoderRecord, load_encoder
from pipeline.data.frames import ShardFrames
from pipeline.data.sources import SourceError, build_source
from pipeline.params import Params
from pipeline.progress import track
from pipeline.provenance import code_hash, code_version
from pipeline.training import distributed


def _plan(params: Params, name: str, manifest: dict[str, Any], record: EncoderRecord,
          layout: store.Layout) -> dict[str, Any]:
    """Everything the stored bytes depend on; a store made under another plan is rebuilt."""
    return {
        "dataset": name,
        "source": manifest["source"],
        "episodes": [[e["key"], e["frames"]] for e in manifest["episodes"]],
        "encoder": vars(record),
        "encoder_params": to_dict(params.encoder),
        "store": to_dict(params.store),
        "layout": vars(layout),
        "extract_code_sha256": code_hash(__name__),
    }


def _resume(path: Path, digest: str, layout: store.Layout) -> str | None:
    """Make a store of this plan ready to be finished: stale temp files go, and shards whose files are
    damaged (missing, cut short, changed: see store.find_damage) are written again. Returns what
    happens, for the log, or None when the store must be rebuilt (another plan, unreadable, or a file
    written once damaged: episode_ends, the stats, array metadata)."""
    try:
        attrs = store.store_attrs(store.open_store(path))
        if attrs.get("plan_sha256") != digest:
            return None
        removed = store.remove_partials(path)
        damage = store.find_damage(path)
    except store.StoreError:
        return None
    if damage.other:
        return None
    n, complete = layout.n_shards, attrs.get("complete")
    if damage.shards:
        store.reopen_shards(path, layout, set(damage.shards))
    if complete and not damage.shards:
        return f"complete: all {n} shards were already written; nothing to do"
    damaged = "".join(f"\n  damaged, rewriting: {line}" for line in damage.describe(layout))
    if complete:
        verb = "is" if len(damage.shards) == 1 else "are"
        return f"complete, but {len(damage.shards)} of its {n} shards {verb} damaged; rewriting exactly those:{damaged}"
    done = len(store.done_shards(path))
    temp = f" ({removed} stale temp files removed)" if removed else ""
    return f"resuming: {done} of {n} shards were written{temp}; writing the other {n - done}{damaged}"


def _open_or_create(path: Path, plan: dict[str, Any], manifest: dict[str, Any], layout: store.Layout,
                    params: Params, record: EncoderRecord) -> str:
    """Resume (or repair) a compatible store, or create a fresh one. Returns what was done, for the log."""
    digest = store.plan_hash(plan)
    existed = path.exists()
    resumed = _resume(path, digest, layout) if existed else None
    if resumed is not None:
        return resumed
    schema = manifest["schema"]
    ends = np.cumsum([e["frames"] for e in manifest["episodes"]]).astype(np.int64)
    attrs = {
        "plan_sha256": digest,
        "dataset": plan["dataset"],
        "source": manifest["source"],
        "encoder": vars(record),
        "frame_stride": params.dataset(plan["dataset"]).frame_stride,
        "episodes": [e["key"] for e in manifest["episodes"]],
        "skipped": manifest["failures"],
        "extract_code_sha256": plan["extract_code_sha256"],
        "code_version": code_version(),
    }
    labels = {k: (tuple(v["shape"]), v["dtype"]) for k, v in schema["labels"].items()}
    store.create_store(path, layout, ends, schema["action_dim"], labels, params.store, attrs)
    if existed:
        return ("rebuilt from scratch: the store there was made under another plan (params, source, encoder or "
                "code), or is unreadable, or its episode_ends, stats or array metadata are damaged")
    return "created"


def _write_failures(params: Params, name: str, manifest: dict[str, Any]) -> None:
    path = failures_path(params, name)
    path.write_text(json.dumps({"dataset": name, "skipped": manifest["failures"]}, indent=1) + "\n")


def run(params: Params, name: str, show_progress: bool = True) -> Path:
    """Extract dataset `name` into its feature store; resumable; rank-parallel under torchrun."""
    d = distributed.init()
    ds = params.dataset(name)
    manifest = read_manifest(params, name)
    fingerprint = build_source(ds).fingerprint()
    if fingerprint != manifest["source"]["fingerprint"]:
        raise SourceError(f"{ds.path}: the source changed since `dila prepare {name}`; run it again")
    encoder = load_encoder(params.encoder, params.seed).to(d.device)
    n_frames = sum(e["frames"] for e in manifest["episodes"])
    grid = (encoder.grid, encoder.grid)
    layout = store.plan_layout(n_frames, grid, encoder.record.dim, params.store)
    path = store_path(params, name)
    plan = _plan(params, name, manifest, encoder.record, layout)
    path.parent.mkdir(parents=True, exist_ok=True)
    if d.is_main:
        print(f"extract {name}: {path} {_open_or_create(path, plan, manifest, layout, params, encoder.record)}")
    distributed.barrier(d)
    _encode_shards(path, layout, ShardFrames(ds, manifest, layout, params.encoder.input_size),
                   encoder, d, params, show_progress)
    distributed.barrier(d)
    if d.is_main:
        if not store.store_attrs(store.open_store(path)).get("complete"):
            store.finalize(path, layout)
        _write_failures(params, name, manifest)
    distributed.barrier(d)
    return path


def _encode_shards(path: Path, layout: store.Layout, frames: ShardFrames, encoder, d, params: Params,
                   show: bool) -> None:
    done = store.done_shards(path) if (path / store.PROGRESS).is_dir() else set(range(layout.n_shards))
    mine = [k for k in range(d.rank, layout.n_shards, d.world) if k not in done]
    if not mine:
        return
    root = store.open_store(path, mode="r+")
    workers = params.decode.workers
    loader = DataLoader(frames, batch_size=None, sampler=mine, num_workers=workers,
                        prefetch_factor=2 if workers else None, pin_memory=d.device.type == "cuda",
                        collate_fn=_as_is, worker_init_fn=_worker_init)
    batch = params.encoder.batch_size
    for item in track(loader, f"extract (rank {d.rank}): shards", len(mine), show and d.is_main):
        pixels = item["pixels"]  # (n, 3, S, S)
        tokens = torch.cat([encoder(pixels[i : i + batch].to(d.device, non_blocking=True)).cpu()
                            for i in range(0, len(pixels), batch)])  # (n, h, w, D)
        store.write_shard(path, root, layout, item["shard"], tokens.numpy(), item["actions"], item["labels"])


def _as_is(item: dict[str, Any]) -> dict[str, Any]:
    return item


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)
