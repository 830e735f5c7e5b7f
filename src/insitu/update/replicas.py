"""The pulsed update for ``R`` replicas in lockstep: one vectorised update for all of them.

Replicas (issue 7) are independent networks that differ only in their seeds and in numbers of
their device and IO configs; they train together so that a batch-1 study pays the per-step cost
of the many small tensor operations once for all ``R``. The arrays are stacked: weights
``(R, out, in)``, per-device parameters ``(R, out, in, 4)`` (+ slopes), inputs ``(R, batch, in)``, errors
``(R, batch, out)``. (The parameters are interleaved per device, so that gathering the devices a
pulse reached reads one contiguous row each.) Each replica's update is the stochastic pulse update of
:mod:`insitu.update.pulse` with its own ``dw_min`` (which sets ``Cx Cd``) and ``BL``; the random
numbers come from one generator, so a replica's run equals a separate run in distribution, not
draw for draw.

Modes, as in :class:`~insitu.update.pulse.PulseUpdateConfig`:

* ``sequential``: the samples of a batch one after another; per sample, each replica fires its
  own row and column trains, and only the block of fired columns × fired rows of every replica
  is touched (padded to the largest block among the replicas; padding lines never fired, so
  their counts are zero and their devices stay as they are);
* ``summed``: all trains of the batch drawn, exact coincidence counts by one batched product;
* ``expected``: deterministic expected counts, sample by sample.

The ``batched`` approximation is not offered for replicas (use ``summed``).
"""

from __future__ import annotations

import torch

from ..devices.base import DeviceModel
from .pulse import PulseUpdateConfig

__all__ = ["ReplicaCounters", "replica_pulsed_update", "replica_exact_update"]


class ReplicaCounters:
    """:class:`~insitu.update.pulse.UpdateCounters` of ``R`` replicas: pulses and coincidences
    per replica (tensors ``(R,)``), rank-1 writes and steps shared (the replicas move in lockstep)."""

    def __init__(self, replicas: int, device=None):
        self.replicas = int(replicas)
        self.rank1_updates = 0
        self.steps = 0
        self.extra_memory = 0
        self.pulses = torch.zeros(replicas, dtype=torch.float64, device=device)
        self.coincidences = torch.zeros(replicas, dtype=torch.float64, device=device)

    def replica(self, r: int) -> dict:
        """The counters of replica ``r`` as :meth:`UpdateCounters.to_dict` gives them."""
        return {
            "rank1_updates": self.rank1_updates,
            "pulses": float(self.pulses[r]),
            "coincidences": float(self.coincidences[r]),
            "steps": self.steps,
            "extra_memory": self.extra_memory,
        }

    def to_dict(self) -> dict:
        return {
            "replicas": self.replicas,
            "rank1_updates": self.rank1_updates,
            "steps": self.steps,
            "extra_memory": self.extra_memory,
            "pulses": self.pulses.tolist(),
            "coincidences": self.coincidences.tolist(),
        }

    @classmethod
    def from_dict(cls, state: dict, device=None) -> "ReplicaCounters":
        counters = cls(state["replicas"], device)
        counters.rank1_updates, counters.steps = int(state["rank1_updates"]), int(state["steps"])
        counters.extra_memory = int(state.get("extra_memory", 0))
        counters.pulses = torch.tensor(state["pulses"], dtype=torch.float64, device=device)
        counters.coincidences = torch.tensor(state["coincidences"], dtype=torch.float64, device=device)
        return counters


def replica_exact_update(weights: torch.Tensor, x: torch.Tensor, d: torch.Tensor, lr: float) -> None:
    """``W_r -= lr Σ_b δ_rb x_rbᵀ`` for every replica, in place (the ideal device)."""
    weights.baddbmm_(d.transpose(1, 2), x, alpha=-lr)


