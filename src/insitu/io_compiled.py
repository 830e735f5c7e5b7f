"""The analog matrix-vector product with its periphery in compiled (numba) calls, on the CPU.

At batch 1 the product of :func:`insitu.io.analog_mvm` is one matrix-vector product and four
small tensor operations (input clip, output noise drawn and added, output clip), each a few
microseconds of dispatch: about as much again as the product; noise and bound management add
ten more. At the batches of a convolution (one vector per image patch) the product is a BLAS
call of tens of microseconds and the periphery's passes over inputs and outputs cost several
times that. :func:`compiled_mvm` does the same arithmetic (Gokmen & Vlasov 2016, Fig. 1: bounded
inputs, additive Gaussian output noise, bounded outputs; Gokmen, Onen & Haensch 2017: noise
management, iterative bound management) for the IO settings it covers (:func:`covers`):

* up to :data:`MAX_BATCH` vectors: everything in one call (the product as loops);
* more vectors: the input scaling and clip in one call, the product as one BLAS matrix product
  (torch), then noise, saturation, bound management and output scaling in one call (in
  evaluation, ``eval()``, the plain periphery at these batches stays on the reference:
  :func:`takes_batch`).

Replicas in lockstep (:class:`~insitu.replicas.ReplicatedTile`) run the products of all
replicas in one call at up to :data:`MAX_BATCH` vectors (:func:`stacked_mvm`; the replicas in
numba's parallel threads when it has more than one, with the same results), each replica's as a
single array's on its own stream, with its own input bound, output noise and output bound
(:func:`replica_io_numbers`). Every other setting (quantisation, input or weight noise, IR drop,
noise asymmetry, the shift bound management; larger replica batches) stays on
:func:`~insitu.io.analog_mvm`, the reference.

Its output noise comes from the tile's own compiled-kernel stream (the scalar xoshiro256**
stream of ``tile.pulse_rng``, :mod:`insitu.update.kernels.rng`; at large batches the first
passes' noise from its vector lanes) instead of the tile's ``torch.Generator``: same
distribution, other draws; same seed, same run. Bound management
repeats a saturated vector's pass right after it (the reference repeats all saturated vectors
of the call together): the same passes and noise distribution, in another order of draws.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from .update.kernels import get_backend

__all__ = ["MAX_BATCH", "covers", "covers_io", "covers_tensors", "io_numbers", "takes_batch", "compiled_mvm", "replica_io_numbers",
           "stacked_mvm", "ProductPlan"]

MAX_BATCH = 4  # larger batches: the product as one BLAS call (it beats these loops there)

# noise_management as the kernels take it (io.NOISE_MANAGEMENT; "max" is "abs_max"'s alias)
_NM_KINDS = {"none": 0, "abs_max": 1, "max": 1, "average_abs_max": 2, "constant": 3}

_KERNELS: dict = {}


def covers(io, x: torch.Tensor, matrix: torch.Tensor) -> bool:
    """Whether :func:`compiled_mvm` computes ``analog_mvm(x, ·, io)`` for these tensors: the IO
    part (:func:`covers_io`) and the tensors' (:func:`covers_tensors`)."""
    return covers_io(io) and covers_tensors(x, matrix)


def covers_io(io) -> bool:
    """IO with at most an input bound, scalar additive output noise, an output bound, noise
    management and iterative bound management (no quantisation, no input or weight noise, no IR
    drop, no noise asymmetry, no shift bound management, no per-replica values)."""
    if io.is_perfect:
        return False
    return (
        io.inp_bits is None and io.out_bits is None and not torch.is_tensor(io.out_noise) and not torch.is_tensor(io.inp_noise)
        and io.inp_noise == 0 and io.w_noise == 0 and io.ir_drop == 0 and io.out_noise_asymmetry == 0
        and io.noise_management in _NM_KINDS and io.bound_management in ("none", "iterative")
        and not torch.is_tensor(io.inp_bound) and not torch.is_tensor(io.out_bound)
    )


