"""Analog matrix-vector products with the non-idealities of the periphery.

One function, :func:`analog_mvm`, serves the forward pass (``y = W x``) and the backward pass
(``z = Wᵀ δ``) of a tile, each with its own :class:`IOConfig`. The order of operations follows
the hardware (Gokmen & Vlasov 2016, §"analog noise"; Gokmen, Onen & Haensch 2017, §"noise and
bound management"):

1. noise management (digital): divide each input vector by ``max|x|`` (or another scale, see
   ``noise_management``) so it uses the full DAC range;
2. DAC: clip to ``±inp_bound`` and quantise to ``inp_bits`` (round to nearest, or stochastic
   rounding with ``inp_sto_round``), then additive Gaussian input noise ``inp_noise``;
3. the analog product ``x @ M``, with weight read noise ``w_noise`` and the first-order IR drop
   ``ir_drop`` when set;
4. additive Gaussian output noise of std ``out_noise`` (in units of the output when inputs are in
   ``[-1, 1]``, i.e. relative to a full-scale input on one unit weight), sign-asymmetric with
   ``out_noise_asymmetry``;
5. shift bound management (``"shift"``), then saturation of the integrator/ADC at ``±out_bound``;
6. ADC: quantise to ``out_bits`` over ``[-out_bound, out_bound]`` (``out_sto_round``: stochastic);
7. scale back by the noise-management factor;
8. bound management (digital, ``"iterative"``): while an output vector saturated, halve its
   input and repeat.

Every effect added to this list after the first release (input noise, weight noise, stochastic
rounding, asymmetric output noise, the extra management kinds, IR drop) draws random numbers
only when it is switched on, so the default configuration consumes the generator exactly as
before. ``docs/periphery.md`` describes each effect, its cost per call and the IR-drop model.
"""

from __future__ import annotations

import dataclasses

import torch

from .config import Config, register_config

__all__ = ["IOConfig", "ReplicaIO", "analog_mvm", "ir_drop_first_order"]

NOISE_MANAGEMENT = ("none", "abs_max", "max", "average_abs_max", "constant")
BOUND_MANAGEMENT = ("none", "iterative", "shift")
WEIGHT_NOISE_TYPES = ("additive", "relative")


