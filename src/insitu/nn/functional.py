"""Functional analog layers: the autograd bridge every analog layer computes through.

:func:`analog_linear` is the analog counterpart of :func:`torch.nn.functional.linear`: it sends
its input through a tile's forward pass ``y = W x`` (with the tile's forward IO: noise, bounds,
quantisation, management), routes the backward pass through the tile's ``z = Wᵀ δ`` (backward
IO), and stashes each ``(x, δ)`` pair on the tile so that :class:`~insitu.optim.AnalogSGD`
applies the rank-1 updates ``W += -η δ xᵀ`` in place (Gokmen & Vlasov 2016, Fig. 1). The
weight never receives a ``.grad``, as on the hardware.

:class:`~insitu.nn.AnalogLinear`, the convolutions (one call per tile on the unrolled patches)
and the recurrent layers (one call per time step on ``[x_t, h_{t-1}]``) all compute with it.
"""

from __future__ import annotations

import torch

__all__ = ["analog_linear"]


class _AnalogMatMul(torch.autograd.Function):
    """Autograd bridge: forward and backward run on the tile; the weight gets no gradient.

    The weight is an input only so that autograd calls ``backward`` even when ``x`` needs no
    gradient (the first layer); ``backward`` stashes ``(x, δ)`` on the tile for the update.
    """

    @staticmethod
    def forward(ctx, x, weight, tile, bias_column):
        ctx.tile = tile
        ctx.bias_column = bias_column
        if bias_column:
            # Appended here rather than before the call: one autograd node less per layer and
            # step (a batch-1 step is dominated by such per-operation costs); by the tile where
            # it can append it inside its product.
            append = getattr(tile, "forward_with_bias_column", None)
            if append is not None:
                y, x = append(x)
                ctx.save_for_backward(x)
                return y
            x = torch.nn.functional.pad(x, (0, 1), value=1.0)
        ctx.save_for_backward(x)
        return tile.forward(x)

    @staticmethod
    def backward(ctx, d):
        (x,) = ctx.saved_tensors
        tile = ctx.tile
        tile.stash(x, d)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = tile.backward(d)
            if ctx.bias_column:  # the constant input has no gradient to pass on
                grad_x = grad_x[..., :-1]
        return grad_x, None, None, None


def analog_linear(x: torch.Tensor, tile, bias: torch.Tensor | None = None, *, bias_column: bool = False) -> torch.Tensor:
    """``y = W x (+ bias)`` on ``tile``, differentiable with respect to ``x`` (and ``bias``).

    Args:
        x: inputs ``(*, in_features)``; for a :class:`~insitu.replicas.ReplicatedTile` with ``R``
            replicas ``(R, *, in_features)`` (replica first).
        tile: an :class:`~insitu.tile.AnalogTile` (or any tile with ``forward``, ``backward``,
            ``stash`` and a ``weight`` parameter) of ``out_features × in_features`` devices, or a
            :class:`~insitu.mapping.GridTile` (a layer over several tiles: each sub-tile computes
            its partial product, the partials are summed digitally, forward and backward).
        bias: an optional digital bias, added after the array (broadcast against ``(*, out)``;
            with replicas ``(R, 1, out)``); it gets an ordinary gradient.
        bias_column: the tile's last input column is a bias on the array: ``x`` has one feature
            less (``in_features - 1``), and the constant input 1 is appended to every row (it is
            part of the stashed ``x``, so the update trains the bias column; it gets no
            gradient). ``False``: ``x`` has all ``in_features`` (append the 1 yourself).

    Returns:
        ``(*, out_features)`` (with replicas ``(R, *, out_features)``).

    Every row of ``x`` is one analog matrix-vector product with its own noise; in backward every
    row of ``δ`` is one product with the transposed array, and the pair ``(x, δ)`` is stashed on
    the tile, so the next :meth:`AnalogSGD.step() <insitu.optim.AnalogSGD.step>` applies one
    rank-1 update per row (or the tile's batched/summed update mode).

    Raises:
        ValueError: the last dimension of ``x`` is not the tile's ``in_features`` (or, with
            replicas, the first is not the number of replicas).
    """
    width = tile.in_features - 1 if bias_column else tile.in_features
    grid = getattr(tile, "grid", None)
    if grid is not None and grid.n_tiles > 1:
        if bias_column:
            x = torch.nn.functional.pad(x, (0, 1), value=1.0)
        return _grid_linear(x, tile, bias)
    replicas = getattr(tile, "replicas", None)
    if x.dim() < 1 or x.shape[-1] != width:
        what = f"{width} inputs and a bias column" if bias_column else f"{width} inputs (in_features)"
        raise ValueError(
            f"analog_linear: the tile has {what} but x has shape {tuple(x.shape)}; "
            f"the last dimension of x must be {width}."
        )
    lead = x.shape[:-1]
    # Reshaped only when needed: a reshape to the same shape is still an operation and an
    # autograd node each way.
    if replicas is not None:
        if x.dim() < 2 or x.shape[0] != replicas:
            raise ValueError(
                f"analog_linear: a tile with {replicas} replicas expects x of shape (replicas={replicas}, ..., {width}), "
                f"got {tuple(x.shape)}."
            )
        x2 = x if x.dim() == 3 else x.reshape(replicas, -1, width)
    else:
        x2 = x if x.dim() == 2 else x.reshape(-1, width)
    weight = tile.weight
    if not hasattr(weight, "_insitu_tile"):
        tile._link_parameter()  # a deep copy loses the link between parameter and tile
    y = _AnalogMatMul.apply(x2, weight, tile, bias_column)
    if bias is not None:
        y = y + bias
    return y if x2 is x else y.reshape(*lead, tile.out_features)


def _grid_linear(x: torch.Tensor, grid_tile, bias: torch.Tensor | None) -> torch.Tensor:
    """:func:`analog_linear` over a :class:`~insitu.mapping.GridTile`.

    Tile ``(i, j)`` gets input block ``x_j`` and returns its analog partial ``W_ij x_j``; output
    block ``i`` is the digital sum over ``j``. Autograd then sends each tile the block ``δ_i`` of
    its output block, the tile stashes its own ``(x_j, δ_i)`` and returns ``W_ijᵀ δ_i``, and the
    input gradient of block ``j`` is the digital sum of those partials over ``i``.
    """
    grid = grid_tile.grid
    width = grid_tile.in_features
    if x.dim() < 1 or x.shape[-1] != width:
        raise ValueError(
            f"analog_linear: the tile has {width} inputs (in_features) but x has shape {tuple(x.shape)}; "
            f"the last dimension of x must be {width}."
        )
    lead = x.shape[:-1]
    x2 = x.reshape(-1, width)
    blocks = [x2[:, cs] for cs in grid.col_slices]
    outputs = []
    for i in range(grid.n_row_blocks):
        partial = None
        for j, xj in enumerate(blocks):
            tile = grid_tile.tile_at(i, j)
            if not hasattr(tile.weight, "_insitu_tile"):
                tile._link_parameter()
            y = _AnalogMatMul.apply(xj, tile.weight, tile, False)
            partial = y if partial is None else partial + y
        outputs.append(partial)
    y = torch.cat(outputs, dim=-1)
    if bias is not None:
        y = y + bias
    return y.reshape(*lead, grid_tile.out_features)
