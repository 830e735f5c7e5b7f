"""The stochastic pulse update of Gokmen & Vlasov 2016 (their Eq. 2-3 and Fig. 1).

For a rank-1 update ``ΔW = -lr · δ xᵀ`` the periphery turns every input ``x_i`` (a row line) into
a train of ``BL`` Bernoulli pulses fired with probability ``Cx |x_i|`` and every error ``δ_j``
(a column line) into ``BL`` pulses with probability ``Cd |δ_j|``. Wherever a row pulse and a
column pulse coincide, the cross-point takes one device step, up when ``sign(x_i) ≠ sign(δ_j)``.
The expected number of coincidences is ``BL Cx Cd |x_i δ_j|``, so ``Cx = Cd = sqrt(lr / (BL dw_min))``
makes the expected update equal ``lr |x_i δ_j|`` in units of weight (probabilities clipped to 1).

Update management (Gokmen, Onen & Haensch 2017) keeps ``Cx Cd`` but rebalances the two by
``m = sqrt(max|δ| / max|x|)``: ``Cx = C m``, ``Cd = C / m``, so both trains use their full
probability range. Dynamic BL (as in aihwkit) shortens the train to
``BL = ceil(lr max|x| max|δ| / dw_min)`` (at most the configured BL) when the update is small.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import numpy as np
import torch

from ..config import Config, register_config
from ..devices.base import DeviceModel
from .kernels import select_backend

__all__ = ["PulseUpdateConfig", "UpdateCounters", "pulsed_update", "exact_update"]

PULSE_TYPES = ("stochastic", "expected")
MODES = ("sequential", "summed", "batched")


@register_config
@dataclasses.dataclass
class PulseUpdateConfig(Config):
    """How the tile turns ``x`` and ``δ`` into device pulses.

    Attributes:
        pulse_type: ``"stochastic"`` (Bernoulli pulse trains, the hardware) or ``"expected"``
            (every device moves by its expected number of coincidences; deterministic).
        bl: pulse-train length ``BL`` (the maximum, when ``dynamic_bl``).
        update_management: rebalance ``Cx`` and ``Cd`` by ``sqrt(max|δ| / max|x|)``.
        dynamic_bl: shorten the pulse train for small updates (``BL = ceil(lr max|x| max|δ| / dw_min)``).
        mode: ``"sequential"``: a batch of B samples is B rank-1 pulse updates one after another,
            as the array performs them (the reference). ``"summed"``: every pulse train of the
            batch is drawn, and each device's exact numbers of up and down coincidences over the
            whole batch are applied at once; only the order of the pulses within the batch is
            lost (it matters at bounds and for weight-dependent steps). Cheap when the array is
            small and the batch long, as for convolutions (one rank-1 update per image patch).
            ``"batched"``: one vectorised update per batch: the pulse counts of the column lines
            are drawn exactly, the coincidences given them as one Gaussian per device, applied at
            the present weight (fast for large arrays; see :func:`_batched` for the
            approximations and ``docs/update-modes.md`` for the measured differences).
    """

    polymorphic = True

    pulse_type: str = "stochastic"
    bl: int = 10
    update_management: bool = False
    dynamic_bl: bool = False
    mode: str = "sequential"

    def validate(self) -> None:
        self._check_choice("pulse_type", PULSE_TYPES)
        self._check_choice("mode", MODES)
        if isinstance(self.bl, bool) or not isinstance(self.bl, int) or self.bl < 1:
            self._fail("bl", "must be an integer >= 1 (the number of pulse slots, e.g. 10).")
        for field in ("update_management", "dynamic_bl"):
            if not isinstance(getattr(self, field), bool):
                self._fail(field, "must be true or false.")
        if self.dynamic_bl and not self.update_management:
            self._fail(
                "dynamic_bl",
                "needs update_management=True: the shortened train is chosen so that the rebalanced "
                "probabilities Cx max|x| = Cd max|δ| stay <= 1; without rebalancing the larger side clips "
                "and the mean update is too small (aihwkit couples the two the same way).",
            )


class UpdateCounters:
    """What the update cost the hardware, accumulated over the life of a tile.

    Attributes:
        rank1_updates: rank-1 (outer-product) writes performed on the array.
        pulses: pulses sent on row and column lines together, counted as their expected
            number ``BL (Σ_i p_i + Σ_j q_j)`` per rank-1 update in every mode (the stochastic
            update skips drawing row trains when no column fires, so it cannot count them).
        coincidences: device steps triggered (sum over devices of coincidences).
        steps: batch updates applied (optimizer steps that reached the tile); with the update
            algorithms of :mod:`insitu.update.lowrank` one step is one or more rank-1 writes.
        extra_memory: the most numbers the update algorithm held at once between the samples
            of a batch (:meth:`UpdateAlgorithmConfig.extra_memory`).

    Pulse and coincidence sums are accumulated as tensors so that counting never waits for the
    device; they are converted when read. A fused update (:mod:`insitu.update.fused`) keeps
    running sums of its own and attaches them with :meth:`attach` (objects with ``pulses`` and
    ``coincidences`` properties, read with the rest).
    """

    def __init__(
        self, rank1_updates: int = 0, pulses: float = 0.0, coincidences: float = 0.0, steps: int = 0, extra_memory: int = 0
    ):
        self.rank1_updates = int(rank1_updates)
        self.steps = int(steps)
        self.extra_memory = int(extra_memory)
        self._pulses: list = [float(pulses)]
        self._coincidences: list = [float(coincidences)]
        self._sources: list = []

    def attach(self, source) -> None:
        """Add a running source of pulse and coincidence counts (see the class docstring)."""
        self._sources.append(source)

    def add_pulses(self, n) -> None:
        self._pulses.append(n)
        if len(self._pulses) > 4096:
            self._pulses = [self.pulses]

    def add_coincidences(self, n) -> None:
        self._coincidences.append(n)
        if len(self._coincidences) > 4096:
            self._coincidences = [self.coincidences]

    @property
    def pulses(self) -> float:
        return float(sum(float(v) for v in self._pulses)) + sum(s.pulses for s in self._sources)

    @property
    def coincidences(self) -> float:
        return float(sum(float(v) for v in self._coincidences)) + sum(s.coincidences for s in self._sources)

    def to_dict(self) -> dict:
        return {
            "rank1_updates": self.rank1_updates,
            "pulses": self.pulses,
            "coincidences": self.coincidences,
            "steps": self.steps,
            "extra_memory": self.extra_memory,
        }

    def __repr__(self) -> str:
        return f"UpdateCounters({self.to_dict()})"


def pulse_scales(x_max, d_max, lr: float, dw_min: float, config: PulseUpdateConfig):
    """``(Cx, Cd, BL)`` for rank-1 updates whose inputs peak at ``x_max`` and ``d_max``.

    ``x_max`` and ``d_max`` have shape ``(batch, 1)``. Returns scales that are floats or tensors of
    shape ``(batch, 1)``, and BL as an int or an int tensor of shape ``(batch, 1)``.
    """
    bl = config.bl
    if config.dynamic_bl:
        bl = torch.ceil(lr * x_max * d_max / dw_min).clamp(1, config.bl)
        c = torch.sqrt(lr / (dw_min * bl))
        bl = bl.to(torch.int64)
    else:
        c = math.sqrt(lr / (dw_min * bl))
    if config.update_management:
        # Cx x_max = Cd d_max after rebalancing (Gokmen, Onen & Haensch 2017). The floor keeps a
        # zero vector from producing 0/0: its probabilities stay 0.
        m = torch.sqrt(d_max.clamp_min(1e-30) / x_max.clamp_min(1e-30))
        return c * m, c / m, bl
    return c, c, bl


def exact_update(weights: torch.Tensor, x: torch.Tensor, d: torch.Tensor, lr: float) -> None:
    """The floating-point update ``W -= lr Σ_b δ_b x_bᵀ``, in place (the ideal device)."""
    weights.addmm_(d.t(), x, alpha=-lr)


_NO_CONTEXT = contextlib.nullcontext()


def _times(values: torch.Tensor, scale) -> torch.Tensor:
    """``values * scale`` as a new tensor, or ``values`` itself for the float scale 1 (exact)."""
    if not torch.is_tensor(scale) and scale == 1.0:
        return values
    return values * scale


def pulsed_update(
    weights: torch.Tensor,
    params: torch.Tensor,
    model: DeviceModel,
    x: torch.Tensor,
    d: torch.Tensor,
    lr: float,
    dw_min: float,
    config: PulseUpdateConfig,
    generator: torch.Generator,
    counters: UpdateCounters,
    rng_state: torch.Tensor | None = None,
    cache: dict | None = None,
) -> None:
    """Apply ``ΔW ≈ -lr Σ_b δ_b x_bᵀ`` to ``weights`` in place through device pulses.

    The one entry point of the pulse update for a single array: the backend is chosen by the
    tensors' device (:func:`insitu.update.kernels.select_backend`). On CPU, with ``rng_state``
    given and a device model that has a compiled response, the stochastic ``sequential`` update
    runs in the compiled kernel (:mod:`insitu.update.kernels.compiled`), its random numbers drawn
    from ``rng_state``; everything else runs the PyTorch implementation below (the reference).

    Args:
        weights: the array, shape ``(out, in)``, or ``(out, in, n)`` for unit cells of ``n``
            devices per weight (every device of a cell receives the same pulses).
        params: per-device parameters, shape ``(6, *weights.shape)``.
        model: the device response.
        x: inputs, shape ``(batch, in)``.
        d: errors ``δ = ∂loss/∂y``, shape ``(batch, out)``.
        lr: learning rate.
        dw_min: the nominal device step, which sets ``Cx Cd`` (see module docstring).
        config: pulse settings.
        generator: draws pulses and cycle-to-cycle noise.
        counters: updated in place.
        rng_state: the tile's compiled-kernel generator state (:func:`insitu.update.kernels.rng_state.new_state`).
        cache: a dict the caller keeps between calls (the compiled kernel's views of the state).
    """
    if rng_state is not None and _compiled_sequential(weights, params, model, x, d, lr, dw_min, config, counters, rng_state, cache):
        return
    # Entering no_grad costs as much as a small tensor operation; the optimizer already did.
    with torch.no_grad() if torch.is_grad_enabled() else _NO_CONTEXT:
        x_abs, d_abs = x.abs(), d.abs()
        x_max = d_max = None
        if config.update_management or config.dynamic_bl:
            x_max = x_abs.amax(dim=1, keepdim=True)
            d_max = d_abs.amax(dim=1, keepdim=True)
        cx, cd, bl = pulse_scales(x_max, d_max, lr, dw_min, config)
        px = _times(x_abs, cx).clamp_max_(1)
        pd = _times(d_abs, cd).clamp_max_(1)
        if torch.is_tensor(bl):
            counters.add_pulses(((px.sum(1) + pd.sum(1)) * bl.squeeze(1)).sum())
        else:
            counters.add_pulses(px.sum().add_(pd.sum()).mul_(bl))
        if config.pulse_type == "expected":
            _expected(weights, params, model, x, d, px, pd, bl, counters)
        elif config.mode == "batched":
            _batched(weights, params, model, x, d, px, pd, bl, generator, counters)
        elif config.mode == "summed":
            _summed(weights, params, model, x, d, px, pd, bl, generator, counters)
        else:
            _sequential(weights, params, model, x, d, px, pd, bl, generator, counters)


def _compiled_sequential(weights, params, model, x, d, lr, dw_min, config, counters, rng_state, cache) -> bool:
    """Run the update in the compiled kernel if this backend and update allow it (True if it ran).

    ``cache`` (a dict owned by the caller, e.g. the tile) keeps the kernel and the numpy views of
    the state between calls: at batch 1 the kernel runs for microseconds, so the Python around
    it is kept to a few checks.
    """
    if config.pulse_type != "stochastic" or config.mode != "sequential" or params is None:
        return False
    if getattr(model, "per_device_state", False):
        return False  # state planes updated in place: the torch path (the reference) takes it
    if select_backend(weights.device) != "compiled":
        return False
    plan = cache.get("sequential") if cache is not None else None
    # The packed parameters are a copy: rebuilt when the parameters change (load_state_dict) or
    # any tensor moves to new memory (a dtype or device change keeps the Parameter object).
    key = (weights.data_ptr(), params.data_ptr(), params._version, rng_state.data_ptr())
    if plan is None or plan[0] != key or plan[1] is not model:
        plan = _compiled_plan(key, weights, params, model, rng_state)
        if plan is None:
            return False
        if cache is not None:
            cache["sequential"] = plan
    _, _, kernel, cell, packed, words, spare, tally = plan
    # The kernel keeps running sums in ``tally``; the counters read them when they are read
    # (attached before the kernel adds this update's counts).
    if cache is None or cache.get("counted") is not counters or cache.get("tally") is not tally:
        counters.attach(_KernelTally(tally))
        if cache is not None:
            cache["counted"], cache["tally"] = counters, tally
    kernel(
        cell, packed, _as_numpy(x, weights.dtype), _as_numpy(d, weights.dtype), lr, dw_min, config.bl,
        config.update_management, config.dynamic_bl, model.c2c, words, spare, tally,
    )
    counters.rank1_updates += x.shape[0]
    return True


def _as_numpy(values: torch.Tensor, dtype: torch.dtype):
    """A numpy view of ``values`` in ``dtype``, contiguous (a copy only when needed)."""
    if values.requires_grad:
        values = values.detach()
    if values.dtype != dtype or not values.is_contiguous():
        values = values.to(dtype).contiguous()
    return values.numpy()


class _KernelTally:
    """Pulses and coincidences the compiled kernel counted into its running ``tally`` since this
    was attached to a tile's counters (:meth:`UpdateCounters.attach`)."""

    __slots__ = ("tally", "base_pulses", "base_coincidences")

    def __init__(self, tally: np.ndarray):
        self.tally = tally
        self.base_pulses, self.base_coincidences = float(tally[0]), float(tally[1])

    @property
    def pulses(self) -> float:
        return float(self.tally[0]) - self.base_pulses

    @property
    def coincidences(self) -> float:
        return float(self.tally[1]) - self.base_coincidences


def _compiled_plan(key, weights, params, model, rng_state):
    """What :func:`_compiled_sequential` keeps between calls, or None if ``model`` has no
    compiled response: the kernel, numpy views of the weights and of the generator state, and
    the parameters packed for the kernel."""
    respond = getattr(model, "compiled_response", None)
    respond = respond() if respond is not None else None
    if respond is None:
        return None
    from .kernels.compiled import sequential_kernel
    from .kernels.rng_state import as_views

    cell = weights.detach() if weights.dim() == 3 else weights.detach().unsqueeze(-1)  # (out, in, devices)
    planes = params if params.dim() == 4 else params.unsqueeze(-1)
    # Interleaved per device, (out, in, devices, P'): a device's parameters in one cache line.
    packed = model.pack_for_kernel(planes, weights.dtype)
    return (key, model, sequential_kernel(respond), cell.numpy(), packed.numpy(), *as_views(rng_state), np.zeros(3))


def _sequential(weights, params, model, x, d, px, pd, bl, generator, counters) -> None:
    """The batch as rank-1 pulse updates, one sample after another (``mode="sequential"``).

    Per-sample views are prepared for the whole batch at once: at batch 1 the update is
    dominated by the number of small tensor operations, not by their arithmetic.
    """
    batch, n_in = x.shape
    dtype = weights.dtype
    lengths = bl.flatten().tolist() if torch.is_tensor(bl) else [bl] * batch
    # Signs of the coincidences: ΔW = -lr δ xᵀ, so a device steps up where sign(δ_j) ≠ sign(x_i).
    # Laid out (batch, lines, 1) to broadcast against the (lines, slots) trains.
    x_sign = x.sign().to(dtype).unsqueeze_(2)
    d_neg_sign = d.sign().neg_().to(dtype).unsqueeze_(2)
    px, pd = px.unsqueeze(2), pd.unsqueeze(2)
    # Inputs with many zeros (MNIST background pixels) update a block of the array only.
    nonzero = torch.count_nonzero(x, dim=1).tolist()
    # Our own device model may reuse the gathered block as scratch (a duck-typed one may not).
    overwrite = getattr(type(model), "apply_signed_pulses", None) is DeviceModel.apply_signed_pulses
    for b, length in enumerate(lengths):
        _rank1_stochastic(
            weights, params, model, px[b], pd[b], x_sign[b], d_neg_sign[b], length, 2 * nonzero[b] < n_in,
            generator, counters, overwrite,
        )


def _rank1_stochastic(
    weights, params, model, px, pd, x_sign, d_neg_sign, bl, sparse, generator, counters, overwrite=False
) -> None:
    """One rank-1 pulse update: draw the trains, count coincidences, step the devices that fired.

    Args:
        px, pd: firing probabilities of the row lines ``(in, 1)`` and column lines ``(out, 1)``.
        x_sign, d_neg_sign: ``sign(x)`` ``(in, 1)`` and ``-sign(δ)`` ``(out, 1)``, in the weights' dtype.
        bl: pulse-train length.
        sparse: most inputs are zero; update only the block of rows that fired.
        overwrite: the device model may use the gathered block as scratch.

    Only outputs whose column line fired at least once can change, so the coincidence counts
    and the device response are computed on those weight rows alone (and, for sparse inputs,
    on the fired inputs alone); the result is the same as on the whole array. Column trains are
    drawn first: when none fires (small errors, common late in training) nothing else is drawn.
    Trains are laid out (lines, slots) so that selecting lines copies contiguous memory.
    """
    counters.rank1_updates += 1
    device = px.device
    # Trains as 0/1 floats (compared in place), then signed; uniforms in the default dtype.
    col_fire = torch.rand((pd.shape[0], bl), generator=generator, device=device).lt_(pd)
    cols = col_fire.any(dim=1).nonzero().view(-1)
    if cols.numel() == 0:
        return
    row_fire = torch.rand((px.shape[0], bl), generator=generator, device=device).lt_(px)
    if row_fire.dtype != weights.dtype:
        col_fire, row_fire = col_fire.to(weights.dtype), row_fire.to(weights.dtype)
    col_trains = col_fire.mul_(d_neg_sign).index_select(0, cols)
    if not sparse:
        counts = _per_device(col_trains @ row_fire.mul_(x_sign).t(), weights)  # (n_cols, in) signed coincidences
        # All parameter planes of the fired rows in one gather (None: a model without parameters).
        planes = None if params is None else params.index_select(1, cols)
        block = weights.index_select(0, cols)
        if overwrite:
            new = model.apply_signed_pulses(block, counts, planes, generator, counters, overwrite=True)
        else:
            new = model.apply_signed_pulses(block, counts, planes, generator, counters)
        weights.index_copy_(0, cols, new)
        if getattr(model, "per_device_state", False):
            params.index_copy_(1, cols, planes)  # the model updated the gathered state planes
        return
    rows = row_fire.any(dim=1).nonzero().view(-1)
    if rows.numel() == 0:
        return
    row_trains = row_fire.mul_(x_sign).index_select(0, rows)
    # The block (n_cols, n_rows) is handled flat: devices ``cols * in + rows`` in row-major order.
    counts = _per_device((col_trains @ row_trains.t()).view(-1), weights)
    flat = torch.add(rows, cols.unsqueeze(1), alpha=px.shape[0]).view(-1)
    cell = weights.shape[2:]  # () or (devices per weight,)
    # One gather for all parameter planes of the block instead of one per plane: the batch-1 hot
    # path is dominated by the number of small tensor operations.
    planes = None
    if params is not None:
        planes = params.reshape(params.shape[0], -1, *cell).index_select(1, flat)
    block = weights.reshape(-1, *cell).index_select(0, flat)
    if overwrite:
        block = model.apply_signed_pulses(block, counts, planes, generator, counters, overwrite=True)
    else:
        block = model.apply_signed_pulses(block, counts, planes, generator, counters)
    weights.view(-1, *cell).index_copy_(0, flat, block)
    if getattr(model, "per_device_state", False):
        params.view(params.shape[0], -1, *cell).index_copy_(1, flat, planes)


def _per_device(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Broadcast per-cross-point ``values`` ``(out, in)`` over the devices of multi-device cells."""
    return values.unsqueeze(-1) if weights.dim() == 3 else values


def _signed_counts(x, d, px, pd, bl):
    """Expected coincidences over the batch, split by direction: ``(n_up, n_down)``, each (out, in).

    ``n_down`` collects the samples where ``sign(δ_j) = sign(x_i)`` (the weight shrinks).
    """
    if torch.is_tensor(bl):
        pd = pd * bl  # per-sample train length scales that sample's expected count
    else:
        pd = pd * float(bl)
    pos_x, neg_x = px * (x > 0), px * (x < 0)
    pos_d, neg_d = pd * (d > 0), pd * (d < 0)
    n_down = pos_d.t() @ pos_x + neg_d.t() @ neg_x
    n_up = pos_d.t() @ neg_x + neg_d.t() @ pos_x
    return n_up, n_down


def _expected(weights, params, model, x, d, px, pd, bl, counters) -> None:
    """Deterministic update: each sample moves each device by its expected number of steps."""
    if getattr(model, "per_device_state", False):
        from ..config import ConfigError

        raise ConfigError(
            "pulse_type 'expected' moves devices by fractional numbers of pulses; a device with per-device state "
            "('per_device_state' capability: a SET-only conductance pair) takes whole pulses only."
        )
    for b in range(x.shape[0]):
        blen = bl[b] if torch.is_tensor(bl) else bl
        n_up, n_down = _signed_counts(x[b : b + 1], d[b : b + 1], px[b : b + 1], pd[b : b + 1], blen)
        up = _per_device(n_up > 0, weights)
        weights.copy_(model.apply_pulses(weights, _per_device(n_up + n_down, weights), up, params, None))
        counters.rank1_updates += 1
        counters.add_coincidences(n_up.sum() + n_down.sum())


def binomial(trials, p: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Exact ``Binomial(trials, p)`` draws, vectorised, by inverting the CDF.

    ``trials`` is an int or a tensor broadcastable to ``p``. Costs a few elementwise operations
    per possible count and stops at the largest count drawn, so it is fast when ``trials · p``
    is small, as for the pulse trains of error signals (``torch.binomial`` is ~10x slower here).
    """
    u = torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype)
    n_max = int(trials.max()) if torch.is_tensor(trials) else int(trials)
    q = 1 - p
    ratio = p / q.clamp_min(1e-12)
    pmf = q**trials  # P(k = 0)
    cdf = pmf.clone()
    k = torch.zeros_like(p)
    for j in range(n_max):
        above = u > cdf
        if not bool(above.any()):
            break
        k += above
        # P(k = j + 1) = P(k = j) (n - j) / (j + 1) · p / q
        pmf = pmf * ratio * ((trials - j) / (j + 1) if not torch.is_tensor(trials) else ((trials - j).clamp_min(0) / (j + 1)))
        cdf = cdf + pmf
    return k


def _batched(weights, params, model, x, d, px, pd, bl, generator, counters) -> None:
    """Vectorised batch update (see :class:`PulseUpdateConfig`, ``mode="batched"``).

    The coincidences of a device are ``c_ji = Σ_b Σ_n A_bi^n B_bj^n`` (row trains ``A``, column
    trains ``B``). Devices on one column line share its train, so their counts are correlated;
    with inputs near full scale (``p ≈ 1``) a whole row of weights moves by the same count. To
    keep that, the number of pulses ``k_bj`` each column line fires in each sample is drawn
    exactly (binomial); given ``k``, the counts of different devices are independent, with mean
    ``Σ_b k_bj p_bi`` and variance ``Σ_b k_bj p_bi (1 - p_bi)``, three matrix products. The
    correlation through shared *row* trains (important only when error probabilities approach
    1) is dropped, and :meth:`DeviceModel.apply_mixed` applies the rest as one Gaussian step.
    """
    trials = bl if not torch.is_tensor(bl) else bl.to(pd.dtype)
    k = binomial(trials, pd, generator)  # (batch, out) pulses fired by each column line
    # The factor 1/2 rides on the small (batch, out) operand, not on the (out, in) products.
    half_k = k.mul_(0.5)
    half_total = torch.mm(half_k.t(), px)
    half_signed = torch.mm((half_k * d.sign()).t(), px * x.sign())  # depressing where sign(δ) = sign(x)
    # Fraction of the count's mean that is its residual variance (1 for Poisson-like counts,
    # 0 when every row line fires in every slot).
    fraction = torch.mm(half_k.t(), px * (1 - px)).div_(half_total.clamp_min(1e-30))
    counters.rank1_updates += x.shape[0]
    counters.add_coincidences(2 * half_total.sum())
    half_total, half_signed, fraction = (_per_device(t, weights) for t in (half_total, half_signed, fraction))
    weights.copy_(model.apply_mixed(weights, half_total, half_signed, params, generator, fraction))


def _summed(weights, params, model, x, d, px, pd, bl, generator, counters) -> None:
    """All pulse trains of the batch drawn; exact coincidence counts summed over the batch.

    With the trains of sample ``b`` as ``A_b`` (rows × slots) and ``B_b`` (columns × slots), the
    coincidences of device ``(j, i)`` over the batch are ``Σ_b Σ_n B_bjn A_bin``: one matrix
    product with the samples and slots stacked as the inner dimension (and one more with signs
    to split them into up and down). The counts have exactly the joint distribution of the
    sequential update; the devices then take their up and down steps (with cycle-to-cycle noise)
    at the weight before the batch and are clipped once.
    """
    batch, n_in = x.shape
    n_out = d.shape[1]
    slots = int(bl.max()) if torch.is_tensor(bl) else bl
    dtype, device = weights.dtype, weights.device
    rows = torch.rand((batch, slots, n_in), generator=generator, device=device, dtype=dtype) < px.unsqueeze(1)
    cols = torch.rand((batch, slots, n_out), generator=generator, device=device, dtype=dtype) < pd.unsqueeze(1)
    rows, cols = rows.to(dtype), cols.to(dtype)
    if torch.is_tensor(bl):  # dynamic BL: slots beyond a sample's train length stay silent
        live = (torch.arange(slots, device=device).unsqueeze(0) < bl).to(dtype).unsqueeze(2)
        cols = cols * live
    rows = rows.view(batch * slots, n_in)
    cols = cols.view(batch * slots, n_out)
    # Depressing coincidences are those where sign(δ_j) = sign(x_i).
    x_sign = x.sign().repeat_interleave(slots, dim=0)
    d_sign = d.sign().repeat_interleave(slots, dim=0)
    half_total = torch.mm(cols.t(), rows).mul_(0.5)
    half_signed = torch.mm((cols * d_sign).t(), rows * x_sign).mul_(0.5)
    counters.rank1_updates += batch
    counters.add_coincidences(2 * half_total.sum())
    half_total, half_signed = _per_device(half_total, weights), _per_device(half_signed, weights)
    weights.copy_(model.apply_mixed(weights, half_total, half_signed, params, generator, count_variance=0.0))
