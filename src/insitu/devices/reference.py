"""Devices read against a reference: soft bounds and power step with a symmetry-point offset.

aihwkit's ``SoftBoundsReferenceDevice`` and ``PowStepReferenceDevice``
(``../shared/reference/algorithms.md`` §1.4, §1.5, §2). The device has a conductance state ``G``
between its own bounds ``b_min < b_max``; the array reads it differentially against a fixed
per-device reference ``r``, so the weight is ``w = G - r``. The pulses act on ``G``; the
reference only decides which ``G`` reads as weight 0. Programming ``r`` at the device's symmetry
point (``subtract_symmetry_point``, or later :func:`insitu.devices.symmetry.zero_shift`) makes the
point to which random up/down pulses drive the device read as weight 0 ("zero shifting").

Layout: the planes ``w_min``, ``w_max`` hold the bounds *of the weight*, ``b - r`` (what the tile
clips to), and the plane ``reference`` holds ``r``; the device bounds are ``w_min + r``,
``w_max + r``. The reference is clamped to lie two steps inside the device bounds, so that weight 0
is always reachable (``w_min < 0 < w_max``).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from ..config import register_config
from .base import DeviceCapabilities, DeviceModel
from .powstep import POW_PARAM_NAMES, PowStepDevice, PowStepModel
from .pulsed import _PulsedDevice

__all__ = [
    "SoftBoundsReferenceDevice",
    "SoftBoundsReferenceModel",
    "PowStepReferenceDevice",
    "PowStepReferenceModel",
    "soft_bounds_symmetry_point",
]

SBREF_PARAM_NAMES = ("dw_up", "dw_down", "w_min", "w_max", "reference")


def soft_bounds_symmetry_point(dw_up, dw_down, b_min, b_max):
    """The device state ``G*`` where one soft-bounds up step equals one down step (§2):
    ``s_up (1 - G/b_max) = s_dn (1 - G/b_min)`` gives ``G* = (s_up - s_dn) / (s_up/b_max - s_dn/b_min)``."""
    sp = (dw_up - dw_down) / (dw_up / b_max - dw_down / b_min)
    # A stuck device (both steps 0) has no symmetry point: leave its reference alone.
    return torch.nan_to_num(sp, nan=0.0) if torch.is_tensor(sp) else sp


def _place_reference(reference, dw_up, dw_down, b_min, b_max):
    """``(w_min, w_max, r)``: the reference clamped two steps inside the device bounds."""
    r = torch.minimum(torch.maximum(reference, b_min + 2 * dw_down), b_max - 2 * dw_up)
    return b_min - r, b_max - r, r


@dataclasses.dataclass
class _ReferenceFields:
    """Mixin: the fields of the reference. ``reference_mean``, ``reference_std``: mean and
    device-to-device spread of ``r`` (absolute weight units); ``subtract_symmetry_point``: add each
    device's symmetry point to its reference (weight 0 is then the symmetry point)."""

    reference_mean: float = 0.0
    reference_std: float = 0.0
    subtract_symmetry_point: bool = False

    def _validate_reference(self) -> None:
        self._check_finite("reference_mean")
        self._check_non_negative("reference_std")
        if not isinstance(self.subtract_symmetry_point, bool):
            self._fail("subtract_symmetry_point", "must be true or false.")


