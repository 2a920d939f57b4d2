"""Something-Something v2 (SSv2), read in place: webm clips plus the official label files.

`path` is the SSv2 folder, and every file the source reads lies below it (`videos`,
`annotations`, `labels` and `split` are relative to it), because `path` is what DVC tracks as
the prepare stage's dependency: a changed split or label file re-runs prepare. Link files kept
elsewhere into it. The release (the "labels" download package; older copies prefix every name
with "something-something-v2-") holds:

  <videos>/<id>.webm one clip per id (VP9; the height is 240, the width varies, so set `resize`);
                     the release unpacks them to 20bn-something-something-v2/
  labels.json        {template without its brackets: class index as a string}, 174 classes
                     ("Putting something on a surface": "109")
  train.json, validation.json
                     [{"id": "78687", "label": "holding potato next to vicks vaporub bottle",
                       "template": "Holding [something] next to [something]",
                       "placeholders": ["potato", "vicks vaporub bottle"]}, ...]
  test.json          ids only (no template): readable with `labels: null` only

Episodes: one per clip id, in the order of the split file, or (split: null) every id of the
annotations file, sorted numerically (ids that are not integers follow, sorted as text). The
episode key is the id; the origin is the clip's webm file.

Split file (`split`): UTF-8 text with one clip id per line, e.g. DiLA's cleaned subset (static
clips and strong camera motion removed). Surrounding whitespace is ignored, and so are blank
lines and lines starting with "#". An id must not contain "/" or "\\" nor start with ".";
an id listed twice is an error.

Frames: `clip_frames` (16) frames sampled uniformly over the whole clip: for a clip of n raw
frames, raw indices `np.linspace(0, n - 1, clip_frames).round()` (numpy rounds halves to
even: n=6, clip_frames=5 gives 0, 1, 2, 4, 5). This sampling replaces `frame_stride`, which
must be 1, and fixes the number of frames per episode, so `max_frames` must be null. A clip
with fewer than clip_frames frames would repeat frames (false "no motion" transitions) and
is skipped instead (EpisodeError). Kept frame i of an episode is sample i.

Labels (with `labels` set): "class" (T,) int32, the clip's class index on every frame: the
template with "[" and "]" removed, looked up in labels.json (as the official loaders map them).
Without `labels` there are none. SSv2 has no actions.

Errors: a missing or malformed annotations, labels or split file is a SourceError naming the
path. A listed id whose webm is missing, that the annotations lack, or whose template is not in
labels.json is an EpisodeError naming the id and the file: prepare skips it and lists it.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Literal

import numpy as np

from pipeline.config import check
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
)
from pipeline.data.sources.video import count_frames, decode

LABEL = "class"


@dataclass(frozen=True)
class SSv2Params(DatasetParams):
    """path: the SSv2 folder holding everything below (what DVC tracks). Relative to it:
    videos: the folder of <id>.webm clips.
    annotations: train.json or validation.json (which clips exist, and their templates).
    labels: labels.json, or null for no labels.
    split: a file of clip ids, one a line (module docstring), or null for every annotated clip.
    clip_frames: frames sampled uniformly over each whole clip (in place of frame_stride).
    decoder: "auto" (decord, PyAV where decord cannot read a file), "decord" or "pyav".
    """

    videos: str = "20bn-something-something-v2"
    annotations: str = "labels/train.json"
    labels: str | None = None
    split: str | None = None
    clip_frames: int = 16
    decoder: Literal["auto", "decord", "pyav"] = "auto"

    def validate(self, where: str) -> None:
        super().validate(where)
        check(self.kind == "ssv2", f"{where}.kind", self.kind, "'ssv2'")
        check(self.clip_frames >= 2, f"{where}.clip_frames", self.clip_frames, "an integer >= 2")
        check(self.frame_stride == 1, f"{where}.frame_stride", self.frame_stride,
              "1: ssv2 samples clip_frames frames uniformly over each whole clip instead of striding; "
              "change clip_frames")
        check(self.max_frames is None, f"{where}.max_frames", self.max_frames,
              "null: ssv2 keeps exactly clip_frames frames of each clip; change clip_frames")
        for key in ("videos", "annotations", "labels", "split"):
            value = getattr(self, key)
            optional = key in ("labels", "split")
            check((value is None and optional) or (isinstance(value, str) and _inside(value)), f"{where}.{key}",
                  value, f"a path relative to {where}.path and inside it{' (or null)' if optional else ''}: DVC "
                  "tracks path as the dataset's dependency, so every file read must lie below it (link it in)")

    def under(self, relative: str) -> str:
        """The file `relative` (a videos, annotations, labels or split value) below path."""
        return str(Path(self.path) / relative)


def _inside(relative: str) -> bool:
    """A non-empty relative path ("." is the folder itself) that does not climb out of its folder."""
    path = PurePath(relative)
    return relative.strip() != "" and not path.is_absolute() and ".." not in path.parts


def sample_indices(n_raw: int, clip_frames: int, origin: str) -> np.ndarray:
    """(clip_frames,) strictly increasing raw indices spread uniformly over a clip of n_raw frames."""
    if n_raw < clip_frames:
        raise EpisodeError(origin, f"the clip has {n_raw} frames, fewer than clip_frames={clip_frames}: sampling "
                           "it would repeat frames, so it is skipped")
    return np.linspace(0, n_raw - 1, clip_frames).round().astype(np.int64)


def _stamp(path: str, what: str) -> tuple[str, int, int]:
    """(path, size, mtime_ns): the cache key of a metadata file. Missing: a SourceError."""
    p = Path(path)
    if not p.is_file():
        raise SourceError(f"{path}: {what} " + ("is not a regular file" if p.exists() else "does not exist"))
    st = p.stat()
    return path, st.st_size, st.st_mtime_ns


def _json(path: str, what: str):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SourceError(f"{path}: {what} is not valid JSON ({err})") from err
    except OSError as err:
        raise SourceError(f"{path}: cannot read the {what} ({err})") from err


@functools.lru_cache(maxsize=4)
def _read_annotations(path: str, size: int, mtime_ns: int) -> dict[str, str | None]:
    """clip id -> template (None where the entry has none, as in test.json)."""
    entries = _json(path, "annotations file")
    if not isinstance(entries, list):
        raise SourceError(f"{path}: annotations file must be a JSON list of clip objects, got {type(entries).__name__}")
    out: dict[str, str | None] = {}
    for k, entry in enumerate(entries):
        clip_id = entry.get("id") if isinstance(entry, dict) else None
        if isinstance(clip_id, int) and not isinstance(clip_id, bool):
            clip_id = str(clip_id)
        template = entry.get("template") if isinstance(entry, dict) else None
        if not isinstance(clip_id, str) or not clip_id or not (template is None or isinstance(template, str)):
            raise SourceError(f"{path}: entry {k} must be an object with a string \"id\" (and a string "
                              f"\"template\"), got {entry!r:.120}")
        if clip_id in out:
            raise SourceError(f"{path}: clip id {clip_id} appears twice (entry {k})")
        out[clip_id] = template
    return out


@functools.lru_cache(maxsize=4)
def _read_classes(path: str, size: int, mtime_ns: int) -> dict[str, int]:
    """Bracket-free template -> class index."""
    raw = _json(path, "labels file")
    if not isinstance(raw, dict) or not raw:
        raise SourceError(f"{path}: labels file must be a JSON object {{template: class index}}")
    out = {}
    for template, index in raw.items():
        try:
            out[template] = int(index)
        except (TypeError, ValueError):
            raise SourceError(f"{path}: class index of {template!r} is {index!r}, not an integer") from None
    return out


@functools.lru_cache(maxsize=4)
def _read_split(path: str, size: int, mtime_ns: int) -> tuple[str, ...]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise SourceError(f"{path}: split file is not UTF-8 text ({err})") from err
    first: dict[str, int] = {}
    for lineno, line in enumerate(lines, start=1):
        clip_id = line.strip()
        if not clip_id or clip_id.startswith("#"):
            continue
        if "/" in clip_id or "\\" in clip_id or clip_id.startswith("."):
            raise SourceError(f"{path}:{lineno}: {clip_id!r} is not a clip id (one id per line, no paths)")
        if clip_id in first:
            raise SourceError(f"{path}:{lineno}: clip id {clip_id} is listed twice (first on line {first[clip_id]})")
        first[clip_id] = lineno
    if not first:
        raise SourceError(f"{path}: split file lists no clip ids")
    return tuple(first)


def _id_order(clip_id: str) -> tuple[int, int, str]:
    return (0, int(clip_id), "") if clip_id.isascii() and clip_id.isdigit() else (1, 0, clip_id)


class SSv2Source(Source):
    def __init__(self, params: SSv2Params):
        self.params = params
        self.root = Path(params.under(params.videos))
        self.annotations = params.under(params.annotations)
        self.labels = None if params.labels is None else params.under(params.labels)
        self.split = None if params.split is None else params.under(params.split)

    def _annotations(self) -> dict[str, str | None]:
        return _read_annotations(*_stamp(self.annotations, "annotations file"))

    def _classes(self) -> dict[str, int] | None:
        return None if self.labels is None else _read_classes(*_stamp(self.labels, "labels file"))

    def _ids(self) -> tuple[str, ...]:
        if not self.root.is_dir():
            what = "is not a directory" if self.root.exists() else "does not exist"
            raise SourceError(f"{self.root}: SSv2 clip folder {what}")
        annotations = self._annotations()
        self._classes()  # a missing or malformed labels file stops the source here, before any clip
        if self.split is not None:
            return _read_split(*_stamp(self.split, "split file"))
        if not annotations:
            raise SourceError(f"{self.annotations}: annotations file lists no clips")
        return tuple(sorted(annotations, key=_id_order))

    def _clip(self, clip_id: str) -> Path:
        return self.root / f"{clip_id}.webm"

    def refs(self) -> list[EpisodeRef]:
        return [EpisodeRef(key=i, origin=str(self._clip(i))) for i in self._ids()]

    def schema(self) -> Schema:
        return Schema() if self.params.labels is None else Schema(labels={LABEL: LabelSpec((), "int32")})

    def _check(self, ref: EpisodeRef) -> int | None:
        """The clip's class index (None without labels), after checking its webm and annotation exist."""
        clip = self._clip(ref.key)
        if not clip.is_file():
            listing = f"split file {self.split}" if self.split is not None else f"annotations file {self.annotations}"
            raise EpisodeError(ref.origin, f"clip id {ref.key} is listed in the {listing} but its video {clip} "
                               "does not exist")
        annotations = self._annotations()
        if ref.key not in annotations:
            raise EpisodeError(ref.origin, f"clip id {ref.key} has no entry in the annotations file {self.annotations}")
        classes = self._classes()
        if classes is None:
            return None
        template = annotations[ref.key]
        if template is None:
            raise EpisodeError(ref.origin, f"clip id {ref.key} has no template in the annotations file "
                               f"{self.annotations}, so no class (test.json has none: use labels: null)")
        name = template.replace("[", "").replace("]", "")
        if name not in classes:
            raise EpisodeError(ref.origin, f"clip id {ref.key}: its template {template!r} ({name!r}) is not a class "
                               f"of the labels file {self.labels}")
        return classes[name]

    metadata_bound = "at most: clips shorter than clip_frames are skipped when prepared"

    def metadata_count(self, ref: EpisodeRef) -> int:
        """clip_frames for a listed, annotated clip whose webm exists (its length needs decoding)."""
        self._check(ref)
        return self.params.clip_frames

    def count(self, ref: EpisodeRef) -> int:
        self._check(ref)
        n_raw = count_frames(self._clip(ref.key), self.params.decoder)
        return len(sample_indices(n_raw, self.params.clip_frames, ref.origin))

    def load(self, ref: EpisodeRef, start: int = 0, stop: int | None = None) -> Episode:
        """Samples [start, stop) of the clip (the whole clip is decoded: SSv2 clips are a few seconds)."""
        p = self.params
        if start < 0 or (stop is not None and stop < start):
            raise ValueError(f"{ref.origin}: need 0 <= start <= stop, got start={start}, stop={stop}")
        class_index = self._check(ref)
        got = decode(self._clip(ref.key), slice(None), through=True, decoder=p.decoder)  # (n, H, W, 3)
        picks = sample_indices(got.total, p.clip_frames, ref.origin)
        stop = len(picks) if stop is None else stop
        if stop > len(picks):
            raise EpisodeError(ref.origin, f"asked for kept frames [{start}, {stop}) but clip_frames is {len(picks)}")
        frames = apply_resize(got.frames[picks[start:stop]], p)  # (T, H, W, 3)
        labels = {} if class_index is None else {LABEL: np.full(len(frames), class_index, np.int32)}
        return Episode(key=ref.key, frames=frames, labels=labels)

    def fingerprint(self) -> str:
        """The listed clips' paths, sizes and mtimes, the params, and the bytes of the metadata files."""
        clips = [self._clip(i) for i in self._ids()]
        digest = hashlib.sha256(fingerprint_files(self.params, self.root, clips).encode())
        for path in (self.annotations, self.labels, self.split):
            if path is not None:
                digest.update(f"{path}\0".encode() + hashlib.sha256(Path(path).read_bytes()).digest())
        return digest.hexdigest()
