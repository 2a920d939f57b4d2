"""Test media: tiny videos, a Push-T replay buffer and LeRobot datasets (v2.x, v3.0).

Plain functions, no pytest dependency. Frames are flat colours from
`frame_color(index, salt)`, distinct from frame to frame, so a decoded frame's
mean colour tells which frame it is even after lossy coding (`closest_index`).
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

_CODEC_BY_SUFFIX = {".mp4": "libx264", ".mkv": "mpeg4", ".avi": "mpeg4", ".webm": "libvpx", ".mov": "libx264"}
COLOR_TOLERANCE = 10.0  # max abs difference of a decoded frame's mean colour per channel


def frame_color(index: int, salt: int = 0) -> tuple[int, int, int]:
    """RGB colour of frame `index` (salt separates videos or cameras); channels in [40, 215]."""
    return (
        40 + (index * 47 + salt * 13) % 176,
        40 + (index * 89 + salt * 61) % 176,
        40 + (index * 29 + salt * 101) % 176,
    )


def color_frames(indices: Sequence[int] | int, size: tuple[int, int] = (32, 32), salt: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8 flat frames coloured by `frame_color`."""
    indices = range(indices) if isinstance(indices, int) else indices
    out = np.empty((len(indices), *size, 3), np.uint8)
    for k, i in enumerate(indices):
        out[k] = frame_color(i, salt)
    return out


def mean_colors(frames: np.ndarray) -> np.ndarray:
    """(T, 3) mean RGB of each frame."""
    return frames.reshape(len(frames), -1, 3).mean(axis=1)


def expected_colors(indices: Sequence[int], salt: int = 0) -> np.ndarray:
    return np.array([frame_color(i, salt) for i in indices], dtype=np.float64)


def closest_index(frame: np.ndarray, candidates: Sequence[int], salt: int = 0) -> int:
    """The candidate index whose colour is nearest to the frame's mean colour."""
    dist = np.abs(expected_colors(candidates, salt) - mean_colors(frame[None])[0]).max(axis=1)
    return int(candidates[int(dist.argmin())])


def write_video(
    path: str | os.PathLike, frames: np.ndarray, fps: int = 10, codec: str | None = None, gop: int | None = None
) -> Path:
    """Encode (T, H, W, 3) uint8 RGB frames with PyAV; codec from the suffix unless given.

    mp4 files are written with the index (moov) first, like streamable files.
    gop: frames between keyframes (None: the codec's default).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = codec or _CODEC_BY_SUFFIX[path.suffix.lower()]
    options = {"movflags": "faststart"} if path.suffix.lower() in (".mp4", ".mov") else {}
    height, width = frames.shape[1:3]
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = gop
        if codec == "libx264":
            stream.options = {"crf": "10"}
        else:
            stream.bit_rate = 2_000_000
        container.start_encoding()
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_zero_frame_video(path: str | os.PathLike, size: tuple[int, int] = (32, 32)) -> Path:
    """A valid container with a video stream (where the format keeps one) and no frames."""
    return write_video(path, np.zeros((0, *size, 3), np.uint8))


def write_empty_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write_corrupt_video(path: str | os.PathLike, n_bytes: int = 4096, seed: int = 0) -> Path:
    """Random bytes under a video file name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, n_bytes, dtype=np.uint8).tobytes())
    return path


def write_truncated_video(
    path: str | os.PathLike, frames: np.ndarray, keep: int, fps: int = 10, mid_packet: bool = False
) -> Path:
    """A real mp4 (header first, declaring all frames) cut at the start of packet `keep`.

    With mid_packet=True the cut falls halfway through that packet instead, leaving
    a partial packet at the end of the file.
    """
    path = Path(path)
    write_video(path, frames, fps=fps, codec="libx264")
    with av.open(str(path)) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    pos, size = packets[keep]
    cut = pos + size // 2 if mid_packet else pos
    path.write_bytes(path.read_bytes()[:cut])
    return path


@dataclass(frozen=True)
class VideoSpec:
    """One written video: relative path, frame count and colour salt."""

    rel: str
    n_frames: int
    salt: int


def make_video_folder(
    root: str | os.PathLike,
    n: int = 3,
    frames: int = 12,
    size: tuple[int, int] = (32, 32),
    suffixes: Sequence[str] = (".mp4", ".mkv", ".avi"),
    fps: int = 10,
) -> list[VideoSpec]:
    """`n` videos in `root` and nested folders (video i has frames + i frames, salt i),
    plus a non-video file. Returned sorted by relative path (the source's order)."""
    root = Path(root)
    specs = []
    for i in range(n):
        folder = ["", "sub", "sub/deeper"][i % 3]
        rel = str(Path(folder) / f"clip_{i:02d}{suffixes[i % len(suffixes)]}")
        write_video(root / rel, color_frames(frames + i, size, salt=i), fps=fps)
        specs.append(VideoSpec(rel=Path(rel).as_posix(), n_frames=frames + i, salt=i))
    (root / "notes.txt").write_text("not a video\n")
    return sorted(specs, key=lambda s: s.rel)


