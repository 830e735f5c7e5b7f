"""Piecewise step device (aihwkit's ``PiecewiseStepDevice``; ``../shared/reference/algorithms.md`` §1.3).

A measured response as a table: ``K + 1`` step factors per direction at equally spaced weights on
the device's own range (the first node at ``w_min``, the last at ``w_max``), linearly
interpolated::

    u = max((w - w_min) / (w_max - w_min) · K, 0),  i = min(floor(u), K - 1),  t = min(u - i, 1)
    factor(w) = (1 - t) · v[i] + t · v[i + 1]
    up:   w <- w + dw_up   · factor_up(w)   · (1 + σ ξ)
    down: w <- w - dw_down · factor_down(w) · (1 + σ ξ)
    then the device's bounds.

With a single node the step is ``v[0] · dw`` (a constant step). The tables are tile-wide (the
step gain and the bounds have the usual device-to-device spread); they are stored per device as
planes ``up_0 … up_K``, ``down_0 … down_K`` after ``dw_up, dw_down, w_min, w_max``, so that the
compiled response reads everything from the packed parameters. The nominal step (which sets
``Cx Cd``) is the peer's: ``dw_min · v_up[len // 2]``, the up factor at the middle node.

No closed form: pulses are applied one by one, with the cycle-to-cycle noise of ``n`` pulses as one
Gaussian of standard deviation ``σ sqrt(Σ_k step_k²)`` (as :mod:`.powstep`).
"""

from __future__ import annotations

import dataclasses

import torch

from ..config import register_config
from .base import DeviceCapabilities
from .powstep import PowStepModel
from .pulsed import _PulsedDevice

__all__ = ["PiecewiseStepDevice", "PiecewiseStepModel"]


@register_config
@dataclasses.dataclass
class PiecewiseStepDevice(_PulsedDevice):
    """Step ``dw · factor(w)``, ``factor`` linearly interpolated in a table over the weight range.

    Attributes (besides those of every pulsed device):
        piecewise_up: the up-step factors at ``K + 1`` equally spaced weights from ``w_min`` to
            ``w_max`` (default ``(1,)``: constant step, the peer's default).
        piecewise_down: the down-step factors at the same weights (same length).
    """

    capabilities = DeviceCapabilities(fusable=True, lockstep=True, compiled=True)

    piecewise_up: tuple[float, ...] = (1.0,)
    piecewise_down: tuple[float, ...] = (1.0,)

    def validate(self) -> None:
        super().validate()
        for field in ("piecewise_up", "piecewise_down"):
            value = getattr(self, field)
            if isinstance(value, list):
                object.__setattr__(self, field, tuple(value))
                value = tuple(value)
            if not isinstance(value, tuple) or not value or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
                self._fail(field, "must be a non-empty list of numbers (step factors), e.g. [1.2, 1.0, 0.6].")
            if any(not (v == v) or v in (float("inf"), float("-inf")) or v < 0 for v in value):
                self._fail(field, "must contain finite, non-negative step factors only.")
        if len(self.piecewise_up) != len(self.piecewise_down):
            self._fail("piecewise_down", f"must have as many nodes as piecewise_up ({len(self.piecewise_up)}).")
        if self.piecewise_up[len(self.piecewise_up) // 2] <= 0:
            self._fail("piecewise_up", "must be positive at its middle node (it sets the nominal step).")

    @property
    def nominal_step(self) -> float:
        return float(self.dw_min * self.piecewise_up[len(self.piecewise_up) // 2])

    def model(self) -> "PiecewiseStepModel":
        return PiecewiseStepModel(c2c=self.dw_min_std, nodes=len(self.piecewise_up))

    def draw_parameters(self, shape, generator, device="cpu", dtype=torch.float32) -> torch.Tensor:
        base = super().draw_parameters(shape, generator, device, dtype)
        dw_up, dw_down, _, _, w_min, w_max = base.unbind(0)
        table = torch.tensor(self.piecewise_up + self.piecewise_down, device=device, dtype=dtype)
        nodes = table.view(-1, *([1] * len(shape))).expand(-1, *shape)
        return torch.cat([torch.stack([dw_up, dw_down, w_min, w_max]), nodes], dim=0).contiguous()


class PiecewiseStepModel(PowStepModel):
    """The piecewise-linear response, pulse by pulse; planes ``dw_up, dw_down, w_min, w_max,
    up_0 … up_K, down_0 … down_K``."""

    def __init__(self, c2c: float, nodes: int):
        super().__init__(c2c=c2c)
        self.nodes = int(nodes)
        self.param_names = ("dw_up", "dw_down", "w_min", "w_max") + tuple(
            f"{d}_{k}" for d in ("up", "down") for k in range(self.nodes)
        )

    def _factor(self, table: torch.Tensor, weights, w_min, w_max) -> torch.Tensor:
        last = self.nodes - 1
        if last == 0:
            return table[0]
        u = ((weights - w_min) / (w_max - w_min) * last).clamp_min(0)
        i = u.floor().clamp_max(last - 1)
        t = (u - i).clamp_max(1)
        index = i.long().unsqueeze(0)
        lo = table.gather(0, index)[0]
        hi = table.gather(0, index + 1)[0]
        return (1 - t) * lo + t * hi

    def steps_at(self, weights, params):
        w_min, w_max = self.plane(params, "w_min"), self.plane(params, "w_max")
        weights = weights.expand_as(w_min) if weights.shape != w_min.shape else weights
        up = self.plane(params, "dw_up") * self._factor(params[4 : 4 + self.nodes], weights, w_min, w_max)
        down = self.plane(params, "dw_down") * self._factor(params[4 + self.nodes :], weights, w_min, w_max)
        return up, down

    def compiled_response(self):
        from ..update.kernels import compiled_available

        if not compiled_available():
            return None
        from ..update.kernels.compiled_devices import piecewise_step_response

        return piecewise_step_response