def covers_tensors(x: torch.Tensor, matrix: torch.Tensor) -> bool:
    """float32 CPU tensors, ``x`` ``(batch, n)`` (no replica axis)."""
    return (
        x.dim() == 2 and x.dtype == torch.float32 and matrix.dtype == torch.float32
        and x.device.type == "cpu" and matrix.device.type == "cpu"
    )


def takes_batch(numbers, batch: int, training: bool = False) -> bool:
    """Whether a product of ``batch`` vectors with these :func:`io_numbers` runs compiled: always
    in training (``training``: the tile's module mode), and in evaluation (``eval()``) the plain
    periphery (no noise or bound management) up to :data:`MAX_BATCH` vectors only: above it an
    evaluation's products stay on the reference, whose noise comes from the tile's torch
    generator, so that evaluating a run does not draw from the kernel stream its training uses
    (a run evaluated every epoch trains draw for draw as one evaluated less often). In training
    the large batch's periphery is one compiled call on each side of the BLAS product: 0.2 ms
    of a 2016 network's batch-64 step of about 5 ms (session 30; before, it stayed on the
    reference in training too)."""
    _, _, _, nm_kind, _, bm_iterations = numbers
    return training or batch <= MAX_BATCH or nm_kind != 0 or bm_iterations != 0


