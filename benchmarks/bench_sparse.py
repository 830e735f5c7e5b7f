"""Training-step time and memory of SparseLinear against a dense layer, one CPU thread; prints JSON.

For a ``N -> N`` layer at densities 50%, 10% and 2% (structured patterns, ``d_out = ρ·N``) and
for a dense ``nn.Linear`` and a masked dense layer (``W ⊙ M``, the usual way to emulate pre-defined
sparsity), at batch sizes 1 and 64, it measures:

* ``step_ms``: median time of forward + backward + SGD step over ``--repeats`` blocks;
* ``stored_bytes``: parameters, their gradients and buffers (indices, mask);
* ``saved_for_backward_bytes``: tensors autograd keeps between forward and backward, other
  than the layer's own parameters and buffers (``torch.autograd.graph.saved_tensors_hooks``).

The machine's load average is recorded: timings on a shared machine are only indicative.

Usage: ``python benchmarks/bench_sparse.py [--features 1024] [--repeats 7] > out.json``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch
from torch import nn

from insitu.sparse import SparseLinear, make_pattern


class MaskedLinear(nn.Module):
    """Dense weights multiplied by a fixed 0/1 mask in every forward (the masked baseline)."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.linear = nn.Linear(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.to(torch.float32))

    def forward(self, x):
        return nn.functional.linear(x, self.linear.weight * self.mask, self.linear.bias)


def _stored_bytes(module: nn.Module) -> int:
    tensors = list(module.parameters()) + [p.grad for p in module.parameters() if p.grad is not None] + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def _saved_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the tensors autograd saves, not counting the parameters and buffers themselves
    (saving those is a reference, not a copy)."""
    own = {t.untyped_storage().data_ptr() for t in list(module.parameters()) + list(module.buffers())}
    seen: dict[int, int] = {}

    def pack(t):
        if t.layout == torch.strided and t.untyped_storage().data_ptr() not in own:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x).sum().backward()
    return sum(seen.values())


def _time_step(module: nn.Module, x: torch.Tensor, repeats: int) -> float:
    opt = torch.optim.SGD(module.parameters(), lr=1e-3)
    target = torch.randn(x.shape[0], module(x).shape[1])

    def step():
        opt.zero_grad(set_to_none=True)
        ((module(x) - target) ** 2).mean().backward()
        opt.step()

    for _ in range(5):
        step()
    # enough steps per block for ~50 ms, then the median over blocks
    start = time.perf_counter()
    step()
    per = max(time.perf_counter() - start, 1e-6)
    n = max(3, int(0.05 / per))
    blocks = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            step()
        blocks.append((time.perf_counter() - start) / n)
    return 1e3 * statistics.median(blocks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    n = args.features
    gen = torch.Generator().manual_seed(0)
    rows = []
    for batch in (1, 64):
        # a hidden layer: the input needs its gradient too
        x = torch.rand(batch, n, generator=gen).requires_grad_(True)
        torch.manual_seed(0)
        dense = nn.Linear(n, n)
        rows.append({"layer": "dense nn.Linear", "density": 1.0, "batch": batch, "edges": n * n,
                     "step_ms": _time_step(dense, x, args.repeats), "saved_for_backward_bytes": _saved_bytes(dense, x),
                     "stored_bytes": _stored_bytes(dense)})
        for density in (0.5, 0.1, 0.02):
            pattern = make_pattern(n, n, max(1, round(density * n)), seed=0)
            for name, layer in (("SparseLinear", SparseLinear(pattern, seed=0)), ("masked dense", MaskedLinear(pattern.to_mask()))):
                rows.append({"layer": name, "density": pattern.density, "batch": batch, "edges": pattern.num_edges,
                             "step_ms": _time_step(layer, x, args.repeats), "saved_for_backward_bytes": _saved_bytes(layer, x),
                             "stored_bytes": _stored_bytes(layer)})
    print(json.dumps({
        "benchmark": "bench_sparse",
        "features": n,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "load_average_1min": os.getloadavg()[0],
        "results": rows,
    }, indent=2))


if __name__ == "__main__":
    main()
