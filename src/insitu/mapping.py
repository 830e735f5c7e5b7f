"""Layers over several tiles: how an ``out × in`` matrix is cut into arrays of a maximum size.

A real cross-point array has a maximum size. A weight matrix larger than it is split into a grid
of tiles: ``n_row_blocks`` blocks of outputs times ``n_col_blocks`` blocks of inputs. Each tile
holds its own devices, generator, IO noise and management, and

* forward: tile ``(i, j)`` computes the partial product ``W_ij x_j`` of input block ``j``; the
  partial outputs of the tiles of output block ``i`` are summed digitally;
* backward: tile ``(i, j)`` computes ``W_ijᵀ δ_i``; the partials of the tiles of input block ``j``
  are summed digitally;
* update: tile ``(i, j)`` stashes its own ``(x_j, δ_i)`` and updates itself with its own pulses.

:class:`TileGrid` is the mapping (the splits); it is used both by the simulated layers (through
:class:`GridTile`, built by :func:`make_tile`) and by the hardware estimators
(:meth:`insitu.hardware.crossbar.CrossbarEstimator.tiles_of`), so the simulated tiles and the
costed tiles are the same tiles. See ``docs/tiles.md``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch import nn

from .config import ConfigError

__all__ = ["GridTile", "TileGrid", "balanced_splits", "make_tile", "reference_weight"]


def balanced_splits(size: int, max_size: int | None) -> tuple[int, ...]:
    """Block sizes of ``size`` lines on arrays of at most ``max_size``: the fewest blocks
    (``ceil(size / max_size)``), as equal as possible (the first ``size mod k`` blocks one larger),
    as aihwkit splits a layer. ``None`` = unlimited: one block."""
    for name, value in (("size", size), ("max_size", max_size)):
        if value is None and name == "max_size":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"balanced_splits: {name} must be a positive integer, got {value!r}.")
    if max_size is None:
        return (size,)
    k = math.ceil(size / max_size)
    q, r = divmod(size, k)
    return tuple(q + 1 if b < r else q for b in range(k))


def _offsets(sizes: tuple[int, ...]) -> tuple[slice, ...]:
    cuts = np.cumsum((0, *sizes)).tolist()
    return tuple(slice(a, b) for a, b in zip(cuts[:-1], cuts[1:]))


@dataclasses.dataclass(frozen=True, eq=False)
class TileGrid:
    """The split of an ``out_features × in_features`` matrix onto tiles of at most
    ``max_out × max_in`` devices (``None``: unlimited in that direction).

    ``rows`` are outputs (the forward pass's read lines), ``cols`` inputs, as in
    :class:`~insitu.hardware.shapes.LayerShape`. Tiles are numbered row-major: tile
    ``i * n_col_blocks + j`` holds output block ``i`` and input block ``j``. Two grids are equal
    when they cut the matrix into the same tiles (whatever maximum produced them).
    """

    out_features: int
    in_features: int
    max_out: int | None = None
    max_in: int | None = None

    def __post_init__(self) -> None:
        # balanced_splits validates every number.
        object.__setattr__(self, "row_sizes", balanced_splits(self.out_features, self.max_out))
        object.__setattr__(self, "col_sizes", balanced_splits(self.in_features, self.max_in))

    def __eq__(self, other) -> bool:
        if not isinstance(other, TileGrid):
            return NotImplemented
        return (self.row_sizes, self.col_sizes) == (other.row_sizes, other.col_sizes)

    def __hash__(self) -> int:
        return hash((self.row_sizes, self.col_sizes))

    @classmethod
    def for_config(cls, out_features: int, in_features: int, config) -> "TileGrid":
        """The grid of a layer of this shape under ``config.max_tile_size`` (absent/None: one tile)."""
        limit = getattr(config, "max_tile_size", None)
        max_out, max_in = (None, None) if limit is None else limit
        return cls(out_features, in_features, max_out, max_in)

    @property
    def n_row_blocks(self) -> int:
        return len(self.row_sizes)

    @property
    def n_col_blocks(self) -> int:
        return len(self.col_sizes)

    @property
    def n_tiles(self) -> int:
        return self.n_row_blocks * self.n_col_blocks

    @property
    def row_slices(self) -> tuple[slice, ...]:
        return _offsets(self.row_sizes)

    @property
    def col_slices(self) -> tuple[slice, ...]:
        return _offsets(self.col_sizes)

    def blocks(self):
        """``(i, j, out_slice, in_slice)`` of every tile, row-major."""
        for i, rs in enumerate(self.row_slices):
            for j, cs in enumerate(self.col_slices):
                yield i, j, rs, cs

    def tile_shapes(self) -> list[tuple[int, int]]:
        """``(out, in)`` of every tile, row-major."""
        return [(r, c) for r in self.row_sizes for c in self.col_sizes]


def derive_seeds(seed: int, n: int) -> list[int]:
    """``n`` independent tile seeds derived deterministically from a layer ``seed``."""
    states = np.random.SeedSequence([int(seed) % 2**64, 0x7115]).generate_state(n, np.uint64)
    return [int(s) >> 2 for s in states]  # below 2**62, as the tiles draw their own seeds


def make_tile(out_features: int, in_features: int, config, seed=None, device=None, dtype=torch.float32):
    """The tile(s) of an ``out × in`` array under ``config``: one tile (the config's tile class,
    else :class:`~insitu.tile.AnalogTile`) when it fits ``config.max_tile_size``, else a
    :class:`GridTile`."""
    from .tile import AnalogTile, TileConfig

    config = TileConfig() if config is None else config
    tile_class = config.tile_class() if hasattr(config, "tile_class") else AnalogTile
    grid = TileGrid.for_config(out_features, in_features, config)
    if grid.n_tiles == 1:
        return tile_class(out_features, in_features, config, seed=seed, device=device, dtype=dtype)
    return GridTile(out_features, in_features, config, seed=seed, device=device, dtype=dtype)


class GridTile(nn.Module):
    """An ``out × in`` array held by a grid of tiles (see the module docstring).

    It offers what the layers use of a tile (``config``, ``generator``, ``get_weights``,
    ``set_weights``, ``set_connection_mask``, ``discard_pending``) on the assembled matrix;
    :func:`insitu.nn.functional.analog_linear` computes through every sub-tile and sums the
    partials digitally. The sub-tiles are the modules in ``tiles`` (row-major, see
    :class:`TileGrid`); each is an ordinary tile, so :class:`~insitu.optim.AnalogSGD` updates
    each from its own weight parameter.

    Seeds: sub-tile ``t`` gets ``derive_seeds(seed, n_tiles)[t]``; ``generator`` (seeded with
    ``seed`` itself) is used only by the layers to draw the initial weights, so a split layer
    starts from the same weights as the unsplit layer with the same seed (then clipped by each
    sub-tile's devices).
    """

    def __init__(self, out_features, in_features, config, seed=None, device=None, dtype=torch.float32):
        super().__init__()
        from .tile import AnalogTile

        self.grid = TileGrid.for_config(out_features, in_features, config)
        self.out_features, self.in_features, self.config = out_features, in_features, config
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self.seed = int(seed)
        device = torch.device("cpu") if device is None else torch.device(device)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(self.seed)
        tile_class = config.tile_class() if hasattr(config, "tile_class") else AnalogTile
        seeds = derive_seeds(self.seed, self.grid.n_tiles)
        self.tiles = nn.ModuleList(
            tile_class(r, c, config, seed=s, device=device, dtype=dtype)
            for (r, c), s in zip(self.grid.tile_shapes(), seeds)
        )

    def tile_at(self, i: int, j: int):
        """The tile of output block ``i`` and input block ``j``."""
        return self.tiles[i * self.grid.n_col_blocks + j]

    def effective_weights(self) -> torch.Tensor:
        return torch.cat(
            [torch.cat([self.tile_at(i, j).effective_weights() for j in range(self.grid.n_col_blocks)], dim=1)
             for i in range(self.grid.n_row_blocks)],
            dim=0,
        )

    def get_weights(self) -> torch.Tensor:
        """A copy of the assembled weights ``(out, in)``."""
        return self.effective_weights().clone()

    @torch.no_grad()
    def set_weights(self, weights: torch.Tensor) -> None:
        """Program ``weights`` ``(out, in)``: each sub-tile its block (clipped to its devices)."""
        if tuple(weights.shape) != (self.out_features, self.in_features):
            raise ValueError(
                f"set_weights: expected shape ({self.out_features}, {self.in_features}) (out_features, in_features), "
                f"got {tuple(weights.shape)}."
            )
        for t, (_, _, rs, cs) in enumerate(self.grid.blocks()):
            self.tiles[t].set_weights(weights[rs, cs])

    @torch.no_grad()
    def set_connection_mask(self, mask: torch.Tensor | None) -> None:
        for t, (_, _, rs, cs) in enumerate(self.grid.blocks()):
            self.tiles[t].set_connection_mask(None if mask is None else mask[rs, cs])

    def discard_pending(self) -> None:
        for tile in self.tiles:
            tile.discard_pending()

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        device = self.tiles[0].weight.device
        if device != self.generator.device:
            new_seed = int(torch.randint(0, 2**62, (1,), generator=self.generator).item())
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(new_seed)
        return self

    def extra_repr(self) -> str:
        g = self.grid
        return (
            f"out_features={self.out_features}, in_features={self.in_features}, "
            f"grid={g.n_row_blocks}x{g.n_col_blocks} (rows {list(g.row_sizes)}, cols {list(g.col_sizes)})"
        )


def reference_weight(tile) -> torch.Tensor:
    """A weight tensor of ``tile`` (its first sub-tile's for a :class:`GridTile`): for ``.to(...)``."""
    return tile.tiles[0].weight if isinstance(tile, GridTile) else tile.weight


def check_no_grid_with_replicas(out_features: int, in_features: int, configs) -> None:
    """Replicas in lockstep and a layer split over tiles do not combine (yet): refuse clearly."""
    for config in configs:
        if TileGrid.for_config(out_features, in_features, config).n_tiles > 1:
            raise ConfigError(
                f"TileConfig.max_tile_size = {config.max_tile_size} splits this {out_features}×{in_features} array "
                "over several tiles, which replicas (lockstep sweeps) do not support: use max_tile_size=None "
                "(or one at least the layer's size) with replicas, or train the split layers without replicas."
            )