@register_config
@dataclasses.dataclass
class IOConfig(Config):
    """Non-idealities of one direction (forward or backward) of the analog product.

    Attributes:
        is_perfect: switch every non-ideality off (an exact ``x @ M``).
        inp_bound: DAC range: inputs are clipped to ``±inp_bound``; ``None`` for no clipping.
        inp_bits: DAC resolution in bits (signed, ``2**bits - 1`` levels over ``±inp_bound``);
            ``None`` for a continuous input.
        inp_sto_round: stochastic rounding in the DAC: a value between two levels goes to the
            upper one with probability equal to its distance from the lower one (unbiased),
            instead of to the nearest. Needs ``inp_bits``.
        inp_noise: std of additive Gaussian noise on each input line after the DAC, relative to
            ``inp_bound`` (absolute when ``inp_bound`` is ``None``); 0 switches it off.
        w_noise: std of the weight read noise: each product sees ``M + w_noise·ξ``
            (``w_noise_type="additive"``) or ``M + w_noise·|M|·ξ`` (``"relative"``), ``ξ`` standard
            normal, drawn afresh for every input vector; 0 switches it off.
        w_noise_type: ``"additive"`` or ``"relative"`` (see ``w_noise``).
        ir_drop: first-order IR drop along the wires: resistance of one wire segment between two
            neighbouring cross-points times the conductance of a device at unit weight
            (``r_wire · G(|w|=1)``, dimensionless); 0 switches it off. See ``docs/periphery.md``.
        out_noise: std of the additive Gaussian output noise (``σ``); 0 switches it off.
        out_noise_asymmetry: ``a`` in ``(-1, 1)``: the output noise has std ``σ(1 + a)`` on
            outputs whose noise-free value is positive and ``σ(1 - a)`` on negative ones (zero:
            ``σ``); 0 is symmetric.
        out_bound: output saturation ``α``: outputs are clipped to ``±out_bound``; ``None`` for none.
        out_bits: ADC resolution in bits over ``±out_bound``; ``None`` for a continuous output.
        out_sto_round: stochastic rounding in the ADC (as ``inp_sto_round``). Needs ``out_bits``.
        noise_management: how inputs are scaled before the DAC (and outputs back after the ADC):
            ``"none"``; ``"abs_max"`` (or its alias ``"max"``): by ``max|x|`` of each vector;
            ``"average_abs_max"``: by the mean over the vectors of the call of their ``max|x|``
            (one scale for the whole batch); ``"constant"``: by ``nm_thres``.
        nm_thres: the scale of ``"constant"`` noise management (must be > 0 there); with
            ``"abs_max"``, ``"max"`` and ``"average_abs_max"`` an upper limit of the scale when > 0
            (0: no limit).
        bound_management: ``"none"``; ``"iterative"`` (halve the input while outputs saturate);
            ``"shift"`` (aihwkit's shift: add ``out_bound - max_j y_j`` to each output vector before
            saturation, so its largest output sits at the bound; the shift is *not* undone, which
            suits only outputs whose common offset does not matter, such as logits before a softmax).
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
    inp_sto_round: bool = False
    inp_noise: float = 0.0
    w_noise: float = 0.0
    w_noise_type: str = "additive"
    ir_drop: float = 0.0
    out_noise_asymmetry: float = 0.0
    out_sto_round: bool = False
    nm_thres: float = 0.0

    def validate(self) -> None:
        if self.inp_bound is not None:
            self._check_positive("inp_bound")
        if self.out_bound is not None:
            self._check_positive("out_bound")
        self._check_non_negative("out_noise", "inp_noise", "w_noise", "ir_drop", "nm_thres")
        for field, bound in (("inp_bits", self.inp_bound), ("out_bits", self.out_bound)):
            bits = getattr(self, field)
            if bits is None:
                continue
            if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 32:
                self._fail(field, "must be an integer number of bits between 2 and 32, or None for no quantisation.")
            if bound is None:
                self._fail(field, f"needs a range to quantise: set {field.replace('bits', 'bound')} too.")
        for field, bits in (("inp_sto_round", "inp_bits"), ("out_sto_round", "out_bits")):
            value = getattr(self, field)
            if not isinstance(value, bool):
                self._fail(field, "must be true or false.")
            if value and getattr(self, bits) is None:
                self._fail(field, f"rounds to the levels of a converter: set {bits} too (None is a continuous value).")
        self._check_choice("w_noise_type", WEIGHT_NOISE_TYPES)
        self._check_finite("out_noise_asymmetry")
        if not -1 < self.out_noise_asymmetry < 1:
            self._fail("out_noise_asymmetry", "must lie in (-1, 1): the noise std is out_noise·(1 ± a) (0: symmetric).")
        self._check_choice("noise_management", NOISE_MANAGEMENT)
        if self.noise_management == "constant" and not self.nm_thres > 0:
            self._fail("nm_thres", "'constant' noise management divides inputs by nm_thres: set it > 0.")
        self._check_choice("bound_management", BOUND_MANAGEMENT)
        if not isinstance(self.max_bm_iterations, int) or self.max_bm_iterations < 1:
            self._fail("max_bm_iterations", "must be an integer >= 1.")
        if self.bound_management != "none" and self.out_bound is None:
            self._fail("bound_management", f"'{self.bound_management}' needs an output bound: set out_bound.")

    @classmethod
    def perfect(cls) -> "IOConfig":
        """Exact products, no noise, no bounds."""
        return cls(is_perfect=True, inp_bound=None)


#: IO fields that replicas in lockstep may set differently (numbers that act elementwise); all
#: others (switches, bit widths, management) must agree so the replicas share one code path.
REPLICA_IO_FIELDS = ("inp_bound", "out_noise", "out_bound", "inp_noise", "w_noise")


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
    inp_sto_round: bool
    inp_noise: float | torch.Tensor
    w_noise: float | torch.Tensor
    w_noise_type: str
    ir_drop: float
    out_noise_asymmetry: float
    out_sto_round: bool
    nm_thres: float

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


def _quantize(
    values: torch.Tensor, bound, bits: int, generator: torch.Generator | None = None, stochastic: bool = False
) -> torch.Tensor:
    """Round to one of ``2**bits - 1`` levels spanning ``[-bound, bound]``.

    Written as ``round(v L / bound) / L * bound`` so that the top level is exactly ``bound``.
    ``stochastic``: round ``s = v L / bound`` to ``floor(s + u)``, ``u`` uniform in ``[0, 1)`` (one
    draw per value), i.e. up with probability ``s - floor(s)``: unbiased, ``E[q] = v``.
    """
    levels = 2 ** (bits - 1) - 1
    if not stochastic:
        return torch.round(values * (levels / bound)) / levels * bound
    scaled = values * (levels / bound)
    u = torch.rand(values.shape, generator=generator, device=values.device, dtype=values.dtype)
    return torch.floor(scaled + u).clamp_(-levels, levels) / levels * bound


def _weight_noise(x: torch.Tensor, matrix: torch.Tensor, io, shape, generator) -> torch.Tensor:
    """The output term of the weight read noise, ``x @ (w_noise · ξ)`` (``ξ`` fresh per vector).

    Drawn in its exact output-space form: for one vector, ``Σ_i x_i ξ_ij`` over independent
    ``ξ_ij ~ N(0, s_ij²)`` is Gaussian with variance ``Σ_i x_i² s_ij²``, independent across outputs
    ``j`` and across vectors. So one standard normal per output is drawn (``batch × n_out``
    numbers, not ``batch × n_in × n_out``) and scaled by ``w_noise · ||x||₂`` (additive) or
    ``w_noise · sqrt(x² @ M²)`` (relative, one extra product).
    """
    if io.w_noise_type == "additive":
        std = x.square().sum(dim=-1, keepdim=True).sqrt()
    else:
        std = (x.square() @ matrix.square()).sqrt()
    noise = torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
    return noise * std * io.w_noise


def ir_drop_first_order(x: torch.Tensor, matrix: torch.Tensor, ir_drop: float) -> torch.Tensor:
    """``x @ matrix`` with the first-order IR drop of the wires (``docs/periphery.md``).

    Geometry: input line ``i`` is driven at its end before output line 0; output line ``j`` is
    held at virtual ground at its end after input line ``n_in - 1``; neighbouring cross-points
    are one wire segment of resistance ``ir_drop`` apart (in units of the resistance of a device
    at unit weight), and so are the driver and the first, and the last and the ground. A signed
    weight is a differential pair of two such arrays, ``G⁺ = max(w, 0)`` and ``G⁻ = max(-w, 0)``
    in units of the unit-weight conductance, sharing the inputs; the output is ``I⁺ - I⁻``.

    The zero-order device currents ``I⁰_ij = x_i G_ij`` flow through the wires; the voltages they
    drop (row) and raise (column) at each cross-point reduce that device's voltage. Keeping only
    the terms linear in ``ir_drop`` (the currents on the right are the zero-order ones):

        ΔV^row_ij = r Σ_{k ≤ j} Σ_{j' ≥ k} I⁰_ij'      (row segment k carries columns ≥ k)
        ΔV^col_ij = r Σ_{i' ≥ i} Σ_{i'' ≤ i'} I⁰_i''j   (column segment below row i' carries rows ≤ i')
        y_j = Σ_i G_ij (x_i - ΔV^row_ij - ΔV^col_ij)

    Works on ``(batch, n_in) @ (n_in, n_out)`` and on replica stacks ``(R, batch, n_in)`` with
    ``(R, n_in, n_out)``. Costs a few ``batch × n_in × n_out`` tensors per call.
    """

    def one_array(g: torch.Tensor) -> torch.Tensor:
        g = g.unsqueeze(-3)  # (..., 1, n_in, n_out)
        current = x.unsqueeze(-1) * g  # (..., batch, n_in, n_out): zero-order device currents
        row_segments = current.flip(-1).cumsum(-1).flip(-1)  # current in the row segment before column j
        row_drop = row_segments.cumsum(-1)
        column_segments = current.cumsum(-2)  # current in the column segment below row i
        column_rise = column_segments.flip(-2).cumsum(-2).flip(-2)
        return current.sum(-2) - ir_drop * (g * (row_drop + column_rise)).sum(-2)

    return one_array(matrix.clamp(min=0)) - one_array((-matrix).clamp(min=0))


def _one_pass(x: torch.Tensor, matrix: torch.Tensor, io: IOConfig, generator: torch.Generator | None):
    """Steps 2-6 of the module docstring on inputs already scaled by noise/bound management.

    Returns ``(y, saturated)``: the outputs, and per vector whether any output reached the
    bound (decided before the ADC, as the integrator saturates before conversion), or ``None``
    when iterative bound management is off.

    Random numbers, in this order and each only when its effect is on: the DAC's stochastic
    rounding (``x``-shaped uniforms), input noise (``x``-shaped normals), weight noise and output
    noise (``y``-shaped normals each), the ADC's stochastic rounding (``y``-shaped uniforms).
    """
    if io.inp_bound is not None:
        x = torch.clamp(x, -io.inp_bound, io.inp_bound)
        if io.inp_bits is not None:
            x = _quantize(x, io.inp_bound, io.inp_bits, generator, io.inp_sto_round)
    if _on(io.inp_noise):
        scale = io.inp_noise if io.inp_bound is None else io.inp_noise * io.inp_bound
        x = x + torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) * scale
    y = x @ matrix if not io.ir_drop > 0 else ir_drop_first_order(x, matrix, io.ir_drop)
    if _on(io.w_noise):
        y = y + _weight_noise(x, matrix, io, y.shape, generator)
    if _on(io.out_noise):
        noise = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        if io.out_noise_asymmetry != 0:
            y = y + noise * (io.out_noise * (1 + io.out_noise_asymmetry * torch.sign(y)))
        else:
            y = y.add_(noise * io.out_noise) if torch.is_tensor(io.out_noise) else y.add_(noise, alpha=io.out_noise)
    saturated = None
    if io.out_bound is not None:
        if io.bound_management == "shift":
            y = y + (io.out_bound - y.amax(dim=-1, keepdim=True))
        elif io.bound_management == "iterative":
            saturated = (y.abs() >= io.out_bound).any(dim=-1)
        y = torch.clamp(y, -io.out_bound, io.out_bound)
        if io.out_bits is not None:
            y = _quantize(y, io.out_bound, io.out_bits, generator, io.out_sto_round)
    return y, saturated


def _noise_management_scale(x: torch.Tensor, io: IOConfig):
    """The factor inputs are divided by (and outputs multiplied by), or ``None`` for none.

    ``abs_max``/``max``: ``max|x|`` of each vector; ``average_abs_max``: the mean over the vectors
    of this call (``dim=-2``: per replica for a replica stack) of their ``max|x|``; both capped at
    ``nm_thres`` when it is > 0. ``constant``: ``nm_thres``. A zero scale (all-zero input)
    becomes 1: it needs no scaling and must not divide by zero.
    """
    kind = io.noise_management
    if kind == "none":
        return None
    if kind == "constant":
        return io.nm_thres
    scale = x.abs().amax(dim=-1, keepdim=True)
    if kind == "average_abs_max":
        scale = scale.mean(dim=-2, keepdim=True)
    if io.nm_thres > 0:
        scale = scale.clamp(max=io.nm_thres)
    return torch.where(scale > 0, scale, torch.ones_like(scale))


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
        generator: draws the noise (and the stochastic rounding).

    Returns:
        Tensor of shape ``(batch, n_out)`` (``(R, batch, n_out)`` for replicas).
    """
    if io.is_perfect:
        return x @ matrix
    nm_scale = _noise_management_scale(x, io)
    if nm_scale is not None:
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
