"""Stage `prepare@<dataset>`: list and check every episode of a source, write its manifest.

The manifest fixes what the extract stage will store: the episodes that read
cleanly, in order, with their exact frame counts, and the episodes that did not,
with the reason and the file. Nothing is copied: sources are read in place.
The manifest is a pure function of the source and its params (no timestamps, no
code version), so a fresh clone that re-runs prepare gets the same bytes and DVC
does not re-run extraction.
With `strict: true` the first bad episode stops the stage.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from pipeline.config import to_dict
from pipeline.params import Params
from pipeline.progress import track
from pipeline.sources import DatasetParams, EpisodeError, EpisodeRef, SourceError, build_source

MANIFEST_FORMAT = "dila-manifest/1"


def manifest_path(params: Params, name: str) -> Path:
    return Path(params.paths.prepared) / f"{name}.json"


def _count(args: tuple[DatasetParams, EpisodeRef]) -> tuple[int | None, str | None]:
    ds, ref = args
    try:
        n = build_source(ds).count(ref)
    except EpisodeError as e:
        return None, e.reason
    return (n, None) if n >= 1 else (None, "no frames left after frame_stride/max_frames")


def _count_all(ds: DatasetParams, refs: list[EpisodeRef], workers: int, show: bool):
    jobs = [(ds, ref) for ref in refs]
    if workers == 0:
        yield from track(map(_count, jobs), "prepare: checking episodes", len(jobs), show)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from track(pool.map(_count, jobs, chunksize=4), "prepare: checking episodes", len(jobs), show)


def run(params: Params, name: str, show_progress: bool = True) -> dict[str, Any]:
    """Check every episode of dataset `name`; write and return its manifest."""
    ds = params.dataset(name)
    source = build_source(ds)
    refs = source.refs()
    episodes, failures = [], []
    for ref, (n, reason) in zip(refs, _count_all(ds, refs, params.decode.workers, show_progress)):
        if reason is not None:
            if ds.strict:
                raise EpisodeError(ref.origin, reason)
            failures.append({"key": ref.key, "origin": ref.origin, "reason": reason})
        else:
            episodes.append({"key": ref.key, "origin": ref.origin, "frames": n})
    if not episodes:
        raise SourceError(f"dataset {name!r} ({ds.path}): none of its {len(refs)} episodes could be read")
    schema = source.schema()
    manifest = {
        "format": MANIFEST_FORMAT,
        "dataset": name,
        "source": {"params": to_dict(ds), "fingerprint": source.fingerprint()},
        "schema": {
            "action_dim": schema.action_dim,
            "labels": {k: {"shape": list(v.shape), "dtype": v.dtype} for k, v in schema.labels.items()},
        },
        "episodes": episodes,
        "failures": failures,
    }
    path = manifest_path(params, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, path)
    return manifest


def read_manifest(params: Params, name: str) -> dict[str, Any]:
    """The manifest `prepare` wrote for dataset `name`; a clear error when it is missing or stale."""
    path = manifest_path(params, name)
    if not path.is_file():
        raise SourceError(f"{path}: no manifest for dataset {name!r}; run `dila prepare {name}` first")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != MANIFEST_FORMAT:
        raise SourceError(f"{path}: not a dila manifest (format {manifest.get('format')!r})")
    if manifest["source"]["params"] != to_dict(params.dataset(name)):
        raise SourceError(
            f"{path}: written for other settings of datasets.{name}; run `dila prepare {name}` again"
        )
    return manifest
