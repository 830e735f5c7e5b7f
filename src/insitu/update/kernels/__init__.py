"""Backends of the pulse-update engine.

``torch`` (:mod:`insitu.update.engine`, and :mod:`insitu.update.fused` for several tiles at
once) is the reference implementation, the CUDA path and the fallback. ``compiled``
(:mod:`.compiled`) runs the ``sequential`` stochastic update of CPU tiles and replicas as numba
kernels: pulse trains drawn as bits of 64-bit words, coincidences counted by popcount, random
numbers from a counter-free xoshiro256** stream whose state the tile saves (:mod:`.rng`).

The backend is chosen per torch device, never per feature: :func:`select_backend` gives
``compiled`` for CPU tensors when numba imports, and ``torch`` otherwise. :func:`set_backend` (or
the environment variable ``INSITU_BACKEND``) forces one, for comparisons and reproductions made
with the other.
"""

from __future__ import annotations

import contextlib
import functools
import os

__all__ = ["BACKENDS", "compiled_available", "get_backend", "select_backend", "set_backend", "set_threads", "use_backend"]

BACKENDS = ("auto", "torch", "compiled")

_choice = {"backend": os.environ.get("INSITU_BACKEND", "auto")}


def set_backend(name: str) -> None:
    """Choose the pulse-update backend for the whole process.

    ``"auto"`` (default): compiled on CPU when numba is installed, torch elsewhere.
    ``"torch"``: always the PyTorch reference path (what runs made before the compiled engine used).
    ``"compiled"``: the numba kernels; an error if numba is missing.
    """
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}.")
    if name == "compiled" and not compiled_available():
        raise RuntimeError("backend 'compiled' needs numba: pip install numba (a wheel, no compiler needed).")
    _choice["backend"] = name


def get_backend() -> str:
    """The backend setting (``auto``, ``torch`` or ``compiled``)."""
    name = _choice["backend"]
    if name not in BACKENDS:
        raise ValueError(f"INSITU_BACKEND must be one of {', '.join(BACKENDS)}, got {name!r}.")
    return name


@functools.lru_cache(maxsize=None)
def compiled_available() -> bool:
    """Whether numba imports (the compiled backend's only requirement)."""
    try:
        import numba  # noqa: F401
    except Exception:  # pragma: no cover - depends on the installation
        return False
    return True


def select_backend(device) -> str:
    """``"compiled"`` or ``"torch"`` for tensors on torch ``device``."""
    name = get_backend()
    if name == "torch":
        return "torch"
    if getattr(device, "type", device) != "cpu":
        return "torch"  # the compiled kernels are CPU kernels; CUDA runs the torch path
    if name == "compiled" or compiled_available():
        return "compiled"
    return "torch"


@contextlib.contextmanager
def use_backend(name: str):
    """Context manager: :func:`set_backend` ``name`` inside, the previous setting after."""
    previous = _choice["backend"]
    set_backend(name)
    try:
        yield
    finally:
        _choice["backend"] = previous


def set_threads(n: int) -> None:
    """Threads for PyTorch's operations and for the compiled kernels that run independent arrays
    in parallel (replicas in lockstep; at most numba's pool size, the number of cores unless
    ``NUMBA_NUM_THREADS`` is set). numba's count is its own: setting only PyTorch's left lockstep
    kernels on every core. Results do not depend on it. ``insitu train --threads`` and
    ``insitu sweep run --threads`` call it."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be a positive integer, got {n!r}.")
    import torch

    torch.set_num_threads(n)
    if not compiled_available():
        return
    import numba

    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
