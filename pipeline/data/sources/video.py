"""Video decoding for the raw-video sources.

decord is tried first; PyAV reads every file decord cannot open (or all files when
decord is not importable). `decoder="decord"` or `"pyav"` forces one. Under
`"auto"` the choice is made once per file (by whether decord opens it and sees
frames) and cached, so within one environment a file is always read by the same
decoder.

Frames are selected by *raw index* (0 = first decoded frame), either in the whole
file or in a time window `[start_s, stop_s)` of it (LeRobot v3 stores many
episodes back to back in one file). A frame belongs to a window when its
presentation time `t` satisfies `start_s - h <= t < stop_s - h`, with `h` half a
frame interval, so rounded timestamps still fall on the intended side.

Every problem with a file (missing, 0 bytes, unreadable, corrupt, truncated, no
frames, a header frame count that disagrees with what decodes, frames of changing
size) raises `EpisodeError(origin=str(path), reason=...)`.

decord's native code logs its complaints ("ERROR opening: ...") straight to file
descriptor 2, past Python and its log level; every decord call runs with that
descriptor redirected (`captured_stderr`), and what it wrote becomes part of the
reason when the call fails, so it reaches the failures report and never the terminal.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from pipeline.data.sources.base import EpisodeError, SourceError
from pipeline.data.sources.native import captured_stderr

DECODERS = ("auto", "decord", "pyav")
_BATCH = 32  # frames per decord get_batch call
_DEFAULT_HALF_FRAME = 1e-3  # seconds, when a stream reports no frame rate


@dataclass(frozen=True)
class TimeWindow:
    """Presentation times [start_s, stop_s) in seconds."""

    start_s: float
    stop_s: float


@dataclass(frozen=True)
class Decoded:
    """Frames picked from a file or window.

    frames: (K, H, W, 3) uint8 RGB, in increasing raw-index order.
    total: number of frames decoded in the file (or window) when it was read
        through to its end; None when decoding stopped after the last picked frame.
    decoder: "decord" or "pyav".
    """

    frames: np.ndarray
    total: int | None
    decoder: str


@dataclass(frozen=True)
class _Pick:
    """Raw indices to keep: range(start, stop, step), or an explicit set."""

    start: int = 0
    stop: int | None = None
    step: int = 1
    explicit: frozenset[int] | None = None

    @classmethod
    def of(cls, frames: slice | Sequence[int]) -> _Pick:
        if isinstance(frames, slice):
            start, stop, step = frames.start or 0, frames.stop, frames.step or 1
            if start < 0 or step < 1 or (stop is not None and stop < 0):
                raise ValueError(f"frame slice must be non-negative with step >= 1, got {frames}")
            return cls(start, stop, step)
        idx = frozenset(int(i) for i in frames)
        if idx and min(idx) < 0:
            raise ValueError(f"frame indices must be >= 0, got {min(idx)}")
        return cls(explicit=idx)

    def contains(self, i: int) -> bool:
        if self.explicit is not None:
            return i in self.explicit
        return i >= self.start and (self.stop is None or i < self.stop) and (i - self.start) % self.step == 0

    @property
    def last(self) -> int | None:
        """Largest index that can be picked (None: unbounded)."""
        if self.explicit is not None:
            return max(self.explicit, default=-1)
        return None if self.stop is None else self.stop - 1

    def within(self, n: int) -> list[int]:
        if self.explicit is not None:
            return sorted(i for i in self.explicit if i < n)
        return list(range(*slice(self.start, self.stop, self.step).indices(n)))


def _check_file(path: Path) -> None:
    if not path.exists():
        raise EpisodeError(str(path), "video file does not exist")
    if not path.is_file():
        raise EpisodeError(str(path), "video path is not a regular file")
    if path.stat().st_size == 0:
        raise EpisodeError(str(path), "video file is empty (0 bytes)")


@functools.cache
def _decord():
    """The decord module, or None when it cannot be imported."""
    try:
        module = importlib.import_module("decord")
    except (ImportError, OSError):
        return None
    module.logging.set_level(module.logging.QUIET)
    return module


class _DecordFailed(RuntimeError):
    """A decord call failed; the message is what decord logged natively, else its exception's text."""


@contextlib.contextmanager
def _decord_call() -> Iterator[None]:
    native: list[str] = []
    try:
        with captured_stderr(native):
            yield
    except Exception as err:  # DECORDError, RuntimeError, IndexError from the native side
        lines = [_NATIVE_PREFIX.sub("", ln) for ln in native]
        raise _DecordFailed("; ".join(lines) or _first_line(err)) from err


