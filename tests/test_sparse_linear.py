"""SparseLinear: equal to the masked dense layer, memory proportional to edges, trains, converts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from insitu.sparse import PatternConfig, SparseLinear, make_pattern


def _pair(kind="structured", n_in=48, n_out=16, d_out=4, seed=0, dtype=torch.float64):
    z = 8 if kind == "clash-free" else None
    pattern = make_pattern(n_in, n_out, d_out, PatternConfig(kind, z=z), seed=seed)
    sparse = SparseLinear(pattern, seed=seed, dtype=dtype)
    dense = sparse.to_dense()
    return sparse, dense, pattern.to_mask()


@pytest.mark.parametrize("kind", ["structured", "clash-free", "random"])
def test_outputs_and_gradients_equal_masked_dense(kind):
    sparse, dense, mask = _pair(kind)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, 3, 48, generator=gen, dtype=torch.float64)
    target = torch.randn(5, 3, 16, generator=gen, dtype=torch.float64)
    x_sparse = x.clone().requires_grad_(True)
    x_dense = x.clone().requires_grad_(True)
    loss_s = ((sparse(x_sparse) - target) ** 2).sum()
    loss_d = ((dense(x_dense) - target) ** 2).sum()
    torch.testing.assert_close(loss_s, loss_d)
    loss_s.backward()
    loss_d.backward()
    torch.testing.assert_close(x_sparse.grad, x_dense.grad)
    rows, cols = sparse.edge_indices()
    torch.testing.assert_close(sparse.values.grad, dense.weight.grad[rows, cols])
    torch.testing.assert_close(sparse.bias.grad, dense.bias.grad)
    # the dense gradient off the pattern is what masking throws away
    assert dense.weight.grad[~mask].abs().sum() > 0


def test_gradcheck():
    sparse, _, _ = _pair(n_in=12, n_out=6, d_out=2)
    x = torch.randn(3, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp, v: torch.nn.functional.linear(inp, torch.zeros(6, 12, dtype=torch.float64)) + sparse(inp), (x, sparse.values))


def test_from_dense_round_trip_and_training_matches_masked_dense():
    torch.manual_seed(0)
    dense = nn.Linear(30, 20, dtype=torch.float64)
    mask = make_pattern(30, 20, 6, seed=2).to_mask()
    with torch.no_grad():
        dense.weight.mul_(mask)
    sparse = SparseLinear.from_dense(dense, mask)
    torch.testing.assert_close(sparse.dense_weight(), dense.weight.detach())
    assert torch.equal(sparse.mask(), mask)
    # Three Adam steps: the sparse layer equals a dense layer re-masked after every step.
    opt_s = torch.optim.Adam(sparse.parameters(), lr=0.01)
    opt_d = torch.optim.Adam(dense.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(5)
    for _ in range(3):
        x = torch.randn(8, 30, generator=gen, dtype=torch.float64)
        for layer, opt in ((sparse, opt_s), (dense, opt_d)):
            opt.zero_grad()
            (layer(x).tanh().sum()).backward()
            opt.step()
        with torch.no_grad():
            dense.weight.mul_(mask)
    torch.testing.assert_close(sparse.dense_weight(), dense.weight.detach())


def test_density_and_repr():
    sparse, _, _ = _pair(n_in=800, n_out=100, d_out=10, dtype=torch.float32)
    assert sparse.num_edges == 8000
    assert sparse.density == pytest.approx(0.1)
    assert "density=10.00%" in repr(sparse)


def _stored_bytes(module):
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def test_memory_scales_with_edges_not_with_the_dense_size():
    sizes = {}
    for d_out in (5, 10, 20, 40):
        layer = SparseLinear(make_pattern(2000, 200, d_out, seed=0), bias=False)
        sizes[d_out] = _stored_bytes(layer)
        assert not any(t.numel() >= 2000 * 200 for t in list(layer.parameters()) + list(layer.buffers()))
    # bytes = a·edges + b (index pointers): doubling the edges adds the same amount each time
    assert sizes[10] - sizes[5] == pytest.approx((sizes[20] - sizes[10]) / 2)
    assert sizes[40] - sizes[20] == 2 * (sizes[20] - sizes[10])
    per_edge = (sizes[40] - sizes[20]) / (2000 * 20)
    assert per_edge <= 16  # a float32 value and three int32 indices per edge
    dense_bytes = 2000 * 200 * 4
    # 2.5% density: 16 bytes per edge against 4 per dense weight, about a tenth (plus pointers)
    assert sizes[5] < 0.11 * dense_bytes


def test_bad_inputs():
    layer = SparseLinear(make_pattern(10, 5, 1, seed=0))
    with pytest.raises(ValueError, match="expected inputs with 10 features"):
        layer(torch.zeros(2, 11))
    with pytest.raises(TypeError, match="ConnectionPattern"):
        SparseLinear(torch.zeros(5, 10, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be a bool tensor of shape"):
        SparseLinear.from_dense(nn.Linear(10, 5), torch.ones(10, 5, dtype=torch.bool))


def test_seed_fixes_initialisation():
    pattern = make_pattern(20, 10, 2, seed=0)
    a, b, c = SparseLinear(pattern, seed=1), SparseLinear(pattern, seed=1), SparseLinear(pattern, seed=2)
    assert torch.equal(a.values, b.values) and not torch.equal(a.values, c.values)
    assert a.values.abs().max() <= 1 / (20 * 2 / 10) ** 0.5
