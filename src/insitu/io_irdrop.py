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

Dense: ``(2 n_in n_out)²`` entries and a cubic solve, meant for arrays up to about 32 × 32.
"""

from __future__ import annotations

import torch

__all__ = ["ir_drop_exact"]


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


def ir_drop_exact(x: torch.Tensor, matrix: torch.Tensor, ir_drop: float) -> torch.Tensor:
    """The output currents of the array ``matrix`` ``(n_in, n_out)`` for inputs ``x``
    ``(batch, n_in)`` with wire segments of resistance ``ir_drop`` (units of the unit-weight
    device resistance); float64. ``ir_drop = 0`` is the ideal ``x @ matrix``."""
    if isinstance(ir_drop, bool) or not isinstance(ir_drop, (int, float)) or not ir_drop >= 0:
        raise ValueError(f"ir_drop must be a number >= 0, got {ir_drop!r}.")
    if x.dim() != 2 or matrix.dim() != 2 or x.shape[1] != matrix.shape[0]:
        raise ValueError(f"expected x (batch, n_in) and matrix (n_in, n_out), got {tuple(x.shape)} and {tuple(matrix.shape)}.")
    x, matrix = x.double(), matrix.double()
    if ir_drop == 0:
        return x @ matrix
    return _solve_one_array(x, matrix.clamp(min=0), ir_drop) - _solve_one_array(x, (-matrix).clamp(min=0), ir_drop)
