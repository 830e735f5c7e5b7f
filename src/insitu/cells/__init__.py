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
    "MixedPrecisionCell", "TwoPairPCMCell", "CELL_NAMES", "cell_by_name", "cell_from_spec",
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


def cell_from_spec(spec: str) -> CellConfig | None:
    """A cell from a ``--cell`` spec: a name of :data:`CELL_NAMES`, optionally with field
    overrides, ``"c-ttv2:transfer_lr=10,max_pulses=5,in_chop_prob=0.01"`` (values read as YAML
    scalars; a nested config as a YAML mapping, ``"tiki-taka:transfer_io={out_noise: 0.02}"``)."""
    import yaml

    from ..config import ConfigError

    name, _, options = str(spec).partition(":")
    cell = cell_by_name(name.strip())
    if not options.strip():
        return cell
    if cell is None:
        raise ConfigError(f"--cell {spec!r}: '{name}' (plain pulsed SGD) has no fields to set.")
    fields = {}
    for item in filter(None, (part.strip() for part in _split_top_level(options))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--cell {spec!r}: '{item}' is not FIELD=VALUE (e.g. transfer_lr=10).")
        key = key.strip()
        if not hasattr(cell, key):
            import dataclasses

            known = sorted(f.name for f in dataclasses.fields(cell))
            raise ConfigError(f"--cell {spec!r}: {type(cell).__name__} has no field '{key}'. Fields: {known}.")
        parsed = yaml.safe_load(value)
        current = getattr(cell, key)
        fields[key] = current.replace(**parsed) if isinstance(parsed, dict) and hasattr(current, "replace") else parsed
    return cell.replace(**fields)


def _split_top_level(text: str) -> list[str]:
    """Split at commas outside ``{...}`` and ``[...]`` (nested YAML values keep theirs)."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "{["
        depth -= char in "}]"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return parts + [current]
