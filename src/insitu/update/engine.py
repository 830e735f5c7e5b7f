"""The PyTorch pulse-update engine: every mode written once, over one stacked layout.

This is the reference implementation of the pulsed update (Gokmen & Vlasov 2016, Eq. 2-3), the
CUDA path and the fallback of the compiled CPU kernels (:mod:`insitu.update.kernels`). Every
layout the engine serves is a view of one shape, so each mode exists once:

* weights ``(G, out, in, n)``: ``G`` arrays updated together (1 for a single tile, ``R`` for
  replicas in lockstep), ``n`` devices per cross-point (1, or the unit cell of
  ``devices_per_weight``: every device of a cell receives the same coincidences);
* parameters ``(P, G, out, in, n)`` in the device model's plane layout
  (:attr:`~insitu.devices.DeviceModel.param_names`), or ``None``;
* inputs ``x`` ``(G, batch, in)``, errors ``d`` ``(G, batch, out)``.

The entry points make these views: :func:`insitu.update.pulse.pulsed_update` (one array, a unit
cell, the LSP of the PCM cell) and :func:`insitu.update.replicas.replica_pulsed_update` (a stacked
replica axis). The several tiles of a network updated together on this backend
(:mod:`insitu.update.fused`, the multi-tensor layout) use the same probabilities
(:func:`pulse_probabilities`) and the same device response.

One function computes the firing probabilities (``Cx``, ``Cd``, update management, dynamic BL);
the modes draw the coincidences; one device-response call of the model
(:meth:`~insitu.devices.DeviceModel.apply_signed_pulses`, ``apply_mixed``, ``apply_pulses``)
applies them. ``counters`` receive per-array tensors ``(G,)`` of pulses and coincidences
(``add_pulses``, ``add_coincidences``) and the number of rank-1 writes (``rank1_updates``).
"""

from __future__ import annotations

import math

import torch

from ..config import ConfigError
from ..devices.base import DeviceModel

__all__ = ["pulse_scales", "pulse_probabilities", "stacked_update", "binomial"]


def pulse_scales(x_max, d_max, lr: float, nominal_step, config, bl=None):
    """``(Cx, Cd, BL)`` for rank-1 updates whose inputs peak at ``x_max`` and ``d_max``.

    Gokmen & Vlasov 2016: ``Cx = Cd = sqrt(lr / (BL · step))`` makes the expected number of
    coincidences ``BL Cx Cd |x_i δ_j|`` equal ``lr |x_i δ_j| / step``. Update management (Gokmen,
    Onen & Haensch 2017) rebalances them by ``m = sqrt(max|δ| / max|x|)``: ``Cx = C m``,
    ``Cd = C / m``. Dynamic BL (as the peer simulator) shortens the train to
    ``BL = ceil(lr max|x| max|δ| / step)``, at most the configured one.

    Args:
        x_max, d_max: peaks ``(..., batch, 1)`` (only read with update management or dynamic BL).
        lr: learning rate.
        nominal_step: the device's nominal step (``DeviceConfig.nominal_step``): a float, or a
            tensor broadcasting against the peaks (one per array, e.g. ``(G, 1, 1)``).
        config: the :class:`~insitu.update.pulse.PulseUpdateConfig`.
        bl: the train length: ``config.bl`` by default, or a tensor (one per array).

    Returns:
        ``Cx``, ``Cd`` (floats or tensors) and the train length: an int, or a float tensor of
        whole numbers broadcasting against the peaks (dynamic BL, or a per-array ``bl``).
    """
    bl = config.bl if bl is None else bl
    if config.dynamic_bl:
        wanted = torch.ceil(lr * x_max * d_max / nominal_step)
        bl = torch.minimum(wanted.clamp_min(1), bl) if torch.is_tensor(bl) else wanted.clamp(1, bl)
    if torch.is_tensor(bl) or torch.is_tensor(nominal_step):
        c = torch.sqrt(lr / (nominal_step * bl))
    else:
        c = math.sqrt(lr / (nominal_step * bl))
    if config.update_management:
        # Cx x_max = Cd d_max after rebalancing. The floor keeps a zero vector from producing
        # 0/0: its probabilities stay 0.
        m = torch.sqrt(d_max.clamp_min(1e-30) / x_max.clamp_min(1e-30))
        return c * m, c / m, bl
    return c, c, bl