def _decord_reader(path: Path):
    """A decord VideoReader; a failure is a _DecordFailed naming decord's reason."""
    decord = _decord()
    if decord is None:
        raise SourceError("decoder 'decord' was requested but the decord package cannot be imported")
    with _decord_call():
        return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)


def _decord_open(path: Path):
    try:
        return _decord_reader(path)
    except SourceError:
        raise
    except Exception as err:  # decord raises DECORDError / RuntimeError without a common base
        raise EpisodeError(str(path), _decord_failure(path, err)) from err


def _decord_failure(path: Path, err: Exception) -> str:
    """Why decord cannot open `path`: PyAV's reason when PyAV finds the file broken too
    (it names the problem more clearly), else decord's own complaint."""
    try:
        _, total, _ = _pyav_decode(path, _Pick.of([]), None, through=True)
        _check_total(path, total)
    except EpisodeError as pyav_err:
        return pyav_err.reason
    return f"decord cannot read this file ({_first_line(err)}); PyAV can: use decoder 'auto' or 'pyav'"


_NATIVE_PREFIX = re.compile(r"^\[[\d:]+\] \S+:\d+: ")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return _NATIVE_PREFIX.sub("", text[0]) if text else type(err).__name__


@functools.lru_cache(maxsize=1024)
def _auto_choice(path: str, size: int, mtime_ns: int) -> str:
    if _decord() is None:
        return "pyav"
    try:
        return "decord" if len(_decord_reader(Path(path))) > 0 else "pyav"
    except Exception:  # whatever decord cannot open goes to PyAV
        return "pyav"


