"""The interface every data source implements, and the errors it raises.

A source yields *episodes*: RGB frames plus optional per-frame actions and labels.
It is read in place; nothing is copied. Sources are deterministic: the same
params give the same episodes, in the same order, with the same frames.

Frame selection (`frame_stride`, `max_frames`) is applied by the source, so
index `i` of an episode always means the i-th *kept* frame.
"""
from __future__ import annotations

import abc
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import check, to_dict


class SourceError(RuntimeError):
    """The source as a whole is unusable (its path does not exist, its layout is wrong)."""


class EpisodeError(RuntimeError):
    """One episode cannot be read. `origin` names the file; `reason` says what is wrong."""

    def __init__(self, origin: str, reason: str):
        super().__init__(f"{origin}: {reason}")
        self.origin = origin
        self.reason = reason


@dataclass(frozen=True)
class DatasetParams:
    """Settings shared by every source kind (one entry of `datasets:` in params.yaml).

    path: what the dataset is read from; DVC tracks it as the prepare stage's
        dependency. For `synthetic` it is the generator module (the generator is the data).
    frame_stride: keep every n-th frame.
    max_frames: keep at most this many frames per episode (after the stride); null = all.
    resize: (height, width) to resize decoded frames to before encoding; null = as decoded.
    strict: stop at the first bad episode instead of skipping it and listing it in the
        failures report.
    """

    kind: str
    path: str
    frame_stride: int = 1
    max_frames: int | None = None
    resize: tuple[int, ...] | None = None
    strict: bool = False

    def validate(self, where: str) -> None:
        check(self.frame_stride >= 1, f"{where}.frame_stride", self.frame_stride, "an integer >= 1")
        check(
            self.max_frames is None or self.max_frames >= 2,
            f"{where}.max_frames",
            self.max_frames,
            "null or an integer >= 2",
        )
        check(
            self.resize is None or (len(self.resize) == 2 and min(self.resize) >= 1),
            f"{where}.resize",
            self.resize,
            "null or [height, width] with both >= 1",
        )


@dataclass(frozen=True)
class EpisodeRef:
    """A cheap handle on one episode.

    key: stable unique id within the source (relative file path, "episode_000012").
    origin: what to name in error messages (a file path, or a description).
    """

    key: str
    origin: str


@dataclass(frozen=True)
class LabelSpec:
    """Shape (after the frame axis) and dtype of one per-frame label array."""

    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class Schema:
    """What a source provides per frame besides pixels (fixed for the whole source)."""

    action_dim: int | None = None  # None: the source has no actions
    labels: dict[str, LabelSpec] = field(default_factory=dict)


@dataclass
class Episode:
    """Frames [start, stop) of one episode, with their actions and labels.

    frames: (T, H, W, 3) uint8 RGB.
    actions: (T, action_dim) float32, or None when the schema has no actions.
    labels: name -> (T, *spec.shape) array, for every label in the schema.
    """

    key: str
    frames: np.ndarray
    actions: np.ndarray | None = None
    labels: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        f = self.frames
        if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8:
            raise ValueError(f"{self.key}: frames must be (T, H, W, 3) uint8, got {f.shape} {f.dtype}")
        for name, arr in [("actions", self.actions), *self.labels.items()]:
            if arr is not None and len(arr) != len(f):
                raise ValueError(f"{self.key}: {name} has {len(arr)} rows for {len(f)} frames")


