"""Compiled (numba) CPU kernel of the buffered Tiki-Taka transfer (TTv2, chopped TTv2, AGAD).

One call performs a whole transfer event of :class:`insitu.cells.transfer.TransferCell`: for
each scheduled column ``j`` of the fast array ``A``,

1. the analog read of the one-hot ``e_j``: ``v_i = x A_ij + σ ξ``, clipped to the output bound
   and rounded by the ADC (``x`` is the one-hot input after the DAC, computed by the caller);
2. AGAD: a new reference ``p = m`` where the column's chopper flipped at its previous read, and
   ``v − p`` in place of ``v``; chopped: times ``c_in[j] c_out[i]``;
3. ``H_ij += λ ·`` that; ``n = trunc(H_ij)`` clipped to ``±max_pulses``; where ``n ≠ 0`` the
   buffer forgets (``H ← momentum H``) or keeps the remainder (``H ← H − (1 − momentum) n``;
   AGAD: capped);
4. AGAD: the running mean ``m ← (1 − β) m + β v``;
5. ``C_ij`` gets exactly ``|n|`` pulses of sign ``n`` through the slow device's compiled response
   (one normal for their cycle-to-cycle noise), unless AGAD's warm-up holds the writes;
6. the input chopper of column ``j`` flips (random with probability ``p``, or when the regular
   period ends).

The same steps in the same order as the PyTorch path (``TransferCell._buffered_column``), with
the random numbers (read noise, pulse noise, chopper flips) drawn from the tile's xoshiro256**
stream instead of the torch generator: the same transfer in distribution, not draw for draw.
"""

from __future__ import annotations

import math

from numba import njit

from .compiled import cached_kernel
from .rng import normal, uniform53

__all__ = ["transfer_kernel"]

_KERNELS: dict = {}


def transfer_kernel(respond):
    """The transfer kernel for a slow device with the compiled response ``respond`` (cached)."""
    return cached_kernel(_KERNELS, respond, _make)


def _make(respond):
    @njit(cache=False)
    def transfer(
        fast, slow, packed, buffer, columns, in_chop, out_chop, running_mean, reference, flipped,
        x_read, out_noise, out_bound, out_levels, lam, max_pulses, momentum, forget, chopped, agad,
        beta, cap, warm, chop_p, chop_random, chop_flip_regular, c2c, s, spare,
    ):
        n_out = fast.shape[0]
        pulses = 0.0
        for c in range(columns.shape[0]):
            j = columns[c]
            new_reference = agad and flipped[j]
            for i in range(n_out):
                v = x_read * fast[i, j]
                if out_noise > 0:
                    v += out_noise * normal(s, spare)
                if out_bound > 0:
                    v = min(max(v, -out_bound), out_bound)
                    if out_levels > 0:
                        v = round(v * (out_levels / out_bound)) / out_levels * out_bound
                delta = v
                if agad:
                    if new_reference:
                        reference[i, j] = running_mean[i, j]
                    delta = v - reference[i, j]
                if chopped:
                    delta = delta * (in_chop[j] * out_chop[i])
                h = buffer[i, j] + lam * delta
                n = math.trunc(h)
                n = min(max(n, -max_pulses), max_pulses)
                if n != 0:
                    if forget:
                        h = momentum * h
                    else:
                        h = h - (1.0 - momentum) * n
                        if agad and cap > 0:
                            h = min(max(h, -cap), cap)
                buffer[i, j] = h
                if agad:
                    running_mean[i, j] = (1.0 - beta) * running_mean[i, j] + beta * v
                if warm and n != 0:
                    xi = normal(s, spare) if c2c > 0 else 0.0
                    slow[i, j] = respond(slow[i, j], int(n), packed, i, j, 0, c2c, xi)
                    pulses += abs(n)
            if chopped and chop_p > 0:
                if chop_random:
                    flip = uniform53(s) < chop_p
                else:
                    flip = chop_flip_regular
                if flip:
                    in_chop[j] = -in_chop[j]
                if agad:
                    flipped[j] = flip
        return pulses

    return transfer
