"""Writing safetensors files whose bytes depend only on their content.

safetensors serialises the string metadata from a hash map, so the same tensors and
metadata saved twice come out with the metadata keys in a different order (even
within one process), and DVC sees a changed output after every re-run. `save` writes
the file with the library, then rewrites its JSON header in place with the metadata
keys sorted: the header holds the same keys and values, so it has the same length
and the tensor data after it does not move.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from safetensors.torch import save_file
from torch import Tensor

_LENGTH = struct.Struct("<Q")  # the header length that opens every safetensors file


def _sorted_header(raw: bytes) -> bytes:
    header = json.loads(raw)
    metadata = header.pop("__metadata__", None)
    ordered = ({"__metadata__": dict(sorted(metadata.items()))} if metadata else {}) | header
    return json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()


def save(path: str | Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> Path:
    """Write `tensors` and `metadata` to `path` atomically, with the metadata keys sorted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    with open(tmp, "r+b") as f:
        (length,) = _LENGTH.unpack(f.read(_LENGTH.size))
        header = _sorted_header(f.read(length))
        if len(header) > length:  # not expected: both write compact JSON of the same keys and values
            raise RuntimeError(f"{tmp}: the sorted safetensors header is longer than the written one")
        f.seek(_LENGTH.size)
        f.write(header + b" " * (length - len(header)))  # the library pads with spaces too
    os.replace(tmp, path)
    return path