class Source(abc.ABC):
    """A dataset read in place. Subclasses take their params dataclass in `__init__`."""

    params: DatasetParams

    @abc.abstractmethod
    def refs(self) -> list[EpisodeRef]:
        """All episodes, in a deterministic order. Raises SourceError if the source is unusable."""

    @abc.abstractmethod
    def schema(self) -> Schema:
        """Actions and labels every episode carries."""

    @abc.abstractmethod
    def load(self, ref: EpisodeRef, start: int = 0, stop: int | None = None) -> Episode:
        """Kept frames [start, stop) of one episode (stride and max_frames applied).

        Raises EpisodeError naming `ref.origin` when the episode is unreadable, empty,
        truncated, or has fewer kept frames than `stop`.
        """

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """A hex digest that changes whenever the episodes would change (paths, sizes,
        mtimes, or generator params); recorded in the store's attributes."""

    def count(self, ref: EpisodeRef) -> int:
        """Number of kept frames, checked by reading the whole episode once.

        Sources whose frame count is cheap and trustworthy may override this.
        """
        return len(self.load(ref).frames)

    # Counting from metadata alone (`dila dry-run`): no frame is decoded.
    metadata_bound = ""  # what a metadata count is when it is not exact (e.g. "at most: ...")

    def metadata_count(self, ref: EpisodeRef) -> int | None:
        """Kept frames of `ref` from metadata, the generator's params or the source's own index,
        without decoding a frame; None where only decoding can tell (the default)."""
        return None

    def frame_size(self, ref: EpisodeRef) -> tuple[int, int]:
        """(height, width) of the episode's frames as `load` returns them (read from its first frame)."""
        return tuple(int(n) for n in self.load(ref, 0, 1).frames.shape[1:3])

    def check_params(self, where: str) -> None:
        """Raise ParamsError (naming `where`.key) for a param that names something the data does not
        have, before any episode is read. Sources whose params name nothing in the data keep this."""

    def notes(self, where: str) -> list[str]:
        """One-line notes for the user about defaults (params they did not set) that this data could
        meet only in part, e.g. a default label it lacks and that is skipped; `where` is the
        dataset's params key. Empty for most sources."""
        return []

    # -- ground truth: what the source knows about its episodes beyond the frames ----------------
    # Evaluation asks these instead of knowing any source's internals. The defaults know only
    # the stored actions.

    def probe_targets(self, actions: np.ndarray | None, labels: dict[str, np.ndarray]) -> np.ndarray | None:
        """The true action of every transition of clips with stored `actions` (N, T, a) and `labels`
        {name: (N, T, ...)}: (N, T-1, a'), or None when the source has none."""
        return None if actions is None else actions[:, :-1]

    def object_targets(self, targets: np.ndarray,
                       labels: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
        """The probe targets (N, T-1, a) of clips with `labels` split per object: (targets (N, T-1,
        K, a / K), present (N, T-1, K) bool), or None where the source has one undivided target."""
        return None

    def translation_dims(self, n_dims: int) -> tuple[int, ...]:
        """Which of the `n_dims` probe-target dimensions are image-plane translations (empty: unknown)."""
        return ()

    def motion_names(self) -> tuple[str, ...]:
        """Names of the motion-family ids in labels["motion"] (empty: the source has no families)."""
        return ()

    def counterfactuals(self) -> Counterfactuals | None:
        """A renderer of what-if clips (another appearance under a clip's motion), or None."""
        return None

    def simulator_at(self, ref: EpisodeRef, frame: int):
        """A simulator (`pipeline.planning.simulators.Simulator`) in the exact state of kept frame
        `frame` of `ref`, one step per kept transition, or None where the source does not run one
        (the synthetic renderer's is in `pipeline.planning.latent.simulator_at`)."""
        return None


class Counterfactuals(abc.ABC):
    """Renders clips that never happened, from the labels of real ones (each {name: (T, ...)})."""

    @abc.abstractmethod
    def compatible(self, a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
        """Whether clip b's appearance can be rendered under clip a's motion (the same scene layout)."""

    @abc.abstractmethod
    def render(self, look: dict[str, np.ndarray], motion: dict[str, np.ndarray],
               start: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Frames (T, H, W, 3) uint8, as `load` gives them, of `look`'s appearance moving as `motion`
        moves: at motion's poses, or (with `start`) by motion's pose changes from start's first pose."""


def kept_indices(n_raw: int, params: DatasetParams) -> np.ndarray:
    """Raw frame indices kept by `frame_stride` and `max_frames` from an episode of n_raw frames."""
    idx = np.arange(0, n_raw, params.frame_stride)
    if params.max_frames is not None:
        idx = idx[: params.max_frames]
    return idx


def apply_resize(frames: np.ndarray, params: DatasetParams) -> np.ndarray:
    """Frames resized to `params.resize` (antialiased bilinear; identical for every decoder)."""
    if params.resize is None or tuple(frames.shape[1:3]) == tuple(params.resize):
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # (T, 3, H, W)
    x = F.interpolate(x, size=tuple(params.resize), mode="bilinear", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def kept_raw(n_raw: int, params: DatasetParams, start: int, stop: int | None, origin: str) -> np.ndarray:
    """Raw indices of kept frames [start, stop) of an episode with n_raw raw frames.

    stop=None means all kept frames from `start`. A range past the last kept frame is
    an EpisodeError naming `origin`.
    """
    kept = kept_indices(n_raw, params)
    stop = len(kept) if stop is None else stop
    if start < 0 or stop < start:
        raise ValueError(f"{origin}: need 0 <= start <= stop, got start={start}, stop={stop}")
    if stop > len(kept):
        raise EpisodeError(origin, f"asked for kept frames [{start}, {stop}) but the episode has {len(kept)}")
    return kept[start:stop]


def raw_slice(raw: np.ndarray, stride: int) -> slice:
    """The raw indices `raw` (an arithmetic progression with step `stride`) as a slice."""
    if len(raw) == 0:
        return slice(0, 0, stride)
    return slice(int(raw[0]), int(raw[-1]) + 1, stride)


def files_under(root: Path, extensions: Sequence[str], folder: str, kind: str) -> list[Path]:
    """The files below folder `root` whose suffix is one of `extensions` (case-insensitive),
    hidden files and folders (names starting with ".") skipped, ordered by their path relative
    to `root` (the episode key of the folder sources). A missing folder, a path that is not one,
    or no such file is a SourceError naming `root` (`folder`: what it is, `kind`: of the files)."""
    if not root.exists():
        raise SourceError(f"{root}: {folder} does not exist")
    if not root.is_dir():
        raise SourceError(f"{root}: {folder} is not a directory")
    suffixes = {e.lower() for e in extensions}
    files = [p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    if not files:
        raise SourceError(f"{root}: no {kind} files ({', '.join(sorted(suffixes))}) found in the folder")
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def fingerprint_files(params: DatasetParams, root: Path, files: Sequence[Path], contents=lambda p: False) -> str:
    """sha256 over the params and each file's path relative to `root`, size and mtime
    (and its bytes where `contents(path)` is true). A missing file is recorded as missing."""
    digest = hashlib.sha256(json.dumps(to_dict(params), sort_keys=True).encode())
    for f in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        rel = f.relative_to(root).as_posix()
        try:
            st = f.stat()
        except FileNotFoundError:
            digest.update(f"{rel}\0missing\n".encode())
            continue
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        if contents(f):
            digest.update(f.read_bytes())
    return digest.hexdigest()
