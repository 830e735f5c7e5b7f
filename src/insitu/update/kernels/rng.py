"""xoshiro256** (Blackman & Vigna 2018) for the compiled kernels, on the state of :mod:`.rng_state`.

Two streams per state: the scalar one (:func:`next_u64`, :func:`normal`, :func:`fill_normals`)
and 16 lanes that advance together (:func:`fill_uniforms`), written so that the compiler keeps
the lanes in vector registers: the pulse trains' uniforms cost about a third of a scalar draw.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

__all__ = ["next_u64", "uniform53", "normal", "fill_normals", "fill_uniforms", "load_lanes", "store_lanes", "LANES"]

LANES = 16  # rng_state.LANES
_LANE_START = 5  # rng_state.LANE_START


def _ziggurat_tables(layers: int = 128, r: float = 3.442619855899, area: float = 9.91256303526217e-3):
    """Layer edges ``x`` and ratios ``x[i+1] / x[i]`` of the 128-layer ziggurat of the standard
    normal (Marsaglia & Tsang 2000, in the form of Doornik 2005, "An improved ziggurat method")."""
    x = np.zeros(layers + 1)
    f = np.exp(-0.5 * r * r)
    x[0] = area / f
    x[1] = r
    for i in range(2, layers):
        x[i] = np.sqrt(-2.0 * np.log(area / x[i - 1] + f))
        f = np.exp(-0.5 * x[i] * x[i])
    x[layers] = 0.0
    return x, x[1:] / x[:-1]


_ZIG_X, _ZIG_R = _ziggurat_tables()
_ZIG_TAIL = 3.442619855899


@njit(inline="always")
def _rotl(x, k):
    return (x << uint64(k)) | (x >> uint64(64 - k))


@njit(inline="always")
def _step(s0, s1, s2, s3):
    """One xoshiro256** step on a state held in four scalars (registers): ``(output, s0, s1, s2,
    s3)``; :func:`next_u64` is the same on the state array."""
    result = _rotl(s1 * uint64(5), 7) * uint64(9)
    t = s1 << uint64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, 45)
    return result, s0, s1, s2, s3


@njit(inline="always")
def next_u64(s):
    """The next 64-bit output of xoshiro256** on state ``s`` (uint64 (>=4,)), in place."""
    result = _rotl(s[1] * uint64(5), 7) * uint64(9)
    t = s[1] << uint64(17)
    s[2] ^= s[0]
    s[3] ^= s[1]
    s[1] ^= s[2]
    s[0] ^= s[3]
    s[2] ^= t
    s[3] = _rotl(s[3], 45)
    return result


@njit(inline="always")
def uniform53(s):
    """A uniform in [0, 1) with 53 bits."""
    return float(next_u64(s) >> uint64(11)) * (1.0 / 9007199254740992.0)


@njit(inline="always")
def _split(r):
    """The ziggurat's uniform in (-1, 1) (53 high bits) and layer index (7 low bits) of one draw."""
    return 2.0 * (float(r >> uint64(11)) * (1.0 / 9007199254740992.0)) - 1.0, int(r & uint64(0x7F))


@njit
def _outside_fast_path(u, i, s):
    """The rest of one ziggurat draw ``(u, i)`` that missed the fast path: ``(value, accepted)``.
    Layer 0 samples the tail beyond r (Marsaglia 1964; always accepted); other layers test the
    wedge, and a rejected draw starts over."""
    if i == 0:
        while True:
            a = np.log(1.0 - uniform53(s)) / _ZIG_TAIL
            b = np.log(1.0 - uniform53(s))
            if -2.0 * b >= a * a:
                break
        return (a - _ZIG_TAIL if u < 0 else _ZIG_TAIL - a), True
    x = u * _ZIG_X[i]
    f0 = np.exp(-0.5 * (_ZIG_X[i] * _ZIG_X[i] - x * x))
    f1 = np.exp(-0.5 * (_ZIG_X[i + 1] * _ZIG_X[i + 1] - x * x))
    return x, f1 + uniform53(s) * (f0 - f1) < 1.0


@njit
def normal(s, spare):
    """A standard normal by the ziggurat method (one 64-bit draw in ~99% of calls).

    ``spare`` is unused (kept in the state for a pairwise method); the layer index comes from the
    7 low bits of the draw and the uniform from its 53 high bits, which do not overlap.
    """
    while True:
        u, i = _split(next_u64(s))
        if abs(u) < _ZIG_R[i]:
            return u * _ZIG_X[i]
        value, accepted = _outside_fast_path(u, i, s)
        if accepted:
            return value


@njit
def fill_normals(buffer, s, spare):
    """Fill ``buffer`` with standard normals: :func:`normal`'s draws, in the same order.

    The ziggurat's fast path runs on the generator state held in local variables (the state
    array is read once and written once), which the compiler keeps in registers: about 3x
    faster than calling :func:`normal` in a loop.
    """
    s0, s1, s2, s3 = s[0], s[1], s[2], s[3]
    q = 0
    n = buffer.shape[0]
    while q < n:
        r, s0, s1, s2, s3 = _step(s0, s1, s2, s3)
        u, i = _split(r)
        if abs(u) < _ZIG_R[i]:
            buffer[q] = u * _ZIG_X[i]
            q += 1
            continue
        # Rare (about 1 %): finish this draw on the state array (a rejected one starts over).
        s[0], s[1], s[2], s[3] = s0, s1, s2, s3
        value, accepted = _outside_fast_path(u, i, s)
        if not accepted:
            value = normal(s, spare)
        buffer[q] = value
        q += 1
        s0, s1, s2, s3 = s[0], s[1], s[2], s[3]
    s[0], s[1], s[2], s[3] = s0, s1, s2, s3


@njit(inline="always")
def load_lanes(s):
    """The train lanes of state ``s`` as a new ``(4, LANES)`` array (``s0`` of every lane, then
    ``s1``, ``s2``, ``s3``): :func:`fill_uniforms` draws from it, :func:`store_lanes` writes it back.
    A separate array lets the compiler keep the lanes apart from the output buffer (on views of
    ``s`` the loop stays scalar, 3x slower)."""
    return s[_LANE_START : _LANE_START + 4 * LANES].copy().reshape((4, LANES))


@njit(inline="always")
def store_lanes(lanes, s):
    """Write the lanes back into state ``s`` (end of a kernel call)."""
    s[_LANE_START : _LANE_START + 4 * LANES] = lanes.reshape(4 * LANES)


@njit
def fill_uniforms(buffer, lanes):
    """Fill ``buffer`` (uint64, a multiple of :data:`LANES` long) from ``lanes``
    (:func:`load_lanes`): entry ``LANES t + l`` is lane ``l``'s ``t``-th xoshiro256** output.
    Each output holds two 32-bit uniforms (read the buffer as uint32)."""
    a0 = lanes[0]
    a1 = lanes[1]
    a2 = lanes[2]
    a3 = lanes[3]
    for t in range(buffer.shape[0] // LANES):
        out = buffer[t * LANES : (t + 1) * LANES]
        for lane in range(LANES):  # independent lanes: one vector operation per line below
            out[lane], s0, s1, s2, s3 = _step(a0[lane], a1[lane], a2[lane], a3[lane])
            a0[lane] = s0
            a1[lane] = s1
            a2[lane] = s2
            a3[lane] = s3
