"""Symmetry-point tools (``../shared/reference/algorithms.md`` §2): measure, predict, zero-shift.

The symmetry point ``w*`` of a device is the weight where one up pulse and one down pulse have the
same size. Alternating up/down pulse pairs change the weight by ``Δ⁺(w) - Δ⁻(w)`` a pair, which is
zero at ``w*`` and decreasing there, so the weight settles at ``w*``: random up/down pulses of an
SGD update with zero mean pull every weight there. :func:`measure_symmetry_point` does that to
every device of a tile (or of freshly drawn devices of a config); :func:`analytic_symmetry_point`
gives it in closed form for the linear families (soft bounds, linear step) and soft bounds with
reference; :func:`zero_shift` programs the reference of a reference device
(``SoftBoundsReferenceDevice``, ``PowStepReferenceDevice``) so that the symmetry point reads as
weight 0 (Kim et al. 2019's "zero shifting").
"""

from __future__ import annotations

import torch

from ..config import ConfigError
from .base import PARAM_NAMES, DeviceConfig

__all__ = ["measure_symmetry_point", "analytic_symmetry_point", "zero_shift"]


def _model_params_weights(target, shape, seed):
    """``(model, params, weights)`` of a tile, or of devices of ``shape`` drawn from a config."""
    if isinstance(target, DeviceConfig):
        params = target.draw_parameters(tuple(shape), torch.Generator().manual_seed(seed))
        if params is None:
            raise ConfigError(f"{type(target).__name__} is an exact device: it has no symmetry point.")
        return target.model(), params, torch.zeros(tuple(shape))
    params = getattr(target, "device_params", None)
    if params is None:
        raise ConfigError("measure_symmetry_point needs a pulsed tile (an AnalogTile with device parameters) or a device config.")
    return target.device_model, params, target.weight.detach().clone()


@torch.no_grad()
def measure_symmetry_point(
    target,
    pairs: int = 2000,
    average: int = 200,
    *,
    shape: tuple[int, ...] = (1, 1),
    seed: int = 0,
    start: torch.Tensor | float | None = None,
    noise: bool = True,
) -> torch.Tensor:
    """The symmetry point of every device, found by alternating up/down pulses.

    Args:
        target: an :class:`~insitu.tile.AnalogTile` (its devices, from its present weights; the
            tile is not changed), or a :class:`DeviceConfig` (devices of ``shape`` drawn with
            ``seed``, from weight 0).
        pairs: number of (up, down) pulse pairs applied to every device. The weight approaches
            ``w*`` by a factor ``1 - (Δ⁺' - Δ⁻')`` a pair (about ``1 - 2 dw / w_max`` for soft
            bounds), so a few times ``w_max / dw`` pairs settle it.
        average: the estimate is the mean, over the last ``average`` pairs, of the midpoint of the
            weight after the up and after the down pulse (the midpoint removes the half-step
            zig-zag; the mean averages the cycle-to-cycle noise).
        start: starting weights (default: the tile's, or 0).
        noise: apply cycle-to-cycle noise (as the hardware would); False measures the noise-free
            device.

    Returns:
        The symmetry point of each device, in weight units, shaped like the weights.
    """
    if pairs < 1 or not 1 <= average <= pairs:
        raise ConfigError(f"need pairs >= 1 and 1 <= average <= pairs (got pairs={pairs}, average={average}).")
    model, params, w = _model_params_weights(target, shape, seed)
    if start is not None:
        w = torch.as_tensor(start, dtype=w.dtype).expand_as(w).clone()
    w = model.clip(w, params)
    generator = torch.Generator().manual_seed(seed + 1) if noise else None
    plus, minus = torch.ones_like(w), -torch.ones_like(w)
    total = torch.zeros_like(w, dtype=torch.float64)
    for k in range(pairs):
        after_up = model.apply_signed_pulses(w, plus, params, generator)
        w = model.apply_signed_pulses(after_up, minus, params, generator)
        if k >= pairs - average:
            total += 0.5 * (after_up.double() + w.double())
    return (total / average).to(w.dtype)


def analytic_symmetry_point(target, *, shape: tuple[int, ...] = (1, 1), seed: int = 0) -> torch.Tensor:
    """The symmetry point in closed form, in weight units, for the families that have one.

    * Linear families (``SoftBoundsDevice``, ``LinearStepDevice``): ``dw_up (1 + s_up w) =
      dw_down (1 + s_down w)`` gives ``w* = (dw_up - dw_down) / (dw_down s_down - dw_up s_up)``
      (NaN where the steps do not depend on the weight, e.g. a constant step).
    * ``SoftBoundsReferenceDevice``: ``G* = (dw_up - dw_down) / (dw_up/b_max - dw_down/b_min)`` in
      device units, ``w* = G* - r``.
    """
    from .reference import SoftBoundsReferenceModel, soft_bounds_symmetry_point

    model, params, _ = _model_params_weights(target, shape, seed)
    p = lambda name: model.plane(params, name)  # noqa: E731
    if isinstance(model, SoftBoundsReferenceModel):
        r = p("reference")
        return soft_bounds_symmetry_point(p("dw_up"), p("dw_down"), p("w_min") + r, p("w_max") + r) - r
    if tuple(model.param_names) == PARAM_NAMES and model.has_slope:
        up, dn = p("dw_up"), p("dw_down")
        denominator = dn * p("slope_down") - up * p("slope_up")
        return torch.where(denominator != 0, (up - dn) / denominator, torch.full_like(up, float("nan")))
    raise ConfigError(
        f"{type(model).__name__} has no closed-form symmetry point; use measure_symmetry_point (alternating pulses)."
    )


@torch.no_grad()
def zero_shift(tile, pairs: int = 2000, average: int = 200, *, noise: bool = True, seed: int = 0) -> torch.Tensor:
    """Program each device's reference at its measured symmetry point, so that it reads as weight 0.

    For reference devices (a ``reference`` parameter plane: ``SoftBoundsReferenceDevice``,
    ``PowStepReferenceDevice``). The symmetry point ``w*`` of every device is measured by
    :func:`measure_symmetry_point` (with ``pairs``, ``average``, ``noise``, ``seed``); then the
    reference moves by ``w*`` (``r <- r + w*``), so the bounds of the weight move by ``-w*``, and
    the weights the tile holds are re-read against the new reference (``w <- w - w*``: the device
    states do not change). Returns the measured ``w*`` (weight units, before the shift).
    """
    model = getattr(tile, "device_model", None)
    if model is None or getattr(tile, "device_params", None) is None or "reference" not in model.param_names:
        raise ConfigError(
            "zero_shift needs a tile of reference devices (SoftBoundsReferenceDevice or PowStepReferenceDevice): "
            "only they have a reference to program."
        )
    sp = measure_symmetry_point(tile, pairs, average, noise=noise, seed=seed)
    params = tile.device_params
    names = model.param_names
    params[names.index("reference")] += sp
    params[names.index("w_min")] -= sp
    params[names.index("w_max")] -= sp
    tile.weight.copy_(model.clip(tile.weight - sp, params))
    return sp
