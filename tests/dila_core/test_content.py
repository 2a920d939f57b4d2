import copy

import pytest
import torch

from dila_core.content import (
    ContentMemory,
    ContentPathway,
    MemoryConfig,
    NoContent,
    scan,
)
from dila_core.layers import ResidualMLPConfig

# Axes: B batch, T time, h x w grid, d_c content size, W ST-Transformer width.

MEMORY = MemoryConfig(layers=2, d_state=4, d_conv=3, expand=2, mlp_hidden=10)


def make_memory(seed: int = 0, dtype=torch.float32) -> ContentMemory:
    torch.manual_seed(seed)
    return ContentMemory(MEMORY, d_c=8).to(dtype).eval()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_memory_stepwise_equals_full_sequence(dtype):
    memory = make_memory(dtype=dtype)
    c = torch.randn(2, 6, 3, 2, 8, dtype=dtype)
    full = memory(c)
    state = memory.init_state(2, (3, 2), dtype=dtype)
    steps = []
    for t in range(6):
        y, state = memory.step(c[:, t], state)
        steps.append(y)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=tol, atol=tol)


def test_memory_step_does_not_mutate_its_state():
    memory = make_memory(1)
    state = memory.init_state(1, (2, 2))
    with torch.no_grad():
        _, state = memory.step(torch.randn(1, 2, 2, 8), state)
        kept = copy.deepcopy(state)
        memory.step(torch.randn(1, 2, 2, 8), state)
    assert any(s.ssm.abs().max() > 0 for s in state)
    for a, b in zip(state, kept, strict=True):
        assert torch.equal(a.conv, b.conv) and torch.equal(a.ssm, b.ssm)


def test_memory_is_causal_and_per_position():
    memory = make_memory(2)
    c = torch.randn(2, 5, 3, 3, 8)
    changed = c.clone()
    changed[:, 2, 1, 1] += torch.randn_like(changed[:, 2, 1, 1])  # one position of frame 2
    a, b = memory(c), memory(changed)
    torch.testing.assert_close(a[:, :2], b[:, :2], rtol=0, atol=0)
    moved = (a - b).abs().amax(dim=(0, 4)) > 0                                   # (T, h, w)
    assert moved[2:, 1, 1].all()
    moved[:, 1, 1] = False
    assert not moved.any()


def test_memory_parameter_count_matches_the_paper_shape():
    memory = ContentMemory(MemoryConfig(layers=2, d_state=32, d_conv=4, expand=2, mlp_hidden=256), d_c=256)
    # 2 x (Mamba 462,336 + LayerNorm 512) + MLP (LayerNorm 512 + 2 x 65,792): reference ~1.06M
    assert sum(p.numel() for p in memory.parameters()) == 1_057_792


def test_pathway_scan_ends_where_the_full_sequence_ends():
    torch.manual_seed(3)
    pathway = ContentPathway(ResidualMLPConfig(hidden=12, depth=1), MEMORY, width=6, d_c=8).eval()
    assert pathway.context_dims == [8]
    x = torch.randn(2, 4, 3, 3, 6)
    [full] = pathway(x)
    assert full.shape == (2, 4, 3, 3, 8)
    [last], state = scan(pathway, x)
    torch.testing.assert_close(last, full[:, -1], rtol=1e-5, atol=1e-5)
    [nxt], _ = pathway.step(x[:, -1], state)
    [longer] = pathway(torch.cat([x, x[:, -1:]], 1))
    torch.testing.assert_close(nxt, longer[:, -1], rtol=1e-5, atol=1e-5)


def test_no_content_contributes_nothing():
    x = torch.randn(2, 4, 3, 3, 6)
    pathway = NoContent()
    assert pathway.context_dims == [] and pathway(x) == []
    assert scan(pathway, x) == ([], ())
    assert list(pathway.parameters()) == []


def test_memory_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"model\.memory\.d_state = 0 is not allowed: expected an integer >= 1"):
        MemoryConfig(layers=2, d_state=0, d_conv=4, expand=2, mlp_hidden=8).validate("model.memory")