@register_config
@dataclasses.dataclass
class SoftBoundsReferenceDevice(_ReferenceFields, _PulsedDevice):
    """Soft bounds on the device state ``G = w + r`` (aihwkit ``SoftBoundsReferenceDevice``)::

        up:   G <- G + dw_up   · (1 - G / b_max + σ ξ)      (mult_noise: · (1 - G/b_max)(1 + σ ξ))
        down: G <- G - dw_down · (1 - G / b_min + σ ξ)
        then G is clipped to [b_min, b_max] and w = G - r.

    The noise is additive by default (``mult_noise`` False, the peer's default): every pulse has
    spread ``σ dw`` whatever the weight. The nominal step (which sets ``Cx Cd``) is ``dw_min``, the
    step at ``G = 0`` (the peer's granularity). ``n`` pulses have a closed form (the distance to the
    bound ahead shrinks by ``1 - dw/b`` a pulse), so ``closed_form`` is True.

    Attributes (besides those of every pulsed device and the reference):
        slope_up_dtod, slope_down_dtod: device-to-device spread of the slopes ``dw/b`` (the peer
            draws ``slope = (dw/b) |1 + dtod ξ|`` and sets ``b = dw / slope``: it spreads the bounds).
        mult_noise: cycle-to-cycle noise proportional to the step instead of additive.
    """

    capabilities = DeviceCapabilities(fusable=True, lockstep=True, compiled=True, closed_form=True)

    slope_up_dtod: float = 0.0
    slope_down_dtod: float = 0.0
    mult_noise: bool = False

    def validate(self) -> None:
        super().validate()
        self._validate_reference()
        self._check_non_negative("slope_up_dtod", "slope_down_dtod")
        if not isinstance(self.mult_noise, bool):
            self._fail("mult_noise", "must be true or false.")

    def model(self) -> "SoftBoundsReferenceModel":
        return SoftBoundsReferenceModel(c2c=self.dw_min_std, mult_noise=self.mult_noise)

    def draw_parameters(self, shape, generator, device="cpu", dtype=torch.float32) -> torch.Tensor:
        base = super().draw_parameters(shape, generator, device, dtype)  # shared draws, fixed order
        dw_up, dw_down, _, _, b_min, b_max = base.unbind(0)

        def normal():
            return torch.randn(shape, generator=generator, device=device, dtype=dtype)

        # Spread of the slopes dw/b, i.e. of the bounds (the peer's reading); kept 2 steps out.
        b_max = torch.maximum(b_max / (1 + self.slope_up_dtod * normal()).abs().clamp_min(1e-3), 2 * dw_up)
        b_min = torch.minimum(b_min / (1 + self.slope_down_dtod * normal()).abs().clamp_min(1e-3), -2 * dw_down)
        reference = self.reference_mean + self.reference_std * normal()
        if self.subtract_symmetry_point:
            reference = reference + soft_bounds_symmetry_point(dw_up, dw_down, b_min, b_max)
        w_min, w_max, r = _place_reference(reference, dw_up, dw_down, b_min, b_max)
        return torch.stack([dw_up, dw_down, w_min, w_max, r], dim=0)


class SoftBoundsReferenceModel(DeviceModel):
    """Soft bounds on ``G = w + r`` in closed form; planes ``SBREF_PARAM_NAMES``.

    ``n`` up pulses: ``w_max - w_n = (w_max - w_0) ρ^n`` with ``ρ = 1 - dw_up / b_max``
    (``b_max = w_max + r``); down: ``w_n - w_min = (w_0 - w_min) ρ^n`` with ``ρ = 1 + dw_down / b_min``.
    The noise of the ``n`` pulses is one Gaussian: ``σ dw sqrt(n)`` (additive noise) or
    ``σ sqrt(Σ_k step_k²)`` with the exact geometric sum of the steps (``mult_noise``).
    """

    param_names = SBREF_PARAM_NAMES

    def __init__(self, c2c: float, mult_noise: bool = False):
        super().__init__(c2c=c2c, has_slope=True)
        self.mult_noise = bool(mult_noise)

    def compiled_planes(self):
        return self.param_names

    def steps_at(self, weights, params):
        p = lambda name: self.plane(params, name)  # noqa: E731
        r = p("reference")
        g = weights + r
        up = p("dw_up") * (1 - g / (p("w_max") + r))
        down = p("dw_down") * (1 - g / (p("w_min") + r))
        return up.clamp_min(0), down.clamp_min(0)

    def apply_pulses(self, weights, counts, up, params, generator):
        p = lambda name: self.plane(params, name)  # noqa: E731
        w_min, w_max, r = p("w_min"), p("w_max"), p("reference")
        step = torch.where(up, p("dw_up"), p("dw_down"))
        bound = torch.where(up, w_max, w_min)  # the bound ahead, in weight units
        # (A stuck device, dw = 0, may have a bound at 0: it does not move.)
        ratio = (1 - step / (bound + r).abs().clamp_min(1e-30)).clamp_min(0)
        decay = ratio.pow(counts)
        new = bound + (weights - bound) * decay
        if generator is not None and self.noisy:
            noise = torch.randn(weights.shape, generator=generator, device=weights.device, dtype=weights.dtype)
            if self.mult_noise:
                # Σ_{k<n} (d ρ^k (1-ρ))² = d² (1-ρ)² (1 - ρ^{2n}) / (1 - ρ²), d the distance to the bound.
                first = (bound - weights) * (1 - ratio)
                spread = first.abs() * ((1 - decay * decay) / (1 - ratio * ratio).clamp_min(1e-12)).clamp_min(0).sqrt()
            else:
                spread = step * counts.sqrt()
            new = new + self.c2c * spread * noise
        return torch.clamp(new, w_min, w_max)

    def compiled_response(self):
        from ..update.kernels import compiled_available

        if not compiled_available():
            return None
        from ..update.kernels import compiled_devices

        if self.mult_noise:
            return compiled_devices.soft_bounds_reference_mult_response
        return compiled_devices.soft_bounds_reference_response


