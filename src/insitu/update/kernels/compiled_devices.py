"""Compiled responses of device families beyond the linear ones of :mod:`.compiled`.

Each is ``respond(w, signed_n, params, j, i, k, c2c, xi) -> new w`` (see
:meth:`insitu.devices.DeviceModel.compiled_response`), reading the device's parameters from
``params[j, i, k, :]`` in its model's ``param_names`` order.
"""

from __future__ import annotations

import math

from numba import njit

__all__ = [
    "pow_step_response",
    "exp_step_response",
    "exp_step_complex_noise_response",
    "piecewise_step_response",
    "soft_bounds_reference_response",
    "soft_bounds_reference_mult_response",
]


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


@njit(inline="always")
def _exp_steps(w, signed, params, j, i, k, c2c, xi, add, slope):
    # The exponential steps of exp_step_response with a pulse's noise spread |Δ| + add + slope |w|
    # (add = slope = 0: |Δ|, whose square is Δ² exactly).
    n = abs(signed)
    w_min = params[j, i, k, 6]
    w_max = params[j, i, k, 7]
    if signed > 0:
        dw = params[j, i, k, 0]
        alpha = params[j, i, k, 2]
        rate = params[j, i, k, 3]
    else:
        dw = -params[j, i, k, 1]
        alpha = params[j, i, k, 4]
        rate = params[j, i, k, 5]
    squares = 0.0
    for _ in range(n):
        step = dw * max(1.0 - alpha * math.exp(rate * w), 0.0)
        spread = abs(step) + add + slope * abs(w)
        squares += spread * spread
        w = min(max(w + step, w_min), w_max)
    if c2c > 0.0:
        w = min(max(w + c2c * math.sqrt(squares) * xi, w_min), w_max)
    return w


@njit(inline="always")
def exp_step_response(w, signed, params, j, i, k, c2c, xi):
    """Exponential steps one by one (:mod:`insitu.devices.expstep`): ``dw_up max(1 - α_up e^{κ_up w}, 0)``
    up, ``dw_down max(1 - α_down e^{κ_down w}, 0)`` down, clipped after each pulse; the
    cycle-to-cycle noise of the ``n`` pulses as ``c2c sqrt(Σ step²) ξ``. Planes ``dw_up, dw_down,
    alpha_up, rate_up, alpha_down, rate_down, w_min, w_max``."""
    return _exp_steps(w, signed, params, j, i, k, c2c, xi, 0.0, 0.0)


_COMPLEX_NOISE: dict = {}


def exp_step_complex_noise_response(noise_add: float, noise_slope: float):
    """:func:`exp_step_response` with the peer's complex noise (:mod:`insitu.devices.expstep`): the
    noise of one pulse of mean step ``Δ`` from ``w`` is ``c2c (|Δ| + noise_add + noise_slope |w|) ξ``,
    the ``n`` pulses as one Gaussian of std ``c2c sqrt(Σ (|Δ_k| + add + slope |w_k|)²)``. The two
    tile-wide constants are frozen into the response (one compilation per pair of values)."""
    key = (float(noise_add), float(noise_slope))
    cached = _COMPLEX_NOISE.get(key)
    if cached is not None:
        return cached
    add, slope = key

    @njit(inline="always")
    def respond(w, signed, params, j, i, k, c2c, xi):
        return _exp_steps(w, signed, params, j, i, k, c2c, xi, add, slope)

    _COMPLEX_NOISE[key] = respond
    return respond


@njit(inline="always")
def piecewise_step_response(w, signed, params, j, i, k, c2c, xi):
    """Piecewise-linear steps one by one (:mod:`insitu.devices.piecewise`): planes ``dw_up,
    dw_down, w_min, w_max`` then the ``K + 1`` up factors and the ``K + 1`` down factors at equally
    spaced weights from ``w_min`` to ``w_max``, linearly interpolated; noise as ``c2c sqrt(Σ step²) ξ``."""
    n = abs(signed)
    nodes = (params.shape[3] - 4) // 2
    last = nodes - 1
    w_min = params[j, i, k, 2]
    w_max = params[j, i, k, 3]
    span = w_max - w_min
    if signed > 0:
        dw = params[j, i, k, 0]
        base = 4
    else:
        dw = -params[j, i, k, 1]
        base = 4 + nodes
    squares = 0.0
    for _ in range(n):
        if last == 0:
            factor = params[j, i, k, base]
        else:
            u = max((w - w_min) / span * last, 0.0)
            idx = min(int(math.floor(u)), last - 1)
            t = min(u - idx, 1.0)
            factor = (1.0 - t) * params[j, i, k, base + idx] + t * params[j, i, k, base + idx + 1]
        step = dw * factor
        squares += step * step
        w = min(max(w + step, w_min), w_max)
    if c2c > 0.0:
        w = min(max(w + c2c * math.sqrt(squares) * xi, w_min), w_max)
    return w


@njit(inline="always")
def _soft_bounds_reference(w, signed, params, j, i, k, c2c, xi, mult_noise):
    n = abs(signed)
    w_min = params[j, i, k, 2]
    w_max = params[j, i, k, 3]
    r = params[j, i, k, 4]
    if signed > 0:
        dw = params[j, i, k, 0]
        bound = w_max
    else:
        dw = params[j, i, k, 1]
        bound = w_min
    # A stuck device (dw = 0) may have a bound at 0: it does not move.
    ratio = max(1.0 - dw / max(abs(bound + r), 1e-30), 0.0)
    decay = ratio**n
    new = bound + (w - bound) * decay
    if c2c > 0.0:
        if mult_noise:
            first = abs((bound - w) * (1.0 - ratio))
            spread = first * math.sqrt(max((1.0 - decay * decay) / max(1.0 - ratio * ratio, 1e-12), 0.0))
        else:
            spread = dw * math.sqrt(n)
        new += c2c * spread * xi
    return min(max(new, w_min), w_max)


@njit(inline="always")
def soft_bounds_reference_response(w, signed, params, j, i, k, c2c, xi):
    """Soft bounds on ``G = w + r`` in closed form (:mod:`insitu.devices.reference`), additive
    noise ``c2c dw sqrt(n) ξ``. Planes ``dw_up, dw_down, w_min, w_max, reference``."""
    return _soft_bounds_reference(w, signed, params, j, i, k, c2c, xi, False)


@njit(inline="always")
def soft_bounds_reference_mult_response(w, signed, params, j, i, k, c2c, xi):
    """As :func:`soft_bounds_reference_response` with noise proportional to the steps."""
    return _soft_bounds_reference(w, signed, params, j, i, k, c2c, xi, True)
