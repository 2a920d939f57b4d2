"""RECON trajectories (Shah et al. 2021, a Clearpath Jackal outdoors), one HDF5 file per episode.

Files are found recursively under `path` by extension (".hdf5", ".h5"; hidden files and folders
skipped) and ordered by their path relative to `path`, which is also the episode key; `path` may
also name one file. Reading needs the `recon` extra (`pip install -e '.[recon]'`, h5py). Each
file of the RECON release (`recon_release/jackal_<date>_<n>_r<nn>.hdf5`) holds, per time step:

- `images/rgb_left` (T,) fixed-length byte strings (dtype |S<n>), each one JPEG image
  (640x480 RGB); `images/rgb_right` and `images/thermal` are not read.
- `jackal/position` (T, 3) float64, the odometry position (x, y, z) in metres; z is not read.
- `jackal/yaw` (T,) float64, the heading in radians, counter-clockwise from the odometry x axis.

`image_key`, `position_key` and `yaw_key` name these datasets, so other layouts read too: images
may also be (T, H, W, 3) uint8 arrays, or a 1-D dataset of variable-length or opaque bytes in any
format Pillow decodes; positions (T, >= 2), of which x, y are read; yaws (T,) or (T, 1).

Per kept frame t (frame_stride and max_frames applied to the raw time steps):
- frames (T, H, W, 3) uint8 RGB, decoded (then `resize`, if set).
- actions (T, 3) float32 = (dx, dy, dyaw): the motion from kept frame t to kept frame t + 1,
  the world-frame displacement rotated by -yaw_t (dx forward, dy to the left of the robot at t)
  and the yaw change wrapped to (-pi, pi]. The last kept frame of the episode has no next frame
  and gets zeros, so row t goes with frame t as in the other sources; with frame_stride n an
  action spans n raw steps. probe_targets are the actions of every transition (the last row dropped).
- labels: "position" (2,) float64, the raw (x, y); "yaw" () float64, the raw yaw.

The images, position and yaw of a file must have one length ("frame-count mismatch" otherwise).
A file that cannot be opened or read, lacks a configured dataset, or stores odometry that is not
finite at a kept frame is an EpisodeError naming the file; `check_params` checks, before any
episode is read, that the first readable file has the three configured datasets.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

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
    files_under,
    fingerprint_files,
    kept_indices,
    kept_raw,
    raw_slice,
)

try:
    import h5py
except ImportError:  # the optional `recon` extra
    h5py = None

_KEYS = ("image_key", "position_key", "yaw_key")


@dataclass(frozen=True)
class ReconParams(DatasetParams):
    """image_key: the images, (T,) encoded bytes (RECON: JPEG) or (T, H, W, 3) uint8.
    position_key: (T, >= 2) positions, x and y read. yaw_key: (T,) or (T, 1) headings in radians.
    extensions: file suffixes that count as HDF5 files when `path` is a folder.
    """

    image_key: str = "images/rgb_left"
    position_key: str = "jackal/position"
    yaw_key: str = "jackal/yaw"
    extensions: tuple[str, ...] = (".hdf5", ".h5")

    def validate(self, where: str) -> None:
        super().validate(where)
        check(self.kind == "recon_hdf5", f"{where}.kind", self.kind, "'recon_hdf5'")
        for name in _KEYS:
            key = getattr(self, name)
            check(key.strip("/") != "", f"{where}.{name}", key, "a dataset path such as 'images/rgb_left'")
        check(
            len(self.extensions) > 0 and all(e.startswith(".") and len(e) > 1 for e in self.extensions),
            f"{where}.extensions",
            self.extensions,
            'a non-empty list of suffixes such as [".hdf5", ".h5"]',
        )


def wrap_angle(a: np.ndarray) -> np.ndarray:
    """Angles wrapped to (-pi, pi]."""
    return np.pi - np.mod(np.pi - a, 2 * np.pi)


def odometry_actions(xy: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """(dx, dy, dyaw) from each pose of xy (T, 2), yaw (T,) to the next, in the robot's frame at
    the first: (T, 3) float32, the last row zeros."""
    d = np.diff(xy.astype(np.float64), axis=0)                                     # (T-1, 2) world frame
    cos, sin = np.cos(yaw[:-1]), np.sin(yaw[:-1])                                  # (T-1,)
    out = np.zeros((len(xy), 3))
    out[:-1, 0] = cos * d[:, 0] + sin * d[:, 1]                                    # rotated by -yaw_t
    out[:-1, 1] = -sin * d[:, 0] + cos * d[:, 1]
    out[:-1, 2] = wrap_angle(np.diff(yaw.astype(np.float64)))
    return out.astype(np.float32)


def _datasets(f) -> list[str]:
    """Paths of every dataset in an open HDF5 file, sorted."""
    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return sorted(names)


def _encoded(ds) -> bool:
    """Whether dataset `ds` holds one encoded image (bytes) per row rather than pixel arrays."""
    return ds.ndim == 1 and ds.dtype.kind in "SOV"


def _bytes(blob) -> bytes:
    """One stored encoded image as bytes: a fixed-length or variable-length byte string, or an
    opaque or uint8 array."""
    return blob.tobytes() if isinstance(blob, np.ndarray | np.void) else bytes(blob)


class ReconSource(Source):
    def __init__(self, params: ReconParams):
        if h5py is None:
            raise SourceError("the recon_hdf5 source reads HDF5 with h5py, which is not installed: "
                              "pip install -e '.[recon]'")
        self.params = params
        path = Path(params.path)
        self.root = path.parent if path.is_file() else path

    def _files(self) -> list[Path]:
        path = Path(self.params.path)
        if path.is_file():
            return [path]
        return files_under(path, self.params.extensions, "RECON folder (or HDF5 file)", "HDF5")

    def refs(self) -> list[EpisodeRef]:
        return [EpisodeRef(key=f.relative_to(self.root).as_posix(), origin=str(f)) for f in self._files()]

    def schema(self) -> Schema:
        return Schema(action_dim=3, labels={"position": LabelSpec((2,), "float64"), "yaw": LabelSpec((), "float64")})

    def check_params(self, where: str) -> None:
        """The three configured datasets exist in the first file that opens (files that do not open
        are left to `load`, which reports them per episode)."""
        for path in self._files():
            try:
                f = h5py.File(path, "r")
            except OSError:
                continue
            with f:
                have = _datasets(f)
            for name in _KEYS:
                key = getattr(self.params, name)
                check(key.strip("/") in have, f"{where}.{name}", key,
                      f"a dataset of {path} (its datasets: {', '.join(have) or 'none'})")
            return

    def fingerprint(self) -> str:
        return fingerprint_files(self.params, self.root, self._files())

    # ---- episodes ----------------------------------------------------------------

    def _open(self, ref: EpisodeRef):
        try:
            return h5py.File(self.root / ref.key, "r")
        except OSError as err:  # missing, truncated or not HDF5 at all
            raise EpisodeError(ref.origin, f"not a readable HDF5 file ({err})") from err

    def _dataset(self, ref: EpisodeRef, f, key: str):
        if key not in f:
            raise EpisodeError(ref.origin, f"no dataset {key!r} in this file (its datasets: {_datasets(f)})")
        ds = f[key]
        if not isinstance(ds, h5py.Dataset):
            raise EpisodeError(ref.origin, f"{key!r} is a group, expected a dataset")
        return ds

    def _read(self, ref: EpisodeRef, key: str, ds, rows=()) -> np.ndarray:
        try:
            return np.asarray(ds[rows])
        except (OSError, ValueError, TypeError) as err:  # a damaged chunk or filter
            raise EpisodeError(ref.origin, f"cannot read {key}: {err}") from err

    def _layout(self, ref: EpisodeRef, f):
        """The checked image dataset and the odometry, xy (N, 2) and yaw (N,) float64."""
        p = self.params
        images, pos, yaw = (self._dataset(ref, f, getattr(p, name)) for name in _KEYS)
        if not (_encoded(images) or (images.ndim == 4 and images.shape[-1] == 3 and images.dtype == np.uint8)):
            raise EpisodeError(ref.origin, f"{p.image_key} has shape {images.shape} and dtype {images.dtype}, "
                                           "expected (N,) encoded images or (N, H, W, 3) uint8")
        if pos.ndim != 2 or pos.shape[1] < 2 or pos.dtype.kind not in "fiu":
            raise EpisodeError(ref.origin, f"{p.position_key} has shape {pos.shape} and dtype {pos.dtype}, "
                                           "expected numbers of shape (N, 2) or (N, 3)")
        if not (yaw.ndim == 1 or (yaw.ndim == 2 and yaw.shape[1] == 1)) or yaw.dtype.kind not in "fiu":
            raise EpisodeError(ref.origin, f"{p.yaw_key} has shape {yaw.shape} and dtype {yaw.dtype}, "
                                           "expected numbers of shape (N,) or (N, 1)")
        n = images.shape[0]
        if pos.shape[0] != n or yaw.shape[0] != n:
            raise EpisodeError(ref.origin, f"frame-count mismatch: {p.image_key} has {n} images but "
                                           f"{p.position_key} has {pos.shape[0]} rows and {p.yaw_key} {yaw.shape[0]}")
        if n == 0:
            raise EpisodeError(ref.origin, f"{p.image_key} is empty")
        xy = self._read(ref, p.position_key, pos)[:, :2].astype(np.float64)        # (N, 2)
        yaws = self._read(ref, p.yaw_key, yaw).reshape(n).astype(np.float64)       # (N,)
        return images, xy, yaws

    def _frames(self, ref: EpisodeRef, images, raw: np.ndarray) -> np.ndarray:
        """Raw frames `raw` of the image dataset as (T, H, W, 3) uint8."""
        key = self.params.image_key
        data = self._read(ref, key, images, raw_slice(raw, self.params.frame_stride))
        if not _encoded(images):
            return data                                                             # (T, H, W, 3)
        frames = []
        for i, blob in zip(raw, data):
            try:
                with Image.open(io.BytesIO(_bytes(blob))) as img:
                    frames.append(np.asarray(img.convert("RGB")))                   # (H, W, 3)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
                raise EpisodeError(ref.origin, f"{key}[{int(i)}] is not a decodable image ({err})") from err
        sizes = sorted({fr.shape[:2] for fr in frames})
        if len(sizes) > 1:
            raise EpisodeError(ref.origin, f"{key} holds images of {len(sizes)} sizes (height, width): {sizes}")
        return np.stack(frames)                                                     # (T, H, W, 3)

    def metadata_count(self, ref: EpisodeRef) -> int:
        """Kept frames from the HDF5 datasets' shapes (odometry read, no image decoded)."""
        with self._open(ref) as f:
            _, xy, _ = self._layout(ref, f)
        return len(kept_indices(len(xy), self.params))

    def load(self, ref: EpisodeRef, start: int = 0, stop: int | None = None) -> Episode:
        p = self.params
        with self._open(ref) as f:
            images, xy, yaw = self._layout(ref, f)
            raw = kept_raw(len(xy), p, start, stop, ref.origin)
            kept = kept_indices(len(xy), p)
            bad = ~(np.isfinite(xy[kept]).all(axis=1) & np.isfinite(yaw[kept]))
            if bad.any():
                raise EpisodeError(ref.origin, f"non-finite {p.position_key} or {p.yaw_key} at raw frame "
                                               f"{int(kept[bad][0])}")
            pick = raw if len(raw) else kept[:1]  # an empty range still has the frames' size
            frames = apply_resize(self._frames(ref, images, pick), p)[: len(raw)]  # (T, H, W, 3)
        actions = odometry_actions(xy[kept], yaw[kept])[start : start + len(raw)]  # (T, 3)
        labels = {"position": xy[raw], "yaw": yaw[raw]}
        return Episode(key=ref.key, frames=frames, actions=actions, labels=labels)

    # ---- ground truth --------------------------------------------------------------

    def probe_targets(self, actions: np.ndarray | None, labels: dict[str, np.ndarray]) -> np.ndarray | None:
        """The robot-frame motion (dx, dy, dyaw) of every transition: (N, T-1, 3) float64."""
        return None if actions is None else actions[:, :-1].astype(np.float64)