def _kernels():
    if not _KERNELS:
        from numba import njit, prange

        from .update.kernels.rng import fill_lane_normals, fill_normals, lane_normal_draws, load_lanes, store_lanes

        @njit(nogil=True, fastmath=True)
        def forward(x, w, inp_bound, out_noise, out_bound, s, spare):
            """``out[b] = clip(w @ clip(x[b]) + out_noise ξ)``: ``w`` ``(n_out, n_in)`` row by row
            (each output one contiguous dot product)."""
            out = np.empty((x.shape[0], w.shape[0]), dtype=np.float32)
            forward_into(x, w, inp_bound, out_noise, out_bound, s, spare, out)
            return out

        @njit(nogil=True, fastmath=True)
        def forward_bias_column(x, w, inp_bound, out_noise, out_bound, s, spare):
            """``forward`` of ``x`` ``(batch, n_in - 1)`` with the bias column's constant 1
            appended: returns the outputs and the inputs with the 1 (what the update takes)."""
            batch, width = x.shape
            inputs = np.empty((batch, width + 1), dtype=np.float32)
            for b in range(batch):
                for i in range(width):
                    inputs[b, i] = x[b, i]
                inputs[b, width] = 1.0
            out = np.empty((batch, w.shape[0]), dtype=np.float32)
            forward_into(inputs, w, inp_bound, out_noise, out_bound, s, spare, out)
            return out, inputs

        @njit(inline="always", fastmath=True)
        def forward_into(x, w, inp_bound, out_noise, out_bound, s, spare, out):
            batch, n_in = x.shape
            n_out = w.shape[0]
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

        @njit(inline="always")
        def clip(value, bound):
            # Selects, not min/max (mixed float32/float64 min/max compiles to slow code). Unlike
            # update.kernels.compiled._clip it keeps the value's type: float32 loops vectorise.
            value = value if value > -bound else -bound
            return value if value < bound else bound

        @njit(inline="always")
        def scale_and_clip(x_row, scale, bound, out_row):
            """``out_row = clip(x_row / scale)``: one vector's input after noise management."""
            for i in range(x_row.shape[0]):
                out_row[i] = clip(x_row[i] / scale, bound)

        @njit(inline="always")
        def nm_scales(x, kind, thres):
            """Per vector the factor its input is divided by (io._noise_management_scale)."""
            batch, n = x.shape
            scales = np.ones(batch, dtype=np.float32)
            if kind == 0:
                return scales
            if kind == 3:  # constant
                scales[:] = thres
                return scales
            for b in range(batch):
                largest = np.float32(0.0)
                for i in range(n):
                    magnitude = abs(x[b, i])
                    largest = magnitude if magnitude > largest else largest
                scales[b] = largest
            if kind == 2 and batch > 0:  # average_abs_max: one scale, the mean over the call
                total = 0.0
                for b in range(batch):
                    total += scales[b]
                scales[:] = total / batch
            for b in range(batch):
                scale = scales[b]
                if thres > 0.0 and scale > thres:
                    scale = np.float32(thres)
                scales[b] = scale if scale > 0.0 else np.float32(1.0)  # an all-zero input is not scaled
            return scales

        @njit(inline="always")
        def product(w, z, transposed, acc):
            """``acc = w @ z`` (forward), ``w.T @ z`` (``transposed``), ``w`` ``(out, in)`` as stored:
            the loops of ``forward``/``backward`` above, which stay separate kernels so that the
            plain periphery's products (every 2016 run) keep their compiled code and results."""
            if transposed:
                acc[:] = 0.0
                for j in range(w.shape[0]):
                    zj = z[j]
                    if zj != 0.0:
                        for i in range(w.shape[1]):
                            acc[i] += w[j, i] * zj
            else:
                for j in range(w.shape[0]):
                    a = np.float32(0.0)
                    for i in range(w.shape[1]):
                        a += w[j, i] * z[i]
                    acc[j] = a

        @njit(inline="always")
        def finish(values, noise, out_noise, out_bound, bm_scale, nm_scale, out_row):
            """``out_row = clip(values + out_noise ξ) · bm_scale · nm_scale``; whether any output
            reached the bound (before the clip, as the integrator saturates before conversion).
            ``out_row`` may be ``values`` itself."""
            saturated = False
            for j in range(values.shape[0]):
                v = values[j] + out_noise * noise[j]
                saturated |= abs(v) >= out_bound
                out_row[j] = (clip(v, out_bound) * bm_scale) * nm_scale
            return saturated

        @njit(inline="always")
        def repeat_pass(x_row, nm_scale, w, transposed, inp_bound, out_noise, out_bound, bm_iterations, z, acc, noise, s, spare, out_row):
            """Iterative bound management (Gokmen, Onen & Haensch 2017) of one vector whose pass
            saturated: halve its input and pass again with fresh noise while an output reaches
            the bound, at most ``bm_iterations`` times (io._bound_management)."""
            bm_scale = np.float32(1.0)
            inp_bound = np.float32(inp_bound)
            for _ in range(bm_iterations):
                bm_scale = bm_scale * np.float32(2.0)
                for i in range(x_row.shape[0]):
                    z[i] = clip((x_row[i] / nm_scale) / bm_scale, inp_bound)
                product(w, z, transposed, acc)
                if out_noise > 0.0:
                    fill_normals(noise, s, spare)
                if not finish(acc, noise, out_noise, out_bound, bm_scale, nm_scale, out_row):
                    break

        @njit(nogil=True, fastmath=True)
        def managed(x, w, transposed, inp_bound, out_noise, out_bound, nm_kind, nm_thres, bm_iterations, s, spare):
            """The whole product of a small batch ``x`` ``(batch, n)`` with noise and bound
            management: ``(batch, out)`` forward, ``(batch, in)`` backward."""
            batch, n = x.shape
            n_result = w.shape[1] if transposed else w.shape[0]
            out = np.empty((batch, n_result), dtype=np.float32)
            scales = nm_scales(x, nm_kind, nm_thres)
            z = np.empty(n, dtype=np.float32)
            acc = np.empty(n_result, dtype=np.float32)
            noise = np.zeros(n_result)
            bound = np.float32(inp_bound)
            for b in range(batch):
                scale_and_clip(x[b], scales[b], bound, z)
                product(w, z, transposed, acc)
                if out_noise > 0.0:
                    fill_normals(noise, s, spare)
                saturated = finish(acc, noise, out_noise, out_bound, np.float32(1.0), scales[b], out[b])
                if saturated and bm_iterations > 0:
                    repeat_pass(x[b], scales[b], w, transposed, inp_bound, out_noise, out_bound, bm_iterations,
                                z, acc, noise, s, spare, out[b])
            return out

        @njit(nogil=True, fastmath=True)
        def managed_inputs(x, inp_bound, nm_kind, nm_thres):
            """Before a large batch's BLAS product: the scaled, clipped inputs and the scales."""
            batch, n = x.shape
            scales = nm_scales(x, nm_kind, nm_thres)
            clipped = np.empty((batch, n), dtype=np.float32)
            bound = np.float32(inp_bound)  # float32 throughout: the loop vectorises
            for b in range(batch):
                scale_and_clip(x[b], scales[b], bound, clipped[b])
            return clipped, scales

        @njit(nogil=True, fastmath=True)
        def managed_outputs(y, x, scales, w, transposed, inp_bound, out_noise, out_bound, bm_iterations, s, spare):
            """After a large batch's BLAS product ``y`` ``(batch, n_result)``, in place: output
            noise (all vectors' first passes, in order), saturation, then bound management of the
            saturated vectors one after another, and the outputs scaled back."""
            batch, n_result = y.shape
            # The first passes' noise in bulk from the stream's vector lanes (float32 Box-Muller,
            # about 1.5 ns a normal against 3.6 for the scalar stream's ziggurat): the
            # repeated passes of bound management draw theirs from the scalar stream.
            noise = np.zeros(batch * n_result, dtype=np.float32)
            if out_noise > 0.0:
                lanes = load_lanes(s)
                fill_lane_normals(noise, np.empty(lane_normal_draws(noise.shape[0]), dtype=np.uint64), lanes)
                store_lanes(lanes, s)
            saturated = np.zeros(batch, dtype=np.bool_)
            for b in range(batch):
                saturated[b] = finish(y[b], noise[b * n_result : (b + 1) * n_result], out_noise, out_bound,
                                      np.float32(1.0), scales[b], y[b])
            if bm_iterations > 0:
                z = np.empty(x.shape[1], dtype=np.float32)
                acc = np.empty(n_result, dtype=np.float32)
                row_noise = np.zeros(n_result)
                for b in range(batch):
                    if saturated[b]:
                        repeat_pass(x[b], scales[b], w, transposed, inp_bound, out_noise, out_bound, bm_iterations,
                                    z, acc, row_noise, s, spare, y[b])

        def stacked(x, w, transposed, inp_bound, out_noise, out_bound, nm_kind, nm_thres, bm_iterations, s, spare):
            """The products of ``R`` replicas in lockstep, each exactly the single array's
            (``forward``/``backward`` for the plain periphery, ``managed`` otherwise) on its own
            weights ``w[r]`` ``(out, in)``, IO numbers ``inp_bound[r]``, ``out_noise[r]``,
            ``out_bound[r]`` and stream ``s[r]``, ``spare[r]``: ``x`` ``(R, batch, n)`` ->
            ``(R, batch, out)`` forward, ``(R, batch, in)`` backward. Each replica reads its own
            arrays and stream and writes only ``out[r]``: in the parallel build the replicas run
            in numba's threads, with the serial build's results."""
            n_rep, batch, _ = x.shape
            n_result = w.shape[2] if transposed else w.shape[1]
            out = np.empty((n_rep, batch, n_result), dtype=np.float32)
            plain = nm_kind == 0 and bm_iterations == 0
            for r in prange(n_rep):
                if plain and transposed:
                    out[r] = backward(x[r], w[r], inp_bound[r], out_noise[r], out_bound[r], s[r], spare[r])
                elif plain:
                    out[r] = forward(x[r], w[r], inp_bound[r], out_noise[r], out_bound[r], s[r], spare[r])
                else:
                    out[r] = managed(x[r], w[r], transposed, inp_bound[r], out_noise[r], out_bound[r], nm_kind,
                                     nm_thres, bm_iterations, s[r], spare[r])
            return out

        # Two builds of one loop: the parallel one (replicas in numba's threads, as the replicas'
        # update kernel runs them) compiles in about 8 s more than the serial one (20 against
        # 12 s with the products it calls), so a process on one thread never builds it.
        _KERNELS["stacked"] = njit(nogil=True)(stacked)
        _KERNELS["stacked_parallel"] = njit(nogil=True, parallel=True)(stacked)
        _KERNELS["forward"] = forward
        _KERNELS["forward_bias_column"] = forward_bias_column
        _KERNELS["backward"] = backward
        _KERNELS["managed"] = managed
        _KERNELS["managed_inputs"] = managed_inputs
        _KERNELS["managed_outputs"] = managed_outputs
    return _KERNELS