def make_pusht_zarr(
    path: str | os.PathLike, episode_lengths: Sequence[int] = (5, 7, 4), size: int = 16, seed: int = 0
) -> dict[str, np.ndarray]:
    """A diffusion-policy replay buffer (Zarr v2): same keys and dtypes as Push-T.

    Images are float32 in [0, 255] with fractional parts (the source rounds them),
    plus three out-of-range values in the first pixel (-2, 255.6, 300) that the source
    clips; action row g is (g, -g/2) so rows identify frames. Returns what was written.
    """
    import zarr

    rng = np.random.default_rng(seed)
    n = int(sum(episode_lengths))
    g = np.arange(n, dtype=np.float32)
    img = rng.uniform(0, 255, (n, size, size, 3)).astype(np.float32)
    img[0, 0, 0] = (-2.0, 255.6, 300.0)
    arrays = {
        "data/img": img,
        "data/action": np.stack([g, -g / 2], axis=1).astype(np.float32),
        "data/state": (g[:, None] * 10 + np.arange(5, dtype=np.float32)).astype(np.float32),
        "data/keypoint": (g[:, None, None] + np.zeros((9, 2), np.float32)).astype(np.float32),
        "data/n_contacts": rng.integers(0, 3, (n, 1)).astype(np.float32),
        "meta/episode_ends": np.cumsum(episode_lengths).astype(np.int64),
    }
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    for key, value in arrays.items():
        group, name = key.split("/")
        chunks = (max(1, min(len(value), 3)),) + value.shape[1:] if group == "data" else value.shape
        grp = root.require_group(group)
        grp.create_array(name, shape=value.shape, dtype=value.dtype, chunks=chunks)[...] = value
    return arrays


@dataclass(frozen=True)
class LeRobotFixture:
    """What a LeRobot fixture holds: per-episode actions/states (parquet rows) and the
    global frame indices whose colours (salt = camera position) each episode's video shows."""

    root: Path
    cameras: tuple[str, ...]
    actions: list[np.ndarray]
    states: list[np.ndarray]
    frame_ids: list[np.ndarray]


def _episode_tables(episode_lengths, action_dim, state_dim):
    actions, states, offset = [], [], 0
    for length in episode_lengths:
        g = np.arange(offset, offset + length, dtype=np.float32)
        actions.append(np.stack([g + 0.25 * k for k in range(action_dim)], axis=1).astype(np.float32))
        states.append(np.stack([-g - k for k in range(state_dim)], axis=1).astype(np.float32))
        offset += length
    return actions, states


def _info(version, fps, size, cameras, action_dim, state_dim, lengths, data_path, video_path, action="action",
          state="observation.state") -> dict:
    video_info = {"video.fps": fps, "video.codec": "h264", "video.pix_fmt": "yuv420p"}
    features = {
        cam: {"dtype": "video", "shape": [*size, 3], "names": ["height", "width", "channel"], "info": video_info}
        for cam in cameras
    }
    features[state] = {"dtype": "float32", "shape": [state_dim], "names": None}
    features[action] = {"dtype": "float32", "shape": [action_dim], "names": None}
    scalars = [("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
               ("index", "int64"), ("task_index", "int64")]
    for name, dtype in scalars:
        features[name] = {"dtype": dtype, "shape": [1], "names": None}
    return {
        "codebase_version": version,
        "robot_type": "test",
        "total_episodes": len(lengths),
        "total_frames": int(sum(lengths)),
        "total_tasks": 1,
        "chunks_size": 1000,
        "fps": fps,
        "splits": {"train": f"0:{len(lengths)}"},
        "data_path": data_path,
        "video_path": video_path,
        "features": features,
    }


def _data_table(episode_index: int, first_row: int, actions: np.ndarray, states: np.ndarray, fps: int,
                action: str = "action", state: str = "observation.state"):
    import pyarrow as pa

    n, action_dim = actions.shape
    return pa.table({
        action: pa.FixedSizeListArray.from_arrays(pa.array(actions.reshape(-1)), action_dim),
        state: pa.array(list(states), type=pa.list_(pa.float32())),
        "timestamp": pa.array(np.arange(n, dtype=np.float32) / fps),
        "frame_index": pa.array(np.arange(n, dtype=np.int64)),
        "episode_index": pa.array(np.full(n, episode_index, np.int64)),
        "index": pa.array(np.arange(first_row, first_row + n, dtype=np.int64)),
        "task_index": pa.array(np.zeros(n, np.int64)),
    })


def make_lerobot_v2(
    root: str | os.PathLike,
    episode_lengths: Sequence[int] = (6, 9, 5),
    size: tuple[int, int] = (32, 32),
    fps: int = 10,
    cameras: Sequence[str] = ("observation.images.top", "observation.images.wrist"),
    version: str = "v2.1",
    action_dim: int = 2,
    state_dim: int = 3,
    video_lengths: Sequence[int] | None = None,
    state: str = "observation.state",
) -> LeRobotFixture:
    """A LeRobot v2.x folder: one parquet per episode, one mp4 per episode per camera.

    video_lengths (default: the episode lengths) lets a video hold a different number
    of frames than its parquet has rows. Episode e's video shows the colours of its
    global row indices (salt = camera position). state: the name of the state feature
    and column (some datasets call it `state`).
    """
    import pyarrow.parquet as pq

    root = Path(root)
    video_lengths = list(video_lengths or episode_lengths)
    data_path = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
    video_path = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
    info = _info(version, fps, size, cameras, action_dim, state_dim, episode_lengths, data_path, video_path,
                 state=state)
    _write_json(root / "meta" / "info.json", info)
    actions, states = _episode_tables(episode_lengths, action_dim, state_dim)
    episodes, frame_ids, offset = [], [], 0
    for e, length in enumerate(episode_lengths):
        out = root / data_path.format(episode_chunk=0, episode_index=e)
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_data_table(e, offset, actions[e], states[e], fps, state=state), out)
        ids = np.arange(offset, offset + video_lengths[e])
        for c, cam in enumerate(cameras):
            write_video(root / video_path.format(episode_chunk=0, video_key=cam, episode_index=e),
                        color_frames(ids, size, salt=c), fps=fps)
        frame_ids.append(ids)
        episodes.append({"episode_index": e, "tasks": ["push the block"], "length": int(length)})
        offset += length
    (root / "meta" / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in episodes))
    (root / "meta" / "tasks.jsonl").write_text(json.dumps({"task_index": 0, "task": "push the block"}) + "\n")
    return LeRobotFixture(root, tuple(cameras), actions, states, frame_ids)


