"""A folder of video files, one episode per file, optionally with per-frame actions.

Videos are found recursively under `path` by extension (case-insensitive; hidden
files and folders, whose names start with ".", are skipped) and ordered by their
path relative to `path`, which is also the episode key.

Actions (`actions: ".actions.csv"` or `".actions.json"`, any suffix ending in .csv or
.json; null: none) come from a sidecar file beside each video, named by the video's stem
plus the suffix (`run_003.mp4` -> `run_003.actions.csv`). It holds one row per *raw*
video frame, row k being the action at raw frame k; every value is a finite number (a
discrete action as an integer id or as one-hot columns: the file decides):

  CSV:   a header row naming the action dimensions, then one row per frame
         (`forward,left,jump` / `1,0,0` / ...); blank lines are ignored.
  JSON:  {"names": ["forward", "left", "jump"], "actions": [[1, 0, 0], ...]}

Actions are kept exactly like frames: kept frame i (raw frame i * frame_stride, capped by
max_frames) carries row i * frame_stride; the rows of skipped frames are dropped. Every
sidecar must name the same dimensions in the same order as the first readable one (in
episode order), which fixes the schema's action_dim. A missing sidecar, a row count other
than the video's frame count, a value that is not a number, or a row with more or fewer
values than there are names is an EpisodeError naming the video and the sidecar.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline.config import check
from pipeline.data.sources.base import (
    DatasetParams,
    Episode,
    EpisodeError,
    EpisodeRef,
    Schema,
    Source,
    SourceError,
    apply_resize,
    files_under,
    fingerprint_files,
    kept_indices,
)
from pipeline.data.sources.video import count_frames, decode, resolve_decoder


@dataclass(frozen=True)
class VideoFolderParams(DatasetParams):
    """extensions: file suffixes that count as videos.
    decoder: "auto" (decord, PyAV where decord cannot read a file), "decord" or "pyav".
    actions: suffix of the per-frame actions sidecar (".actions.csv", ".actions.json"), or null.
    """

    extensions: tuple[str, ...] = (".mp4", ".webm", ".avi", ".mkv", ".mov")
    decoder: Literal["auto", "decord", "pyav"] = "auto"
    actions: str | None = None

    def validate(self, where: str) -> None:
        super().validate(where)
        check(self.kind == "video_folder", f"{where}.kind", self.kind, "'video_folder'")
        check(
            len(self.extensions) > 0 and all(e.startswith(".") and len(e) > 1 for e in self.extensions),
            f"{where}.extensions",
            self.extensions,
            'a non-empty list of suffixes such as [".mp4", ".mkv"]',
        )
        a = self.actions
        check(
            a is None or (a.startswith(".") and a.lower().endswith((".csv", ".json"))),
            f"{where}.actions",
            a,
            'null or a sidecar suffix starting with "." and ending in .csv or .json, such as ".actions.csv"',
        )


@dataclass(frozen=True)
class Sidecar:
    """One video's actions file: names (a,) and rows (N_raw, a) float32."""

    path: Path
    names: tuple[str, ...]
    rows: np.ndarray


def sidecar_path(video: Path, suffix: str) -> Path:
    return video.with_name(video.stem + suffix)


