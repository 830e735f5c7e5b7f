"""Compiled responses of the conductance pairs (:mod:`insitu.devices.conductance_pair`).

A pair's response differs from the responses of :mod:`.compiled` and :mod:`.compiled_devices` in
two ways, so it runs in a kernel variant of its own (:func:`insitu.update.kernels.compiled.stateful_sequential_kernel`):

* it is **stateful**: ``G⁺``, ``G⁻`` and the SET pulses of each since its RESET are planes of the
  tile's parameter tensor, which the response reads and writes in place. The kernel therefore
  gets the tile's tensor itself, as a numpy view ``(P, out, in, n)`` in the planes-first layout
  the tile holds (no packed copy, nothing to copy back; the state planes must be read anyway);
* it needs **one normal per SET pulse**, each clamped on its own (``max(0, 1 + σ ξ)``: a SET pulse
  never lowers ``G``), which one Gaussian for ``n`` pulses cannot represent. The response draws
  its own normals from the kernel's 128-entry buffer (refilled by :func:`.rng.fill_normals` from
  the tile's stream ``s``), so the draws stay on the tile's seeded stream.

Signature ``respond(signed, params, j, i, k, scale, normals, cursor, s, spare) -> (w, cursor)``:
``signed > 0`` SET pulses on ``G⁺`` of device ``k`` of cross-point ``(j, i)``, ``< 0`` on ``G⁻``;
``scale`` is ``g_scale`` in the array's dtype (a 1-element array) and ``w`` the new read
``(G⁺ − G⁻) / g_scale``, computed in the array's dtype as :meth:`ConductancePairModel.read`
computes it, so the weight stays equal to the read of the state. ``normals[cursor:]`` are unused
normals; the response returns the new cursor.

The device's constants (nonlinearity, jump, noise, the jump table) are frozen into each response
by the factories below (numba compiles closures over constants), which are cached per constant
set: one compilation per device configuration.

The closed-loop tuning of pairs (program-and-verify, :func:`insitu.devices.pcm.closed_loop_tune`)
is compiled here too: one loop (:func:`_closed_loop_tune`) around a device's noisy SET pulse, one
kernel per device configuration (:func:`pcm_closed_loop_tune`, :func:`jump_table_closed_loop_tune`),
which a device returns from :meth:`~insitu.devices.pcm.ConductanceDevice.compiled_tune_kernel`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .rng import fill_normals, normal

__all__ = [
    "pcm_pair_response", "jump_table_pair_response", "exp_step_conductance_pair_response", "exp_step_up_pulses", "pcm_set_pulses",
    "pcm_cell_lsp_response", "pcm_cell_constants", "pcm_closed_loop_tune", "jump_table_closed_loop_tune",
]

_NORMALS = 128  # the kernel's normal buffer (compiled._NORMALS)

_CACHE: dict = {}


@njit(inline="always")
def _draw(normals, cursor, s, spare):
    """The next normal of the buffer (refilled from the stream when used up) and the new cursor."""
    if cursor == normals.shape[0]:
        fill_normals(normals, s, spare)
        cursor = 0
    return normals[cursor], cursor + 1


def _pair_response(set_pulses, n_device_planes):
    """The pair response around ``set_pulses(g, since, n, params, base, j, i, k, normals, cursor,
    s, spare) -> (g, since, cursor)`` (``n`` SET pulses on one device whose parameter planes start
    at ``base``). Planes: ``w_min, w_max``, the device planes of ``G⁺``, of ``G⁻``, then ``g_plus,
    g_minus, since_plus, since_minus, refreshes`` (``ConductancePairModel.param_names``)."""
    plus = 2
    minus = 2 + n_device_planes
    g_plus = 2 + 2 * n_device_planes
    g_minus = g_plus + 1
    since_plus = g_plus + 2
    since_minus = g_plus + 3

    @njit(inline="always")
    def respond(signed, params, j, i, k, scale, normals, cursor, s, spare):
        if signed > 0:
            g_plane, since_plane, base, n = g_plus, since_plus, plus, signed
        else:
            g_plane, since_plane, base, n = g_minus, since_minus, minus, -signed
        g, since, cursor = set_pulses(
            float(params[g_plane, j, i, k]), float(params[since_plane, j, i, k]), n, params, base, j, i, k,
            normals, cursor, s, spare,
        )
        params[g_plane, j, i, k] = g
        params[since_plane, j, i, k] = since
        # The read in the array's dtype, as ConductancePairModel.read: (G⁺ − G⁻) / g_scale.
        return (params[g_plus, j, i, k] - params[g_minus, j, i, k]) / scale[0], cursor

    return respond


def pcm_pair_response(device):
    """The response of a :class:`~insitu.devices.PCMPairDevice` pair of ``device`` (a
    :class:`~insitu.devices.PCMDevice`): :meth:`PCMDevice.set_pulse` pulse by pulse (planes
    ``g_max, dg, jump``), the pulse counter capped at ``settled_count`` as the torch model caps it."""
    key = ("pcm", float(device.nonlinearity), float(device.initial_jump) > 0, int(device.jump_delay),
           float(device.dg_std), float(device.g_min), int(device.settled_count))
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    _, nonlinearity, has_jump, delay, dg_std, g_min, settled = key
    delay = float(delay)
    settled = float(settled)

    @njit(inline="always")
    def set_pulses(g, since, n, params, base, j, i, k, normals, cursor, s, spare):
        g_max = float(params[base, j, i, k])
        dg = float(params[base + 1, j, i, k])
        jump = float(params[base + 2, j, i, k])
        for _ in range(n):
            if nonlinearity == 0.0:
                gradual = dg
            else:
                left = max((g_max - g) / (g_max - g_min), 0.0)
                gradual = dg * (left if nonlinearity == 1.0 else left**nonlinearity)
            step = gradual
            if has_jump:
                if since == delay:
                    step = jump
                elif since < delay:
                    step = 0.0
            if dg_std > 0.0:
                xi, cursor = _draw(normals, cursor, s, spare)
                # A SET pulse never lowers the conductance: the noisy factor is floored at 0.
                step *= max(1.0 + dg_std * xi, 0.0)
            g = min(g + step, g_max)
            since = min(since + 1.0, settled)
        return g, since, cursor

    respond = _CACHE[key] = _pair_response(set_pulses, 3)
    return respond


@njit(inline="always")
def _table_bin(g, edges, inner):
    """The bin ``b`` of a jump table holding ``g``: ``edges[b] <= g < edges[b + 1]``, the top edge
    in the last bin (as ``torch.bucketize(g, edges[1:-1], right=True)``); ``inner`` interior edges."""
    b = 0
    while b < inner and g >= edges[b + 1]:
        b += 1
    return b


def jump_table_pair_response(device):
    """The response of a :class:`~insitu.devices.JumpTablePairDevice` pair of ``device`` (a
    :class:`~insitu.devices.JumpTableDevice`): per SET pulse ``ΔG = gain (mean[b] + std[b] ξ)`` in
    the bin ``b`` of the present ``G`` (``bin_edges[b] <= G < bin_edges[b + 1]``, the top edge in
    the last bin), ``G`` kept within the table's edges (planes ``g_max, gain``; the pulse counter
    stays 0, as ``settled_count`` is 0)."""
    key = ("jump-table", tuple(float(e) for e in device.bin_edges), tuple(float(m) for m in device.mean),
           tuple(float(v) for v in device.std))
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    edges = np.array(key[1])
    means = np.array(key[2])
    stds = np.array(key[3])
    noisy = bool((stds > 0).any())
    low, high = float(edges[0]), float(edges[-1])
    inner = edges.shape[0] - 2  # interior edges

    @njit(inline="always")
    def set_pulses(g, since, n, params, base, j, i, k, normals, cursor, s, spare):
        gain = float(params[base + 1, j, i, k])
        for _ in range(n):
            b = _table_bin(g, edges, inner)
            step = means[b]
            if noisy:
                xi, cursor = _draw(normals, cursor, s, spare)
                step += stds[b] * xi
            g = min(max(g + gain * step, low), high)
        return g, 0.0, cursor

    respond = _CACHE[key] = _pair_response(set_pulses, 2)
    return respond



def exp_step_conductance_pair_response(device):
    """The response of a :class:`~insitu.devices.OneSidedPairDevice` of exponential-step members
    (``device``, an :class:`~insitu.devices.ExpStepDevice` with ``w_min = 0``): per SET pulse the
    member's up step ``Δ = dw_up max(1 − α_up e^{κ_up g}, 0)`` then its noise
    ``σ (|Δ| + add + slope |g|) ξ`` (the complex noise; ``σ |Δ| ξ`` without it), each clipped to
    the member's bounds as :meth:`ExpStepModel.apply_pulses` does for one pulse. Planes
    ``dw_up, dw_down, alpha_up, rate_up, alpha_down, rate_down, w_min, w_max, reset_bias``."""
    key = ("exp-step", float(device.dw_min_std), float(device.dw_min_std_add), float(device.dw_min_std_slope))
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    _, sigma, add, slope = key

    @njit(inline="always")
    def set_pulses(g, since, n, params, base, j, i, k, normals, cursor, s, spare):
        dw = float(params[base, j, i, k])
        alpha = float(params[base + 2, j, i, k])
        rate = float(params[base + 3, j, i, k])
        low = float(params[base + 6, j, i, k])
        high = float(params[base + 7, j, i, k])
        for _ in range(n):
            step = dw * max(1.0 - alpha * np.exp(rate * g), 0.0)
            spread = abs(step) + add + slope * abs(g)
            g = min(max(g + step, low), high)
            if sigma > 0.0:
                xi, cursor = _draw(normals, cursor, s, spare)
                g = min(max(g + sigma * spread * xi, low), high)
        return g, since, cursor

    respond = _CACHE[key] = _pair_response(set_pulses, 9)
    return respond


@njit(nogil=True)
def exp_step_up_pulses(g, counts, planes, sigma, add, slope, normals):
    """``counts[m]`` up pulses on exponential-step member ``m`` from ``g[m]``, pulse by pulse, in
    place (the open-loop rewrite of a one-sided pair's refresh, :class:`OneSidedPairModel`): the
    response of :func:`exp_step_conductance_pair_response` with pulse ``p``'s normal
    ``normals[m, p]`` (drawn by the caller from the tile's torch generator). ``planes`` ``(9, M)``
    in the member's layout (``dw_up, dw_down, alpha_up, rate_up, alpha_down, rate_down, w_min,
    w_max, reset_bias``)."""
    for m in range(g.shape[0]):
        value = float(g[m])
        dw = float(planes[0, m])
        alpha = float(planes[2, m])
        rate = float(planes[3, m])
        low = float(planes[6, m])
        high = float(planes[7, m])
        for p in range(int(counts[m])):
            step = dw * max(1.0 - alpha * np.exp(rate * value), 0.0)
            spread = abs(step) + add + slope * abs(value)
            value = min(max(value + step, low), high)
            if sigma > 0.0:
                value = min(max(value + sigma * spread * normals[m, p], low), high)
        g[m] = value


@njit(inline="always")
def _pcm_set_step(value, pulses, g_max, dg, jump, nonlinearity, low, exponent, has_jump, delay):
    """The mean step of one SET pulse of :meth:`PCMDevice.set_pulse` in float32, in its order: the
    gradual step ``dg ((g_max − g) / (g_max − g_min))^nonlinearity`` (clamped at 0), the jump on
    pulse ``delay`` after a RESET and nothing before it (``pulses``: SET pulses since the RESET)."""
    zero = np.float32(0.0)
    if nonlinearity == 0.0:
        step = dg
    else:
        left = max((g_max - value) / (g_max - low), zero)
        step = dg * (left if nonlinearity == 1.0 else left**exponent)
    if has_jump:
        if pulses == delay:
            step = jump
        if delay > 0 and pulses < delay:
            step = zero
    return step


@njit(nogil=True)
def pcm_set_pulses(g, since, counts, params, normals, nonlinearity, g_min, has_jump, delay, dg_std):
    """``counts[m]`` SET pulses on PCM device ``m``, pulse by pulse, in place: the rounds of
    :func:`insitu.devices.pcm.apply_set_pulses` (:meth:`PCMDevice.set_pulse`) in one call.

    ``g``, ``since`` (SET pulses since the last RESET, not capped, as the reference counts them)
    and ``counts`` are float32 ``(M,)``; ``params`` float32 ``(3, M)`` (``g_max, dg, jump``);
    ``normals`` float32 ``(rounds, M)``, pulse ``k`` of device ``m`` taking ``normals[k, m]`` (the
    reference draws one normal per device and round, and so does the caller). The arithmetic is
    the reference's, in float32 and in its order; only ``left ** nonlinearity`` may differ from
    torch's vectorised power in the last bit."""
    zero = np.float32(0.0)
    one = np.float32(1.0)
    low = np.float32(g_min)
    exponent = np.float32(nonlinearity)
    std = np.float32(dg_std)
    for m in range(g.shape[0]):
        value = g[m]
        pulses = since[m]
        g_max = params[0, m]
        dg = params[1, m]
        jump = params[2, m]
        for k in range(int(counts[m])):
            step = _pcm_set_step(value, pulses, g_max, dg, jump, nonlinearity, low, exponent, has_jump, delay)
            if dg_std > 0.0:
                step = step * max(normals[k, m] * std + one, zero)
            value = min(value + step, g_max)
            pulses += one
        g[m] = value
        since[m] = pulses


def pcm_cell_constants(device, gain_factor: float, has_msp: bool) -> np.ndarray:
    """The constants :func:`pcm_cell_lsp_response` reads (float64 ``(7,)``): the LSP device's
    ``nonlinearity, g_min``, whether it has an initial jump, its ``jump_delay``, ``dg_std``, the
    cell's ``F`` and whether it has an MSP."""
    return np.array([
        float(device.nonlinearity), float(device.g_min), float(float(device.initial_jump) > 0), float(device.jump_delay),
        float(device.dg_std), float(gain_factor), float(bool(has_msp)),
    ])


@njit(inline="always")
def pcm_cell_lsp_response(signed, params, j, i, k, scale, normals, cursor, s, spare):
    """The response of the low-significance pair of the two-pair PCM cell
    (:class:`insitu.cells.TwoPairPCM` with ``lsp_reference="pair"``, LSP devices a
    :class:`~insitu.devices.PCMDevice`), for the stateful sequential kernel. One compiled
    response (and kernel) serves every such cell: the device's constants are read at run time.

    The cell keeps its state in several tensors, so ``params`` is the tuple of their numpy views
    ``(g, since, sets, lsp, msp, polarity, constants)``: the LSP conductances ``(2, out, in)`` (the
    tile's ``weight``: ``g⁺``, ``g⁻``), the SET pulses since RESET ``(4, out, in)`` and all SET
    pulses ``(4, out, in)`` (float64) per plane of :data:`insitu.cells.multi_conductance.PLANES`,
    the LSP devices' parameters ``(3, 2, out, in)`` (``g_max, dg, jump``), the MSP conductances
    ``(2, out, in)``, the polarity ``(out, in)`` (all float32 but the pulse totals) and
    :func:`pcm_cell_constants`. ``signed > 0`` fires that many SET pulses on ``g⁺`` of
    cross-point ``(j, i)``, ``< 0`` on ``g⁻``, pulse by pulse with the arithmetic of
    :func:`pcm_set_pulses` (float32, the reference's order; one normal per pulse from the kernel's
    buffer; the pulse counter not capped, as the cell counts it). Returns the new
    ``W = (g⁺ − g⁻) + F p (G⁺ − G⁻)`` in float32, computed as the cell refreshes its cached ``W``
    (``TwoPairPCM._refresh_cached``), and the buffer's cursor. ``k`` (one device per cross-point)
    and ``scale`` are not used.
    """
    g, since, sets, lsp, msp, polarity, constants = params
    nonlinearity = constants[0]
    zero = np.float32(0.0)
    one = np.float32(1.0)
    low = np.float32(constants[1])
    exponent = np.float32(nonlinearity)
    has_jump = constants[2] != 0.0
    delay = constants[3]
    dg_std = constants[4]
    std = np.float32(dg_std)
    side = 0 if signed > 0 else 1
    n = signed if signed > 0 else -signed
    plane = 2 + side  # LSP_P or LSP_M in PLANES (msp_plus, msp_minus, lsp_plus, lsp_minus)
    value = g[side, j, i]
    pulses = since[plane, j, i]
    g_max = lsp[0, side, j, i]
    dg = lsp[1, side, j, i]
    jump = lsp[2, side, j, i]
    for _ in range(n):
        step = _pcm_set_step(value, pulses, g_max, dg, jump, nonlinearity, low, exponent, has_jump, delay)
        if dg_std > 0.0:
            xi, cursor = _draw(normals, cursor, s, spare)
            # A SET pulse never lowers the conductance: the noisy factor is floored at 0.
            step = step * max(np.float32(xi) * std + one, zero)
        value = min(value + step, g_max)
        pulses += one
    g[side, j, i] = value
    since[plane, j, i] = pulses
    sets[plane, j, i] += n
    w = g[0, j, i] - g[1, j, i]
    if constants[6] != 0.0:
        w = w + (np.float32(constants[5]) * polarity[j, i]) * (msp[0, j, i] - msp[1, j, i])
    return w, cursor


def _closed_loop_tune(set_pulse):
    """The program-and-verify loop of :func:`insitu.devices.pcm.closed_loop_tune`, compiled, around
    ``set_pulse(value, pulses, params, m, s, spare) -> value`` (one noisy SET pulse on device ``m``
    whose parameter planes are ``params[:, m]``, ``pulses`` SET pulses after its RESET; its noise
    from the scalar stream ``s``).

    The kernel tunes one pair at a time, in place. Pair ``m`` is read (``g⁺ − g⁻`` plus
    ``read_noise`` times a normal), then, while its last read is more than ``tolerance`` from
    ``target[m]`` and it has had fewer than ``max_iterations`` pulses, it gets one SET pulse (on
    ``g⁺`` where the read was too low, else on ``g⁻``) and is read again. The reference runs the
    pairs in lockstep (one pulse on every active pair per iteration); the pairs are independent,
    so the order changes the draws, not the distribution. Normals come from the scalar stream ``s``
    of the tile's kernel state.

    Arguments ``(g_plus, g_minus, since_plus, since_minus, params_plus, params_minus, target,
    tolerance, max_iterations, read_noise, pulses_plus, pulses_minus, converged, within, s,
    spare)``: ``g_*``, ``since_*`` (counted up by one per pulse, not capped, as the reference
    counts), ``target`` float32 ``(n,)``; ``params_*`` float32 ``(planes, n)``; ``pulses_*``
    float32 ``(n,)`` (zeros, filled with the pulses fired); ``converged``, ``within`` bool ``(n,)``
    (the last read, and the truth, within the tolerance). Returns ``(iterations of the slowest
    pair, verify reads)``."""

    @njit(nogil=True)
    def tune(g_plus, g_minus, since_plus, since_minus, params_plus, params_minus, target, tolerance, max_iterations,
             read_noise, pulses_plus, pulses_minus, converged, within, s, spare):
        zero = np.float32(0.0)
        one = np.float32(1.0)
        tol = np.float32(tolerance)
        noise = np.float32(read_noise)
        slowest = 0
        reads = 0
        for m in range(g_plus.shape[0]):
            gp = g_plus[m]
            gm = g_minus[m]
            sp = since_plus[m]
            sm = since_minus[m]
            goal = target[m]
            read = gp - gm
            if read_noise > 0.0:
                read = read + noise * np.float32(normal(s, spare))
            reads += 1
            used = 0
            while abs(goal - read) > tol and used < max_iterations:
                used += 1
                if goal - read > zero:
                    gp = set_pulse(gp, sp, params_plus, m, s, spare)
                    sp += one
                    pulses_plus[m] += one
                else:
                    gm = set_pulse(gm, sm, params_minus, m, s, spare)
                    sm += one
                    pulses_minus[m] += one
                read = gp - gm
                if read_noise > 0.0:
                    read = read + noise * np.float32(normal(s, spare))
                reads += 1
            g_plus[m] = gp
            g_minus[m] = gm
            since_plus[m] = sp
            since_minus[m] = sm
            converged[m] = abs(goal - read) <= tol
            within[m] = abs(goal - (gp - gm)) <= tol
            slowest = max(slowest, used)
        return slowest, reads

    return tune


def pcm_closed_loop_tune(device):
    """The compiled closed-loop tuning (:func:`_closed_loop_tune`) of pairs of ``device`` (a
    :class:`~insitu.devices.PCMDevice`, planes ``g_max, dg, jump``): per SET pulse
    :func:`_pcm_set_step` (the arithmetic of :func:`pcm_set_pulses`, float32) times the floored
    noisy factor ``max(1 + dg_std ξ, 0)``, capped at ``g_max``. Cached per constant set."""
    key = ("pcm-tune", float(device.nonlinearity), float(device.g_min), float(device.initial_jump) > 0,
           float(device.jump_delay), float(device.dg_std))
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    _, nonlinearity, g_min, has_jump, delay, dg_std = key

    @njit(inline="always")
    def set_pulse(value, pulses, params, m, s, spare):
        low = np.float32(g_min)
        exponent = np.float32(nonlinearity)
        g_max = params[0, m]
        step = _pcm_set_step(value, pulses, g_max, params[1, m], params[2, m], nonlinearity, low, exponent, has_jump, delay)
        if dg_std > 0.0:
            step = step * max(np.float32(normal(s, spare)) * np.float32(dg_std) + np.float32(1.0), np.float32(0.0))
        return min(value + step, g_max)

    tune = _CACHE[key] = _closed_loop_tune(set_pulse)
    return tune


def jump_table_closed_loop_tune(device):
    """The compiled closed-loop tuning (:func:`_closed_loop_tune`) of pairs of ``device`` (a
    :class:`~insitu.devices.JumpTableDevice`, planes ``g_max, gain``): per SET pulse the
    arithmetic of :meth:`JumpTableDevice.set_pulse` in float32, ``ΔG = gain (mean[b] + std[b] ξ)``
    in the bin ``b`` of the present ``G`` (the top edge in the last bin), ``G`` kept within the
    table's edges; one normal per pulse, drawn also where the bin's spread is 0, as the reference
    draws. Cached per table."""
    key = ("jump-table-tune", tuple(float(e) for e in device.bin_edges), tuple(float(m) for m in device.mean),
           tuple(float(v) for v in device.std))
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    edges = np.array(key[1], dtype=np.float32)
    means = np.array(key[2], dtype=np.float32)
    stds = np.array(key[3], dtype=np.float32)
    inner = edges.shape[0] - 2  # interior edges

    @njit(inline="always")
    def set_pulse(value, pulses, params, m, s, spare):
        b = _table_bin(value, edges, inner)
        xi = np.float32(normal(s, spare))
        step = params[1, m] * (means[b] + stds[b] * xi)
        return min(max(value + step, edges[0]), edges[inner + 1])

    tune = _CACHE[key] = _closed_loop_tune(set_pulse)
    return tune