def io_numbers(io) -> tuple:
    """``(inp_bound, out_noise, out_bound, nm_kind, nm_thres, bm_iterations)`` of ``io`` as the
    kernels take them (no bound: inf; ``bm_iterations`` 0 without bound management)."""
    inp_bound = math.inf if io.inp_bound is None else float(io.inp_bound)
    out_bound = math.inf if io.out_bound is None else float(io.out_bound)
    bm_iterations = int(io.max_bm_iterations) if io.bound_management == "iterative" else 0
    return inp_bound, float(io.out_noise), out_bound, _NM_KINDS[io.noise_management], float(io.nm_thres), bm_iterations


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
    kernels = _kernels()
    xs = x.detach()
    if not xs.is_contiguous():
        xs = xs.contiguous()
    inp_bound, out_noise, out_bound, nm_kind, nm_thres, bm_iterations = numbers
    if xs.shape[0] <= MAX_BATCH:
        if nm_kind == 0 and bm_iterations == 0:  # the plain periphery (the 2016 RPU)
            kernel = kernels["backward" if transposed else "forward"]
            return torch.from_numpy(kernel(xs.numpy(), weights, inp_bound, out_noise, out_bound, *stream))
        return torch.from_numpy(kernels["managed"](xs.numpy(), weights, transposed, *numbers, *stream))
    inputs = xs.numpy()
    clipped, scales = kernels["managed_inputs"](inputs, inp_bound, nm_kind, nm_thres)
    matrix = torch.from_numpy(weights)
    y = torch.from_numpy(clipped) @ (matrix if transposed else matrix.t())
    kernels["managed_outputs"](y.numpy(), inputs, scales, weights, transposed, inp_bound, out_noise, out_bound,
                               bm_iterations, *stream)
    return y


