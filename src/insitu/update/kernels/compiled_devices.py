"""Compiled responses of device families beyond the linear ones of :mod:`.compiled`.

Each is ``respond(w, signed_n, params, j, i, k, c2c, xi) -> new w`` (see
:meth:`insitu.devices.DeviceModel.compiled_response`), reading the device's parameters from
``params[j, i, k, :]`` in its model's ``param_names`` order.
"""

from __future__ import annotations

import math

from numba import njit

__all__ = ["pow_step_response"]


@njit(inline="always")
def pow_step_response(w, signed, params, j, i, k, c2c, xi):
    """Power-law steps one by one (:mod:`insitu.devices.powstep`): ``dw_up ω^γ_up`` up,
    ``dw_down (1 - ω)^γ_down`` down, ``ω = (w_max - w) / (w_max - w_min)``, clipped after each
    pulse; the cycle-to-cycle noise of the ``n`` pulses as ``c2c sqrt(Σ step²) ξ``."""
    n = abs(signed)
    w_min = params[j, i, k, 4]
    w_max = params[j, i, k, 5]
    span = w_max - w_min
    squares = 0.0
    for _ in range(n):
        omega = (w_max - w) / span
        omega = min(max(omega, 0.0), 1.0)
        if signed > 0:
            step = params[j, i, k, 0] * omega ** params[j, i, k, 2]
        else:
            step = -params[j, i, k, 1] * (1.0 - omega) ** params[j, i, k, 3]
        squares += step * step
        w = min(max(w + step, w_min), w_max)
    if c2c > 0.0:
        w = min(max(w + c2c * math.sqrt(squares) * xi, w_min), w_max)
    return w
