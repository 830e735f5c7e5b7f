"""Exact IR drop of a small cross-point array: the full resistive network, solved.

The reference for the first-order model of :func:`insitu.io.ir_drop_first_order` (same
geometry, same units, same differential-pair mapping; ``docs/periphery.md``):

* unknowns: the voltage of every row-wire node and every column-wire node, one of each at every
  cross-point ``(i, j)`` (``2 · n_in · n_out`` nodes);
* input line ``i`` is driven with voltage ``x_i`` through one wire segment into its node at
  output line 0; neighbouring nodes of a line are one segment apart; output line ``j`` reaches its
  virtual ground (the integrator input, held at 0 V) through one segment after its node at
  input line ``n_in - 1``. A segment has conductance ``1 / ir_drop``;
* the device at ``(i, j)`` connects the two nodes there with conductance ``G_ij`` (units of the
  conductance of a device at unit weight); a signed weight is a differential pair of two such
  arrays, ``G⁺ = max(w, 0)`` and ``G⁻ = max(-w, 0)``, and the output is ``I⁺ - I⁻``;
* Kirchhoff's current law at every node gives a linear system ``A V = b`` (``A`` the weighted
  Laplacian with the driver and ground segments on its diagonal), solved densely with
  :func:`torch.linalg.solve` in float64, all input vectors at once. Output ``j`` is the current
  through its ground segment.

Two solvers of the same system: ``method="dense"`` builds ``A`` (``(2 n_in n_out)²`` entries) and
solves it with a cubic direct solve, for arrays up to about 32 × 32; ``method="cg"`` never forms
``A``: it applies it on the grid (a few shifted differences per product) inside a conjugate-gradient
iteration (``A`` is symmetric positive definite: a connected network grounded through the driver
and ground segments) with a Jacobi (diagonal) preconditioner, all vectors of the batch at once
with their own step sizes, in float64, until every vector's residual is below ``tol`` times its
right-hand side. Memory ``O(batch · n_in · n_out)``; the iterations grow about as ``n`` (the
condition number of the wire chains grows as ``n²``). ``"auto"`` (the default) takes the dense
solve up to 32 × 32 and CG above. The CG output is the sum of the device currents into each
output line (equal to the ground current at the solution, and less sensitive to the residual:
the ground segment's voltage is ``ir_drop`` times smaller than the currents it carries).
"""

from __future__ import annotations

import torch

__all__ = ["ir_drop_exact"]

METHODS = ("auto", "dense", "cg")
DENSE_MAX_CELLS = 32 * 32


def _solve_one_array(x: torch.Tensor, g: torch.Tensor, ir_drop: float) -> torch.Tensor:
    """Output currents ``(batch, n_out)`` of one array of conductances ``g >= 0`` ``(n_in, n_out)``."""
    n_in, n_out = g.shape
    cells = n_in * n_out
    size = 2 * cells
    g_wire = 1.0 / ir_drop
    dtype, device = g.dtype, g.device
    matrix = torch.zeros(size, size, dtype=dtype, device=device)
    rhs = torch.zeros(size, x.shape[0], dtype=dtype, device=device)

    def row_node(i, j):
        return i * n_out + j

    def column_node(i, j):
        return cells + i * n_out + j

    def connect(a: torch.Tensor, b: torch.Tensor, conductance) -> None:
        conductance = torch.as_tensor(conductance, dtype=dtype, device=device).expand(a.shape)
        matrix.index_put_((a, a), conductance, accumulate=True)
        matrix.index_put_((b, b), conductance, accumulate=True)
        matrix.index_put_((a, b), -conductance, accumulate=True)
        matrix.index_put_((b, a), -conductance, accumulate=True)

    i, j = torch.meshgrid(torch.arange(n_in, device=device), torch.arange(n_out, device=device), indexing="ij")
    i, j = i.reshape(-1), j.reshape(-1)
    connect(row_node(i, j), column_node(i, j), g.reshape(-1))  # the devices
    inner = j < n_out - 1
    connect(row_node(i[inner], j[inner]), row_node(i[inner], j[inner] + 1), g_wire)  # row wires
    inner = i < n_in - 1
    connect(column_node(i[inner], j[inner]), column_node(i[inner] + 1, j[inner]), g_wire)  # column wires
    rows = torch.arange(n_in, device=device)
    drivers = row_node(rows, 0)
    matrix[drivers, drivers] += g_wire  # driver segment to the source x_i
    rhs[drivers] = g_wire * x.t()
    columns = torch.arange(n_out, device=device)
    grounds = column_node(n_in - 1, columns)
    matrix[grounds, grounds] += g_wire  # ground segment to the virtual ground
    voltages = torch.linalg.solve(matrix, rhs)
    return (g_wire * voltages[grounds]).t()


def _wire_chain(v: torch.Tensor, dim: int, end: int) -> torch.Tensor:
    """Currents out of the nodes of chains along ``dim`` with unit-conductance segments between
    neighbours and one more segment from node ``end`` (0 or -1) to 0 V (the driver's source,
    handled in the right-hand side, or the virtual ground)."""
    out = torch.zeros_like(v)
    n = v.shape[dim]
    if n > 1:
        step = v.narrow(dim, 1, n - 1) - v.narrow(dim, 0, n - 1)
        out.narrow(dim, 1, n - 1).add_(step)
        out.narrow(dim, 0, n - 1).sub_(step)
    out.select(dim, end % n).add_(v.select(dim, end % n))
    return out


