"""The state of the compiled kernels' random stream: xoshiro256** (Blackman & Vigna 2018).

Plain Python (no numba import), so tiles hold and save it whatever the backend; the jitted
generator is :mod:`.rng`.

The state is five 64-bit words and one float (the spare normal of the Box-Muller pair), kept by
the tile as a tensor of six int64 and saved in its ``state_dict``: same seed, same run; a restored
tile continues draw for draw. The generator is seeded by splitmix64 from the tile's seed and a
stream number, so the pulse stream is independent of the torch generator that draws the IO noise.

Uniforms for pulse trains have 24 bits (two per 64-bit draw): a firing probability is a float32
number, whose resolution near 1 is the same 2^-24.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["STATE_SIZE", "new_state", "as_views"]

STATE_SIZE = 6  # s0..s3, has_spare, spare (bits of a float64)
_MASK = (1 << 64) - 1


def _splitmix64(x: int) -> tuple[int, int]:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return x, z ^ (z >> 31)


def new_state(seed: int, stream: int = 0) -> torch.Tensor:
    """A fresh generator state ``(6,)`` int64 for ``seed`` and ``stream`` (deterministic)."""
    x = (int(seed) * 0x9E3779B97F4A7C15 + int(stream) * 0xD1B54A32D192ED03 + 0x2545F4914F6CDD1D) & _MASK
    words = []
    for _ in range(4):
        x, z = _splitmix64(x)
        words.append(z)
    state = np.zeros(STATE_SIZE, dtype=np.uint64)
    state[:4] = np.array(words, dtype=np.uint64)
    return torch.from_numpy(state.view(np.int64).copy())


def as_views(state: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The tensor's memory as ``(words uint64 (5,), spare float64 (1,))``; kernels update it in place."""
    raw = state.numpy()
    return raw[:5].view(np.uint64), raw[5:].view(np.float64)