def _pulse_probabilities(x, d, lr, dw_min, bl, config: PulseUpdateConfig):
    """Firing probabilities and train lengths, as :func:`~insitu.update.pulse.pulse_scales`
    computes them, with per-replica ``dw_min`` and ``bl`` (tensors ``(R, 1, 1)``).

    Returns ``(px (R, B, in), pd (R, B, out), lengths (R, B, 1) float)``.
    """
    x_abs, d_abs = x.abs(), d.abs()
    lengths = bl
    if config.update_management or config.dynamic_bl:
        x_max = x_abs.amax(dim=-1, keepdim=True)
        d_max = d_abs.amax(dim=-1, keepdim=True)
    if config.dynamic_bl:
        lengths = torch.minimum(torch.ceil(lr * x_max * d_max / dw_min).clamp_min(1), bl)
    c = torch.sqrt(lr / (dw_min * lengths))
    cx = cd = c
    if config.update_management:
        m = torch.sqrt(d_max.clamp_min(1e-30) / x_max.clamp_min(1e-30))
        cx, cd = c * m, c / m
    px = (x_abs * cx).clamp_max_(1)
    pd = (d_abs * cd).clamp_max_(1)
    return px, pd, lengths.expand(x.shape[0], x.shape[1], 1)


def replica_pulsed_update(
    weights: torch.Tensor,
    params: torch.Tensor,
    model: DeviceModel,
    x: torch.Tensor,
    d: torch.Tensor,
    lr: float,
    dw_min: torch.Tensor,
    bl: torch.Tensor,
    config: PulseUpdateConfig,
    generator: torch.Generator,
    counters: ReplicaCounters,
) -> None:
    """Apply ``ΔW_r ≈ -lr Σ_b δ_rb x_rbᵀ`` to every replica ``r`` in place through device pulses.

    Args:
        weights: ``(R, out, in)``.
        params: per-device parameters interleaved per device: ``(steps_and_bounds, slopes)``
            with ``steps_and_bounds`` ``(R, out, in, 4)`` = ``dw_up, dw_down, w_min, w_max`` and
            ``slopes`` ``(R, out, in, 2)`` = ``slope_up, slope_down``, or ``None`` (constant steps).
        model: the device response (its ``c2c`` a float or a tensor ``(R, 1, 1)``).
        x: inputs ``(R, batch, in)``; d: errors ``(R, batch, out)``.
        lr: learning rate (shared).
        dw_min: nominal step of each replica's device, ``(R, 1, 1)`` (sets ``Cx Cd``).
        bl: pulse-train length of each replica, ``(R, 1, 1)`` float (the maximum with dynamic BL).
        config: pulse settings shared by the replicas (``bl`` aside).
        generator: draws pulses and cycle-to-cycle noise.
        counters: updated in place.
    """
    with torch.no_grad():
        px, pd, lengths = _pulse_probabilities(x, d, lr, dw_min, bl, config)
        counters.pulses += ((px.sum(-1) + pd.sum(-1)) * lengths.squeeze(-1)).sum(1).to(counters.pulses.dtype)
        counters.rank1_updates += x.shape[1]
        slots = int(lengths.max())
        # Slots beyond a replica's (or a sample's, with dynamic BL) train length stay silent.
        uniform = bool((lengths == slots).all())
        live = None if uniform else torch.arange(slots, device=x.device) < lengths  # (R, B, slots)
        if config.pulse_type == "expected":
            _expected(weights, _planes(*params), model, x, d, px, pd, lengths, counters)
        elif config.mode == "summed":
            _summed(weights, _planes(*params), model, x, d, px, pd, slots, live, generator, counters)
        elif config.mode == "sequential":
            x_sign, d_neg_sign = x.sign(), d.sign().neg_()
            for b in range(x.shape[1]):
                _rank1_block(
                    weights, params, model, px[:, b], pd[:, b], x_sign[:, b], d_neg_sign[:, b], slots,
                    None if live is None else live[:, b], generator, counters,
                )
        else:
            raise ValueError(f"update mode '{config.mode}' is not available for replicas in lockstep; use 'sequential' or 'summed'.")


def _fired_first(fired: torch.Tensor, count: int) -> torch.Tensor:
    """Indices ``(R, count)`` of each replica's lines, those that fired first (in line order)."""
    return torch.argsort(fired.logical_not().to(torch.int8), dim=1, stable=True)[:, :count]