@register_config
@dataclasses.dataclass
class PowStepReferenceDevice(_ReferenceFields, PowStepDevice):
    """The power-law step on ``G = w + r`` (aihwkit ``PowStepReferenceDevice``).

    ``ω = (b_max - G) / (b_max - b_min) = (w_max - w) / (w_max - w_min)``: the step as a function
    of the weight is the :class:`~insitu.devices.PowStepDevice` step on the shifted range, so both
    responses are :mod:`.powstep`'s (the reference only moves the bounds of the weight). The
    symmetry point has no closed form; with ``subtract_symmetry_point`` it is found per device
    without noise (:meth:`estimate_symmetry_point`): by the peer's iteration when
    ``n_estimation_steps > 0``, otherwise (default; a reading different from the peer's, which
    runs its iteration ``min(round(10 R / min(dw_up, dw_down)), 10000)`` times) as the root that
    iteration approaches, by bisection.
    The nominal step is PowStep's, ``dw_min · 0.5^γ``.
    """

    allows_zero_w_min: ClassVar[bool] = False  # a reference device is bipolar (its symmetry point is the question)

    capabilities = DeviceCapabilities(fusable=True, lockstep=True, compiled=True)

    n_estimation_steps: int = -1

    def validate(self) -> None:
        super().validate()
        self._validate_reference()
        if isinstance(self.n_estimation_steps, bool) or not isinstance(self.n_estimation_steps, int):
            self._fail("n_estimation_steps", "must be an integer (<= 0: chosen from the step and the range).")

    def model(self) -> "PowStepReferenceModel":
        return PowStepReferenceModel(c2c=self.dw_min_std)

    def draw_parameters(self, shape, generator, device="cpu", dtype=torch.float32) -> torch.Tensor:
        base = super().draw_parameters(shape, generator, device, dtype)  # POW_PARAM_NAMES, fixed order
        dw_up, dw_down, gamma_up, gamma_down, b_min, b_max = base.unbind(0)
        reference = self.reference_mean + self.reference_std * torch.randn(shape, generator=generator, device=device, dtype=dtype)
        if self.subtract_symmetry_point:
            reference = reference + self.estimate_symmetry_point(dw_up, dw_down, gamma_up, gamma_down, b_min, b_max)
        w_min, w_max, r = _place_reference(reference, dw_up, dw_down, b_min, b_max)
        return torch.stack([dw_up, dw_down, gamma_up, gamma_down, w_min, w_max, r], dim=0)

    def estimate_symmetry_point(self, dw_up, dw_down, gamma_up, gamma_down, b_min, b_max) -> torch.Tensor:
        """The noise-free symmetry point in device units: where ``dw_up ((b_max - G)/R)^γ_up =
        dw_down ((G - b_min)/R)^γ_down`` (``R = b_max - b_min``).

        With ``n_estimation_steps > 0``: the peer's iteration (§1.5), ``n`` times
        ``sp <- sp - dw_down ((sp - b_min)/R)^γ_down + dw_up ((b_max - sp)/R)^γ_up`` from 0.
        Otherwise (default): the root itself, by 60 bisections on ``[b_min, b_max]`` (the up step
        minus the down step falls strictly from ``dw_up`` to ``-dw_down`` there). That is the fixed
        point the peer's iteration approaches; the peer's default stops it after
        ``min(round(10 R / min(dw_up, dw_down)), 10000)`` steps, which costs minutes on a large
        tile and need not have converged.
        """
        span = (b_max - b_min).double()
        lo, hi = b_min.double(), b_max.double()
        up, dn, gu, gd = dw_up.double(), dw_down.double(), gamma_up.double(), gamma_down.double()

        def excess(sp):  # up step minus down step at device state sp
            return up * ((hi - sp) / span).clamp(0, 1).pow(gu) - dn * ((sp - lo) / span).clamp(0, 1).pow(gd)

        if self.n_estimation_steps > 0:
            sp = torch.zeros_like(span)
            for _ in range(self.n_estimation_steps):
                sp = sp + excess(sp)
            return sp.to(b_min.dtype)
        left, right = lo.clone(), hi.clone()
        for _ in range(60):
            mid = 0.5 * (left + right)
            above = excess(mid) > 0  # the root lies above mid
            left = torch.where(above, mid, left)
            right = torch.where(above, right, mid)
        return (0.5 * (left + right)).to(b_min.dtype)


class PowStepReferenceModel(PowStepModel):
    """:class:`PowStepModel` on the shifted bounds, with a ``reference`` plane (not read by the responses)."""

    param_names = POW_PARAM_NAMES + ("reference",)

    def compiled_planes(self):
        return POW_PARAM_NAMES  # pow_step_response's layout: the reference is not needed to step
