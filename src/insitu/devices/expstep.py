"""Exponential step device (aihwkit's ``ExpStepDevice``; ``../shared/reference/algorithms.md`` §1.1).

The step saturates exponentially as the weight approaches the bound ahead::

    z = 2 a w / (w_max - w_min) + b                       (w_max, w_min the device's own bounds)
    up:   w <- w + dw_up   · max(1 - A_up   · exp( γ_up   z), 0) · (1 + σ ξ)
    down: w <- w - dw_down · max(1 - A_down · exp(-γ_down z), 0) · (1 + σ ξ)
    then the device's bounds.

``a``, ``b``, ``A`` and ``γ`` are tile-wide (no device-to-device spread, as in the peer). They are
folded per device into two numbers a direction, ``step_up(w) = dw_up · max(1 - α_up e^{κ_up w}, 0)``
with ``α_up = A_up e^{γ_up b}``, ``κ_up = 2 a γ_up / (w_max - w_min)`` (and ``α_down =
A_down e^{-γ_down b}``, ``κ_down = -2 a γ_down / (w_max - w_min)``), so the kernel reads eight
numbers a device and never the tile-wide constants.

There is no closed form for ``n`` exponential steps: both responses apply the pulses one by one
(``n`` is at most ``BL``), with the cycle-to-cycle noise of the ``n`` pulses as one Gaussian of
standard deviation ``σ sqrt(Σ_k step_k²)`` (as :mod:`.powstep`).

**Complex noise** (the peer's ``dw_min_std_add``, ``dw_min_std_slope``; §1.1): when either is
non-zero, the noise of one pulse from weight ``w`` with mean step ``Δ`` is
``σ (|Δ| + dw_min_std_add + dw_min_std_slope |w|) ξ`` (the add and slope terms in absolute weight
units times ``σ``: a floor of noise that does not shrink with the step, and noise growing with the
state, as PCM shows). The ``n`` pulses of one update again combine into one Gaussian, of standard
deviation ``σ sqrt(Σ_k (|Δ_k| + add + slope |w_k|)²)`` along the noise-free sequence.

Readings chosen where the peer's docs and code differ (§1.0, §1.1):

* ``up_down`` keeps insitu's symmetric convention of every pulsed device, ``dw_up = dw_min (1 +
  up_down)``, ``dw_down = dw_min (1 - up_down)``; the peer's code shrinks one direction only
  (``dw_up = dw_min``, ``dw_down = dw_min (1 - up_down)``). The presets convert (``presets.py``).
* The nominal step (which sets ``Cx Cd``) is the peer's code reading: the mean *down* step at
  ``w = 0``, ``dw_min (1 - up_down) max(1 - A_down e^{-γ_down b}, 0)``, or ``dw_min`` if that is
  not positive (the peer's code averages the down step with itself, apparently meaning the mean of
  up and down; we keep what the code computes).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar
import math

import torch

from ..config import register_config
from .base import DeviceCapabilities
from .powstep import PowStepModel
from .pulsed import _PulsedDevice

__all__ = ["ExpStepDevice", "ExpStepModel"]

EXP_PARAM_NAMES = ("dw_up", "dw_down", "alpha_up", "rate_up", "alpha_down", "rate_down", "w_min", "w_max")


@register_config
@dataclasses.dataclass
class ExpStepDevice(_PulsedDevice):
    """Step ``dw · max(1 - A e^{±γ z}, 0)``, ``z = 2 a w / (w_max - w_min) + b`` (aihwkit ``ExpStepDevice``).

    Attributes (besides those of every pulsed device; defaults are the peer's):
        A_up, A_down: amplitudes of the exponential saturation (may be negative: the step then
            grows towards the far bound).
        gamma_up, gamma_down: exponential rates.
        a, b: scale and offset of the reduced weight ``z``.
        dw_min_std_add, dw_min_std_slope: the peer's "complex noise" (module docstring): a pulse's
            noise is ``dw_min_std (|Δ| + dw_min_std_add + dw_min_std_slope |w|) ξ``. Both 0 (the
            default): the plain ``dw_min_std |Δ| ξ``.
    """

    capabilities = DeviceCapabilities(fusable=True, lockstep=True, compiled=True)
    allows_zero_w_min: ClassVar[bool] = True  # the step needs only w_max - w_min > 0

    A_up: float = 0.00081
    A_down: float = 0.36833
    gamma_up: float = 12.44625
    gamma_down: float = 12.78785
    a: float = 0.244
    b: float = 0.2425
    dw_min_std_add: float = 0.0
    dw_min_std_slope: float = 0.0

    def validate(self) -> None:
        super().validate()
        self._check_finite("A_up", "A_down", "gamma_up", "gamma_down", "a", "b")
        self._check_non_negative("dw_min_std_add", "dw_min_std_slope")
        # The exponent reaches at most |γ| (|a| + |b|) on the device's range: keep exp() finite.
        for g in ("gamma_up", "gamma_down"):
            if abs(getattr(self, g)) * (abs(self.a) * 3 + abs(self.b)) > 80:
                self._fail(g, "is too large for the range of z = 2 a w / (w_max - w_min) + b (exp overflows).")

    @property
    def nominal_step(self) -> float:
        g = self.dw_min * (1 - self.up_down) * max(1 - self.A_down * math.exp(-self.gamma_down * self.b), 0.0)
        return float(g) if g > 0 else float(self.dw_min)

    def model(self) -> "ExpStepModel":
        return ExpStepModel(c2c=self.dw_min_std, noise_add=self.dw_min_std_add, noise_slope=self.dw_min_std_slope)

    def draw_parameters(self, shape, generator, device="cpu", dtype=torch.float32) -> torch.Tensor:
        base = super().draw_parameters(shape, generator, device, dtype)  # the shared draws, same order
        dw_up, dw_down, _, _, w_min, w_max = base.unbind(0)
        scale = 2 * self.a / (w_max - w_min)
        alpha_up = torch.full_like(w_min, self.A_up * math.exp(self.gamma_up * self.b))
        alpha_down = torch.full_like(w_min, self.A_down * math.exp(-self.gamma_down * self.b))
        return torch.stack(
            [dw_up, dw_down, alpha_up, self.gamma_up * scale, alpha_down, -self.gamma_down * scale, w_min, w_max], dim=0
        )


class ExpStepModel(PowStepModel):
    """The exponential-step response, pulse by pulse; parameters laid out as ``EXP_PARAM_NAMES``.

    ``noise_add``, ``noise_slope``: the complex noise (module docstring), tile-wide.
    """

    param_names = EXP_PARAM_NAMES

    def __init__(self, c2c: float, noise_add: float = 0.0, noise_slope: float = 0.0):
        super().__init__(c2c=c2c)
        self.noise_add = float(noise_add)
        self.noise_slope = float(noise_slope)

    def _pulse_variance(self, step: torch.Tensor, w: torch.Tensor, fraction: torch.Tensor) -> torch.Tensor:
        if self.noise_add == 0.0 and self.noise_slope == 0.0:
            return super()._pulse_variance(step, w, fraction)
        # The peer's complex noise: a floor and a state-dependent term beside the step's own
        # (a fractional last pulse of the expected counts scales all three, as it scales the step).
        spread = step.abs() + (self.noise_add + self.noise_slope * w.abs()) * fraction
        return spread * spread

    def steps_at(self, weights, params):
        p = lambda name: self.plane(params, name)  # noqa: E731
        up = p("dw_up") * (1 - p("alpha_up") * torch.exp(p("rate_up") * weights)).clamp_min(0)
        down = p("dw_down") * (1 - p("alpha_down") * torch.exp(p("rate_down") * weights)).clamp_min(0)
        return up, down

    def apply_mixed(self, weights, half_total, half_signed, params, generator, count_variance=1.0):
        """:meth:`DeviceModel.apply_mixed` (the ``summed`` and ``batched`` modes) with the complex
        noise: the cycle-to-cycle variance of a device's ``n_up`` and ``n_down`` pulses is
        ``c2c² (n_up (Δ_up + f)² + n_down (Δ_down + f)²)``, ``f = add + slope |w|``, at the weight
        before the batch; the count noise keeps ``count_variance (n_up Δ_up² + n_down Δ_down²)``."""
        if self.noise_add == 0.0 and self.noise_slope == 0.0:
            return super().apply_mixed(weights, half_total, half_signed, params, generator, count_variance)
        step_up, step_down = self.steps_at(weights, params)
        n_up, n_down = half_total - half_signed, half_total + half_signed
        mean = n_up * step_up - n_down * step_down
        if generator is not None:
            floor = self.noise_add + self.noise_slope * weights.abs()
            counting = n_up * step_up.square() + n_down * step_down.square()
            cycle = n_up * (step_up + floor).square() + n_down * (step_down + floor).square()
            var = (count_variance * counting + self.c2c * self.c2c * cycle).clamp_min(0)
            noise = torch.randn(weights.shape, generator=generator, device=weights.device, dtype=weights.dtype)
            mean = mean + noise * var.sqrt()
        return (weights + mean).clamp(self.plane(params, "w_min"), self.plane(params, "w_max"))

    def compiled_response(self):
        from ..update.kernels import compiled_available

        if not compiled_available():
            return None
        from ..update.kernels.compiled_devices import exp_step_complex_noise_response, exp_step_response

        if self.noise_add == 0.0 and self.noise_slope == 0.0:
            return exp_step_response
        return exp_step_complex_noise_response(self.noise_add, self.noise_slope)
