"""Error of the first-order IR-drop model against the exact network solve; prints JSON.

For square arrays of ``--sizes`` (default 4, 8, 16, 32, 64) and ``ir_drop`` values (default 1e-5 ...
1e-2), with weights uniform in ``[-1, 1]`` (a differential pair per weight, as in
:func:`insitu.io.ir_drop_first_order`) and ``--batch`` input vectors uniform in ``[-1, 1]``, all
in float64, it reports:

* ``ideal_rel``: ``||y_ideal - y_exact|| / ||y_exact||``, the size of the IR-drop effect itself;
* ``first_order_rel``: ``||y_first - y_exact|| / ||y_exact||``, the error the first-order model
  leaves;
* ``unexplained``: ``||y_first - y_exact|| / ||y_ideal - y_exact||``, the fraction of the effect
  the first-order model misses;
* ``r_n2``: ``ir_drop · n²``, the expansion parameter (the row drop at the far end is of order
  ``ir_drop · n² · mean(G x)``);
* ``exact_s``: seconds of the exact solve (both arrays of the pair);
* ``solver``: ``"dense"`` (direct solve, up to 32 × 32) or ``"cg"`` (conjugate gradients to a
  relative residual of 1e-13, above; it agrees with the dense solve to about 1e-12 at 16 × 16 and
  32 × 32, ``tests/test_io_effects.py``).

Norms are over all outputs of all vectors. Deterministic (seed 0); one thread.

Usage: ``python benchmarks/bench_irdrop.py [--sizes 4 8 16 32 64] [--batch 16] > out.json``
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from insitu.io import ir_drop_first_order
from insitu.io_irdrop import DENSE_MAX_CELLS, ir_drop_exact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    parser.add_argument("--ir-drops", type=float, nargs="+", default=[1e-5, 1e-4, 1e-3, 1e-2])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(args.seed)
    rows = []
    for n in args.sizes:
        x = 2 * torch.rand(args.batch, n, generator=generator, dtype=torch.float64) - 1
        w = 2 * torch.rand(n, n, generator=generator, dtype=torch.float64) - 1
        ideal = x @ w
        for r in args.ir_drops:
            start = time.perf_counter()
            exact = ir_drop_exact(x, w, r)
            seconds = time.perf_counter() - start
            first = ir_drop_first_order(x, w, r)
            effect = (ideal - exact).norm().item()
            rows.append({
                "n": n,
                "ir_drop": r,
                "r_n2": r * n * n,
                "ideal_rel": effect / exact.norm().item(),
                "first_order_rel": (first - exact).norm().item() / exact.norm().item(),
                "unexplained": (first - exact).norm().item() / effect,
                "exact_s": round(seconds, 3),
                "solver": "dense" if n * n <= DENSE_MAX_CELLS else "cg",
            })
    result = {
        "benchmark": "ir_drop first order vs exact",
        "weights": "uniform [-1, 1], differential pair",
        "inputs": "uniform [-1, 1]",
        "batch": args.batch,
        "seed": args.seed,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "rows": rows,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
