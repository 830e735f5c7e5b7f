"""Power-law step device (Fusi & Abbott 2007 type; aihwkit's ``PowStepDevice``).

The step shrinks as a power of the distance to the bound it moves towards
(``../shared/reference/algorithms.md`` §1.2, read from the peer's source)::

    ω = (w_max - w) / (w_max - w_min)                      (1 at the lower bound, 0 at the upper)
    up:   w <- w + dw_up   · ω^γ_up       · (1 + σ ξ)
    down: w <- w - dw_down · (1 - ω)^γ_down · (1 + σ ξ)
    then the device's bounds.

``γ = 1`` is soft bounds with the symmetry point in the middle of the range; ``γ < 1`` makes the
response more linear near the middle, ``γ > 1`` more saturating. ``dw_min`` is the step at the far
bound (ω = 1 for up), so the step at the middle of the range, which sets ``Cx Cd``
(:attr:`PowStepDevice.nominal_step`), is ``dw_min · 0.5^γ``.

This file is the whole of the device: config, per-device draws, the torch response and the
compiled response (``docs/engine.md``, "Adding a device"). There is no closed form for ``n``
pulses of a power law: both responses apply the pulses one by one (``n`` is at most ``BL`` per
rank-1 update); the cycle-to-cycle noise of the ``n`` pulses is one Gaussian of standard deviation
``σ sqrt(Σ_k step_k²)`` over the noise-free steps ``step_k`` of that sequence (first order in σ,
as the closed forms of the linear families).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from ..config import register_config
from .base import DeviceCapabilities, DeviceModel
from .pulsed import _PulsedDevice

__all__ = ["PowStepDevice", "PowStepModel"]

POW_PARAM_NAMES = ("dw_up", "dw_down", "gamma_up", "gamma_down", "w_min", "w_max")


@register_config
@dataclasses.dataclass
class PowStepDevice(_PulsedDevice):
    """Step ``dw · ω^γ`` with ``ω`` the relative distance to the bound ahead (aihwkit ``PowStepDevice``).

    Attributes (besides those of every pulsed device):
        pow_gamma: the exponent ``γ`` (1: soft bounds).
        pow_gamma_dtod: device-to-device spread of the exponent, relative.
        pow_up_down: up/down imbalance of the exponent (as ``up_down`` for the step).
        pow_up_down_dtod: device-to-device spread of that imbalance.
    """

    capabilities = DeviceCapabilities(fusable=True, lockstep=True, compiled=True)
    allows_zero_w_min: ClassVar[bool] = True  # the step needs only w_max - w_min > 0

    pow_gamma: float = 1.0
    pow_gamma_dtod: float = 0.1
    pow_up_down: float = 0.0
    pow_up_down_dtod: float = 0.0

    def validate(self) -> None:
        super().validate()
        self._check_positive("pow_gamma")
        self._check_non_negative("pow_gamma_dtod", "pow_up_down_dtod")
        self._check_finite("pow_up_down")
        if not -1 < self.pow_up_down < 1:
            self._fail("pow_up_down", "must lie in (-1, 1): the relative up/down imbalance of the exponent.")

    @property
    def nominal_step(self) -> float:
        # The step at the middle of the range (ω = 1/2), as the peer's "weight granularity".
        return float(self.dw_min * 0.5**self.pow_gamma)

    def model(self) -> "PowStepModel":
        return PowStepModel(c2c=self.dw_min_std)

    def _slopes(self, w_min, w_max, generator):
        # Drawn in the order of the step's terms: gain, then imbalance (one plane each).
        def normal():
            return torch.randn(w_min.shape, generator=generator, device=w_min.device, dtype=w_min.dtype)

        gain = 1 + self.pow_gamma_dtod * normal()
        imbalance = self.pow_up_down + self.pow_up_down_dtod * normal()
        return (self.pow_gamma * (gain + imbalance)).abs(), (self.pow_gamma * (gain - imbalance)).abs()


class PowStepModel(DeviceModel):
    """The power-law response; parameters laid out as ``POW_PARAM_NAMES``."""

    param_names = POW_PARAM_NAMES

    def __init__(self, c2c: float):
        super().__init__(c2c=c2c, has_slope=True)  # weight-dependent steps

    def steps_at(self, weights, params):
        w_min, w_max = self.plane(params, "w_min"), self.plane(params, "w_max")
        omega = ((w_max - weights) / (w_max - w_min)).clamp(0, 1)
        up = self.plane(params, "dw_up") * omega.pow(self.plane(params, "gamma_up"))
        down = self.plane(params, "dw_down") * (1 - omega).pow(self.plane(params, "gamma_down"))
        return up, down

    def apply_pulses(self, weights, counts, up, params, generator):
        """``counts`` pulses of one sign per device, one by one (see the module docstring)."""
        w_min, w_max = self.plane(params, "w_min"), self.plane(params, "w_max")
        w = weights.clone()
        squares = torch.zeros_like(w)
        # Whole pulses, and a fractional last one for the expected counts of pulse_type="expected".
        for k in range(int(torch.ceil(counts.max())) if counts.numel() else 0):
            step_up, step_down = self.steps_at(w, params)
            fraction = (counts - k).clamp(0, 1)
            step = torch.where(up, step_up, -step_down) * fraction
            squares += self._pulse_variance(step, w, fraction)
            w = torch.clamp(w + step, w_min, w_max)
        if generator is not None and self.noisy:
            noise = torch.randn(w.shape, generator=generator, device=w.device, dtype=w.dtype)
            w = torch.clamp(w + self.c2c * squares.sqrt() * noise, w_min, w_max)
        return w

    def _pulse_variance(self, step: torch.Tensor, w: torch.Tensor, fraction: torch.Tensor) -> torch.Tensor:
        """The cycle-to-cycle variance of one pulse of mean ``step`` from weight ``w``, in units of
        ``c2c²`` (``fraction``: the share of the pulse applied, below 1 only for expected counts)."""
        return step * step

    def compiled_response(self):
        from ..update.kernels import compiled_available

        if not compiled_available():
            return None
        from ..update.kernels.compiled_devices import pow_step_response

        return pow_step_response