def _solve_one_array_cg(x: torch.Tensor, g: torch.Tensor, ir_drop: float, tol: float, max_iter: int | None) -> torch.Tensor:
    """As :func:`_solve_one_array`, by preconditioned conjugate gradients on the grid (the system
    multiplied by ``ir_drop``: wire segments of conductance 1, devices ``ir_drop · G``)."""
    n_in, n_out = g.shape
    batch = x.shape[0]
    gr = ir_drop * g  # (n_in, n_out)

    def apply(vr: torch.Tensor, vc: torch.Tensor):
        across = gr * (vr - vc)
        return across + _wire_chain(vr, -1, 0), _wire_chain(vc, -2, -1) - across

    diag_r = gr + _degree(n_out, 0, g).view(1, n_out)
    diag_c = gr + _degree(n_in, -1, g).view(n_in, 1)
    br = torch.zeros(batch, n_in, n_out, dtype=g.dtype, device=g.device)
    br[:, :, 0] = x
    bc = torch.zeros_like(br)
    vr, vc = br.clone(), torch.zeros_like(br)  # start: rows at their driven voltage, columns at 0
    ar, ac = apply(vr, vc)
    rr, rc = br - ar, bc - ac
    zr, zc = rr / diag_r, rc / diag_c
    pr, pc = zr.clone(), zc.clone()
    rz = (rr * zr).sum((1, 2)) + (rc * zc).sum((1, 2))
    target = tol * br.flatten(1).norm(dim=1).clamp(min=torch.finfo(g.dtype).tiny)
    limit = max_iter if max_iter is not None else 50 * (n_in + n_out) + 100
    for _ in range(limit):
        residual = torch.sqrt((rr * rr).sum((1, 2)) + (rc * rc).sum((1, 2)))
        if bool((residual <= target).all()):
            break
        qr, qc = apply(pr, pc)
        pq = (pr * qr).sum((1, 2)) + (pc * qc).sum((1, 2))
        alpha = torch.where(pq > 0, rz / pq.clamp(min=torch.finfo(g.dtype).tiny), torch.zeros_like(pq)).view(-1, 1, 1)
        vr, vc = vr + alpha * pr, vc + alpha * pc
        rr, rc = rr - alpha * qr, rc - alpha * qc
        zr, zc = rr / diag_r, rc / diag_c
        rz_new = (rr * zr).sum((1, 2)) + (rc * zc).sum((1, 2))
        beta = (rz_new / rz.clamp(min=torch.finfo(g.dtype).tiny)).view(-1, 1, 1)
        pr, pc = zr + beta * pr, zc + beta * pc
        rz = rz_new
    else:
        raise RuntimeError(
            f"ir_drop_exact(method='cg') did not converge in {limit} iterations "
            f"(worst relative residual {float((residual / target).max()) * tol:.2e}, tol {tol:.0e})."
        )
    return (g * (vr - vc)).sum(dim=1)  # device currents into each output line: (batch, n_out)


def _degree(n: int, end: int, like: torch.Tensor) -> torch.Tensor:
    """Segments at each node of a chain of ``n`` nodes with one more segment at node ``end``."""
    degree = torch.full((n,), 2.0, dtype=like.dtype, device=like.device)
    degree[0] -= 1
    degree[-1] -= 1
    degree[end % n] += 1
    return degree


def ir_drop_exact(
    x: torch.Tensor, matrix: torch.Tensor, ir_drop: float, method: str = "auto", tol: float = 1e-13, max_iter: int | None = None
) -> torch.Tensor:
    """The output currents of the array ``matrix`` ``(n_in, n_out)`` for inputs ``x``
    ``(batch, n_in)`` with wire segments of resistance ``ir_drop`` (units of the unit-weight
    device resistance); float64. ``ir_drop = 0`` is the ideal ``x @ matrix``.

    ``method``: ``"dense"`` (direct solve of the assembled system), ``"cg"`` (matrix-free
    preconditioned conjugate gradients to a relative residual ``tol``, at most ``max_iter``
    iterations, default ``50 (n_in + n_out) + 100``; raises if not reached) or ``"auto"`` (dense
    up to 32 × 32 cells, CG above)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}.")
    if isinstance(ir_drop, bool) or not isinstance(ir_drop, (int, float)) or not ir_drop >= 0:
        raise ValueError(f"ir_drop must be a number >= 0, got {ir_drop!r}.")
    if x.dim() != 2 or matrix.dim() != 2 or x.shape[1] != matrix.shape[0]:
        raise ValueError(f"expected x (batch, n_in) and matrix (n_in, n_out), got {tuple(x.shape)} and {tuple(matrix.shape)}.")
    x, matrix = x.double(), matrix.double()
    if ir_drop == 0:
        return x @ matrix
    if method == "auto":
        method = "dense" if matrix.numel() <= DENSE_MAX_CELLS else "cg"
    if method == "dense":
        solve = _solve_one_array
    else:
        def solve(x, g, r):
            return _solve_one_array_cg(x, g, r, tol, max_iter)
    return solve(x, matrix.clamp(min=0), ir_drop) - solve(x, (-matrix).clamp(min=0), ir_drop)
