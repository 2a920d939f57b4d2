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
[from_timestamp, to_timestamp).

Actions and labels are the episode's parquet rows ordered by `frame_index`, which
must run 0..n-1; row i goes with the i-th decoded frame, and the number of decoded
frames must equal the number of rows ("frame-count mismatch" otherwise).
"""
from __future__ import annotations

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
from pipeline.sources.base import (
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
from pipeline.sources.video import TimeWindow, decode

V2_VERSIONS = ("v2.0", "v2.1")
V3_VERSIONS = ("v3.0",)


@dataclass(frozen=True)
class LeRobotParams(DatasetParams):
    """camera: the video feature to read (null: the first video feature in info.json).
    action_key: the feature holding actions, or null for none.
    labels: features stored as per-frame labels under their own names.
    decoder: "auto" (decord, PyAV where decord cannot read a file), "decord" or "pyav".
    """

    camera: str | None = None
    action_key: str | None = "action"
    labels: tuple[str, ...] = ("observation.state",)
    decoder: Literal["auto", "decord", "pyav"] = "auto"

    def validate(self, where: str) -> None:
        super().validate(where)
        check(self.kind == "lerobot", f"{where}.kind", self.kind, "'lerobot'")
        check(len(set(self.labels)) == len(self.labels), f"{where}.labels", self.labels, "distinct feature names")
        check(self.action_key not in self.labels, f"{where}.labels", self.labels, "features other than action_key")


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

    def schema(self) -> Schema:
        action_dim = None
        if self.params.action_key is not None:
            action_dim = math.prod(self._feature(self.params.action_key)[0])
        labels = {name: LabelSpec(*self._feature(name)) for name in self.params.labels}
        return Schema(action_dim=action_dim, labels=labels)

    @functools.cached_property
    def episodes(self) -> dict[str, _EpisodeFiles]:
        version = self.info["codebase_version"]
        listed = self._episodes_v2() if version in V2_VERSIONS else self._episodes_v3()
        return {f"episode_{e.index:06d}": e for e in sorted(listed, key=lambda e: e.index)}

    def _template(self, key: str, **fields) -> Path:
        try:
            return self.root / self.info[key].format(**fields)
        except (KeyError, IndexError, ValueError) as err:
            where = self.root / "meta" / "info.json"
            raise SourceError(f"{where}: cannot fill {key} {self.info[key]!r} ({err})") from err

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
        out = []
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
                out.append(_EpisodeFiles(int(r["episode_index"]), int(r["length"]), data, video, window))
        return out

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
        wanted = ([self.params.action_key] if self.params.action_key else []) + list(self.params.labels)
        columns = ["frame_index", *wanted] + (["episode_index"] if ep.window is not None else [])
        try:
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