def replica_io_numbers(io, replicas: int):
    """The kernel numbers of a :class:`~insitu.io.ReplicaIO` for :func:`stacked_mvm`, or ``None``
    where its periphery is not covered: ``(inp_bound, out_noise, out_bound)`` as float64 arrays
    ``(R,)`` (a number shared by all replicas repeated; no bound: inf), then ``nm_kind``,
    ``nm_thres``, ``bm_iterations``. Covered: what :func:`covers_io` covers, with the input
    bound, output noise and output bound allowed to differ between replicas; input and weight
    noise must be zero for every replica."""
    per_replica = ("inp_bound", "out_noise", "out_bound")
    if io.is_perfect or any(torch.is_tensor(getattr(io, name)) for name in ("inp_noise", "w_noise")):
        return None
    shared = dataclasses.replace(io, **{name: (0.0 if torch.is_tensor(getattr(io, name)) else getattr(io, name)) for name in per_replica})
    if not covers_io(shared):
        return None

    def column(name):
        value = getattr(io, name)
        if torch.is_tensor(value):
            return value.detach().reshape(-1).to("cpu", torch.float64).numpy().copy()
        return np.full(replicas, math.inf if value is None else float(value))

    # the management numbers as a single array's (io_numbers), the per-replica ones as columns
    return (column("inp_bound"), column("out_noise"), column("out_bound"), *io_numbers(shared)[3:])


