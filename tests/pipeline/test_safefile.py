"""Safetensors files with sorted metadata: the same content always gives the same bytes."""
from __future__ import annotations

import json
import struct

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from pipeline import safefile

TENSORS = {"b.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "a.bias": torch.ones(4, dtype=torch.bfloat16),
           "c.count": torch.tensor([7], dtype=torch.int64)}
META = {"step": "12", "format": "x/1", "config": json.dumps({"é": [1, 2]}), "zeta": "z", "alpha": "a\n\"quoted\""}


def header(path) -> dict:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n])


def plain_save(path) -> bytes:
    save_file(TENSORS, str(path), metadata=META)
    return path.read_bytes()


def test_library_order_varies_and_ours_does_not(tmp_path):
    plain = [plain_save(tmp_path / f"plain{i}.safetensors") for i in range(6)]
    assert len(set(plain)) > 1  # what this module is for: the library's key order changes from save to save
    ours = [safefile.save(tmp_path / f"ours{i}.safetensors", TENSORS, META).read_bytes() for i in range(6)]
    assert len(set(ours)) == 1
    assert list(header(tmp_path / "ours0.safetensors")["__metadata__"]) == sorted(META)
    assert len(ours[0]) == len(plain[0])  # same header length: the tensor data did not move
    assert not (tmp_path / "ours0.safetensors.tmp").exists()


def test_the_file_reads_back_exactly(tmp_path):
    path = safefile.save(tmp_path / "sub" / "x.safetensors", TENSORS, META)
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == META
        assert sorted(f.keys()) == sorted(TENSORS)
        for name, value in TENSORS.items():
            got = f.get_tensor(name)
            assert got.dtype == value.dtype and torch.equal(got, value)
