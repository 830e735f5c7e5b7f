"""The analog matrix-vector product with its periphery in one compiled (numba) call, for small
batches on the CPU.

At batch 1 the product of :func:`insitu.io.analog_mvm` is one matrix-vector product and four
small tensor operations (input clip, output noise drawn and added, output clip), each a few
microseconds of dispatch: about as much again as the product. :func:`compiled_mvm` does the same
arithmetic in one call (Gokmen & Vlasov 2016, Fig. 1: bounded inputs, additive Gaussian output
noise, bounded outputs), for the IO settings it covers (:func:`covers`); every other setting, and
every larger batch (where a BLAS product wins), stays on :func:`~insitu.io.analog_mvm`, the
reference.

Its output noise comes from the tile's own compiled-kernel stream (the scalar xoshiro256**
stream of ``tile.pulse_rng``, :mod:`insitu.update.kernels.rng`) instead of the tile's
``torch.Generator``: same distribution, other draws; same seed, same run.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .update.kernels import get_backend

__all__ = ["MAX_BATCH", "covers", "covers_io", "covers_tensors", "io_numbers", "compiled_mvm", "ProductPlan"]

MAX_BATCH = 4  # larger batches: the torch path (a BLAS matrix product beats these loops)

_KERNELS: dict = {}


def covers(io, x: torch.Tensor, matrix: torch.Tensor) -> bool:
    """Whether :func:`compiled_mvm` computes ``analog_mvm(x, ·, io)`` for these tensors: the IO
    part (:func:`covers_io`) and the tensors' (:func:`covers_tensors`)."""
    return covers_io(io) and covers_tensors(x, matrix)


def covers_io(io) -> bool:
    """IO with at most an input bound, scalar additive output noise and an output bound (no
    quantisation, no input or weight noise, no IR drop, no noise asymmetry, no noise or bound
    management, no per-replica values)."""
    if io.is_perfect:
        return False
    return (
        io.inp_bits is None and io.out_bits is None and not torch.is_tensor(io.out_noise) and not torch.is_tensor(io.inp_noise)
        and io.inp_noise == 0 and io.w_noise == 0 and io.ir_drop == 0 and io.out_noise_asymmetry == 0
        and io.noise_management == "none" and io.bound_management == "none"
        and not torch.is_tensor(io.inp_bound) and not torch.is_tensor(io.out_bound)
    )


def covers_tensors(x: torch.Tensor, matrix: torch.Tensor) -> bool:
    """float32 CPU tensors, ``x`` ``(batch <= MAX_BATCH, n)``."""
    return (
        x.dim() == 2 and x.shape[0] <= MAX_BATCH and x.dtype == torch.float32 and matrix.dtype == torch.float32
        and x.device.type == "cpu" and matrix.device.type == "cpu"
    )


def _kernels():
    if not _KERNELS:
        from numba import njit

        from .update.kernels.rng import fill_normals

        @njit(nogil=True, fastmath=True)
        def forward(x, w, inp_bound, out_noise, out_bound, s, spare):
            """``out[b] = clip(w @ clip(x[b]) + out_noise ξ)``: ``w`` ``(n_out, n_in)`` row by row
            (each output one contiguous dot product)."""
            batch, n_in = x.shape
            n_out = w.shape[0]
            out = np.empty((batch, n_out), dtype=np.float32)
            clipped = np.empty(n_in, dtype=np.float32)
            noise = np.zeros(n_out)
            for b in range(batch):
                for i in range(n_in):
                    clipped[i] = min(max(x[b, i], -inp_bound), inp_bound)
                if out_noise > 0.0:
                    fill_normals(noise, s, spare)
                for j in range(n_out):
                    acc = np.float32(0.0)
                    for i in range(n_in):
                        acc += w[j, i] * clipped[i]
                    out[b, j] = min(max(acc + out_noise * noise[j], -out_bound), out_bound)
            return out

        @njit(nogil=True, fastmath=True)
        def backward(d, w, inp_bound, out_noise, out_bound, s, spare):
            """``out[b] = clip(w.T @ clip(d[b]) + out_noise ξ)``: the rows of ``w`` ``(n_out, n_in)``
            accumulated (contiguous rows, no transposed copy)."""
            batch, n_out = d.shape
            n_in = w.shape[1]
            out = np.empty((batch, n_in), dtype=np.float32)
            acc = np.empty(n_in, dtype=np.float32)
            noise = np.zeros(n_in)
            for b in range(batch):
                acc[:] = 0.0
                for j in range(n_out):
                    dj = np.float32(min(max(d[b, j], -inp_bound), inp_bound))
                    if dj != 0.0:
                        for i in range(n_in):
                            acc[i] += w[j, i] * dj
                if out_noise > 0.0:
                    fill_normals(noise, s, spare)
                for i in range(n_in):
                    out[b, i] = min(max(acc[i] + out_noise * noise[i], -out_bound), out_bound)
            return out

        _KERNELS["forward"] = forward
        _KERNELS["backward"] = backward
    return _KERNELS


