"""Stage `prepare@<dataset>`: list and check every episode of a source, write its manifest.

The manifest fixes what the extract stage will store: the episodes that read
cleanly, in order, with their exact frame counts, and the episodes that did not,
with the reason and the file. Nothing is copied: sources are read in place.
The manifest is a pure function of the source and its params (no timestamps, no
code version), so a fresh clone that re-runs prepare gets the same bytes and DVC
does not re-run extraction.
With `strict: true` the first bad episode stops the stage.

Params that name something the data lacks (a LeRobot camera, action key or label)
stop the stage before any episode is read (`Source.check_params`); defaults the user
did not set that the data lacks are printed as notes (`Source.notes`). With `resize: null`
every episode must decode at one size (the encoder's batches mix episodes), else the
stage stops asking for `resize`. When no episode can be read, the manifest is still
written, listing every episode with its reason, and the stage stops with that list.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from pipeline.artifacts import MANIFEST_FORMAT, manifest_path
from pipeline.config import ParamsError, to_dict
from pipeline.data.sources import (
    DatasetParams,
    EpisodeError,
    EpisodeRef,
    SourceError,
    build_source,
)
from pipeline.params import Params
from pipeline.progress import track

SHOWN_FAILURES = 20  # reasons listed in the error when no episode can be read (the manifest lists all)


def _count(args: tuple[DatasetParams, EpisodeRef]) -> tuple[int | None, tuple[int, int] | None, str | None]:
    """(kept frames, frame size or None where `resize` sets it, None), or (None, None, reason)."""
    ds, ref = args
    source = build_source(ds)
    try:
        n = source.count(ref)
        if n < 1:
            return None, None, "no frames left after frame_stride/max_frames"
        return n, (None if ds.resize is not None else source.frame_size(ref)), None
    except EpisodeError as e:
        return None, None, e.reason


def _count_all(ds: DatasetParams, refs: list[EpisodeRef], workers: int, show: bool):
    jobs = [(ds, ref) for ref in refs]
    if workers == 0:
        yield from track(map(_count, jobs), "prepare: checking episodes", len(jobs), show)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from track(pool.map(_count, jobs, chunksize=4), "prepare: checking episodes", len(jobs), show)


def _check_sizes(name: str, sizes: dict[tuple[int, int], list[str]]) -> None:
    """With resize: null, all kept episodes must decode at one size. sizes: size -> origins, in order."""
    if len(sizes) <= 1:
        return
    groups = ", ".join(f"{h}x{w} ({len(o)} episode{'s' * (len(o) > 1)}, e.g. {o[0]})" for (h, w), o in sizes.items())
    h, w = next(iter(sizes))
    raise ParamsError(f"params: datasets.{name}.resize = None is not allowed for this dataset: its episodes decode "
                      f"at {len(sizes)} sizes (height x width: {groups}); set datasets.{name}.resize to one "
                      f"[height, width], e.g. [{h}, {w}] (the first episode's), and every frame is resized to it")


def _no_episodes(name: str, ds: DatasetParams, failures: list[dict[str, str]], path: Path) -> SourceError:
    lines = [f"\n  {f['origin']}: {f['reason']}" for f in failures[:SHOWN_FAILURES]]
    more = f"\n  ... and {len(failures) - SHOWN_FAILURES} more" if len(failures) > SHOWN_FAILURES else ""
    return SourceError(f"dataset {name!r} ({ds.path}): none of its {len(failures)} episodes could be read; each is "
                       f"listed with its reason in {path}:{''.join(lines)}{more}")


def run(params: Params, name: str, show_progress: bool = True) -> dict[str, Any]:
    """Check every episode of dataset `name`; write and return its manifest."""
    ds = params.dataset(name)
    source = build_source(ds)
    source.check_params(f"datasets.{name}")
    for note in source.notes(f"datasets.{name}"):
        print(f"prepare {name}: note: {note}", flush=True)
    refs = source.refs()
    episodes, failures, sizes = [], [], {}
    results = _count_all(ds, refs, params.decode.workers, show_progress)
    for ref, (n, size, reason) in zip(refs, results, strict=True):  # strict: the bar's last step is drawn
        if reason is not None:
            if ds.strict:
                raise EpisodeError(ref.origin, reason)
            failures.append({"key": ref.key, "origin": ref.origin, "reason": reason})
        else:
            episodes.append({"key": ref.key, "origin": ref.origin, "frames": n})
            sizes.setdefault(size, []).append(ref.origin)
    _check_sizes(name, {k: v for k, v in sizes.items() if k is not None})
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
    if not episodes:
        raise _no_episodes(name, ds, failures, path)
    return manifest
