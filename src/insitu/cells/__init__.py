"""Unit cells: how the devices of one cross-point make a weight, and how writes reach them.

A tile whose :class:`~insitu.tile.TileConfig` has ``cell=None`` (the default) is the plain array
of the tile's ``device`` (or ``devices_per_weight`` devices per weight, all written together).
A cell config replaces that with a learning rule built from arrays and digital buffers:

==========================  =================================================================
:class:`TikiTakaCell`       TTv1: fast array ``A`` learns, columns transferred to slow ``C``
:class:`TikiTakaV2Cell`     TTv2: a digital buffer ``H`` between the reads of ``A`` and ``C``
:class:`ChoppedTikiTakaCell` chopped TTv2: sign choppers on ``A``'s inputs and outputs
:class:`AGADCell`           AGAD: chopped, with an on-the-fly reference of ``A``
:class:`MixedPrecisionCell` a digital accumulator ``χ``, whole-pulse writes
:class:`TwoPairPCMCell`     two PCM pairs ``W = F p (G⁺ − G⁻) + (g⁺ − g⁻)`` (Cristiano et al. 2018)
==========================  =================================================================

See ``docs/cells.md``; :func:`cell_by_name` gives the CLI's ``--cell`` names.
"""

from __future__ import annotations

from .base import Cell, CellConfig
from .mixed_precision import MixedPrecisionCell
from .multi_conductance import TwoPairPCMCell
from .transfer import AGADCell, ChoppedTikiTakaCell, TikiTakaCell, TikiTakaV2Cell

__all__ = [
    "Cell", "CellConfig", "TikiTakaCell", "TikiTakaV2Cell", "ChoppedTikiTakaCell", "AGADCell",
    "MixedPrecisionCell", "TwoPairPCMCell", "CELL_NAMES", "cell_by_name",
]

#: ``--cell`` names -> the cell config with its defaults (``sgd``: no cell, plain pulsed SGD).
CELL_NAMES = {
    "sgd": None,
    "tiki-taka": TikiTakaCell,
    "ttv2": TikiTakaV2Cell,
    "c-ttv2": ChoppedTikiTakaCell,
    "agad": AGADCell,
    "mp": MixedPrecisionCell,
}


def cell_by_name(name: str) -> CellConfig | None:
    """The default cell config of a ``--cell`` name (``None`` for ``sgd``)."""
    from ..config import ConfigError, _closest

    if name not in CELL_NAMES:
        raise ConfigError(f"Unknown cell '{name}'.{_closest(name, CELL_NAMES)} Known: {list(CELL_NAMES)}.")
    kind = CELL_NAMES[name]
    return None if kind is None else kind()
