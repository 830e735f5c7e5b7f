"""The former home of the two-pair PCM cell, kept so that older code and saved configs still work.

The cell of Cristiano et al. 2018, ``W = F p (G⁺ − G⁻) + (g⁺ − g⁻)``, is now a unit cell,
:class:`insitu.cells.TwoPairPCMCell` (module :mod:`insitu.cells.multi_conductance`), on an
ordinary :class:`~insitu.tile.AnalogTile`::

    TileConfig(cell=TwoPairPCMCell(lsp=..., msp=..., gain_factor=3.0, transfer_every=1000), update=...)

* :func:`MultiConductanceConfig` (deprecated) takes the old flat fields, those of the cell and those
  of the tile config together, and returns that ``TileConfig``.
* A config dict saved with ``type: MultiConductanceConfig`` loads through ``TileConfig.from_dict``
  (and every config that holds a tile config), and a checkpoint of the former
  ``MultiConductanceTile`` loads into the new tile (``TwoPairPCM.convert_saved_state``).
* The former tile's state is now split: ``tile.weight`` is the LSP pair ``(2, out, in)``; the MSP
  pair, the device parameters, the polarity, the counters, ``stats`` and ``endurance()`` are the
  cell's (``tile.cell``).
"""

from __future__ import annotations

import warnings

from .cells.multi_conductance import (
    CELL_FIELDS, LSP_M, LSP_P, MSP_M, MSP_P, PLANES, TwoPairPCM, TwoPairPCMCell, closed_loop_tune,
)
from .config import ConfigError
from .tile import TileConfig

__all__ = ["MultiConductanceConfig", "TwoPairPCMCell", "TwoPairPCM", "closed_loop_tune", "PLANES"]
__all__ += ["MSP_P", "MSP_M", "LSP_P", "LSP_M"]


def MultiConductanceConfig(**fields) -> TileConfig:  # noqa: N802 - the former class name
    """Deprecated: ``TileConfig(cell=TwoPairPCMCell(<cell fields>), <tile fields>)``.

    The cell fields are :class:`~insitu.cells.TwoPairPCMCell`'s (``lsp``, ``msp``, ``gain_factor``,
    ``lsp_reference``, ``transfer_every``, ``polarity_inversion``, ``clt_tolerance``,
    ``clt_max_iterations``, ``refresh_threshold``, ``saturation_check_every``, ``transfer_mode``,
    ``transfer_columns``, ``clt_read_noise``); every other keyword
    goes to the :class:`~insitu.tile.TileConfig` (``update``, ``forward``, ``backward``, ...).
    """
    warnings.warn(
        "MultiConductanceConfig is deprecated: use TileConfig(cell=TwoPairPCMCell(...), ...) from insitu.cells.",
        DeprecationWarning,
        stacklevel=2,
    )
    if "cell" in fields:
        raise ConfigError("MultiConductanceConfig takes no 'cell': the PCM pairs are the cell (TwoPairPCMCell).")
    cell = {name: fields.pop(name) for name in CELL_FIELDS if name in fields}
    return TileConfig(cell=TwoPairPCMCell(**cell), **fields)


def __getattr__(name: str):
    if name == "MultiConductanceTile":
        # ImportError (not AttributeError, which `from ... import` would replace by its own message).
        raise ImportError(
            "insitu.multi_conductance.MultiConductanceTile is gone: the two-pair PCM cell is now "
            "insitu.cells.TwoPairPCMCell on an ordinary AnalogTile (AnalogTile(out, in, TileConfig(cell=TwoPairPCMCell(...)))). "
            "Its state is tile.weight (the LSP pair) and tile.cell (MSP pair, parameters, polarity, counters, stats, endurance())."
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
