"""Pulsed device families: constant step (Gokmen & Vlasov 2016), linear step, soft bounds."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from ..config import ConfigError, register_config
from .base import PARAM_NAMES, DeviceCapabilities, DeviceConfig, DeviceModel
from .effects import DeviceEffects

__all__ = ["ConstantStepDevice", "LinearStepDevice", "SoftBoundsDevice"]


@dataclasses.dataclass
class _PulsedDevice(DeviceConfig):
    """Fields shared by all pulsed devices (the RPU device parameters of Gokmen & Vlasov 2016).

    Attributes:
        dw_min: mean weight change of one coincidence (``Δw_min``).
        dw_min_dtod: device-to-device spread of the step, relative (std of the gain ``1 + dtod·ξ``).
        dw_min_std: cycle-to-cycle spread of every single step, relative (std of ``1 + std·ξ``).
        up_down: global up/down imbalance: ``dw_up = dw_min (1 + up_down)``,
            ``dw_down = dw_min (1 - up_down)`` (before the device-to-device terms).
        up_down_dtod: device-to-device spread of the imbalance, same units as ``up_down``.
        w_max, w_min: mean weight bounds (``w_min`` < 0 < ``w_max``; ``w_min = 0`` for a
            one-sided device, e.g. a member of a :class:`~insitu.devices.OneSidedPairDevice`,
            in the families whose step is defined there: constant, exponential and power steps).
        w_max_dtod, w_min_dtod: device-to-device spread of the bounds, relative.

    Device effects (all off by default; :mod:`insitu.devices.effects`, ``docs/devices.md``):

    Attributes:
        write_noise_std: std of the write noise, in units of ``dw_min`` (the peer's units): the
            array computes with ``w + write_noise_std · dw_min · ξ`` while pulses act on ``w``;
            re-drawn after every update that changed the device.
        lifetime: decay time constant in updates (optimizer steps); 0: no decay. Per update
            ``w <- b + (w - b)(1 - 1/lifetime_ij)``.
        lifetime_dtod: device-to-device spread of the lifetime, relative.
        diffusion: std of the random walk ``w += diffusion_ij · ξ`` per update (weight units).
        diffusion_dtod: device-to-device spread of the diffusion, relative.
        reset: the value a reset programs, and the target of the decay.
        reset_dtod: device-to-device spread of ``reset`` (absolute, drawn once).
        reset_std: spread of every reset (absolute, drawn at each reset).
        corrupt_prob: probability that a device is stuck (drawn once, when the tile is built).
        corrupt_range: a stuck device sits at a value drawn uniformly in
            ``[max(w_min_ij, -corrupt_range), min(w_max_ij, corrupt_range)]``.
    """

    capabilities = DeviceCapabilities(fusable=True, lockstep=True, closed_form=True, compiled=True)
    #: Whether ``w_min = 0`` (a one-sided device, weights in ``[0, w_max]``) is allowed: only where
    #: the step does not divide by ``w_min`` (not the linear-step and soft-bounds slopes).
    allows_zero_w_min: ClassVar[bool] = False

    dw_min: float = 0.001
    dw_min_dtod: float = 0.3
    dw_min_std: float = 0.3
    up_down: float = 0.0
    up_down_dtod: float = 0.0
    w_max: float = 0.6
    w_min: float = -0.6
    w_max_dtod: float = 0.3
    w_min_dtod: float = 0.3
    write_noise_std: float = 0.0
    lifetime: float = 0.0
    lifetime_dtod: float = 0.0
    diffusion: float = 0.0
    diffusion_dtod: float = 0.0
    reset: float = 0.0
    reset_dtod: float = 0.0
    reset_std: float = 0.0
    corrupt_prob: float = 0.0
    corrupt_range: float = 0.1

    def validate(self) -> None:
        self._check_positive("dw_min", "w_max")
        self._check_non_negative(
            "write_noise_std", "lifetime", "lifetime_dtod", "diffusion", "diffusion_dtod", "reset_dtod", "reset_std",
            "corrupt_prob", "corrupt_range",
        )
        self._check_finite("reset")
        if 0 < self.lifetime < 1:
            self._fail("lifetime", "must be 0 (no decay) or >= 1 update: w decays by the factor 1 - 1/lifetime per update.")
        if self.corrupt_prob > 1:
            self._fail("corrupt_prob", "must lie in [0, 1]: it is the probability that a device is stuck.")
        self._check_non_negative("dw_min_dtod", "dw_min_std", "up_down_dtod", "w_max_dtod", "w_min_dtod")
        self._check_finite("up_down", "w_min")
        if self.w_min > 0 or (self.w_min == 0 and not self.allows_zero_w_min):
            zero = " (or 0 for a one-sided ConstantStep, ExpStep or PowStep device)" if self.w_min == 0 else ""
            self._fail("w_min", f"must be < 0: the lower weight bound of a bipolar device (e.g. -0.6){zero}.")
        if not -1 < self.up_down < 1:
            self._fail("up_down", "must lie in (-1, 1): it is the relative up/down imbalance (e.g. 0.02).")
        if self.dw_min >= (min(self.w_max, -self.w_min) if self.w_min < 0 else self.w_max):
            self._fail("dw_min", f"must be smaller than the weight range (w_max={self.w_max}, w_min={self.w_min}).")

    # Slopes of the step against the weight; zero for a constant step.
    def _slopes(self, w_min: torch.Tensor, w_max: torch.Tensor, generator: torch.Generator):
        zero = torch.zeros_like(w_min)
        return zero, zero

    def effects(self) -> DeviceEffects:
        return DeviceEffects(
            write_noise=self.write_noise_std * self.dw_min, lifetime=self.lifetime, lifetime_dtod=self.lifetime_dtod,
            diffusion=self.diffusion, diffusion_dtod=self.diffusion_dtod, reset=self.reset, reset_dtod=self.reset_dtod,
            reset_std=self.reset_std, corrupt_prob=self.corrupt_prob, corrupt_range=self.corrupt_range,
        )

    def model(self) -> DeviceModel:
        return DeviceModel(c2c=self.dw_min_std, has_slope=not isinstance(self, ConstantStepDevice))

    def draw_parameters(self, shape, generator, device="cpu", dtype=torch.float32) -> torch.Tensor:
        def normal():
            return torch.randn(shape, generator=generator, device=device, dtype=dtype)

        # Draw order is fixed so that the same seed gives the same devices.
        gain = 1 + self.dw_min_dtod * normal()
        imbalance = self.up_down + self.up_down_dtod * normal()
        # A negative step is unphysical: such a device is stuck (step 0).
        dw_up = (self.dw_min * (gain + imbalance)).clamp_min(0)
        dw_down = (self.dw_min * (gain - imbalance)).clamp_min(0)
        # A bound closer to zero than one step of its own device is unphysical (and makes the
        # closed form of the soft-bounds response undefined): keep every bound two steps out.
        w_max = torch.maximum(self.w_max * (1 + self.w_max_dtod * normal()), 2 * dw_up)
        w_min = torch.minimum(self.w_min * (1 + self.w_min_dtod * normal()), -2 * dw_down)
        if self.w_min == 0:  # a one-sided device: its lower bound is exactly 0 (the draw above keeps the order)
            w_min = torch.zeros_like(w_min)
        slope_up, slope_down = self._slopes(w_min, w_max, generator)
        params = torch.stack([dw_up, dw_down, slope_up, slope_down, w_min, w_max], dim=0)
        assert params.shape[0] == len(PARAM_NAMES)
        return params


@register_config
@dataclasses.dataclass
class ConstantStepDevice(_PulsedDevice):
    """Every coincidence moves the weight by a fixed (per-device) step until a hard bound.

    The RPU device of Gokmen & Vlasov 2016 (Front. Neurosci. 10:333), whose defaults these are:
    ``dw_min`` 0.001, bounds ±0.6, 30% device-to-device spread of the step and of the bounds,
    30% cycle-to-cycle spread.
    """

    allows_zero_w_min: ClassVar[bool] = True


@register_config
@dataclasses.dataclass
class LinearStepDevice(_PulsedDevice):
    """The step shrinks linearly as the weight approaches its bound, then a hard bound.

    ``step_up(w) = dw_up (1 - gamma_up w / w_max)`` and ``step_down(w) = dw_down (1 - gamma_down
    w / w_min)``: ``gamma = 0`` is a constant step, ``gamma = 1`` reaches zero exactly at the bound
    (soft bounds). ``gamma_dtod`` is the device-to-device spread of both gammas (absolute).
    """

    gamma_up: float = 0.5
    gamma_down: float = 0.5
    gamma_dtod: float = 0.0

    def validate(self) -> None:
        super().validate()
        self._check_non_negative("gamma_up", "gamma_down", "gamma_dtod")

    def _slopes(self, w_min, w_max, generator):
        def gamma(mean):
            g = mean + self.gamma_dtod * torch.randn(w_min.shape, generator=generator, device=w_min.device, dtype=w_min.dtype)
            return g.clamp_min(0)

        return -gamma(self.gamma_up) / w_max, -gamma(self.gamma_down) / w_min


@register_config
@dataclasses.dataclass
class SoftBoundsDevice(_PulsedDevice):
    """The step is proportional to the distance to the bound it moves towards.

    ``step_up(w) = dw_up (1 - w / w_max)``, ``step_down(w) = dw_down (1 - w / w_min)``: the weight
    approaches its bounds asymptotically, and the symmetry point (where up and down steps are
    equal) lies between them.
    """

    def _slopes(self, w_min, w_max, generator):
        return -1.0 / w_max, -1.0 / w_min

    @classmethod
    def from_states(
        cls, n_states: float, dw_max: float | None = None, w_max: float = 0.6, w_min: float | None = None, **fields
    ) -> "SoftBoundsDevice":
        """Soft bounds given by their number of states (and optionally their largest step).

        The number of states is ``(w_max - w_min) / dw_min`` (the peer's definition, §0 of the
        reference sheet), so ``dw_min = (w_max - w_min) / n_states``. With ``dw_max``, the
        largest step (an up pulse at ``w_min``: ``dw_min (1 - w_min / w_max)``) fixes the range
        too, keeping the ratio of ``w_max`` to ``-w_min`` given (symmetric by default):
        ``dw_min = dw_max · w_max / (w_max - w_min)`` and the range ``n_states · dw_min``.
        ``fields`` are the other fields (spreads, ``up_down``). Example:
        ``SoftBoundsDevice.from_states(1000, dw_max=0.004)`` is ``dw_min`` 0.002, bounds ±1.
        """
        w_min = -w_max if w_min is None else w_min
        if not n_states > 1:
            raise ConfigError(f"n_states must be > 1 (got {n_states!r}): the number of steps across the weight range.")
        if not (w_max > 0 > w_min):
            raise ConfigError(f"need w_min < 0 < w_max (got w_min={w_min}, w_max={w_max}).")
        if dw_max is None:
            dw_min = (w_max - w_min) / n_states
        else:
            if not dw_max > 0:
                raise ConfigError(f"dw_max must be > 0 (got {dw_max!r}).")
            share = w_max / (w_max - w_min)
            dw_min = dw_max * share
            span = n_states * dw_min
            w_max, w_min = share * span, share * span - span
        return cls(dw_min=dw_min, w_max=w_max, w_min=w_min, **fields)