def _times(values: torch.Tensor, scale) -> torch.Tensor:
    """``values * scale`` as a new tensor, or ``values`` itself for the float scale 1 (exact)."""
    if not torch.is_tensor(scale) and scale == 1.0:
        return values
    return values * scale


def pulse_probabilities(x, d, lr: float, nominal_step, config, bl=None):
    """Firing probabilities of the row and column lines and the train lengths.

    ``x`` ``(..., batch, in)``, ``d`` ``(..., batch, out)``; ``nominal_step`` and ``bl`` as
    :func:`pulse_scales`. Returns ``px = min(Cx |x|, 1)``, ``pd = min(Cd |δ|, 1)`` (shapes of
    ``x`` and ``d``) and the lengths (an int, or a tensor broadcasting as ``(..., batch, 1)``).
    """
    x_abs, d_abs = x.abs(), d.abs()
    x_max = d_max = None
    if config.update_management or config.dynamic_bl:
        x_max = x_abs.amax(dim=-1, keepdim=True)
        d_max = d_abs.amax(dim=-1, keepdim=True)
    cx, cd, lengths = pulse_scales(x_max, d_max, lr, nominal_step, config, bl)
    return _times(x_abs, cx).clamp_max_(1), _times(d_abs, cd).clamp_max_(1), lengths


def stacked_update(weights, params, model: DeviceModel, x, d, lr: float, nominal_step, config, generator, counters, bl=None) -> None:
    """``ΔW_g ≈ -lr Σ_b δ_gb x_gbᵀ`` for every array ``g`` of the stack, in place, through pulses.

    Args:
        weights: ``(G, out, in, n)`` (a view of the caller's storage: written in place).
        params: ``(P, G, out, in, n)`` per-device parameters, or ``None`` (a model without any).
        model: the device response; its ``c2c`` a float or a tensor ``(G, 1, 1, 1)``.
        x: ``(G, batch, in)``; d: ``(G, batch, out)``.
        lr: learning rate; nominal_step, bl: as :func:`pulse_scales`.
        config: the :class:`~insitu.update.pulse.PulseUpdateConfig` (mode and pulse type).
        generator: draws the pulses and the cycle-to-cycle noise.
        counters: receives ``add_pulses((G,))``, ``add_coincidences((G,))`` and ``rank1_updates``.
    """
    px, pd, lengths = pulse_probabilities(x, d, lr, nominal_step, config, bl)
    per_sample = px.sum(-1).add_(pd.sum(-1))  # (G, batch): expected pulses are BL times this
    if torch.is_tensor(lengths):
        per_sample.mul_(lengths.squeeze(-1))
        counters.add_pulses(per_sample.sum(-1))
    else:
        counters.add_pulses(per_sample.sum(-1).mul_(lengths))
    counters.rank1_updates += x.shape[1]
    if config.pulse_type == "expected":
        _expected(weights, params, model, x, d, px, pd, lengths, counters)
    elif config.mode == "batched":
        _batched(weights, params, model, x, d, px, pd, lengths, generator, counters)
    elif config.mode == "summed":
        _summed(weights, params, model, x, d, px, pd, lengths, generator, counters)
    else:
        _sequential(weights, params, model, x, d, px, pd, lengths, generator, counters)


# -- sequential -------------------------------------------------------------------------------

