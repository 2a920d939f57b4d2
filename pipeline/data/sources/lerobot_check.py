"""The params of a LeRobot dataset checked against the dataset, once, before any episode is read.

A key that names something the dataset lacks (a camera, the action column, a label
column the user asked for) would otherwise fail every episode with the same reason; it is
a ParamsError naming the key, the file read and what the dataset has. Labels left unset
(null) are only those the dataset has (`LeRobotSource.labels`), so they never fail here.
A path template (info.json's, or the `data_path` / `video_path` param) that finds none
of the dataset's files is a SourceError showing the template, the path it gives and what
exists near that path.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import check
from pipeline.data.sources.base import SourceError

if TYPE_CHECKING:
    from pipeline.data.sources.lerobot import LeRobotSource

FIELDS = {  # (layout, template) -> the fields it is filled with
    ("v2", "data_path"): "{episode_chunk}, {episode_index}",
    ("v2", "video_path"): "{episode_chunk}, {video_key}, {episode_index}",
    ("v3", "data_path"): "{chunk_index}, {file_index}",
    ("v3", "video_path"): "{video_key}, {chunk_index}, {file_index}",
}
SHOWN_ENTRIES = 12  # folder entries named when a template finds nothing


def check_params(source: LeRobotSource, where: str, v2: bool) -> None:
    """ParamsError for a camera, action key or label the dataset does not have; SourceError for a
    template that matches none of its files. `where` is the dataset's params key."""
    params = source.params
    videos = [k for k, f in source.info["features"].items() if f.get("dtype") == "video"]
    if params.camera is not None:
        check(params.camera in videos, f"{where}.camera", params.camera,
              f"null or one of the dataset's cameras (its video features): {videos}")
    for key in ("data_path", "video_path"):
        _check_template(source, key, where, FIELDS["v2" if v2 else "v3", key])
    data, columns = _columns(source)
    if params.action_key is not None:
        check(params.action_key in columns, f"{where}.action_key", params.action_key,
              f"null or one of the dataset's columns: {columns} (those of {data})")
    for i, name in enumerate(params.labels or ()):  # null: only the default labels the dataset has
        check(name in columns, f"{where}.labels[{i}]", name,
              f"one of the dataset's columns: {columns} (those of {data})")


def _columns(source: LeRobotSource) -> tuple[Path, list[str]]:
    """The first episode's parquet file, and the features (of info.json) that are its columns, in its order."""
    data = next(iter(source.episodes.values())).data
    try:
        names = pq.read_schema(data).names
    except (pa.ArrowException, OSError) as err:
        raise SourceError(f"{data}: cannot read the parquet file ({err})") from err
    return data, [c for c in names if source.info["features"].get(c, {}).get("dtype") not in (None, "video")]


def _check_template(source: LeRobotSource, key: str, where: str, fields: str) -> None:
    episodes = list(source.episodes.values())
    files = [ep.data if key == "data_path" else ep.video for ep in episodes]
    if any(f.is_file() for f in files):
        return  # a template that finds some files is right; a missing file is that episode's problem
    template = getattr(source.params, key) or source.info[key]
    raise SourceError(
        f"{source.template_origin(key)}: no file of the dataset matches the {key} template {template!r}: for "
        f"episode {episodes[0].index} it gives {files[0].relative_to(source.root)}, which does not exist; "
        f"{nearby(source.root, files[0])}. Set {where}.{key} to the template the files follow (fields: {fields})")


def nearby(root: Path, missing: Path) -> str:
    """What exists near a path that does not: its nearest existing folder's entries, and the first
    file of the dataset (by path) with the same suffix."""
    folder = missing.parent
    while not folder.is_dir() and folder != root:
        folder = folder.parent
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    more = len(entries) - SHOWN_ENTRIES
    shown = ", ".join(entries[:SHOWN_ENTRIES]) + (f" and {more} more" if more > 0 else "")
    text = f"{folder.relative_to(root).as_posix() + '/' if folder != root else 'the dataset folder'} holds {shown}"
    like = min(root.rglob(f"*{missing.suffix}"), default=None, key=lambda p: p.relative_to(root).as_posix())
    return text + (f"; a {missing.suffix} file there: {like.relative_to(root)}" if like else "")
