"""Analog matrix-vector products with the non-idealities of the periphery.

One function, :func:`analog_mvm`, serves the forward pass (``y = W x``) and the backward pass
(``z = Wᵀ δ``) of a tile, each with its own :class:`IOConfig`. The order of operations follows
the hardware (Gokmen & Vlasov 2016, §"analog noise"; Gokmen, Onen & Haensch 2017, §"noise and
bound management"):

1. noise management (digital): divide each input vector by ``max|x|`` so it uses the full DAC range;
2. DAC: clip to ``±inp_bound`` and quantise to ``inp_bits``;
3. the analog product ``x @ M``;
4. additive Gaussian output noise of std ``out_noise`` (in units of the output when inputs are in
   ``[-1, 1]``, i.e. relative to a full-scale input on one unit weight);
5. saturation of the integrator/ADC at ``±out_bound``;
6. ADC: quantise to ``out_bits`` over ``[-out_bound, out_bound]``;
7. scale back by the noise-management factor;
8. bound management (digital): while an output vector saturated, halve its input and repeat.
"""

from __future__ import annotations

import dataclasses

import torch

from .config import Config, register_config

__all__ = ["IOConfig", "ReplicaIO", "analog_mvm"]

NOISE_MANAGEMENT = ("none", "abs_max")
BOUND_MANAGEMENT = ("none", "iterative")


@register_config
@dataclasses.dataclass
class IOConfig(Config):
    """Non-idealities of one direction (forward or backward) of the analog product.

    Attributes:
        is_perfect: switch every non-ideality off (an exact ``x @ M``).
        inp_bound: DAC range: inputs are clipped to ``±inp_bound``; ``None`` for no clipping.
        inp_bits: DAC resolution in bits (signed, ``2**bits - 1`` levels over ``±inp_bound``);
            ``None`` for a continuous input.
        out_noise: std of the additive Gaussian output noise (``σ``); 0 switches it off.
        out_bound: output saturation ``α``: outputs are clipped to ``±out_bound``; ``None`` for none.
        out_bits: ADC resolution in bits over ``±out_bound``; ``None`` for a continuous output.
        noise_management: ``"none"`` or ``"abs_max"`` (scale inputs by ``max|x|`` and back).
        bound_management: ``"none"`` or ``"iterative"`` (halve the input while outputs saturate).
        max_bm_iterations: at most this many halvings (factor ``2**max_bm_iterations``).
    """

    is_perfect: bool = False
    inp_bound: float | None = 1.0
    inp_bits: int | None = None
    out_noise: float = 0.0
    out_bound: float | None = None
    out_bits: int | None = None
    noise_management: str = "none"
    bound_management: str = "none"
    max_bm_iterations: int = 10

    def validate(self) -> None:
        if self.inp_bound is not None:
            self._check_positive("inp_bound")
        if self.out_bound is not None:
            self._check_positive("out_bound")
        self._check_non_negative("out_noise")
        for field, bound in (("inp_bits", self.inp_bound), ("out_bits", self.out_bound)):
            bits = getattr(self, field)
            if bits is None:
                continue
            if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 32:
                self._fail(field, "must be an integer number of bits between 2 and 32, or None for no quantisation.")
            if bound is None:
                self._fail(field, f"needs a range to quantise: set {field.replace('bits', 'bound')} too.")
        self._check_choice("noise_management", NOISE_MANAGEMENT)
        self._check_choice("bound_management", BOUND_MANAGEMENT)
        if not isinstance(self.max_bm_iterations, int) or self.max_bm_iterations < 1:
            self._fail("max_bm_iterations", "must be an integer >= 1.")
        if self.bound_management == "iterative" and self.out_bound is None:
            self._fail("bound_management", "'iterative' needs an output bound: set out_bound.")

    @classmethod
    def perfect(cls) -> "IOConfig":
        """Exact products, no noise, no bounds."""
        return cls(is_perfect=True, inp_bound=None)


#: IO fields that replicas in lockstep may set differently (numbers that act elementwise); all
#: others (switches, bit widths, management) must agree so the replicas share one code path.
REPLICA_IO_FIELDS = ("inp_bound", "out_noise", "out_bound")


@dataclasses.dataclass(frozen=True)
class ReplicaIO:
    """The IO settings of ``R`` replicas in lockstep, as :func:`analog_mvm` reads them.

    Built by :meth:`stack` from one :class:`IOConfig` per replica. Fields of
    :data:`REPLICA_IO_FIELDS` that differ between replicas become tensors of shape ``(R, 1, 1)``
    (broadcasting against outputs ``(R, batch, n)``); equal ones stay numbers.
    """

    is_perfect: bool
    inp_bound: float | torch.Tensor | None
    inp_bits: int | None
    out_noise: float | torch.Tensor
    out_bound: float | torch.Tensor | None
    out_bits: int | None
    noise_management: str
    bound_management: str
    max_bm_iterations: int

    @classmethod
    def stack(cls, configs, device=None, dtype: torch.dtype = torch.float32, where: str = "io") -> "ReplicaIO":
        """One ``ReplicaIO`` from the per-replica ``configs`` (a sequence of :class:`IOConfig`).

        Raises :class:`~insitu.config.ConfigError` naming the field when replicas differ in
        anything but the numbers of :data:`REPLICA_IO_FIELDS`, or in whether those are ``None``.
        """
        from .config import ConfigError

        configs = list(configs)
        values = {}
        for field in dataclasses.fields(IOConfig):
            name = field.name
            column = [getattr(c, name) for c in configs]
            first = column[0]
            if all(v == first for v in column):
                values[name] = first
                continue
            if name not in REPLICA_IO_FIELDS or any(v is None for v in column):
                raise ConfigError(
                    f"{where}.{name}: replicas in lockstep must share it (got {column}); only "
                    f"{', '.join(REPLICA_IO_FIELDS)} may differ, as numbers. Run these points separately."
                )
            values[name] = torch.tensor(column, device=device, dtype=dtype).view(-1, 1, 1)
        return cls(**values)