def _rank1_block(weights, params, model, px, pd, x_sign, d_neg_sign, slots, live, generator, counters) -> None:
    """One rank-1 pulse update in every replica (``px`` ``(R, in)``, ``pd`` ``(R, out)``).

    Every replica draws its column trains and its row trains; the fired lines of each replica
    are moved to the front (:func:`_fired_first`) and a block of the largest number of fired
    columns × fired rows among the replicas is gathered from each: the lines beyond a replica's
    own fired ones never fired, so their trains are zero, their counts zero, and their devices
    are written back unchanged (weights always lie within their bounds). Each block index is one
    device, so the scatter has no collisions.
    """
    n_rep, n_out = pd.shape
    n_in = px.shape[1]
    device, dtype = weights.device, weights.dtype
    col_fire = torch.rand((n_rep, n_out, slots), generator=generator, device=device) < pd.unsqueeze(-1)
    if live is not None:
        col_fire &= live.unsqueeze(1)
    col_fired = col_fire.any(-1)
    n_cols = int(col_fired.sum(1).max())
    if n_cols == 0:
        return
    row_fire = torch.rand((n_rep, n_in, slots), generator=generator, device=device) < px.unsqueeze(-1)
    row_fired = row_fire.any(-1)
    n_rows = int(row_fired.sum(1).max())
    if n_rows == 0:
        return
    cols = _fired_first(col_fired, n_cols)  # (R, n_cols)
    rows = _fired_first(row_fired, n_rows)  # (R, n_rows)
    col_trains = col_fire.gather(1, cols.unsqueeze(-1).expand(-1, -1, slots)).to(dtype)
    col_trains *= d_neg_sign.gather(1, cols).unsqueeze(-1)
    row_trains = row_fire.gather(1, rows.unsqueeze(-1).expand(-1, -1, slots)).to(dtype)
    row_trains *= x_sign.gather(1, rows).unsqueeze(-1)
    counts = torch.bmm(col_trains, row_trains.transpose(1, 2))  # (R, n_cols, n_rows), signed
    counters.coincidences += counts.abs().sum((1, 2)).to(counters.coincidences.dtype)
    replica_offset = torch.arange(n_rep, device=device).mul_(n_out).unsqueeze(1)
    flat = (cols + replica_offset).mul_(n_in).unsqueeze(2).add(rows.unsqueeze(1)).view(-1)
    # Parameters are stored interleaved, (R·out·in, 6): one contiguous row per device to gather.
    # (Compacting the block to the devices with coincidences first costs more than it saves:
    # most devices of a block have some.)
    steps_and_bounds, slopes = params
    planes = _gather_rows(steps_and_bounds, flat).t().reshape(4, *counts.shape)
    if slopes is not None:
        planes = _planes(planes, _gather_rows(slopes, flat).t().reshape(2, *counts.shape), stacked_first=True)
    block = weights.view(-1).index_select(0, flat).view(counts.shape)
    if model.has_slope:
        new = model.apply_signed_pulses(block, counts, planes, generator)
    else:
        new = _constant_step(block, counts, planes, model, generator)
    weights.view(-1).index_copy_(0, flat, new.view(-1))


def _constant_step(weights, counts, planes, model: DeviceModel, generator) -> torch.Tensor:
    """:meth:`DeviceModel.apply_signed_pulses` for constant steps and integer ``counts``, in
    fewer and cheaper passes (the block of R replicas is large, so passes cost, not dispatch).

    ``|c|`` coincidences of one sign move a device by ``step (c + c2c sqrt|c| ξ)``, written here as
    ``(dw_up c⁺ + dw_down c⁻)(1 + c2c ξ / sqrt(max(|c|, 1)))`` with ``c⁺ = max(c, 0)``,
    ``c⁻ = min(c, 0)``: equal for every integer ``c`` up to the sign of ``ξ`` for depressing
    pulses (the same distribution), without a select and without ``sqrt(0)``, which is several
    times slower than other square roots on common CPUs.
    """
    # planes: (4, *S) = dw_up, dw_down, w_min, w_max
    mean = planes[0] * counts.clamp_min(0)
    mean.addcmul_(planes[1], counts.clamp_max(0))
    if generator is not None and model.noisy:
        noise = torch.randn(counts.shape, generator=generator, device=counts.device, dtype=counts.dtype)
        noise.mul_(counts.abs().clamp_min_(1).rsqrt_()).mul_(model.c2c).add_(1)
        mean.mul_(noise)
    return torch.clamp(mean.add_(weights), planes[2], planes[3])