def resolve_decoder(path: str | os.PathLike, decoder: str = "auto") -> str:
    """The decoder ("decord" or "pyav") that reads `path` under the given choice."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    path = Path(path)
    _check_file(path)
    if decoder != "auto":
        return decoder
    st = path.stat()
    return _auto_choice(str(path.resolve()), st.st_size, st.st_mtime_ns)


def _pyav_open(path: Path):
    try:
        container = av.open(str(path))
    except av.error.EOFError as err:
        reason = f"the container ends before any video data (no frames): {_first_line(err)}"
        raise EpisodeError(str(path), reason) from err
    except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise EpisodeError(str(path), f"cannot open the video (PyAV): {_first_line(err)}") from err
    if not container.streams.video:
        container.close()
        raise EpisodeError(str(path), "the container holds no video stream (no frames)")
    return container


def _half_frame(rate) -> float:
    return 0.5 / float(rate) if rate else _DEFAULT_HALF_FRAME


def header_frame_count(path: str | os.PathLike) -> int:
    """Frame count the container header declares (0 when it declares none)."""
    path = Path(path)
    _check_file(path)
    with _pyav_open(path) as container:
        return int(container.streams.video[0].frames)


def _pyav_window_frames(container, stream, window: TimeWindow | None, seek: bool) -> Iterator:
    """Decoded av.VideoFrames of the whole stream, or of `window` only."""
    if window is None:
        yield from container.decode(stream)
        return
    half = _half_frame(stream.average_rate or stream.guessed_rate)
    lo, hi = window.start_s - half, window.stop_s - half
    if seek and lo > 0:
        container.seek(int(lo / stream.time_base), stream=stream, backward=True, any_frame=False)
    first = True
    for frame in container.decode(stream):
        t = frame.time
        if t is None:
            raise EpisodeError(container.name, "a frame has no timestamp; cannot select a time range")
        if first and seek and lo > 0 and t > lo:
            raise _Overshoot()
        first = False
        if t < lo:
            continue
        if t >= hi:
            return
        yield frame


class _Overshoot(Exception):
    """Seeking landed after the window start; decode from the beginning instead."""


def _pyav_decode(path: Path, pick: _Pick, window: TimeWindow | None, through: bool, seek: bool = True):
    picked: dict[int, np.ndarray] = {}
    n = 0
    with _pyav_open(path) as container:
        stream = container.streams.video[0]
        if not through and pick.last == -1:
            return picked, None, (stream.height, stream.width)
        try:
            for frame in _pyav_window_frames(container, stream, window, seek):
                if pick.contains(n):
                    picked[n] = frame.to_ndarray(format="rgb24")
                n += 1
                if not through and pick.last is not None and n > pick.last:
                    return picked, None, (stream.height, stream.width)
        except _Overshoot:
            return _pyav_decode(path, pick, window, through, seek=False)
        except av.FFmpegError as err:
            raise EpisodeError(
                str(path), f"corrupt or truncated video: decoding failed after {n} frame(s) (PyAV: {_first_line(err)})"
            ) from err
        return picked, n, (stream.height, stream.width)


def _decord_decode(path: Path, pick: _Pick, window: TimeWindow | None, through: bool):
    reader = _decord_open(path)
    try:
        with _decord_call():
            picked, n_order, shape = _decord_frames(reader, pick, window, through)
    except _DecordFailed as err:
        raise EpisodeError(str(path), f"corrupt or truncated video (decord): {err}") from err
    if shape is None:
        shape = next(iter(picked.values())).shape[:2] if picked else (0, 0)
    return picked, (n_order if through else None), shape


def _decord_frames(reader, pick: _Pick, window: TimeWindow | None, through: bool):
    """The picked frames of the file (or window), the number of frames in it, and the frame size when
    no frame was picked (None otherwise)."""
    n_all = len(reader)
    order = np.arange(n_all)
    if window is not None and n_all:
        times = reader.get_frame_timestamp(order)[:, 0]
        half = _half_frame(reader.get_avg_fps())
        order = order[(times >= window.start_s - half) & (times < window.stop_s - half)]
    wanted = pick.within(len(order))
    todo = list(range(len(order))) if through else wanted
    wanted_set = set(wanted)
    picked: dict[int, np.ndarray] = {}
    for b in range(0, len(todo), _BATCH):
        batch = todo[b : b + _BATCH]
        arr = reader.get_batch(order[batch].tolist()).asnumpy()
        picked.update((i, arr[k]) for k, i in enumerate(batch) if i in wanted_set)
    shape = reader[0].shape[:2] if n_all and not picked else None
    return picked, len(order), shape


def decode(
    path: str | os.PathLike,
    frames: slice | Sequence[int] = slice(None),
    *,
    window: TimeWindow | None = None,
    through: bool = True,
    decoder: str = "auto",
) -> Decoded:
    """Frames at raw indices `frames` of the file (or of `window`), as (K, H, W, 3) uint8.

    through=True decodes to the end of the file (window) and reports `total`; for a
    whole file it also checks the count against the container header
    ("frame-count mismatch") and rejects files with no frames. through=False stops
    after the last picked index. Indices past the end are simply not returned:
    callers compare len(frames) with what they asked for.
    """
    path = Path(path)
    pick = _Pick.of(frames)
    used = resolve_decoder(path, decoder)
    run = _decord_decode if used == "decord" else _pyav_decode
    picked, total, (height, width) = run(path, pick, window, through)
    if through and window is None:
        _check_total(path, total)
    sizes = sorted({frame.shape[:2] for frame in picked.values()})
    if len(sizes) > 1:
        shown = ", ".join(f"{h}x{w}" for h, w in sizes)
        raise EpisodeError(str(path), f"the frame size changes inside the video ({shown}, height x width)")
    if picked:
        out = np.stack([picked[i] for i in sorted(picked)])
    else:
        out = np.zeros((0, height, width, 3), np.uint8)
    return Decoded(frames=np.ascontiguousarray(out, dtype=np.uint8), total=total, decoder=used)


def _check_total(path: Path, total: int) -> None:
    if total == 0:
        raise EpisodeError(str(path), "the video contains no decodable frames")
    try:
        header = header_frame_count(path)
    except EpisodeError:  # decord read it but PyAV cannot parse the header: nothing to compare
        header = 0
    if header and header != total:
        raise EpisodeError(
            str(path), f"frame-count mismatch: the container header says {header} frames but {total} decode"
        )


def count_frames(path: str | os.PathLike, decoder: str = "auto") -> int:
    """Exact number of frames, by decoding the whole file (checked against the header)."""
    return decode(path, [], through=True, decoder=decoder).total


def read_frames(path: str | os.PathLike, indices: Sequence[int], decoder: str = "auto") -> np.ndarray:
    """Frames at `indices` (any order, repeats allowed), shape (len(indices), H, W, 3) uint8.

    Decoding stops after the largest index; an index past the end is an EpisodeError.
    """
    indices = [int(i) for i in indices]
    got = decode(path, indices, through=False, decoder=decoder)
    unique = sorted(set(indices))
    if len(got.frames) != len(unique):
        missing = unique[len(got.frames)]
        raise EpisodeError(str(path), f"frame {missing} was requested but the video ends before it")
    position = {i: k for k, i in enumerate(unique)}
    return got.frames[[position[i] for i in indices]]