def make_lerobot_v3(
    root: str | os.PathLike,
    episode_lengths: Sequence[int] = (6, 9, 5),
    size: tuple[int, int] = (32, 32),
    fps: int = 10,
    cameras: Sequence[str] = ("observation.images.top", "observation.images.wrist"),
    episodes_per_file: int = 2,
    action_dim: int = 2,
    state_dim: int = 3,
    video_lengths: Sequence[int] | None = None,
    action: str = "action",
    inclusive_to: bool = False,
    state: str = "observation.state",
) -> LeRobotFixture:
    """A LeRobot v3.0 folder: episodes concatenated `episodes_per_file` at a time into
    data/chunk-000/file-XXX.parquet and videos/<camera>/chunk-000/file-XXX.mp4, with
    per-episode rows (row range, file indices, from/to timestamps) in
    meta/episodes/chunk-000/file-XXX.parquet.

    action, state: the names of the action and state features and columns. inclusive_to: store each
    episode's to_timestamp as the time of its last frame, as some published datasets
    do, instead of one frame interval past it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    video_lengths = list(video_lengths or episode_lengths)
    data_path = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    video_path = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    info = _info("v3.0", fps, size, cameras, action_dim, state_dim, episode_lengths, data_path, video_path, action,
                 state)
    _write_json(root / "meta" / "info.json", info)
    actions, states = _episode_tables(episode_lengths, action_dim, state_dim)
    starts = np.concatenate([[0], np.cumsum(episode_lengths)]).astype(int)
    frame_ids = [np.arange(starts[e], starts[e] + video_lengths[e]) for e in range(len(episode_lengths))]
    for f, first in enumerate(range(0, len(episode_lengths), episodes_per_file)):
        members = list(range(first, min(first + episodes_per_file, len(episode_lengths))))
        tables = [_data_table(e, int(starts[e]), actions[e], states[e], fps, action, state) for e in members]
        out = root / data_path.format(chunk_index=0, file_index=f)
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(tables), out)
        ids = np.concatenate([frame_ids[e] for e in members])
        for c, cam in enumerate(cameras):
            write_video(root / video_path.format(video_key=cam, chunk_index=0, file_index=f),
                        color_frames(ids, size, salt=c), fps=fps)
        rows, t = [], 0.0
        for e in members:
            duration = (video_lengths[e] - inclusive_to) / fps
            rows.append(_episode_row(e, f, episode_lengths[e], int(starts[e]), cameras, t, duration))
            t += video_lengths[e] / fps
        meta_out = root / "meta" / "episodes" / "chunk-000" / f"file-{f:03d}.parquet"
        meta_out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), meta_out)
    pq.write_table(pa.table({"task_index": [0], "task": ["push the block"]}), root / "meta" / "tasks.parquet")
    return LeRobotFixture(root, tuple(cameras), actions, states, frame_ids)


def _episode_row(e, file_index, length, first_row, cameras, from_s, duration_s) -> dict:
    """One row of a v3 meta/episodes table (every file in chunk 0)."""
    row = {
        "episode_index": e,
        "tasks": ["push the block"],
        "length": int(length),
        "data/chunk_index": 0,
        "data/file_index": file_index,
        "dataset_from_index": first_row,
        "dataset_to_index": first_row + int(length),
        "meta/episodes/chunk_index": 0,
        "meta/episodes/file_index": file_index,
    }
    for cam in cameras:
        row[f"videos/{cam}/chunk_index"] = 0
        row[f"videos/{cam}/file_index"] = file_index
        row[f"videos/{cam}/from_timestamp"] = from_s
        row[f"videos/{cam}/to_timestamp"] = from_s + duration_s
    return row


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