def _sequential(weights, params, model, x, d, px, pd, lengths, generator, counters) -> None:
    """The batch as rank-1 pulse updates, one sample after another (``mode="sequential"``).

    Per-sample views are prepared for the whole batch at once: at batch 1 the update is
    dominated by the number of small tensor operations, not by their arithmetic.
    """
    n_arrays, batch, n_in = x.shape
    dtype = weights.dtype
    # Signs of the coincidences: ΔW = -lr δ xᵀ, so a device steps up where sign(δ_j) ≠ sign(x_i).
    x_sign = x.sign().to(dtype)
    d_neg_sign = d.sign().neg_().to(dtype)
    # Our own device model may reuse the gathered block as scratch (a duck-typed one may not).
    overwrite = getattr(type(model), "apply_signed_pulses", None) is DeviceModel.apply_signed_pulses
    if n_arrays == 1:
        # One array: each sample draws trains of its own length, and an input with many zeros
        # (MNIST background pixels) updates the block of fired rows only.
        lengths = lengths.flatten().tolist() if torch.is_tensor(lengths) else [lengths] * batch
        nonzero = torch.count_nonzero(x[0], dim=1).tolist()
        for b in range(batch):
            _rank1(
                weights, params, model, px[:, b], pd[:, b], x_sign[:, b], d_neg_sign[:, b], int(lengths[b]), None,
                2 * nonzero[b] < n_in, generator, counters, overwrite,
            )
        return
    # Several arrays: trains of the longest length, the slots beyond an array's (or a sample's,
    # with dynamic BL) own length silent.
    slots, live = lengths, None
    if torch.is_tensor(lengths):
        slots = int(lengths.max())
        if not bool((lengths == slots).all()):
            live = torch.arange(slots, device=x.device) < lengths.expand(n_arrays, batch, 1)  # (G, batch, slots)
    for b in range(batch):
        _rank1(
            weights, params, model, px[:, b], pd[:, b], x_sign[:, b], d_neg_sign[:, b], slots,
            None if live is None else live[:, b], True, generator, counters, overwrite,
        )


def _fired_first(fired: torch.Tensor) -> torch.Tensor:
    """``(G, k)`` line indices per array, the lines that fired first (in line order), ``k`` the
    most lines fired in any array. For one array these are exactly its fired lines; for several,
    an array that fired fewer is padded with lines that did not fire (their trains are zero)."""
    if fired.shape[0] == 1:
        return fired[0].nonzero().view(1, -1)
    count = int(fired.sum(1).max())
    return torch.argsort(fired.logical_not().to(torch.int8), dim=1, stable=True)[:, :count]


def _select_lines(trains: torch.Tensor, lines: torch.Tensor) -> torch.Tensor:
    """``trains`` ``(G, L, slots)`` at ``lines`` ``(G, k)``: ``(G, k, slots)``."""
    if trains.shape[0] == 1:
        return trains[0].index_select(0, lines[0]).unsqueeze(0)
    return trains.gather(1, lines.unsqueeze(-1).expand(-1, -1, trains.shape[-1]))


