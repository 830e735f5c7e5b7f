"""The state of the compiled kernels' random stream: xoshiro256** (Blackman & Vigna 2018).

Plain Python (no numba import), so tiles hold and save it whatever the backend; the jitted
generator is :mod:`.rng`.

The state is 69 64-bit words and one float, kept by the tile as a tensor of 70 int64 and saved in
its ``state_dict``: same seed, same run; a restored tile continues draw for draw. Words 0-3 are
the scalar stream (the normals of the summed and stateful kernels, transfers, compiled products),
word 4 a flag kept for the layout, words 5-68 the 16 lanes of the pulse-train stream (four planes
of 16: ``s0`` of every lane, then ``s1``, ``s2``, ``s3``; the lanes advance together, so the
compiler draws 16 numbers per step in vector registers; the sequential kernels also draw their
cycle-to-cycle normals from them), the last entry a spare float64. Every word is seeded by
splitmix64 from the tile's seed and a stream number, so the pulse streams are independent of the
torch generator that draws the IO noise.

Uniforms for pulse trains have 32 bits (two per 64-bit draw of a lane).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["STATE_SIZE", "LANES", "new_state", "as_views", "upgrade"]

LANES = 16  # lanes of the pulse-train stream (rng.fill_uniforms)
LANE_START = 5  # the lanes' first word
STATE_SIZE = LANE_START + 4 * LANES + 1  # s0..s3, flag, lanes (4 x 16), spare (bits of a float64)
_OLD_SIZE = 6  # before the lanes (session 11): s0..s3, flag, spare
_MASK = (1 << 64) - 1


def _splitmix64(x: int) -> tuple[int, int]:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return x, z ^ (z >> 31)


def _words(x: int, n: int) -> list[int]:
    words = []
    for _ in range(n):
        x, z = _splitmix64(x)
        words.append(z)
    return words


def new_state(seed: int, stream: int = 0) -> torch.Tensor:
    """A fresh generator state ``(STATE_SIZE,)`` int64 for ``seed`` and ``stream`` (deterministic)."""
    x = (int(seed) * 0x9E3779B97F4A7C15 + int(stream) * 0xD1B54A32D192ED03 + 0x2545F4914F6CDD1D) & _MASK
    state = np.zeros(STATE_SIZE, dtype=np.uint64)
    state[: LANE_START + 4 * LANES] = np.array(_words(x, 4) + [0] + _words(x ^ 0x6A09E667F3BCC909, 4 * LANES), dtype=np.uint64)
    return torch.from_numpy(state.view(np.int64).copy())


def upgrade(state: torch.Tensor) -> torch.Tensor:
    """A saved state in the present layout: states saved before the train lanes existed
    (``(..., 6)``) keep their scalar stream and spare and get lanes seeded from their words."""
    if state.shape[-1] == STATE_SIZE:
        return state
    if state.shape[-1] != _OLD_SIZE:
        raise ValueError(f"a compiled-kernel generator state has {STATE_SIZE} (or, saved before session 11, {_OLD_SIZE}) entries, got {tuple(state.shape)}")
    old = state.reshape(-1, _OLD_SIZE).numpy().view(np.uint64)
    new = np.zeros((old.shape[0], STATE_SIZE), dtype=np.uint64)
    for r, row in enumerate(old):
        new[r, :LANE_START] = row[:LANE_START]
        seed = int(row[0]) ^ (int(row[1]) << 1 & _MASK) ^ int(row[2]) ^ int(row[3])
        new[r, LANE_START:-1] = np.array(_words(seed, 4 * LANES), dtype=np.uint64)
        new[r, -1] = row[-1]
    return torch.from_numpy(new.view(np.int64)).reshape(*state.shape[:-1], STATE_SIZE)


def as_views(state: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The tensor's memory as ``(words uint64 (..., STATE_SIZE - 1), spare float64 (..., 1))`` (a
    leading replica axis is kept); kernels update it in place."""
    raw = state.numpy()
    return raw[..., :-1].view(np.uint64), raw[..., -1:].view(np.float64)
