"""xoshiro256** (Blackman & Vigna 2018) for the compiled kernels, on the state of :mod:`.rng_state`.

Two streams per state: the scalar one (:func:`next_u64`, :func:`normal`, :func:`fill_normals`)
and 16 lanes that advance together (:func:`fill_uniforms`), written so that the compiler keeps
the lanes in vector registers: the pulse trains' uniforms cost about a third of a scalar draw.
:func:`fill_lane_normals` turns lane draws into normals eight pairs at a time (the sequential
kernels' cycle-to-cycle noise).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import float32, int32, njit, types, uint32, uint64
from numba.extending import intrinsic

__all__ = [
    "next_u64", "uniform53", "normal", "fill_normals", "fill_uniforms", "fill_lane_normals", "lane_normal_draws",
    "load_lanes", "store_lanes", "LANES",
]

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


# -- normals in vector lanes (the sequential kernels' cycle-to-cycle noise) ---------------------


@intrinsic
def _f32_bits(typingctx, x):
    """The bits of a float32 as a uint32 (a register move)."""
    sig = types.uint32(types.float32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return sig, codegen


@intrinsic
def _f32_from_bits(typingctx, x):
    """The float32 whose bits are the uint32 ``x``."""
    sig = types.float32(types.uint32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


_F32_ONE = 0x3F800000  # bits of 1.0f
_MANTISSA = 0x7FFFFF


@njit(inline="always")
def _normal_pair(a, b, c):
    """Two independent standard normals from three 32-bit uniform words by the Box-Muller transform
    (Box & Muller 1958), ``sqrt(-2 ln u) (cos 2πv, sin 2πv)``, in float32 arithmetic written so
    that the compiler runs eight pairs at once in vector registers: no branch, no division check,
    no conversion from 64-bit integers, polynomials in place of ``log``, ``sin`` and ``cos``.

    ``u`` in (0, 1) is ``2^-(k+1) m``: ``k`` the leading zeros of the 31-bit word ``a >> 1`` (read
    from the exponent of its float32 value; ``k`` = 31 when the word is 0, probability 2^-31),
    ``m`` in [1, 2) from 23 bits of ``b``, so the radius reaches 6.66 (the tail beyond it has
    probability 3e-11; a plain 24-bit uniform would stop at 5.6). ``ln m`` = ``2 atanh((m-1)/(m+1))``
    after reducing ``m`` to [0.71, 1.41) (series to ``s^9``, error below 1e-9); the angle is a
    quadrant (the two top bits of ``b``) plus ``t`` in [-π/4, π/4) (23 bits of ``c``), ``sin t``
    and ``cos t`` by their Taylor series to ``t^9`` and ``t^10`` (errors below 2e-9). Each normal
    is within a few float32 ulps of the exact transform of its uniforms."""
    one = uint32(_F32_ONE)
    high = int32(a >> uint32(1))  # 31 bits, >= 0
    # float32(high) has exponent 127 + floor(log2 high) for high >= 1 when the conversion is exact:
    # a value of more than 24 significant bits could round up to the next power of two (from 2^31
    # - 64 up: u >= 1 and a NaN radius), so above 2^24 the 7 low bits are cleared (24 remain).
    high = high if high < int32(1 << 24) else high & int32(~127)
    exponent = int32(_f32_bits(float32(high)) >> uint32(23)) - int32(127 + 31)  # -(k + 1)
    exponent = exponent if exponent >= int32(-32) else int32(-32)  # high == 0
    m = _f32_from_bits((b & uint32(_MANTISSA)) | one)  # [1, 2)
    big = m > float32(1.4142135)
    m = m * float32(0.5) if big else m
    e = float32(exponent) + (float32(1.0) if big else float32(0.0))
    s = (m - float32(1.0)) / (m + float32(1.0))
    z = s * s
    series = float32(1.0 / 9.0)
    series = series * z + float32(1.0 / 7.0)
    series = series * z + float32(1.0 / 5.0)
    series = series * z + float32(1.0 / 3.0)
    series = series * z + float32(1.0)
    log_u = e * float32(0.6931471805599453) + float32(2.0) * s * series
    radius = np.sqrt(float32(-2.0) * log_u)
    t = (_f32_from_bits((c & uint32(_MANTISSA)) | one) - float32(1.5)) * float32(1.5707963267948966)
    t2 = t * t
    sine = float32(1.0 / 362880.0)
    sine = sine * t2 - float32(1.0 / 5040.0)
    sine = sine * t2 + float32(1.0 / 120.0)
    sine = sine * t2 - float32(1.0 / 6.0)
    sine = t + t * t2 * sine
    cosine = float32(-1.0 / 3628800.0)
    cosine = cosine * t2 + float32(1.0 / 40320.0)
    cosine = cosine * t2 - float32(1.0 / 720.0)
    cosine = cosine * t2 + float32(1.0 / 24.0)
    cosine = cosine * t2 - float32(0.5)
    cosine = float32(1.0) + t2 * cosine
    # Angle t + q π/2: (cos, sin) is (c, s), (-s, c), (-c, -s), (s, -c) for quadrants 0-3.
    q = b >> uint32(30)
    odd = (q & uint32(1)) != uint32(0)
    first = sine if odd else cosine
    second = cosine if odd else sine
    first = -first if ((q + uint32(1)) & uint32(2)) != uint32(0) else first
    second = -second if q >= uint32(2) else second
    return radius * first, radius * second


@njit
def lane_normal_draws(n):
    """The lane draws (uint64, a multiple of :data:`LANES`) :func:`fill_lane_normals` takes for
    ``n`` normals: three 32-bit words a pair."""
    pairs = (n + 1) // 2
    return -(-(3 * pairs) // (2 * LANES)) * LANES


@njit(error_model="numpy", fastmath={"contract"})
def fill_lane_normals(buffer, raw, lanes):
    """Fill ``buffer`` (float32, length ``n``) with standard normals from the train lanes
    (:func:`fill_uniforms`), three 32-bit words a pair (:func:`_normal_pair`); ``raw`` a uint64
    scratch of at least :func:`lane_normal_draws` ``(n)`` entries. About 1.5 ns a normal against
    3.6 for the ziggurat on the scalar stream (eight pairs in a vector register; a float64 buffer
    would halve that width)."""
    n = buffer.shape[0]
    pairs = (n + 1) // 2
    draws = raw[: lane_normal_draws(n)]
    fill_uniforms(draws, lanes)
    words = draws.view(np.uint32)
    half = n // 2
    for t in range(half):
        x, y = _normal_pair(words[t], words[pairs + t], words[2 * pairs + t])
        buffer[t] = x
        buffer[half + t] = y
    if n % 2:  # the last pair gives one normal
        x, y = _normal_pair(words[half], words[pairs + half], words[2 * pairs + half])
        buffer[n - 1] = x
