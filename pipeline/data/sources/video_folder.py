"""A folder of video files, one episode per file, without actions.

Videos are found recursively under `path` by extension (case-insensitive; hidden
files and folders, whose names start with ".", are skipped) and ordered by their
path relative to `path`, which is also the episode key.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

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
    fingerprint_files,
    kept_indices,
)
from pipeline.data.sources.video import count_frames, decode, resolve_decoder


@dataclass(frozen=True)
class VideoFolderParams(DatasetParams):
    """extensions: file suffixes that count as videos.
    decoder: "auto" (decord, PyAV where decord cannot read a file), "decord" or "pyav".
    """

    extensions: tuple[str, ...] = (".mp4", ".webm", ".avi", ".mkv", ".mov")
    decoder: Literal["auto", "decord", "pyav"] = "auto"

    def validate(self, where: str) -> None:
        super().validate(where)
        check(self.kind == "video_folder", f"{where}.kind", self.kind, "'video_folder'")
        check(
            len(self.extensions) > 0 and all(e.startswith(".") and len(e) > 1 for e in self.extensions),
            f"{where}.extensions",
            self.extensions,
            'a non-empty list of suffixes such as [".mp4", ".mkv"]',
        )


class VideoFolderSource(Source):
    def __init__(self, params: VideoFolderParams):
        self.params = params
        self.root = Path(params.path)

    def _files(self) -> list[Path]:
        root = self.root
        if not root.exists():
            raise SourceError(f"{root}: video folder does not exist")
        if not root.is_dir():
            raise SourceError(f"{root}: video folder path is not a directory")
        suffixes = {e.lower() for e in self.params.extensions}
        files = [
            p
            for p in root.rglob("*")
            if p.suffix.lower() in suffixes
            and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        ]
        if not files:
            raise SourceError(f"{root}: no video files ({', '.join(sorted(suffixes))}) found in the folder")
        return sorted(files, key=lambda p: p.relative_to(root).as_posix())

    def refs(self) -> list[EpisodeRef]:
        return [EpisodeRef(key=f.relative_to(self.root).as_posix(), origin=str(f)) for f in self._files()]

    def schema(self) -> Schema:
        return Schema()

    def _path(self, ref: EpisodeRef) -> Path:
        return self.root / ref.key

    def decoder_for(self, ref: EpisodeRef) -> str:
        """The decoder ("decord" or "pyav") that reads this episode's file."""
        return resolve_decoder(self._path(ref), self.params.decoder)

    def count(self, ref: EpisodeRef) -> int:
        return len(kept_indices(count_frames(self._path(ref), self.params.decoder), self.params))

    def load(self, ref: EpisodeRef, start: int = 0, stop: int | None = None) -> Episode:
        """Kept frames [start, stop). With stop=None the whole file is decoded (and its
        count checked against the header); otherwise decoding stops at frame `stop`."""
        p = self.params
        if start < 0 or (stop is not None and stop < start):
            raise ValueError(f"{ref.origin}: need 0 <= start <= stop, got start={start}, stop={stop}")
        if stop is not None and p.max_frames is not None and stop > p.max_frames:
            raise EpisodeError(ref.origin, f"asked for kept frames [{start}, {stop}) but max_frames is {p.max_frames}")
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
        return Episode(key=ref.key, frames=apply_resize(got.frames, p))

    def fingerprint(self) -> str:
        return fingerprint_files(self.params, self.root, self._files())
