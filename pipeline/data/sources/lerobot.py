"""LeRobot datasets (codebase v2.0, v2.1 and v3.0) read in place from a local folder.

v2.x: `meta/info.json` gives `data_path` and `video_path` templates over
`episode_chunk` (episode_index // chunks_size), `episode_index` and `video_key`;
`meta/episodes.jsonl` lists episodes (`episode_index`, `length`); each episode has
one parquet file and one mp4 per camera.

v3.0: episodes are concatenated into chunk/file parquet and mp4 files (templates
over `chunk_index`, `file_index`, `video_key`). `meta/episodes/chunk-*/file-*.parquet`
holds one row per episode: `length`, `data/chunk_index`, `data/file_index`,
`dataset_from_index`, `dataset_to_index`, and per camera
`videos/<camera>/{chunk_index,file_index,from_timestamp,to_timestamp}`. An
episode's frames are the frames of its camera file whose presentation times lie in
[from_timestamp, to_timestamp). Some published datasets store to_timestamp as the time
of the episode's last frame instead. An episode whose window spans `length - 1` frame
intervals (not `length`), and at whose to_timestamp no other episode of its video
starts, is read as such: its window ends one interval later, so it holds its `length`
frames. Where another episode starts at that time, the bounds are exclusive and the
episode lacks a frame. The decoded count is checked against the rows either way, so a
video that lacks a frame is a mismatch, never frames paired with the wrong rows.

`data_path` and `video_path` override the templates of info.json (published
templates do not always match the folders). `check_params` catches, once and before
any episode is read, a camera, action key or label the dataset does not have and a
template that matches no file, naming the key and what the dataset has.

Labels the user names (`labels: [...]`) must all be there. Left unset (`labels: null`),
they are the usual ones (DEFAULT_LABELS) that the dataset has: datasets name their
state differently (`observation.state`, `state`, none at all), and a default the user
never wrote must not stop `prepare`; `notes` names the ones skipped.

Actions and labels are the episode's parquet rows ordered by `frame_index`, which
must run 0..n-1; row i goes with the i-th decoded frame, and the number of decoded
frames must equal the number of rows ("frame-count mismatch" otherwise).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.config import check
from pipeline.data.sources import lerobot_check
from pipeline.data.sources.base import (
    DatasetParams,
    Episode,
    EpisodeError,
    EpisodeRef,
    LabelSpec,
    Schema,
    Source,
    SourceError,
    apply_resize,
    fingerprint_files,
    kept_indices,
    kept_raw,
    raw_slice,
)
from pipeline.data.sources.video import TimeWindow, decode

V2_VERSIONS = ("v2.0", "v2.1")
V3_VERSIONS = ("v3.0",)
DEFAULT_LABELS = ("observation.state",)  # read where present when `labels` is left unset


@dataclass(frozen=True)
class LeRobotParams(DatasetParams):
    """camera: the video feature to read (null: the first video feature in info.json).
    action_key: the feature holding actions, or null for none.
    labels: features stored as per-frame labels under their own names, each of which the
        dataset must have ([] for none); null (the default): those of DEFAULT_LABELS
        (observation.state) the dataset has, the others skipped with a note.
    decoder: "auto" (decord, PyAV where decord cannot read a file), "decord" or "pyav".
    data_path, video_path: templates that replace info.json's (null: info.json's), with
        the same fields, e.g. "video/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4".
    """

    camera: str | None = None
    action_key: str | None = "action"
    labels: tuple[str, ...] | None = None
    decoder: Literal["auto", "decord", "pyav"] = "auto"
    data_path: str | None = None
    video_path: str | None = None

    def validate(self, where: str) -> None:
        super().validate(where)
        check(self.kind == "lerobot", f"{where}.kind", self.kind, "'lerobot'")
        for key in ("data_path", "video_path"):
            check(getattr(self, key) != "", f"{where}.{key}", getattr(self, key), "null or a path template")
        if self.labels is not None:
            check(len(set(self.labels)) == len(self.labels), f"{where}.labels", self.labels, "distinct feature names")
            check(self.action_key not in self.labels, f"{where}.labels", self.labels,
                  "features other than action_key")


@dataclass(frozen=True)
class _EpisodeFiles:
    """Where one episode lives. `window` is set for v3 (a slice of a shared video)."""

    index: int
    length: int
    data: Path
    video: Path
    window: TimeWindow | None = None


class LeRobotSource(Source):
    def __init__(self, params: LeRobotParams):
        self.params = params
        self.root = Path(params.path)

    # ---- metadata ----------------------------------------------------------------

    @functools.cached_property
    def info(self) -> dict:
        path = self.root / "meta" / "info.json"
        if not self.root.is_dir():
            raise SourceError(f"{self.root}: LeRobot dataset folder does not exist")
        try:
            info = json.loads(path.read_text())
        except FileNotFoundError:
            raise SourceError(f"{path}: missing (not a LeRobot dataset folder?)") from None
        except json.JSONDecodeError as err:
            raise SourceError(f"{path}: not valid JSON ({err})") from err
        version = info.get("codebase_version")
        if version not in V2_VERSIONS + V3_VERSIONS:
            raise SourceError(
                f"{path}: unsupported codebase_version {version!r} (supported: {', '.join(V2_VERSIONS + V3_VERSIONS)})"
            )
        for key in ("features", "data_path", "video_path"):
            if not info.get(key):
                raise SourceError(f"{path}: missing or empty {key!r}")
        return info

    @functools.cached_property
    def camera(self) -> str:
        features = self.info["features"]
        videos = [k for k, f in features.items() if f.get("dtype") == "video"]
        where = self.root / "meta" / "info.json"
        if self.params.camera is None:
            if not videos:
                raise SourceError(f"{where}: no video features (image-in-parquet datasets are not supported)")
            return videos[0]
        if self.params.camera not in videos:
            raise SourceError(f"{where}: camera {self.params.camera!r} is not a video feature (videos: {videos})")
        return self.params.camera

    def _feature(self, name: str) -> tuple[tuple[int, ...], str]:
        where = self.root / "meta" / "info.json"
        feature = self.info["features"].get(name)
        if feature is None:
            raise SourceError(f"{where}: no feature {name!r} (features: {sorted(self.info['features'])})")
        dtype = feature.get("dtype")
        try:
            np.dtype(dtype)
        except TypeError:
            raise SourceError(f"{where}: feature {name!r} has dtype {dtype!r}, not a numeric array") from None
        return tuple(int(s) for s in feature.get("shape", [1])), str(dtype)

    @functools.cached_property
    def labels(self) -> tuple[str, ...]:
        """The label features read: the ones the user named, or (labels: null) those of DEFAULT_LABELS
        that info.json lists, so that a dataset without them still prepares."""
        if self.params.labels is not None:
            return self.params.labels
        return tuple(name for name in self._default_labels() if name in self.info["features"])

    def _default_labels(self) -> tuple[str, ...]:
        return tuple(name for name in DEFAULT_LABELS if name != self.params.action_key)

    def notes(self, where: str) -> list[str]:
        """One line naming the default labels this dataset lacks (skipped, not an error: the user never
        asked for them)."""
        if self.params.labels is not None:
            return []
        skipped = [name for name in self._default_labels() if name not in self.labels]
        if not skipped:
            return []
        return [f"{where}.labels is not set and {self.root / 'meta' / 'info.json'} has no feature "
                f"{', '.join(map(repr, skipped))}: skipped "
                f"(set {where}.labels to name the features to store as labels)"]

    def schema(self) -> Schema:
        action_dim = None
        if self.params.action_key is not None:
            action_dim = math.prod(self._feature(self.params.action_key)[0])
        labels = {name: LabelSpec(*self._feature(name)) for name in self.labels}
        return Schema(action_dim=action_dim, labels=labels)

    @functools.cached_property
    def episodes(self) -> dict[str, _EpisodeFiles]:
        version = self.info["codebase_version"]
        listed = self._episodes_v2() if version in V2_VERSIONS else self._episodes_v3()
        return {f"episode_{e.index:06d}": e for e in sorted(listed, key=lambda e: e.index)}

    def _template(self, key: str, **fields) -> Path:
        template = getattr(self.params, key) or self.info[key]
        try:
            return self.root / template.format(**fields)
        except (KeyError, IndexError, ValueError) as err:
            raise SourceError(f"{self.template_origin(key)}: cannot fill {key} {template!r} with the fields "
                              f"{sorted(fields)} ({err!r})") from err

    def template_origin(self, key: str) -> str:
        """Where the template `key` comes from, for messages."""
        return f"the {key} param" if getattr(self.params, key) else str(self.root / "meta" / "info.json")

    def _episodes_v2(self) -> list[_EpisodeFiles]:
        path = self.root / "meta" / "episodes.jsonl"
        try:
            lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
            rows = [json.loads(ln) for ln in lines]
            pairs = [(int(r["episode_index"]), int(r["length"])) for r in rows]
        except FileNotFoundError:
            raise SourceError(f"{path}: missing") from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise SourceError(f"{path}: each line must be JSON with episode_index and length ({err!r})") from err
        chunks = int(self.info.get("chunks_size", 1000))
        out = []
        for index, length in pairs:
            chunk = index // chunks
            data = self._template("data_path", episode_chunk=chunk, episode_index=index)
            video = self._template("video_path", episode_chunk=chunk, episode_index=index, video_key=self.camera)
            out.append(_EpisodeFiles(index, length, data, video))
        return out

    def _episodes_v3(self) -> list[_EpisodeFiles]:
        files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise SourceError(f"{self.root / 'meta' / 'episodes'}: no chunk-*/file-*.parquet episode tables")
        cam = f"videos/{self.camera}"
        columns = ["episode_index", "length", "data/chunk_index", "data/file_index", f"{cam}/chunk_index",
                   f"{cam}/file_index", f"{cam}/from_timestamp", f"{cam}/to_timestamp"]
        found = []
        for f in files:
            names = pq.read_schema(f).names
            missing = [c for c in columns if c not in names]
            if missing:
                raise SourceError(f"{f}: missing episode column(s) {missing}")
            for r in pq.read_table(f, columns=columns).to_pylist():
                data = self._template("data_path", chunk_index=r["data/chunk_index"], file_index=r["data/file_index"])
                video = self._template("video_path", video_key=self.camera, chunk_index=r[f"{cam}/chunk_index"],
                                       file_index=r[f"{cam}/file_index"])
                window = TimeWindow(float(r[f"{cam}/from_timestamp"]), float(r[f"{cam}/to_timestamp"]))
                found.append(_EpisodeFiles(int(r["episode_index"]), int(r["length"]), data, video, window))
        return [dataclasses.replace(ep, window=w) for ep, w in zip(found, self._windows(found), strict=True)]

    def _windows(self, found: list[_EpisodeFiles]) -> list[TimeWindow]:
        """Each episode's window, with a to_timestamp that is the time of the episode's last frame moved one
        frame interval on: the window spans length - 1 intervals and no other episode of its video starts
        at its to_timestamp (where one does, the bounds are exclusive and this episode lacks a frame)."""
        fps = self.info["features"][self.camera].get("info", {}).get("video.fps") or self.info.get("fps")
        if not fps:
            return [ep.window for ep in found]
        step = 1.0 / float(fps)
        starts: dict[Path, list[tuple[float, int]]] = {}
        for i, ep in enumerate(found):
            starts.setdefault(ep.video, []).append((ep.window.start_s, i))
        out = []
        for i, ep in enumerate(found):
            w = ep.window
            last_frame = abs((w.stop_s - w.start_s) / step - (ep.length - 1)) < 0.5
            touching = any(abs(t - w.stop_s) < step / 2 for t, j in starts[ep.video] if j != i)
            out.append(TimeWindow(w.start_s, w.stop_s + step) if last_frame and not touching else w)
        return out

    def check_params(self, where: str) -> None:
        """The camera, action key and labels name what the dataset has, and each path template finds
        files (see pipeline.data.sources.lerobot_check)."""
        lerobot_check.check_params(self, where, v2=self.info["codebase_version"] in V2_VERSIONS)

    # ---- episodes ----------------------------------------------------------------

    def refs(self) -> list[EpisodeRef]:
        return [EpisodeRef(key=key, origin=self._origin(ep)) for key, ep in self.episodes.items()]

    @staticmethod
    def _origin(ep: _EpisodeFiles) -> str:
        if ep.window is None:
            return str(ep.video)
        return f"{ep.video} (episode {ep.index}, {ep.window.start_s:.3f}s to {ep.window.stop_s:.3f}s)"

    def _files(self, ref: EpisodeRef) -> _EpisodeFiles:
        ep = self.episodes.get(ref.key)
        if ep is None:
            raise EpisodeError(ref.origin, f"episode {ref.key!r} is not listed in {self.root / 'meta'}")
        return ep

    def _rows(self, ep: _EpisodeFiles) -> tuple[np.ndarray | None, dict[str, np.ndarray], int]:
        """Actions, labels and row count of the episode, ordered by frame_index."""
        wanted = ([self.params.action_key] if self.params.action_key else []) + list(self.labels)
        columns = ["frame_index", *wanted] + (["episode_index"] if ep.window is not None else [])
        try:
            names = pq.read_schema(ep.data).names
            missing = [c for c in columns if c not in names]
            if missing:
                raise EpisodeError(str(ep.data), f"no column(s) {missing} in this parquet file (its columns: {names})")
            table = pq.read_table(ep.data, columns=columns)
        except FileNotFoundError:
            raise EpisodeError(str(ep.data), "parquet file does not exist") from None
        except (pa.ArrowException, OSError) as err:
            raise EpisodeError(str(ep.data), f"cannot read the parquet file ({err})") from err
        if ep.window is not None:
            table = table.filter(pc.equal(table["episode_index"], ep.index))
        table = table.sort_by("frame_index")
        n = table.num_rows
        frame_index = table["frame_index"].to_numpy()
        if not np.array_equal(frame_index, np.arange(n)):
            raise EpisodeError(str(ep.data), f"episode {ep.index}: frame_index is not 0..{n - 1} (gaps or repeats)")
        if n != ep.length:
            raise EpisodeError(
                str(ep.data), f"frame-count mismatch: episode {ep.index} has {n} parquet rows but meta says {ep.length}"
            )
        schema = self.schema()
        actions = None
        if self.params.action_key:
            actions = _column(table, self.params.action_key, (schema.action_dim,), ep.data).astype(np.float32)
        labels = {
            name: _column(table, name, spec.shape, ep.data).astype(spec.dtype) for name, spec in schema.labels.items()
        }
        return actions, labels, n

    def _mismatch(self, ref: EpisodeRef, ep: _EpisodeFiles, rows: int, frames: str) -> EpisodeError:
        return EpisodeError(
            ref.origin, f"frame-count mismatch: {ep.data} has {rows} rows for episode {ep.index} but {frames}"
        )

    def metadata_count(self, ref: EpisodeRef) -> int:
        """Kept frames from the episode's parquet rows (the video is not decoded)."""
        _, _, n = self._rows(self._files(ref))
        return len(kept_indices(n, self.params))

    def count(self, ref: EpisodeRef) -> int:
        ep = self._files(ref)
        _, _, n = self._rows(ep)
        total = decode(ep.video, [], window=ep.window, through=True, decoder=self.params.decoder).total
        if total != n:
            raise self._mismatch(ref, ep, n, f"{total} frames decode")
        return len(kept_indices(n, self.params))

    def load(self, ref: EpisodeRef, start: int = 0, stop: int | None = None) -> Episode:
        """Kept frames [start, stop). With stop=None the episode's video is decoded to its
        end and its frame count checked against the rows; otherwise decoding stops at the
        last requested frame."""
        ep = self._files(ref)
        actions, labels, n = self._rows(ep)
        raw = kept_raw(n, self.params, start, stop, ref.origin)
        through = stop is None
        got = decode(ep.video, raw_slice(raw, self.params.frame_stride), window=ep.window, through=through,
                     decoder=self.params.decoder)
        if through and got.total != n:
            raise self._mismatch(ref, ep, n, f"{got.total} frames decode")
        if len(got.frames) != len(raw):
            raise self._mismatch(ref, ep, n, f"the video ends before frame {int(raw[len(got.frames)])}")
        return Episode(
            key=ref.key,
            frames=apply_resize(got.frames, self.params),
            actions=None if actions is None else actions[raw],
            labels={name: arr[raw] for name, arr in labels.items()},
        )

    def fingerprint(self) -> str:
        meta = [f for f in (self.root / "meta").rglob("*") if f.is_file()]
        data = {ep.data for ep in self.episodes.values()}
        videos = {ep.video for ep in self.episodes.values()}
        return fingerprint_files(self.params, self.root, [*meta, *sorted(data), *sorted(videos)],
                                 contents=lambda f: f.name == "info.json")


def _column(table: pa.Table, name: str, shape: tuple[int, ...], origin: Path) -> np.ndarray:
    """Column `name` as an (n, *shape) array; list columns are flattened."""
    col = table[name].combine_chunks()
    if col.null_count:
        raise EpisodeError(str(origin), f"column {name!r} has {col.null_count} null value(s)")
    while pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type):
        col = col.flatten()
    values = col.to_numpy(zero_copy_only=False)
    n = table.num_rows
    if values.size != n * math.prod(shape):
        raise EpisodeError(
            str(origin), f"column {name!r} holds {values.size} values for {n} rows of shape {list(shape)}"
        )
    return values.reshape(n, *shape)