def io_numbers(io) -> tuple[float, float, float]:
    """``(inp_bound, out_noise, out_bound)`` of ``io`` as the kernels take them (no bound: inf)."""
    inp_bound = math.inf if io.inp_bound is None else float(io.inp_bound)
    out_bound = math.inf if io.out_bound is None else float(io.out_bound)
    return inp_bound, float(io.out_noise), out_bound


def compiled_mvm(x: torch.Tensor, weights: np.ndarray, numbers, transposed: bool, stream) -> torch.Tensor:
    """The analog product of :func:`insitu.io.analog_mvm` where :func:`covers` holds.

    Args:
        x: inputs ``(batch, n)``: ``n = in`` for the forward pass, ``n = out`` for the backward.
        weights: the array ``(out, in)`` as stored, a C-contiguous float32 numpy view (never
            transposed: the backward pass reads it row by row).
        numbers: :func:`io_numbers` of the direction's IO settings.
        transposed: ``False`` for ``y = W x`` (forward), ``True`` for ``z = Wᵀ δ`` (backward).
        stream: ``(words, spare)``, numpy views of the tile's compiled-kernel generator state.

    Returns:
        ``(batch, out)`` forward, ``(batch, in)`` backward, float32.
    """
    kernel = _kernels()["backward" if transposed else "forward"]
    xs = x.detach()
    if not xs.is_contiguous():
        xs = xs.contiguous()
    return torch.from_numpy(kernel(xs.numpy(), weights, *numbers, *stream))


class ProductPlan:
    """:func:`compiled_mvm` for one plain tile (no cell, no write noise, one device per weight),
    with what it needs looked up once: the numpy view of the weights, the views of the tile's
    kernel stream, and per direction the IO config object and its :func:`io_numbers`.

    At batch 1 the product itself takes microseconds, and the checks that choose it (backend,
    IO settings, tensor kinds, views) cost several times that when made afresh at every call;
    :meth:`serves` repeats only what can change between calls. IO settings are decided once per
    config object, as :meth:`AnalogTile._compiled_io <insitu.tile.AnalogTile._compiled_io>` does.
    """

    __slots__ = ("weight", "pointer", "view", "rng", "rng_pointer", "stream", "ios", "numbers")

    def __init__(self, weight: torch.Tensor, view: np.ndarray, rng_state: torch.Tensor, stream):
        self.weight = weight  # the tile's Parameter (float32, CPU, C-contiguous, (out, in))
        self.pointer = weight.data_ptr()
        self.view = view  # its numpy view (holds the memory: an equal address is the same tensor)
        self.rng = rng_state
        self.rng_pointer = rng_state.data_ptr()
        self.stream = stream  # numpy views of the tile's kernel stream
        self.ios = [None, None]  # forward, backward
        self.numbers = [None, None]

    def current(self, weight: torch.Tensor, rng_state: torch.Tensor) -> bool:
        """Whether the plan still points at these tensors' memory."""
        return (
            weight is self.weight and weight.data_ptr() == self.pointer
            and rng_state is self.rng and rng_state.data_ptr() == self.rng_pointer
        )

    def serves(self, weight: torch.Tensor, rng_state: torch.Tensor, io, transposed: bool, x: torch.Tensor) -> bool:
        """Whether ``run(x, transposed)`` computes the product the tile would: the same IO config
        object, the same tensors, the compiled backend, and ``x`` a small float32 CPU batch."""
        return (
            self.ios[transposed] is io and self.current(weight, rng_state) and get_backend() != "torch"
            and x.dim() == 2 and x.shape[0] <= MAX_BATCH and x.shape[1] == self.view.shape[0 if transposed else 1]
            and x.dtype == torch.float32 and x.is_cpu
        )

    def run(self, x: torch.Tensor, transposed: bool) -> torch.Tensor:
        """The product ``(batch, out)`` forward, ``(batch, in)`` backward (:func:`compiled_mvm`)."""
        return compiled_mvm(x, self.view, self.numbers[transposed], transposed, self.stream)