def _on(value) -> bool:
    """Whether a number or a per-replica tensor of them is positive anywhere."""
    return bool((value > 0).any()) if torch.is_tensor(value) else value > 0


def _quantize(values: torch.Tensor, bound: float, bits: int) -> torch.Tensor:
    """Round to the nearest of ``2**bits - 1`` levels spanning ``[-bound, bound]``.

    Written as ``round(v L / bound) / L * bound`` so that the top level is exactly ``bound``.
    """
    levels = 2 ** (bits - 1) - 1
    return torch.round(values * (levels / bound)) / levels * bound


def _one_pass(x: torch.Tensor, matrix: torch.Tensor, io: IOConfig, generator: torch.Generator | None):
    """Steps 2-6 of the module docstring on inputs already scaled by noise/bound management.

    Returns ``(y, saturated)``: the outputs, and per vector whether any output reached the
    bound (decided before the ADC, as the integrator saturates before conversion), or ``None``
    when no bound is set.
    """
    if io.inp_bound is not None:
        x = torch.clamp(x, -io.inp_bound, io.inp_bound)
        if io.inp_bits is not None:
            x = _quantize(x, io.inp_bound, io.inp_bits)
    y = x @ matrix
    if _on(io.out_noise):
        noise = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        y = y.add_(noise * io.out_noise) if torch.is_tensor(io.out_noise) else y.add_(noise, alpha=io.out_noise)
    saturated = None
    if io.out_bound is not None:
        if io.bound_management != "none":
            saturated = (y.abs() >= io.out_bound).any(dim=-1)
        y = torch.clamp(y, -io.out_bound, io.out_bound)
        if io.out_bits is not None:
            y = _quantize(y, io.out_bound, io.out_bits)
    return y, saturated


def analog_mvm(
    x: torch.Tensor, matrix: torch.Tensor, io: IOConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The analog product ``x @ matrix`` with the non-idealities of ``io``.

    Args:
        x: input vectors, shape ``(batch, n_in)``; each row is one vector sent to the array.
            For ``R`` replicas in lockstep ``(R, batch, n_in)``.
        matrix: the array as seen from this direction, shape ``(n_in, n_out)`` (``Wᵀ`` for the
            forward pass of an ``(out, in)`` weight, ``W`` for the backward pass); for replicas
            ``(R, n_in, n_out)``.
        io: the non-idealities (an :class:`IOConfig`, or a :class:`ReplicaIO` for replicas).
        generator: draws the output noise.

    Returns:
        Tensor of shape ``(batch, n_out)`` (``(R, batch, n_out)`` for replicas).
    """
    if io.is_perfect:
        return x @ matrix
    nm_scale = None
    if io.noise_management == "abs_max":
        nm_scale = x.abs().amax(dim=-1, keepdim=True)
        # An all-zero input needs no scaling (and must not divide by zero).
        nm_scale = torch.where(nm_scale > 0, nm_scale, torch.ones_like(nm_scale))
        x = x / nm_scale
    y, saturated = _one_pass(x, matrix, io, generator)
    if io.bound_management == "iterative":
        manage = _bound_management if matrix.dim() == 2 else _bound_management_replicas
        y = manage(x, y, saturated, matrix, io, generator)
    if nm_scale is not None:
        y = y * nm_scale
    return y


def _bound_management(x, y, saturated, matrix, io: IOConfig, generator) -> torch.Tensor:
    """Recompute saturated vectors with halved inputs (Gokmen, Onen & Haensch 2017).

    Each vector is repeated, with a fresh noise draw as the hardware would, until none of its
    outputs reaches the bound or ``max_bm_iterations`` halvings were made.
    """
    scale = torch.ones(x.shape[:-1] + (1,), device=x.device, dtype=x.dtype)
    for _ in range(io.max_bm_iterations):
        if not bool(saturated.any()):
            break
        rows = saturated.nonzero().squeeze(-1)
        scale[rows] *= 2
        y_rows, sat_rows = _one_pass(x[rows] / scale[rows], matrix, io, generator)
        saturated = torch.zeros_like(saturated)
        saturated[rows] = sat_rows
        y = y.clone() if y.requires_grad else y
        y[rows] = y_rows * scale[rows]
    return y


def _bound_management_replicas(x, y, saturated, matrix, io, generator) -> torch.Tensor:
    """:func:`_bound_management` for replicas (``x`` ``(R, batch, n_in)``, one matrix each).

    The saturated vectors of different replicas meet different matrices, so instead of selecting
    them every round recomputes the whole stack with the doubled scales and keeps the new
    outputs of the vectors that were saturated (the others' extra noise draws are discarded).
    """
    scale = torch.ones(x.shape[:-1] + (1,), device=x.device, dtype=x.dtype)
    for _ in range(io.max_bm_iterations):
        if not bool(saturated.any()):
            break
        redo = saturated.unsqueeze(-1)
        scale = torch.where(redo, scale * 2, scale)
        y_new, sat_new = _one_pass(x / scale, matrix, io, generator)
        y = torch.where(redo, y_new * scale, y)
        saturated = saturated & sat_new
    return y