def _gather_rows(rows: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """``rows.view(-1, k)[flat]``, ``(n, k)``, for per-device rows of ``k`` numbers.

    Rows of 8 or 16 bytes are gathered as single float64 / complex128 elements: a 1-D gather of
    wide elements is several times faster on the CPU than gathering the rows of a 2-D tensor.
    """
    k = rows.shape[-1]
    wide = {8: torch.float64, 16: torch.complex128}.get(k * rows.element_size())
    if wide is not None and rows.is_contiguous():
        return rows.view(wide).view(-1).index_select(0, flat).view(rows.dtype).view(-1, k)
    return rows.reshape(-1, k).index_select(0, flat)


def _planes(steps_and_bounds: torch.Tensor, slopes: torch.Tensor | None, stacked_first: bool = False) -> torch.Tensor:
    """The six parameter planes ``(6, *S)`` in :data:`~insitu.devices.base.PARAM_NAMES` order,
    from steps-and-bounds and slopes given per device (last axis) or, with ``stacked_first``,
    as planes (first axis)."""
    if not stacked_first:
        steps_and_bounds = steps_and_bounds.movedim(-1, 0)
        slopes = None if slopes is None else slopes.movedim(-1, 0)
    zero = torch.zeros_like(steps_and_bounds[0])
    slope_up, slope_down = (zero, zero) if slopes is None else (slopes[0], slopes[1])
    dw_up, dw_down, w_min, w_max = steps_and_bounds
    return torch.stack([dw_up, dw_down, slope_up, slope_down, w_min, w_max])


def _summed(weights, params, model, x, d, px, pd, slots, live, generator, counters) -> None:
    """All trains of the batch drawn, exact counts per device (``mode="summed"`` of
    :func:`insitu.update.pulse._summed`, one batched product per replica stack)."""
    n_rep, batch, n_in = x.shape
    n_out = d.shape[2]
    device, dtype = weights.device, weights.dtype
    rows = (torch.rand((n_rep, batch, slots, n_in), generator=generator, device=device, dtype=dtype) < px.unsqueeze(2)).to(dtype)
    cols = (torch.rand((n_rep, batch, slots, n_out), generator=generator, device=device, dtype=dtype) < pd.unsqueeze(2)).to(dtype)
    if live is not None:
        cols = cols * live.unsqueeze(-1).to(dtype)
    # Depressing coincidences are those where sign(δ_j) = sign(x_i).
    signed_rows = (rows * x.sign().unsqueeze(2)).view(n_rep, batch * slots, n_in)
    signed_cols = (cols * d.sign().unsqueeze(2)).view(n_rep, batch * slots, n_out)
    rows, cols = rows.view(n_rep, batch * slots, n_in), cols.view(n_rep, batch * slots, n_out)
    half_total = torch.bmm(cols.transpose(1, 2), rows).mul_(0.5)
    half_signed = torch.bmm(signed_cols.transpose(1, 2), signed_rows).mul_(0.5)
    counters.coincidences += (2 * half_total).sum((1, 2)).to(counters.coincidences.dtype)
    weights.copy_(model.apply_mixed(weights, half_total, half_signed, params, generator, count_variance=0.0))


def _expected(weights, params, model, x, d, px, pd, lengths, counters) -> None:
    """Deterministic update: each sample moves each device by its expected number of steps."""
    pd = pd * lengths
    for b in range(x.shape[1]):
        xb, db = x[:, b : b + 1], d[:, b : b + 1]
        pos_x, neg_x = px[:, b : b + 1] * (xb > 0), px[:, b : b + 1] * (xb < 0)
        pos_d, neg_d = pd[:, b : b + 1] * (db > 0), pd[:, b : b + 1] * (db < 0)
        n_down = pos_d.transpose(1, 2) @ pos_x + neg_d.transpose(1, 2) @ neg_x
        n_up = pos_d.transpose(1, 2) @ neg_x + neg_d.transpose(1, 2) @ pos_x
        weights.copy_(model.apply_pulses(weights, n_up + n_down, n_up > 0, params, None))
        counters.coincidences += (n_up + n_down).sum((1, 2)).to(counters.coincidences.dtype)
