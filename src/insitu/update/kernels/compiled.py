"""Compiled (numba) CPU kernels of the stochastic pulse update (Gokmen & Vlasov 2016, Eq. 2-3).

One rank-1 update ``ΔW ≈ -lr δ xᵀ`` of an array of ``out × in`` cross-points (each a cell of
``n`` devices) is computed as the hardware does it:

1. Pulse scales: ``Cx = Cd = sqrt(lr / (BL dw))`` with ``dw`` the device's nominal step; with update
   management ``Cx = C m``, ``Cd = C / m``, ``m = sqrt(max|δ| / max|x|)`` (Gokmen, Onen & Haensch
   2017); with dynamic BL ``BL = ceil(lr max|x| max|δ| / dw)`` clipped to ``[1, BL_max]``.
2. Every column line ``j`` fires in each of the ``BL`` slots with probability ``min(Cd |δ_j|, 1)``;
   the slots are the bits of 64-bit words (``ceil(BL / 64)`` words a line). Column trains are drawn
   first; when none fires nothing else is drawn. Then the row lines, ``min(Cx |x_i|, 1)``, but only
   in the slots in which some column fired: a row pulse in another slot meets no column pulse and
   moves no device (pulses are counted by their expectation), so this is exact in distribution
   and makes the row side cheap when the column side is sparse, as it is in training. The rows'
   words hold only those slots, renumbered (bit ``k``: the ``k``-th slot in which a column fired),
   and the fired columns' words are renumbered alike. A slot's uniform is a 32-bit half of a draw
   of the tile's 16-lane train stream (:func:`.rng.fill_uniforms`, vectorised), compared as an
   integer without a branch.
3. The coincidences of device ``(j, i)`` are ``popcount(col_j & row_i)``; only fired columns ×
   fired rows are visited (a column that fired in one slot meets that slot's list of rows). The
   device steps up where ``sign(x_i) ≠ sign(δ_j)``.
4. The device family's response function moves every device of the cell by that many pulses,
   given one standard normal ``ξ`` for the cycle-to-cycle noise of those pulses (drawn only for
   devices that received a coincidence, and only when the device has cycle-to-cycle noise; the
   sequential kernel draws them from the train lanes, :func:`.rng.fill_lane_normals`).

The response is a jitted function supplied by the device model
(:meth:`insitu.devices.DeviceModel.compiled_response`), so a new device family brings its own
response and every kernel here serves it; kernels are compiled once per response function and
dtype (about a second each, at first use).

Random numbers come from the tile's own xoshiro256** streams (:mod:`.rng`: the 16 train lanes for
the pulse trains and the sequential kernel's cycle-to-cycle normals, the scalar stream for the
summed and stateful kernels' normals); the kernel is serial within a tile, so results do not
depend on the number of threads.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types, uint64
from numba.core import cgutils
from numba.extending import intrinsic

from .rng import LANES, fill_lane_normals, fill_normals, fill_uniforms, lane_normal_draws, load_lanes, store_lanes

__all__ = [
    "sequential_kernel", "stateful_sequential_kernel", "summed_kernel", "stacked_kernel", "stacked_stateful_kernel",
    "prefetch_pays",
    "constant_step_response", "linear_step_response", "constant_step_mixed", "linear_step_mixed",
]


@intrinsic
def _ctpop(typingctx, x):
    """LLVM's population count (one instruction where the CPU has one)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(fn, args)

    return sig, codegen


