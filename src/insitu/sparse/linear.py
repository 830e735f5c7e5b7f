"""``SparseLinear``: a linear layer that stores and computes only the edges of a fixed pattern.

The weights are one value per edge, shape ``(num_edges,)``, with the connection pattern as
compressed-row (CSR) index tensors. Forward ``y = W x`` and backward ``∂x = Wᵀ δ`` are
sparse-times-dense products, and the weight gradient ``∂W = δ xᵀ`` is computed only at the
edges (a sampled dense-dense product). Memory and arithmetic are therefore proportional to the
number of edges; no ``(out, in)`` matrix is ever formed (Dey et al. 2017: "complexity scales with
Σ|W_i|"). The values are an ordinary ``nn.Parameter`` with an ordinary ``.grad``, so every torch
optimizer trains the layer, and absent connections never exist to change.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .patterns import ConnectionPattern

__all__ = ["SparseLinear"]


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():
        # torch warns once that invariant checks are off; the indices were checked when built.
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


class _SparseMatMul(torch.autograd.Function):
    """``y = x Wᵀ`` for a CSR ``W``; gradients for ``x`` and for the edge values only."""

    @staticmethod
    def forward(ctx, x, values, layer):
        ctx.layer = layer
        ctx.save_for_backward(x, values)
        weight = _csr(layer.crow_indices, layer.col_indices, values, (layer.out_features, layer.in_features))
        return (weight @ x.t()).t()

    @staticmethod
    def backward(ctx, grad_y):
        x, values = ctx.saved_tensors
        layer = ctx.layer
        grad_x = grad_values = None
        if ctx.needs_input_grad[0]:
            # Wᵀ in CSR form: the same edges ordered by input neuron (precomputed permutation).
            weight_t = _csr(
                layer.t_crow_indices, layer.t_col_indices, values[layer.t_permutation],
                (layer.in_features, layer.out_features),
            )
            grad_x = (weight_t @ grad_y.t()).t()
        if ctx.needs_input_grad[1]:
            # ∂L/∂w_e = Σ_b δ[b, row_e] x[b, col_e]: δᵀ x sampled at the edges only.
            sample = _csr(layer.crow_indices, layer.col_indices, torch.zeros_like(values),
                          (layer.out_features, layer.in_features))
            grad_values = torch.sparse.sampled_addmm(
                sample, grad_y.t().contiguous(), x.contiguous(), beta=0.0
            ).values()
        return grad_x, grad_values, None


class SparseLinear(nn.Module):
    """``y = W x + b`` with ``W`` restricted to the edges of a :class:`ConnectionPattern`.

    Args:
        pattern: the junction's edges (``pattern.n_in`` inputs, ``pattern.n_out`` outputs).
        bias: learn an additive bias per output neuron (dense, as in the papers' hardware).
        seed: seed of the initialisation; ``None`` draws from torch's global generator.
        device, dtype: where and how the parameters are stored.

    Shape:
        input ``(*, in_features)``, output ``(*, out_features)``.

    Attributes:
        values: ``(num_edges,)`` weights, in row-major (output neuron, then input neuron) order.
        crow_indices: ``(out_features + 1,)`` CSR row pointers; ``col_indices``: ``(num_edges,)``.
        t_crow_indices, t_col_indices, t_permutation: the same edges as CSR of ``Wᵀ``.

    Initialisation follows ``torch.nn.Linear`` with the fan-in of each output neuron being its
    in-degree (uniform in ``±1/sqrt(d_in)``), so a sparse layer starts with the same output scale
    as a dense one.
    """

    def __init__(
        self,
        pattern: ConnectionPattern,
        bias: bool = True,
        seed: int | None = None,
        device=None,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        if not isinstance(pattern, ConnectionPattern):
            raise TypeError(f"SparseLinear needs a ConnectionPattern (insitu.sparse.make_pattern), got {type(pattern).__name__}.")
        if pattern.has_repeated_edges():
            raise ValueError("SparseLinear: the pattern repeats an edge; every (output, input) pair may appear once.")
        self.in_features = pattern.n_in
        self.out_features = pattern.n_out
        self.pattern_kind = pattern.kind
        device = torch.device("cpu") if device is None else torch.device(device)
        rows = pattern.rows.to(device=device, dtype=torch.long)
        cols = pattern.cols.to(device=device, dtype=torch.long)
        order = torch.argsort(rows * self.in_features + cols)  # CSR needs row-major order
        rows, cols = rows[order], cols[order]
        # int32 indices where they fit: 4 bytes per edge and index instead of 8.
        index_dtype = torch.int32 if max(self.in_features, self.out_features, rows.numel()) < 2**31 - 1 else torch.long
        self.register_buffer("crow_indices", self._pointers(rows, self.out_features).to(index_dtype))
        self.register_buffer("col_indices", cols.to(index_dtype))
        t_order = torch.argsort(cols * self.out_features + rows)
        self.register_buffer("t_crow_indices", self._pointers(cols[t_order], self.in_features).to(index_dtype))
        self.register_buffer("t_col_indices", rows[t_order].to(index_dtype))
        self.register_buffer("t_permutation", t_order.to(index_dtype))
        self.values = nn.Parameter(torch.empty(rows.numel(), device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(self.out_features, device=device, dtype=dtype)) if bias else None
        self.reset_parameters(seed)

    @staticmethod
    def _pointers(sorted_rows: torch.Tensor, n: int) -> torch.Tensor:
        pointers = torch.zeros(n + 1, dtype=torch.long, device=sorted_rows.device)
        pointers[1:] = torch.bincount(sorted_rows, minlength=n).cumsum(0)
        return pointers

    @torch.no_grad()
    def reset_parameters(self, seed: int | None = None) -> None:
        """Uniform in ``±1/sqrt(fan_in)`` per output neuron, ``fan_in`` its in-degree."""
        gen = torch.Generator(device=self.values.device)
        gen.manual_seed(int(torch.randint(0, 2**62, (1,)).item()) if seed is None else int(seed))
        fan_in = self.in_degrees().clamp(min=1).to(self.values.dtype)
        bound_per_row = 1.0 / fan_in.sqrt()
        bound = bound_per_row.repeat_interleave(self.in_degrees())
        self.values.copy_((torch.rand(self.values.shape, generator=gen, device=gen.device, dtype=self.values.dtype) * 2 - 1) * bound)
        if self.bias is not None:
            self.bias.copy_((torch.rand(self.out_features, generator=gen, device=gen.device, dtype=self.bias.dtype) * 2 - 1) * bound_per_row)

    # -- structure ------------------------------------------------------------------------------
    @property
    def num_edges(self) -> int:
        return int(self.values.numel())

    @property
    def density(self) -> float:
        """``num_edges / (in_features · out_features)``."""
        return self.num_edges / (self.in_features * self.out_features)

    def in_degrees(self) -> torch.Tensor:
        """Edges per output neuron, ``(out_features,)``."""
        return (self.crow_indices[1:] - self.crow_indices[:-1]).long()

    def edge_indices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows, cols)`` int64 ``(num_edges,)`` in the order of :attr:`values`."""
        rows = torch.arange(self.out_features, device=self.values.device).repeat_interleave(self.in_degrees())
        return rows, self.col_indices.long()

    def mask(self) -> torch.Tensor:
        """Boolean ``(out_features, in_features)`` adjacency matrix."""
        rows, cols = self.edge_indices()
        mask = torch.zeros(self.out_features, self.in_features, dtype=torch.bool, device=rows.device)
        mask[rows, cols] = True
        return mask

    def dense_weight(self) -> torch.Tensor:
        """The weights as a dense ``(out_features, in_features)`` tensor, zero off the pattern."""
        rows, cols = self.edge_indices()
        weight = torch.zeros(self.out_features, self.in_features, device=rows.device, dtype=self.values.dtype)
        weight[rows, cols] = self.values.detach()
        return weight

    def to_dense(self) -> nn.Linear:
        """An ``nn.Linear`` with the same function (weights zero off the pattern), for checking."""
        layer = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                          device=self.values.device, dtype=self.values.dtype)
        with torch.no_grad():
            layer.weight.copy_(self.dense_weight())
            if self.bias is not None:
                layer.bias.copy_(self.bias)
        return layer

    @classmethod
    def from_dense(cls, linear: nn.Linear, mask: torch.Tensor) -> SparseLinear:
        """The sparse layer holding ``linear``'s weights at the True positions of ``mask`` ``(out, in)``."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_dense needs a torch.nn.Linear, got {type(linear).__name__}.")
        if tuple(mask.shape) != (linear.out_features, linear.in_features) or mask.dtype != torch.bool:
            raise ValueError(
                f"from_dense: mask must be a bool tensor of shape ({linear.out_features}, {linear.in_features}) "
                f"(out_features, in_features), got {mask.dtype} {tuple(mask.shape)}."
            )
        rows, cols = torch.nonzero(mask.cpu(), as_tuple=True)
        pattern = ConnectionPattern(linear.in_features, linear.out_features, rows, cols, "from-mask")
        layer = cls(pattern, bias=linear.bias is not None, seed=0, device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            layer.values.copy_(linear.weight.detach()[mask])  # row-major order, as `values`
            if linear.bias is not None:
                layer.bias.copy_(linear.bias.detach())
        return layer

    # -- compute ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"SparseLinear expected inputs with {self.in_features} features in the last dimension, got shape {tuple(x.shape)}."
            )
        lead = x.shape[:-1]
        y = _SparseMatMul.apply(x.reshape(-1, self.in_features), self.values, self)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, edges={self.num_edges}, "
            f"density={100 * self.density:.2f}%, pattern={self.pattern_kind}, bias={self.bias is not None}"
        )