def stacked_mvm(x: torch.Tensor, weights: np.ndarray, numbers, transposed: bool, stream) -> torch.Tensor:
    """The analog products of ``R`` replicas in lockstep, each as :func:`compiled_mvm` computes
    a single array's at a small batch (at most :data:`MAX_BATCH` vectors) on the replica's own
    stream: replica ``r`` gets what a separate tile with its weights, IO numbers and stream gets.

    Args:
        x: inputs ``(R, batch, n)``, float32 on the CPU.
        weights: the arrays ``(R, out, in)`` as stored, a C-contiguous float32 numpy view.
        numbers: :func:`replica_io_numbers` of the direction's IO settings.
        transposed: ``False`` forward, ``True`` backward.
        stream: ``(words (R, ·), spare (R, 1))``, numpy views of the replicas' kernel streams.
    """
    xs = x.detach()
    if not xs.is_contiguous():
        xs = xs.contiguous()
    import numba

    parallel = xs.shape[0] > 1 and numba.get_num_threads() > 1  # the same results either way
    kernel = _kernels()["stacked_parallel" if parallel else "stacked"]
    return torch.from_numpy(kernel(xs.numpy(), weights, transposed, *numbers, *stream))


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

    def serves(self, weight: torch.Tensor, rng_state: torch.Tensor, io, transposed: bool, x: torch.Tensor,
               appended: int = 0) -> bool:
        """Whether ``run(x, transposed)`` computes the product the tile would: the same IO config
        object, the same tensors, the compiled backend, and ``x`` a float32 CPU batch
        (``appended``: columns the call appends to ``x``, the bias column's 1 of
        :meth:`run_bias_column`)."""
        return (
            self.ios[transposed] is io and self.current(weight, rng_state) and get_backend() != "torch"
            and x.dim() == 2 and x.shape[1] + appended == self.view.shape[0 if transposed else 1]
            and x.dtype == torch.float32 and x.is_cpu and takes_batch(self.numbers[transposed], x.shape[0])
        )

    def run(self, x: torch.Tensor, transposed: bool) -> torch.Tensor:
        """The product ``(batch, out)`` forward, ``(batch, in)`` backward (:func:`compiled_mvm`)."""
        return compiled_mvm(x, self.view, self.numbers[transposed], transposed, self.stream)

    def serves_bias_column(self, weight: torch.Tensor, rng_state: torch.Tensor, io, x: torch.Tensor) -> bool:
        """Whether :meth:`run_bias_column` computes the forward pass of ``x`` ``(batch, in - 1)``
        with the bias column's 1 appended: as :meth:`serves`, for the plain periphery (no noise
        or bound management) at up to :data:`MAX_BATCH` vectors."""
        if not self.serves(weight, rng_state, io, False, x, appended=1):
            return False
        _, _, _, nm_kind, _, bm_iterations = self.numbers[0]
        return x.shape[0] <= MAX_BATCH and nm_kind == 0 and bm_iterations == 0

    def run_bias_column(self, x: torch.Tensor) -> tuple:
        """``(y, inputs)``: the forward pass of ``x`` with the constant 1 appended (the same
        arithmetic and draws as :meth:`run` on the padded inputs), and the padded inputs
        ``(batch, in)``, made in the same call (a separate ``F.pad`` costs as much as the
        product of a small layer)."""
        xs = x.detach()
        if not xs.is_contiguous():
            xs = xs.contiguous()
        inp_bound, out_noise, out_bound = self.numbers[0][:3]
        y, inputs = _kernels()["forward_bias_column"](xs.numpy(), self.view, inp_bound, out_noise, out_bound, *self.stream)
        return torch.from_numpy(y), torch.from_numpy(inputs)