@intrinsic
def _prefetch(typingctx, address):
    """LLVM's prefetch of the cache line holding byte ``address`` (a read, kept in every cache
    level); a hint: it never faults and changes no result."""
    sig = types.void(types.uintp)

    def codegen(context, builder, signature, args):
        pointer = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [pointer, i32, i32, i32]), "llvm.prefetch.p0"
        )
        builder.call(fn, [builder.inttoptr(args[0], pointer), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


_DRAWS = 1024  # lane draws held by a kernel call's uniform buffer (a multiple of rng.LANES)


@njit(inline="always")
def _slot_bits(p, m, draws, cursor):
    """Independent Bernoulli(``p``) draws for the ``m`` slots ``0 .. m-1`` of a word (``m <= 64``)
    from the ``(m + 1) // 2`` lane draws at ``draws[cursor:]`` (the caller moves its cursor past
    them): a slot fires when its 32-bit half ``h`` satisfies ``h / 2^32 < p``, i.e.
    ``h < ceil(p 2^32)`` (an integer comparison, no branch: a branch on a random bit
    mispredicts); slot ``2t`` takes the high half of the ``t``-th draw, slot ``2t + 1`` the low
    half (an odd ``m``'s last low half is drawn and not used). The word is built from its last
    pair of slots down, a shift of the word so far: a recurrence the compiler does not
    vectorise (for the few pairs of a word the vector loop cost more than it gained). Returns
    the word."""
    threshold = uint64(math.ceil(p * 4294967296.0))
    start = uint64(cursor)  # unsigned indices: no wraparound test
    word = uint64(0)
    t = uint64((m + 1) // 2)
    while t > uint64(0):
        t -= uint64(1)
        r = draws[start + t]
        high = uint64((r >> uint64(32)) < threshold)  # slot 2t
        low = uint64((r & uint64(0xFFFFFFFF)) < threshold)  # slot 2t + 1
        word = (word << uint64(2)) | (low << uint64(1)) | high
    if m < 64:
        word &= (uint64(1) << uint64(m)) - uint64(1)
    return word


@njit(inline="always")
def _compress(word, union):
    """The bits of ``word`` (a subset of ``union``) renumbered by their rank in ``union``: bit
    ``k`` of the result is set when the ``k``-th set bit of ``union`` is set in ``word``."""
    packed = uint64(0)
    while word != uint64(0):
        low = word & (~word + uint64(1))
        packed |= uint64(1) << _ctpop(union & (low - uint64(1)))
        word &= word - uint64(1)
    return packed


_NORMALS = 128


@njit(inline="always")
def _train_buffers(n_out, n_in, bl_max):
    """The buffers :func:`_sample_trains` fills: fired column lines (bits, ids) and fired row lines
    (bits, ids, signs), kept compact so that the coincidence loops stream through contiguous memory;
    the lane draws the trains' uniforms come from; and the slots drawn per word of the two sides
    (``n_slots[side, w]``)."""
    words_max = (bl_max + 63) // 64
    return (
        np.empty((n_out, words_max), dtype=np.uint64), np.empty(n_out, dtype=np.int64),
        np.empty((n_in, words_max), dtype=np.uint64), np.empty(n_in, dtype=np.int64), np.empty(n_in, dtype=np.bool_),
        # Room for two lines' worst case (bl_max + words_max draws each) and a lane step.
        np.empty(max(_DRAWS, -(-(2 * (bl_max + words_max) + LANES) // LANES) * LANES), dtype=np.uint64),
        np.empty((2, words_max), dtype=np.int64),
    )


@njit(inline="always")
def _sample_trains(
    b, x, d, lr, step, bl_max, update_management, dynamic_bl, col_bits, cols, row_bits, rows, row_negative,
    draws, cursor, lanes, n_slots,
):
    """Draw the trains of sample ``b``: the fired column lines (``cols[:n_cols]``, their bits in
    ``col_bits``) and, when any column fired, the fired row lines (``rows[:n_rows]``, bits in
    ``row_bits``, signs in ``row_negative``). Returns ``(n_cols, n_rows, words, pulses, cursor)``
    with ``pulses`` the expected pulses ``BL (Σ p_i + Σ p_j)`` of the sample, as the torch engine
    counts them, and ``cursor`` the next unused uniform of the buffer."""
    n_out = d.shape[1]
    n_in = x.shape[1]
    bl = bl_max
    c = math.sqrt(lr / (step * bl_max))
    cx = c
    cd = c
    if update_management or dynamic_bl:
        x_max = 0.0
        for i in range(n_in):
            x_max = max(x_max, abs(x[b, i]))
        d_max = 0.0
        for j in range(n_out):
            d_max = max(d_max, abs(d[b, j]))
        if dynamic_bl:
            bl = int(math.ceil(lr * x_max * d_max / step))
            bl = min(max(bl, 1), bl_max)
            c = math.sqrt(lr / (step * bl))
        if update_management:
            # The floor keeps a zero vector from producing 0/0: its probabilities stay 0.
            m = math.sqrt(max(d_max, 1e-30) / max(x_max, 1e-30))
            cx = c * m
            cd = c / m
        else:
            cx = c
            cd = c
    words = (bl + 63) // 64
    # Columns: every slot. Rows: only the slots in which some column fired (a row pulse in any
    # other slot meets no column pulse: it moves no device, and the pulses are counted by their
    # expectation), so a sparse column side makes the row side cheap; exact in distribution.
    for w in range(words):
        n_slots[0, w] = min(64, bl - 64 * w)
    n_cols, p_cols, cursor = _draw_lines(d[b], cd, words, n_slots[0], col_bits, cols, row_negative, False, draws, cursor, lanes, True)
    if n_cols == 0:
        p_rows = 0.0
        for i in range(n_in):
            p_rows += min(cx * abs(x[b, i]), 1.0)
        return n_cols, 0, words, bl * (p_cols + p_rows), cursor
    # The rows' words hold only the slots in which some column fired (the union of the columns'
    # words), renumbered: bit k is the k-th such slot. The columns' words are renumbered the same
    # way, so that every count popcount(column & row) and every slot's list of rows stays what
    # the full slot numbers give (a bijection of the slots that matter).
    for w in range(words):
        union = uint64(0)
        for a in range(n_cols):
            union |= col_bits[a, w]
        m = int(_ctpop(union))
        n_slots[1, w] = m
        if m < n_slots[0, w]:
            for a in range(n_cols):
                col_bits[a, w] = _compress(col_bits[a, w], union)
    n_rows, p_rows, cursor = _draw_lines(x[b], cx, words, n_slots[1], row_bits, rows, row_negative, True, draws, cursor, lanes, False)
    return n_cols, n_rows, words, bl * (p_cols + p_rows), cursor


@njit
def _top_up_normals(normals, cursor, end, need, lanes, raw):
    """Move the unused normals ``normals[cursor:end]`` to the front and draw more from the lanes
    (:func:`.rng.fill_lane_normals`, ``raw`` its scratch), at least ``need`` in all and in steps of
    ``_NORMALS`` (so that the end of a kernel call leaves fewer than ``_NORMALS`` unused); returns
    ``(0, end)``. The normals come out in the stream's order, whatever the top-up points."""
    remaining = end - cursor
    for t in range(remaining):
        normals[t] = normals[cursor + t]
    end = remaining + max(-(-(need - remaining) // _NORMALS), 1) * _NORMALS
    end = min(end, normals.shape[0])
    fill_lane_normals(normals[remaining:end], raw, lanes)
    return 0, end


@njit
def _refill(draws, cursor, lanes):
    """Keep the unused uniforms ``draws[cursor:]`` (moved to the front, ending on a lane step)
    and fill the rest of the buffer with new lane draws; returns the new cursor. Nothing drawn
    is dropped, so a step uses as many lane draws as it consumes, whatever the block sizes.
    Called only with ``cursor`` past the middle of the buffer (so the move runs forward)."""
    size = draws.shape[0]
    remaining = size - cursor
    pad = (-remaining) % LANES
    for t in range(remaining):
        draws[pad + t] = draws[cursor + t]
    fill_uniforms(draws[pad + remaining :], lanes)
    return pad


@njit(inline="always")
def _draw_lines(values, scale, words, n_slots, bits, ids, negative, signs, draws, cursor, lanes, quiet):
    """The trains of one side of a sample: line ``l`` fires in each slot ``0 .. n_slots[w]-1``
    of word ``w`` with probability ``p_l = min(scale |values[l]|, 1)``. The fired lines are listed
    compactly (``ids[:count]``, their slots in ``bits[:count]``, with ``signs`` their signs in
    ``negative[:count]``). Returns ``(count, Σ p_l, cursor)``.

    ``quiet``: draw each line first as a whole (:func:`_quiet_line`) when its train is one word
    (up to 64 slots; longer trains are drawn slot by slot); quiet lines are the columns, listed
    without signs. Each case has a block loop of its own (:func:`_draw_block_quiet`,
    :func:`_draw_block_one_word`, :func:`_draw_block`): the one loop for all three kept several
    of its values on the stack, about a third more time for the trains.

    The lines go in blocks, each of which finds enough uniforms in the buffer: the refill test is
    made between blocks, outside the loop that draws a block."""
    count = 0
    p_sum = 0.0
    n_lines = values.shape[0]
    quiet = quiet and words == 1
    per_line = 1 if quiet else 0  # a quiet line's whole-train draw
    for w in range(words):
        per_line += (n_slots[w] + 1) // 2
    block = max(1, (draws.shape[0] // 2) // max(per_line, 1))
    for start in range(0, n_lines, block):
        stop = min(start + block, n_lines)
        if cursor + (stop - start) * per_line > draws.shape[0]:
            cursor = _refill(draws, cursor, lanes)
        if quiet:
            count, p_block, cursor = _draw_block_quiet(values, start, stop, scale, n_slots[0], bits, ids, draws, cursor, count)
        elif words == 1:
            count, p_block, cursor = _draw_block_one_word(
                values, start, stop, scale, n_slots[0], bits, ids, negative, signs, draws, cursor, count
            )
        else:
            count, p_block, cursor = _draw_block(
                values, start, stop, scale, words, n_slots, bits, ids, negative, signs, draws, cursor, count
            )
        p_sum += p_block
    return count, p_sum, cursor


@njit(inline="always")
def _quiet_line(p, m, draws, cursor):
    """The train of a line that fires in each of the ``m`` slots ``0 .. m-1`` of a word
    (``m <= 64``) with probability ``p``, drawn for the most part with one uniform: with
    ``v = 1 - u`` uniform in (0, 1], the first slot that fires is the smallest ``k`` with
    ``v > (1 - p)^(k+1)`` (probability ``(1 - p)^k p``), none when ``v <= (1 - p)^m``; the slots
    after the first one that fires are drawn one by one (:func:`_slot_bits`). The same
    distribution as ``m`` independent draws, exactly; for a quiet line (most column lines: a
    small ``p``, and about nine in ten of them never fire in a 2016 network's update) one draw
    instead of ``m / 2``. Returns ``(word, cursor)``; uses at most ``1 + (m + 1) // 2`` draws."""
    v = 1.0 - np.float64(draws[cursor] >> uint64(11)) * 1.1102230246251565e-16  # (0, 1]
    cursor += 1
    if v < 1.0 - m * p - 1e-12:
        # Quiet without computing (1 - p)^m, which is at least 1 - m p (Bernoulli's inequality;
        # the margin covers the rounding of both sides): about nine in ten column lines.
        return uint64(0), cursor
    stay = 1.0 - p
    quiet_all = 1.0  # (1 - p)^m by squaring (m is the same for every line: predicted)
    power = stay
    e = m
    while e > 0:
        if e & 1:
            quiet_all *= power
        power *= power
        e >>= 1
    if v <= quiet_all:
        return uint64(0), cursor
    k = 0
    level = stay
    while k < m - 1 and v <= level:  # the first slot k: v > (1 - p)^(k+1)
        level *= stay
        k += 1
    rest = _slot_bits(p, m - k - 1, draws, cursor)
    cursor += (m - k) // 2
    first = uint64(1) << uint64(k)
    if k + 1 < 64:  # (a shift by 64 is undefined; there is no later slot then)
        first |= rest << uint64(k + 1)
    return first, cursor


@njit
def _draw_block_one_word(values, start, stop, scale, m, bits, ids, negative, signs, draws, cursor, count):
    """:func:`_draw_block` for trains of one word drawn slot by slot (the rows), with unsigned
    indices: the same draws and words."""
    p_sum = 0.0
    pairs = uint64((m + 1) // 2)
    position = uint64(cursor)
    listed = uint64(count)
    for line in range(uint64(start), uint64(stop)):
        value = values[line]
        p = min(scale * abs(value), 1.0)
        p_sum += p
        if p > 0.0:
            word = _slot_bits(p, m, draws, position)
            position += pairs
            # Listed without a branch (whether a line fired is a coin flip: a branch mispredicts).
            bits[listed, 0] = word
            ids[listed] = line
            if signs:
                negative[listed] = value < 0
            listed += uint64(word != uint64(0))
    return np.int64(listed), p_sum, np.int64(position)


@njit
def _draw_block_quiet(values, start, stop, scale, m, bits, ids, draws, cursor, count):
    """:func:`_draw_block` for quiet lines (:func:`_quiet_line`) without signs (the columns),
    with unsigned indices: the same draws and words."""
    p_sum = 0.0
    position = uint64(cursor)
    listed = uint64(count)
    for line in range(uint64(start), uint64(stop)):
        p = min(scale * abs(values[line]), 1.0)
        p_sum += p
        if p > 0.0:
            word, next_position = _quiet_line(p, m, draws, np.int64(position))
            position = uint64(next_position)
            # Listed without a branch (whether a line fired is a coin flip: a branch mispredicts).
            bits[listed, 0] = word
            ids[listed] = line
            listed += uint64(word != uint64(0))
    return np.int64(listed), p_sum, np.int64(position)


@njit
def _draw_block(values, start, stop, scale, words, n_slots, bits, ids, negative, signs, draws, cursor, count):
    """Lines ``start:stop`` of :func:`_draw_lines` whose trains span several words (``BL > 64``),
    drawn slot by slot, with enough uniforms in ``draws[cursor:]``; returns ``(count, Σ p_l,
    cursor)``."""
    p_sum = 0.0
    for line in range(start, stop):
        p = min(scale * abs(values[line]), 1.0)
        p_sum += p
        if p > 0.0:
            fired = False
            for w in range(words):
                word = _slot_bits(p, n_slots[w], draws, cursor)
                cursor += (n_slots[w] + 1) // 2
                bits[count, w] = word
                fired |= word != uint64(0)
            # Listed without a branch (whether a line fired is a coin flip: a branch mispredicts).
            ids[count] = line
            if signs:
                negative[count] = values[line] < 0
            count += fired
    return count, p_sum, cursor


@njit(inline="always")
def _coincidences(col_bits, a, row_bits, r, words):
    """``popcount(col & row)`` over the words of column ``a`` and row ``r``."""
    if words == 1:
        return int(_ctpop(col_bits[a, 0] & row_bits[r, 0]))
    count = 0
    for w in range(words):
        count += int(_ctpop(col_bits[a, w] & row_bits[r, w]))
    return count


@njit(inline="always")
def _prefetch_device(w_row, w_strides, p_row, p_strides, i):
    """Prefetch the weight and the packed parameters of device ``i`` of the column whose rows
    start at the byte addresses ``w_row`` and ``p_row`` (the replicas' prefetching build)."""
    i = uint64(i)
    _prefetch(w_row + i * w_strides[1])
    _prefetch(p_row + i * p_strides[1])


def _make_hit_loops(respond):
    """The loops that move the hit devices of one column ``j`` of an array of one device a
    cross-point (every plain array), as functions of their own: compiled apart from the kernel,
    they keep their loop-invariant values in registers (in the kernel's body the compiler
    reloaded several of them from the stack at every hit), and the one for single coincidences
    reads a slot's list of rows in place. Both use unsigned indices (numba adds a wraparound
    test to every signed index it cannot prove non-negative, such as a row read from a list).

    ``hits_counted(weights, params, j, hit_rows, hit_counts, hits, rows, row_negative,
    d_negative, normals, first_normal, c2c)``: the devices ``rows[hit_rows[h]]`` with
    ``hit_counts[h]`` coincidences each; ``hits_single(weights, params, j, hit_rows, hits, rows,
    row_negative, d_negative, normals, first_normal, c2c)``: the same with one coincidence each
    (the response then sees a count of ±1, which the compiler folds into it). Hit ``h`` takes the
    normal ``normals[first_normal + h]`` when ``c2c > 0``."""

    @njit(nogil=True)
    def hits_counted(weights, params, j, hit_rows, hit_counts, hits, rows, row_negative, d_negative, normals, first_normal, c2c):
        noisy = c2c > 0.0
        column = uint64(j)
        first = uint64(0)
        for h in range(hits):
            r = uint64(hit_rows[h])
            count = hit_counts[h]
            # ΔW = -lr δ xᵀ: up where sign(x_i) ≠ sign(δ_j).
            signed = count if row_negative[r] != d_negative else -count
            i = uint64(rows[r])
            xi = np.float64(normals[uint64(first_normal) + uint64(h)]) if noisy else 0.0
            weights[column, i, first] = respond(weights[column, i, first], signed, params, column, i, first, c2c, xi)

    @njit(nogil=True)
    def hits_single(weights, params, j, hit_rows, hits, rows, row_negative, d_negative, normals, first_normal, c2c):
        noisy = c2c > 0.0
        column = uint64(j)
        first = uint64(0)
        for h in range(hits):
            r = uint64(hit_rows[h])
            signed = 1 if row_negative[r] != d_negative else -1
            i = uint64(rows[r])
            xi = np.float64(normals[uint64(first_normal) + uint64(h)]) if noisy else 0.0
            weights[column, i, first] = respond(weights[column, i, first], signed, params, column, i, first, c2c, xi)

    return hits_counted, hits_single


def _make_sequential(respond, prefetch=False):
    # ``prefetch`` (a constant of the build: the other build has no trace of it): the replicas'
    # kernel of a large stack (stacked_kernel) prefetches the devices of every fired row while
    # their coincidences are counted. The arrays of 32 replicas (130 MB of weights and parameters
    # for the 2016 network's first layer) are far larger than the caches, so each hit's device
    # is a miss to memory that the hit loop would wait for: prefetched, the first layer's update
    # of 32 replicas takes 20-25 % less time. A single array stays in the caches, where the
    # prefetches only add instructions (25-45 % slower at batch 64): not built there.
    hits_counted, hits_single = _make_hit_loops(respond)

    @njit(nogil=True)
    def sequential(weights, params, x, d, lr, step, bl_max, update_management, dynamic_bl, c2c, s, spare, tally):
        """``x.shape[0]`` rank-1 pulse updates of ``weights`` ``(out, in, n)``, one after another.

        ``params`` ``(out, in, n, P)`` are the per-device parameters in the device model's layout,
        interleaved per device (one cache line holds a device's parameters: the devices a pulse
        reaches are scattered over the array).
        ``tally`` (float64 (3,)) accumulates expected pulses, coincidences and rank-1 updates
        (running sums: the caller reads them).
        """
        n_out, n_in, n_dev = weights.shape
        if prefetch:  # byte addresses and strides of the arrays (a constant: pruned in the other build)
            w_address, p_address = uint64(weights.ctypes.data), uint64(params.ctypes.data)
            w_strides = (uint64(weights.strides[0]), uint64(weights.strides[1]))
            p_strides = (uint64(params.strides[0]), uint64(params.strides[1]))
        batch = x.shape[0]
        col_bits, cols, row_bits, rows, row_negative, draws, n_slots = _train_buffers(n_out, n_in, bl_max)
        lanes = load_lanes(s)
        drawn = _refill(draws, draws.shape[0], lanes)  # the next unused lane draw
        hit_rows = np.empty(n_in, dtype=np.int64)
        hit_counts = np.empty(n_in, dtype=np.int64)
        # Cycle-to-cycle noise from a buffer filled in bulk from the lanes (Box-Muller in vector
        # registers, float32), topped up before each column's devices (room for all of them): a
        # generator call inside the coincidence loop keeps the compiler from optimising the loop.
        normals = np.empty(n_in * n_dev + _NORMALS, dtype=np.float32)
        raw = np.empty(lane_normal_draws(normals.shape[0]), dtype=np.uint64)
        next_normal = 0
        normals_end = 0  # normals[next_normal:normals_end] are drawn and unused
        # The fired rows of each slot (trains of one word), listed when a column first needs them.
        slot_rows = np.empty((min(bl_max, 64), n_in), dtype=np.int64)
        slot_hits = np.empty(min(bl_max, 64), dtype=np.int64)
        slot_sample = np.full(min(bl_max, 64), -1, dtype=np.int64)  # the sample each list is of
        for b in range(batch):
            tally[2] += 1.0
            n_cols, n_rows, words, pulses, drawn = _sample_trains(
                b, x, d, lr, step, bl_max, update_management, dynamic_bl, col_bits, cols, row_bits, rows, row_negative,
                draws, drawn, lanes, n_slots,
            )
            tally[0] += pulses
            if n_cols == 0:
                continue
            # Counted where the hits are listed, not in the loops that move the devices (there the
            # compiler kept the running sum in memory: one more dependency from hit to hit).
            coincidences = 0
            for a in range(n_cols):
                j = cols[a]
                d_negative = d[b, j] < 0
                hits = 0
                single = False  # the hits are slot_rows[slot, :hits], one coincidence each
                slot = uint64(0)
                if prefetch:
                    w_row = w_address + uint64(j) * w_strides[0]
                    p_row = p_address + uint64(j) * p_strides[0]
                column_word = col_bits[a, 0]
                if words == 1 and (column_word & (column_word - uint64(1))) == uint64(0):
                    # A column that fired in one slot (most of them: 93 % in a 2016 network's
                    # batch-64 update) meets the rows that fired in that slot, once each: the
                    # slot's list of rows, drawn up once per sample and slot, shared by every
                    # column that fired there alone (the same hits, in the same order, as the
                    # counts below would give).
                    slot = _ctpop((column_word & (~column_word + uint64(1))) - uint64(1))  # its trailing zeros
                    if slot_sample[slot] != b:
                        slot_sample[slot] = b
                        listed = 0
                        for r in range(n_rows):
                            slot_rows[slot, listed] = r
                            listed += (row_bits[r, 0] >> uint64(slot)) & uint64(1)
                        slot_hits[slot] = listed
                    hits = slot_hits[slot]
                    coincidences += hits
                    single = True
                    if prefetch:
                        for h in range(hits):
                            _prefetch_device(w_row, w_strides, p_row, p_strides, rows[slot_rows[slot, h]])
                else:
                    # Counts of all fired rows first, then the devices with a coincidence, compacted
                    # without branches (half the pairs have none: a branch there mispredicts).
                    for r in range(n_rows):
                        if prefetch:
                            _prefetch_device(w_row, w_strides, p_row, p_strides, rows[r])
                        count = _coincidences(col_bits, a, row_bits, r, words)
                        coincidences += count
                        hit_rows[hits] = r
                        hit_counts[hits] = count
                        hits += count != 0
                if c2c > 0.0 and next_normal + hits * n_dev > normals_end:
                    next_normal, normals_end = _top_up_normals(normals, next_normal, normals_end, hits * n_dev, lanes, raw)
                if n_dev == 1:
                    # One device a cross-point (every plain array): the loops of _make_hit_loops,
                    # the same arithmetic and draws as the loop below (the first layer's update
                    # of the 2016 network at batch 64 in 10-15 % less time than with the same
                    # loop inside the kernel).
                    if single:
                        hits_single(weights, params, j, slot_rows[slot], hits, rows, row_negative, d_negative, normals, next_normal, c2c)
                    else:
                        hits_counted(weights, params, j, hit_rows, hit_counts, hits, rows, row_negative, d_negative, normals, next_normal, c2c)
                    if c2c > 0.0:
                        next_normal += hits
                    continue
                if single:  # several devices a cross-point: the hit list of the loop below
                    for h in range(hits):
                        hit_rows[h] = slot_rows[slot, h]
                        hit_counts[h] = 1
                for h in range(hits):
                    r = hit_rows[h]
                    count = hit_counts[h]
                    # ΔW = -lr δ xᵀ: up where sign(x_i) ≠ sign(δ_j).
                    signed = count if row_negative[r] != d_negative else -count
                    i = rows[r]
                    for k in range(n_dev):
                        xi = 0.0
                        if c2c > 0.0:
                            xi = np.float64(normals[next_normal])
                            next_normal += 1
                        weights[j, i, k] = respond(weights[j, i, k], signed, params, j, i, k, c2c, xi)
            tally[1] += coincidences
        store_lanes(lanes, s)

    return sequential


def _make_stateful_sequential(respond):
    @njit(nogil=True)
    def stateful(weights, params, scale, x, d, lr, step, bl_max, update_management, dynamic_bl, s, spare, tally):
        """The sequential kernel for devices with per-device state (the conductance pairs,
        :mod:`.compiled_pairs`): trains and coincidences as :func:`_make_sequential`, but the
        response ``respond(signed, params, j, i, k, scale, normals, cursor, s, spare) -> (w,
        cursor)`` draws its own normals (one per pulse, from the kernel's buffer on stream ``s``)
        and writes the state planes of ``params`` in place.

        ``params`` is the tile's parameter tensor itself, ``(P, out, in, n)`` planes first (a
        numpy view: what the response writes lands in the tile's tensor); ``scale`` a 1-element
        array in the weights' dtype (``g_scale``). ``weights[j, i, k]`` is set to the read the
        response returns.
        """
        n_out, n_in, n_dev = weights.shape
        batch = x.shape[0]
        col_bits, cols, row_bits, rows, row_negative, draws, n_slots = _train_buffers(n_out, n_in, bl_max)
        lanes = load_lanes(s)
        drawn = _refill(draws, draws.shape[0], lanes)  # the next unused lane draw
        hit_rows = np.empty(n_in, dtype=np.int64)
        hit_counts = np.empty(n_in, dtype=np.int64)
        normals = np.empty(_NORMALS)
        cursor = _NORMALS
        for b in range(batch):
            tally[2] += 1.0
            n_cols, n_rows, words, pulses, drawn = _sample_trains(
                b, x, d, lr, step, bl_max, update_management, dynamic_bl, col_bits, cols, row_bits, rows, row_negative,
                draws, drawn, lanes, n_slots,
            )
            tally[0] += pulses
            if n_cols == 0:
                continue
            coincidences = 0
            for a in range(n_cols):
                j = cols[a]
                d_negative = d[b, j] < 0
                hits = 0
                for r in range(n_rows):
                    count = _coincidences(col_bits, a, row_bits, r, words)
                    hit_rows[hits] = r
                    hit_counts[hits] = count
                    hits += count != 0
                for h in range(hits):
                    r = hit_rows[h]
                    count = hit_counts[h]
                    coincidences += count
                    # ΔW = -lr δ xᵀ: up (SET on G⁺) where sign(x_i) ≠ sign(δ_j).
                    signed = count if row_negative[r] != d_negative else -count
                    i = rows[r]
                    for k in range(n_dev):
                        w, cursor = respond(signed, params, j, i, k, scale, normals, cursor, s, spare)
                        weights[j, i, k] = w
            tally[1] += coincidences
        store_lanes(lanes, s)

    return stateful


def _make_summed(mixed):
    @njit(nogil=True)
    def summed(weights, params, x, d, lr, step, bl_max, update_management, dynamic_bl, c2c, s, spare, tally):
        """The ``summed`` mode: every train of the batch drawn as :func:`_make_sequential` draws
        them, each device's up and down coincidences over the batch counted exactly, then every
        device that received any moved once by ``mixed`` (its steps at the weight before the
        batch, the cycle-to-cycle noise of all its pulses as one Gaussian, the bounds once:
        :meth:`insitu.devices.DeviceModel.apply_mixed` with no count variance). Devices are
        visited in the order they first received a coincidence."""
        n_out, n_in, n_dev = weights.shape
        batch = x.shape[0]
        col_bits, cols, row_bits, rows, row_negative, draws, n_slots = _train_buffers(n_out, n_in, bl_max)
        lanes = load_lanes(s)
        drawn = _refill(draws, draws.shape[0], lanes)  # the next unused lane draw
        n_up = np.zeros((n_out, n_in), dtype=np.int64)
        n_down = np.zeros((n_out, n_in), dtype=np.int64)
        touched = np.empty(n_out * n_in, dtype=np.int64)
        n_touched = 0
        for b in range(batch):
            tally[2] += 1.0
            n_cols, n_rows, words, pulses, drawn = _sample_trains(
                b, x, d, lr, step, bl_max, update_management, dynamic_bl, col_bits, cols, row_bits, rows, row_negative,
                draws, drawn, lanes, n_slots,
            )
            tally[0] += pulses
            coincidences = 0
            for a in range(n_cols):
                j = cols[a]
                d_negative = d[b, j] < 0
                for r in range(n_rows):
                    count = _coincidences(col_bits, a, row_bits, r, words)
                    if count == 0:
                        continue
                    i = rows[r]
                    if n_up[j, i] == 0 and n_down[j, i] == 0:
                        touched[n_touched] = j * n_in + i
                        n_touched += 1
                    coincidences += count
                    # ΔW = -lr δ xᵀ: up where sign(x_i) ≠ sign(δ_j).
                    if row_negative[r] != d_negative:
                        n_up[j, i] += count
                    else:
                        n_down[j, i] += count
            tally[1] += coincidences
        store_lanes(lanes, s)
        # One normal per moved device, all drawn first (a generator call inside the loop keeps
        # the compiler from optimising it).
        normals = np.empty(n_touched * n_dev if c2c > 0.0 else 0)
        fill_normals(normals, s, spare)
        next_normal = 0
        for t in range(n_touched):
            j = touched[t] // n_in
            i = touched[t] - j * n_in
            for k in range(n_dev):
                xi = 0.0
                if c2c > 0.0:
                    xi = normals[next_normal]
                    next_normal += 1
                weights[j, i, k] = mixed(weights[j, i, k], n_up[j, i], n_down[j, i], params, j, i, k, c2c, xi)

    return summed


def _make_stacked(sequential):
    @njit(nogil=True, parallel=True)
    def stacked(weights, params, x, d, lr, steps, bls, update_management, dynamic_bl, c2cs, s, spare, tally):
        """The sequential update of ``R`` independent arrays on a leading axis (replicas in
        lockstep): weights ``(R, out, in, n)``, params ``(R, out, in, n, P)``, x ``(R, B, in)``,
        d ``(R, B, out)``; per replica its nominal step, BL, cycle-to-cycle spread, generator
        state ``s[r]``, ``spare[r]`` and ``tally[r]``. Each replica draws from its own stream and
        writes only its own arrays, so the replicas run in parallel threads (numba's thread
        count, :func:`insitu.update.kernels.set_threads`) with results that do not depend on
        the number of threads."""
        for r in prange(weights.shape[0]):
            sequential(
                weights[r], params[r], x[r], d[r], lr, steps[r], bls[r], update_management, dynamic_bl, c2cs[r],
                s[r], spare[r], tally[r],
            )

    return stacked


PREFETCH_BYTES = 24 << 20


def prefetch_pays(*arrays) -> bool:
    """Whether the replicas' kernel should prefetch: when the arrays it updates (weights and
    packed parameters of all replicas) exceed :data:`PREFETCH_BYTES` (24 MiB: three quarters of
    the 32 MiB last-level cache of the machines the engine is measured on), so that a hit's device
    is mostly a miss to memory. Measured there at batch 1 (``benchmarks/bench_engine.py``'s
    network): the first layer of 8 replicas (32 MB) and of 32 (130 MB) gains, the second layer
    of 32 (21 MB) does not. Either choice gives the same results."""
    return sum(a.nbytes for a in arrays) > PREFETCH_BYTES


def _make_stacked_stateful(stateful):
    @njit(nogil=True, parallel=True)
    def stacked(weights, params, scale, x, d, lr, steps, bls, update_management, dynamic_bl, s, spare, tally):
        """The stateful sequential update (:func:`_make_stateful_sequential`) of ``R`` replicas in
        lockstep: weights ``(R, out, in, n)``, params the replica tile's parameter tensor itself
        ``(P, R, out, in, n)`` (planes first: replica ``r``'s planes are the view ``params[:, r]``,
        written in place), x ``(R, B, in)``, d ``(R, B, out)``; per replica its nominal step, BL,
        generator state ``s[r]``, ``spare[r]`` and ``tally[r]``; ``scale`` (``g_scale``, one
        element) is shared, as the replicas share one pair config. Replicas write only their own
        planes and draw from their own streams, so they run in parallel threads with results
        that do not depend on the number of threads."""
        for r in prange(weights.shape[0]):
            stateful(
                weights[r], params[:, r], scale, x[r], d[r], lr, steps[r], bls[r], update_management, dynamic_bl,
                s[r], spare[r], tally[r],
            )

    return stacked


_SEQUENTIAL: dict = {}
_STATEFUL: dict = {}
_SUMMED: dict = {}
_STACKED: dict = {}
_STACKED_STATEFUL: dict = {}


def cached_kernel(store: dict, respond, make):
    """``make(respond)``, built once per key (a device response; for the replicas' kernel the
    response and its variant) and kept in ``store`` (numba compiles a kernel at its first call,
    about a second: every kernel factory of the engine caches this way)."""
    kernel = store.get(respond)
    if kernel is None:
        kernel = store[respond] = make(respond)
    return kernel


def sequential_kernel(respond):
    """The sequential kernel for device response ``respond`` (built and cached per response)."""
    return cached_kernel(_SEQUENTIAL, respond, _make_sequential)


def stateful_sequential_kernel(respond):
    """The sequential kernel for a stateful response (per-device state, :mod:`.compiled_pairs`)."""
    return cached_kernel(_STATEFUL, respond, _make_stateful_sequential)


def summed_kernel(mixed):
    """The ``summed`` kernel for the device's mixed response ``mixed`` (built and cached per response)."""
    return cached_kernel(_SUMMED, mixed, _make_summed)


def stacked_kernel(respond, prefetch=False):
    """The sequential kernel over a leading replica axis, for device response ``respond``; with
    ``prefetch`` its per-replica kernel prefetches the devices a pulse may reach, for stacks
    larger than the caches (:func:`prefetch_pays`; the same results). Each is compiled at its
    first use only (a few seconds), so runs without large stacks never build the second."""
    per_replica = (lambda: _make_sequential(respond, prefetch=True)) if prefetch else (lambda: sequential_kernel(respond))
    return cached_kernel(_STACKED, (respond, bool(prefetch)), lambda _key: _make_stacked(per_replica()))


def stacked_stateful_kernel(respond):
    """The stateful sequential kernel over a leading replica axis, for a stateful response
    (per-device state, :mod:`.compiled_pairs`)."""
    return cached_kernel(_STACKED_STATEFUL, respond, lambda r: _make_stacked_stateful(stateful_sequential_kernel(r)))


@njit(inline="always")
def _clip(value, low, high):
    # Selects, not min/max: min/max of mixed float32/float64 arguments compile to slow code.
    value = value if value > low else np.float64(low)
    return value if value < high else np.float64(high)


# -- responses of the pulsed families (insitu.devices.pulsed) ---------------------------------
# Parameter layout of DeviceModel: dw_up, dw_down, slope_up, slope_down, w_min, w_max.


@njit(inline="always")
def constant_step_response(w, signed, params, j, i, k, c2c, xi):
    """``|n|`` constant steps of one sign with cycle-to-cycle spread, then the device's bounds.

    ``n`` steps ``dw (1 + c2c ξ_k)`` sum to ``dw (n + c2c sqrt(n) ξ)`` (Gokmen & Vlasov 2016).
    """
    n = abs(signed)
    step = params[j, i, k, 0] if signed > 0 else -params[j, i, k, 1]
    change = np.float64(n) + c2c * math.sqrt(n) * xi
    # Planes dw_up, dw_down, w_min, w_max (DeviceModel.compiled_planes of a constant step).
    return _clip(w + step * change, params[j, i, k, 2], params[j, i, k, 3])


@njit(inline="always")
def linear_step_response(w, signed, params, j, i, k, c2c, xi):
    """``|n|`` steps ``g (1 + slope w)`` of one sign in closed form (linear step, soft bounds).

    ``w_n = w_0 r + g (r - 1) / a`` with ``a = g slope``, ``r = (1 + a)^n``; the cycle-to-cycle
    noise of the ``n`` steps as one Gaussian of std ``c2c |g (1 + slope w_0)| sqrt(n)`` (as
    :meth:`DeviceModel.apply_pulses`).
    """
    n = abs(signed)
    if signed > 0:
        g = params[j, i, k, 0]
        slope = params[j, i, k, 2]
    else:
        g = -params[j, i, k, 1]
        slope = params[j, i, k, 3]
    a = max(g * slope, -0.999)
    if abs(a) < 1e-12:
        new = w + g * n
    else:
        growth = math.expm1(n * math.log1p(a))
        new = w + w * growth + g * growth / a
    new += c2c * abs(g * (1.0 + slope * w)) * math.sqrt(n) * xi
    return _clip(new, params[j, i, k, 4], params[j, i, k, 5])


# -- responses to many pulses whose order is not simulated (the summed mode) ------------------


@njit(inline="always")
def _mixed(w, n_up, n_down, step_up, step_down, c2c, xi, w_min, w_max):
    # DeviceModel.apply_mixed with no count variance: the mean n_up step_up - n_down step_down and
    # the cycle-to-cycle variance c2c² (n_up step_up² + n_down step_down²), bounds once.
    up = n_up * step_up
    down = n_down * step_down
    variance = (up * step_up + down * step_down) * (c2c * c2c)
    new = w + (up - down) + math.sqrt(max(variance, 0.0)) * xi
    return _clip(new, w_min, w_max)


@njit(inline="always")
def constant_step_mixed(w, n_up, n_down, params, j, i, k, c2c, xi):
    """``n_up`` up and ``n_down`` down constant steps (planes dw_up, dw_down, w_min, w_max)."""
    return _mixed(w, n_up, n_down, params[j, i, k, 0], params[j, i, k, 1], c2c, xi, params[j, i, k, 2], params[j, i, k, 3])


@njit(inline="always")
def linear_step_mixed(w, n_up, n_down, params, j, i, k, c2c, xi):
    """The same with the steps ``dw (1 + slope w)`` at the weight before the batch (linear step,
    soft bounds; :meth:`DeviceModel.steps_at`)."""
    step_up = params[j, i, k, 0] * (1.0 + params[j, i, k, 2] * w)
    step_down = params[j, i, k, 1] * (1.0 + params[j, i, k, 3] * w)
    return _mixed(w, n_up, n_down, step_up, step_down, c2c, xi, params[j, i, k, 4], params[j, i, k, 5])