def _rank1(weights, params, model, px, pd, x_sign, d_neg_sign, slots, live, sparse, generator, counters, overwrite) -> None:
    """One rank-1 pulse update of every array: draw the trains, count coincidences, step the
    devices that received any.

    Args:
        px, pd: firing probabilities of the row lines ``(G, in)`` and column lines ``(G, out)``.
        x_sign, d_neg_sign: ``sign(x)`` ``(G, in)`` and ``-sign(δ)`` ``(G, out)``, weights' dtype.
        slots: pulse-train length; live: ``(G, slots)`` slots that may fire, or None (all).
        sparse: update the block of fired columns × fired rows (else fired columns × all rows).
        overwrite: the device model may use the gathered block as scratch.

    Only outputs whose column line fired at least once can change, so the coincidence counts
    and the device response are computed on those weight rows alone; the result is the same as
    on the whole array. Column trains are drawn first: when none fires (small errors, common
    late in training) nothing else is drawn. Trains are laid out (lines, slots) so that
    selecting lines copies contiguous memory.
    """
    n_arrays, n_out = pd.shape
    n_in = px.shape[1]
    device, dtype = weights.device, weights.dtype
    # Trains as 0/1 floats (compared in place), uniforms in the default dtype.
    col_fire = torch.rand((n_arrays, n_out, slots), generator=generator, device=device).lt_(pd.unsqueeze(-1))
    if live is not None:
        col_fire.mul_(live.unsqueeze(1))
    cols = _fired_first(col_fire.any(dim=-1))
    if cols.shape[1] == 0:
        return
    row_fire = torch.rand((n_arrays, n_in, slots), generator=generator, device=device).lt_(px.unsqueeze(-1))
    if row_fire.dtype != dtype:
        col_fire, row_fire = col_fire.to(dtype), row_fire.to(dtype)
    col_trains = _select_lines(col_fire.mul_(d_neg_sign.unsqueeze(-1)), cols)
    n_planes = 0 if params is None else params.shape[0]
    cell = weights.shape[-1]  # devices per cross-point
    if n_arrays > 1:
        cols = cols + torch.arange(n_arrays, device=device).mul_(n_out).unsqueeze(1)  # rows of the stacked (G·out, in)
    if not sparse:
        # Fired columns × all rows: the block is whole weight rows.
        counts = torch.bmm(col_trains, row_fire.mul_(x_sign.unsqueeze(-1)).transpose(1, 2))  # (G, n_cols, in) signed
        index, flat_weights = cols.view(-1), weights.view(-1, n_in, cell)
        flat_params = None if params is None else params.view(n_planes, -1, n_in, cell)
    else:
        rows = _fired_first(row_fire.any(dim=-1))
        if rows.shape[1] == 0:
            return
        row_trains = _select_lines(row_fire, rows).mul_(_select_signs(x_sign, rows))
        counts = torch.bmm(col_trains, row_trains.transpose(1, 2))  # (G, n_cols, n_rows) signed
        # The block's devices by flat index ``column · in + row`` of the stacked array.
        index = torch.add(rows.unsqueeze(1), cols.unsqueeze(2), alpha=n_in).view(-1)
        flat_weights = weights.view(-1, cell)
        flat_params = None if params is None else params.view(n_planes, -1, cell)
    counters.add_coincidences(counts.abs().sum((1, 2)))
    block_shape = (*counts.shape, cell)
    # One gather for all parameter planes of the block instead of one per plane.
    planes = None if params is None else flat_params.index_select(1, index).view(n_planes, *block_shape)
    block = flat_weights.index_select(0, index).view(block_shape)
    counts = counts.unsqueeze(-1)
    if overwrite:
        new = model.apply_signed_pulses(block, counts, planes, generator, None, overwrite=True)
    else:
        new = model.apply_signed_pulses(block, counts, planes, generator)
    flat_weights.index_copy_(0, index, new.view(-1, *flat_weights.shape[1:]))
    if getattr(model, "per_device_state", False):
        flat_params.index_copy_(1, index, planes.view(n_planes, -1, *flat_params.shape[2:]))


def _select_signs(signs: torch.Tensor, lines: torch.Tensor) -> torch.Tensor:
    """``signs`` ``(G, L)`` at ``lines`` ``(G, k)``, as ``(G, k, 1)``."""
    if signs.shape[0] == 1:
        return signs[0].index_select(0, lines[0]).view(1, -1, 1)
    return signs.gather(1, lines).unsqueeze(-1)


# -- summed, expected, batched ----------------------------------------------------------------

def _summed(weights, params, model, x, d, px, pd, lengths, generator, counters) -> None:
    """All pulse trains of the batch drawn; exact coincidence counts summed over the batch.

    With the trains of sample ``b`` as ``A_b`` (rows × slots) and ``B_b`` (columns × slots), the
    coincidences of device ``(j, i)`` over the batch are ``Σ_b Σ_n B_bjn A_bin``: one matrix
    product with the samples and slots stacked as the inner dimension (and one more with signs
    to split them into up and down). The counts have exactly the joint distribution of the
    sequential update; the devices then take their up and down steps (with cycle-to-cycle noise)
    at the weight before the batch and are clipped once.
    """
    n_arrays, batch, n_in = x.shape
    n_out = d.shape[2]
    slots = int(lengths.max()) if torch.is_tensor(lengths) else lengths
    dtype, device = weights.dtype, weights.device
    rows = (torch.rand((n_arrays, batch, slots, n_in), generator=generator, device=device, dtype=dtype) < px.unsqueeze(2)).to(dtype)
    cols = (torch.rand((n_arrays, batch, slots, n_out), generator=generator, device=device, dtype=dtype) < pd.unsqueeze(2)).to(dtype)
    if torch.is_tensor(lengths):  # slots beyond an array's or a sample's train length stay silent
        cols.mul_((torch.arange(slots, device=device) < lengths).to(dtype).unsqueeze(-1))
    # Depressing coincidences are those where sign(δ_j) = sign(x_i).
    signed_rows = (rows * x.sign().unsqueeze(2)).view(n_arrays, batch * slots, n_in)
    signed_cols = (cols * d.sign().unsqueeze(2)).view(n_arrays, batch * slots, n_out)
    rows, cols = rows.view(n_arrays, batch * slots, n_in), cols.view(n_arrays, batch * slots, n_out)
    half_total = torch.bmm(cols.transpose(1, 2), rows).mul_(0.5)
    half_signed = torch.bmm(signed_cols.transpose(1, 2), signed_rows).mul_(0.5)
    counters.add_coincidences(half_total.sum((1, 2)).mul_(2))
    new = model.apply_mixed(weights, half_total.unsqueeze(-1), half_signed.unsqueeze(-1), params, generator, count_variance=0.0)
    weights.copy_(new)