def read_sidecar(video: Path, suffix: str) -> Sidecar:
    """The actions sidecar of `video`; any problem is an EpisodeError naming the video and the sidecar."""
    path = sidecar_path(video, suffix)

    def fail(reason: str) -> EpisodeError:
        return EpisodeError(str(video), f"actions sidecar {path}: {reason}")

    if not path.is_file():
        raise fail("does not exist" if not path.exists() else "is not a regular file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise fail(f"cannot be read as UTF-8 text ({err})") from err
    parse = _parse_json if path.suffix.lower() == ".json" else _parse_csv
    names, rows = parse(text, fail)
    return Sidecar(path, names, np.array(rows, np.float32).reshape(len(rows), len(names)))


def _number(value, where: str, fail, text: bool = True) -> float:
    """`value` as a finite float; text=False (JSON) accepts only numbers, not strings of digits."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str) if text else (int, float)):
        raise fail(f"{where}: {value!r} is not a number")
    try:
        x = float(value)
    except ValueError:
        raise fail(f"{where}: {value!r} is not a number") from None
    if not math.isfinite(x):
        raise fail(f"{where}: {value!r} is not a finite number")
    return x


def _parse_csv(text: str, fail) -> tuple[tuple[str, ...], list[list[float]]]:
    reader = csv.reader(io.StringIO(text))
    names, rows = None, []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        line = reader.line_num
        if names is None:
            names = tuple(cell.strip() for cell in row)
            if not all(names):
                raise fail(f"line {line}: the header has an empty column name")
            continue
        if len(row) != len(names):
            raise fail(f"line {line}: ragged row: {len(row)} values but the header names {len(names)} dimensions")
        rows.append([_number(cell.strip(), f"line {line}, column {n!r}", fail) for cell, n in zip(row, names)])
    if names is None:
        raise fail("is empty (no header row)")
    return names, rows


def _parse_json(text: str, fail) -> tuple[tuple[str, ...], list[list[float]]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise fail(f"is not valid JSON ({err})") from err
    names = doc.get("names") if isinstance(doc, dict) else None
    table = doc.get("actions") if isinstance(doc, dict) else None
    if not (isinstance(names, list) and names and all(isinstance(n, str) and n for n in names)):
        raise fail('must be an object whose "names" is a non-empty list of strings')
    if not isinstance(table, list):
        raise fail('must be an object whose "actions" is a list of rows')
    rows = []
    for k, row in enumerate(table):
        if not isinstance(row, list) or len(row) != len(names):
            got = f"{len(row)} values" if isinstance(row, list) else repr(row)
            raise fail(f"actions[{k}]: ragged row: {got} but \"names\" has {len(names)} dimensions")
        rows.append([_number(v, f"actions[{k}][{j}] ({names[j]!r})", fail, text=False) for j, v in enumerate(row)])
    return tuple(names), rows


def _check_rows(ref: EpisodeRef, side: Sidecar, n_raw: int) -> None:
    if len(side.rows) != n_raw:
        raise EpisodeError(ref.origin, f"actions sidecar {side.path} has {len(side.rows)} rows but the video has "
                           f"{n_raw} frames (one row per raw frame)")


class VideoFolderSource(Source):
    def __init__(self, params: VideoFolderParams):
        self.params = params
        self.root = Path(params.path)
        self._reference_cache: Sidecar | None = None

    def _files(self) -> list[Path]:
        return files_under(self.root, self.params.extensions, "video folder", "video")

    def refs(self) -> list[EpisodeRef]:
        return [EpisodeRef(key=f.relative_to(self.root).as_posix(), origin=str(f)) for f in self._files()]

    def schema(self) -> Schema:
        return Schema() if self.params.actions is None else Schema(action_dim=len(self._reference().names))

    def _reference(self) -> Sidecar:
        """The first readable sidecar (in episode order): its names fix every episode's action dimensions."""
        if self._reference_cache is None:
            first = None
            for f in self._files():
                try:
                    self._reference_cache = read_sidecar(f, self.params.actions)
                    break
                except EpisodeError as err:
                    first = first or err
            else:
                raise SourceError(f"{self.root}: no video has a readable actions sidecar "
                                  f"({self.params.actions}); the first: {first}")
        return self._reference_cache

    def _sidecar(self, ref: EpisodeRef, n_raw: int | None) -> Sidecar | None:
        """The episode's sidecar (None without `actions`), checked against the reference names and,
        where n_raw is known, against the video's raw frame count."""
        if self.params.actions is None:
            return None
        side = read_sidecar(self._path(ref), self.params.actions)
        ref_side = self._reference()
        if side.names != ref_side.names:
            raise EpisodeError(ref.origin, f"actions sidecar {side.path} names the action dimensions "
                               f"{list(side.names)} but {ref_side.path} names {list(ref_side.names)}; every "
                               "sidecar needs the same columns in the same order")
        if n_raw is not None:
            _check_rows(ref, side, n_raw)
        return side

    def _path(self, ref: EpisodeRef) -> Path:
        return self.root / ref.key

    def decoder_for(self, ref: EpisodeRef) -> str:
        """The decoder ("decord" or "pyav") that reads this episode's file."""
        return resolve_decoder(self._path(ref), self.params.decoder)

    def count(self, ref: EpisodeRef) -> int:
        n_raw = count_frames(self._path(ref), self.params.decoder)
        self._sidecar(ref, n_raw)
        return len(kept_indices(n_raw, self.params))

    def load(self, ref: EpisodeRef, start: int = 0, stop: int | None = None) -> Episode:
        """Kept frames [start, stop). With stop=None the whole file is decoded (and its
        count checked against the header); otherwise decoding stops at frame `stop`."""
        p = self.params
        if start < 0 or (stop is not None and stop < start):
            raise ValueError(f"{ref.origin}: need 0 <= start <= stop, got start={start}, stop={stop}")
        if stop is not None and p.max_frames is not None and stop > p.max_frames:
            raise EpisodeError(ref.origin, f"asked for kept frames [{start}, {stop}) but max_frames is {p.max_frames}")
        side = self._sidecar(ref, None)
        last = stop if stop is not None else p.max_frames
        raw = slice(start * p.frame_stride, None if last is None else last * p.frame_stride, p.frame_stride)
        got = decode(self._path(ref), raw, through=stop is None, decoder=p.decoder)
        if stop is None:
            n_kept = len(kept_indices(got.total, p))
            if start > n_kept:
                raise EpisodeError(ref.origin, f"asked for kept frames from {start} but the video has {n_kept}")
        elif len(got.frames) != stop - start:
            raise EpisodeError(
                ref.origin,
                f"asked for kept frames [{start}, {stop}) but the video ends after {len(got.frames)} of them",
            )
        return Episode(key=ref.key, frames=apply_resize(got.frames, p), actions=self._actions(ref, side, got, start))

    def _actions(self, ref: EpisodeRef, side: Sidecar | None, got, start: int) -> np.ndarray | None:
        """(T, a) sidecar rows of the decoded kept frames (raw indices (start + t) * frame_stride)."""
        if side is None:
            return None
        if got.total is not None:
            _check_rows(ref, side, got.total)
        raw = (start + np.arange(len(got.frames))) * self.params.frame_stride  # (T,)
        if len(raw) and raw[-1] >= len(side.rows):
            raise EpisodeError(ref.origin, f"actions sidecar {side.path} has {len(side.rows)} rows but raw "
                               f"frame {raw[-1]} was read (one row per raw frame)")
        return side.rows[raw]

    def fingerprint(self) -> str:
        files = self._files()
        if self.params.actions is not None:
            files = files + [sidecar_path(f, self.params.actions) for f in files]
        return fingerprint_files(self.params, self.root, files)