def _refuse_fractional(model, what: str) -> None:
    if getattr(model, "per_device_state", False):
        raise ConfigError(
            f"{what} moves devices by fractional numbers of pulses; a device with per-device state "
            "('per_device_state' capability: a SET-only conductance pair) takes whole pulses only."
        )


def _expected(weights, params, model, x, d, px, pd, lengths, counters) -> None:
    """Deterministic update (``pulse_type="expected"``): each sample moves each device by its
    expected numbers of up and down steps, ``BL px_i pd_j`` split by the signs."""
    _refuse_fractional(model, "pulse_type 'expected'")
    pd = pd * lengths  # a sample's train length scales its expected counts
    for b in range(x.shape[1]):
        xb, db = x[:, b : b + 1], d[:, b : b + 1]
        pos_x, neg_x = px[:, b : b + 1] * (xb > 0), px[:, b : b + 1] * (xb < 0)
        pos_d, neg_d = pd[:, b : b + 1] * (db > 0), pd[:, b : b + 1] * (db < 0)
        # Depressing where sign(δ_j) = sign(x_i).
        n_down = pos_d.transpose(1, 2) @ pos_x + neg_d.transpose(1, 2) @ neg_x
        n_up = pos_d.transpose(1, 2) @ neg_x + neg_d.transpose(1, 2) @ pos_x
        total = n_up + n_down
        weights.copy_(model.apply_pulses(weights, total.unsqueeze(-1), (n_up > 0).unsqueeze(-1), params, None))
        counters.add_coincidences(total.sum((1, 2)))


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


def _batched(weights, params, model, x, d, px, pd, lengths, generator, counters) -> None:
    """Vectorised batch update (``mode="batched"``).

    The coincidences of a device are ``c_ji = Σ_b Σ_n A_bi^n B_bj^n`` (row trains ``A``, column
    trains ``B``). Devices on one column line share its train, so their counts are correlated;
    with inputs near full scale (``p ≈ 1``) a whole row of weights moves by the same count. To
    keep that, the number of pulses ``k_bj`` each column line fires in each sample is drawn
    exactly (binomial); given ``k``, the counts of different devices are independent, with mean
    ``Σ_b k_bj p_bi`` and variance ``Σ_b k_bj p_bi (1 - p_bi)``, three matrix products. The
    correlation through shared *row* trains (important only when error probabilities approach
    1) is dropped, and :meth:`DeviceModel.apply_mixed` applies the rest as one Gaussian step.
    """
    _refuse_fractional(model, "mode 'batched'")
    trials = lengths if not torch.is_tensor(lengths) else lengths.to(pd.dtype)
    k = binomial(trials, pd, generator)  # (G, batch, out) pulses fired by each column line
    # The factor 1/2 rides on the small (batch, out) operand, not on the (out, in) products.
    half_k = k.mul_(0.5)
    half_total = half_k.transpose(1, 2) @ px
    half_signed = (half_k * d.sign()).transpose(1, 2) @ (px * x.sign())  # depressing where sign(δ) = sign(x)
    # Fraction of the count's mean that is its residual variance (1 for Poisson-like counts,
    # 0 when every row line fires in every slot).
    fraction = (half_k.transpose(1, 2) @ (px * (1 - px))).div_(half_total.clamp_min(1e-30))
    counters.add_coincidences(half_total.sum((1, 2)).mul_(2))
    half_total, half_signed, fraction = (t.unsqueeze(-1) for t in (half_total, half_signed, fraction))
    weights.copy_(model.apply_mixed(weights, half_total, half_signed, params, generator, fraction))
