"""What every cross-point array system shares: periphery, digital units, data movement, mapping.

A layer of ``rows × cols`` (per group) is cut into tiles of ``array_rows × array_cols``. For each
of its ``vectors`` per training example (papers.md §1.2, §2.2):

* **forward** ``y = W x``: every tile integrates for ``integration_time_s`` in parallel; one DAC
  conversion per input line and tile row, one integrator + ADC conversion per output line and
  tile column, digital additions of the partial sums of tile columns;
* **backward** ``z = Wᵀ δ``: the same with rows and columns swapped, skipped for the first layer
  (the input's error is not needed);
* **update** ``W += η δ xᵀ``: defined by the device family (subclasses);
* **data movement**: the outputs of each product (``rows`` values forward, ``cols`` backward)
  are sent to the next tile's digital unit.

Parameter-free layers (activations, pooling) run on the digital units: a pseudo-layer
``"activations"`` counts them forward and backward.

Every number here is a named, validated config field. The defaults are tagged in the field's
docstring: [R] recalled from the paper (unverified, see shared/reference/papers.md), [V] read in a
source, [A] an assumption of insitu (an order of magnitude for circuits of that period; change
it to your design).
"""

from __future__ import annotations

import dataclasses
import math

from ..config import Config, register_config
from ..mapping import TileGrid
from .base import Estimator, LayerEstimate
from .shapes import LayerShape, NetworkShape

__all__ = ["CrossbarEstimator", "DataMovementConfig", "DigitalUnitConfig", "PeripheryConfig"]

_UM2_TO_MM2 = 1e-6


@register_config
@dataclasses.dataclass
class PeripheryConfig(Config):
    """The mixed-signal circuits at the array edges, one set per row and per column line.

    Every line has a DAC (drives inputs in one direction) and an integrator + ADC (reads outputs
    in the other), because forward and backward use the array in both directions.

    Attributes:
        dac_energy_j: energy of one input conversion (one line, one vector) [A: 1 pJ].
        integrator_power_w: power of one integrating op-amp while it integrates [A: 100 µW, so
            8 pJ per 80 ns integration].
        adc_energy_j: energy of one output conversion [A: 10 pJ for ~9 bits].
        dac_area_um2, integrator_area_um2, adc_area_um2: area of one such circuit [A].
    """

    dac_energy_j: float = 1e-12
    integrator_power_w: float = 100e-6
    adc_energy_j: float = 10e-12
    dac_area_um2: float = 50.0
    integrator_area_um2: float = 100.0
    adc_area_um2: float = 500.0

    def validate(self) -> None:
        self._check_non_negative("dac_energy_j", "integrator_power_w", "adc_energy_j",
                                 "dac_area_um2", "integrator_area_um2", "adc_area_um2")

    def line_area_um2(self) -> float:
        return self.dac_area_um2 + self.integrator_area_um2 + self.adc_area_um2


@register_config
@dataclasses.dataclass
class DigitalUnitConfig(Config):
    """The digital units next to each tile: activations, noise/bound management, partial sums.

    Attributes:
        energy_per_op_j: energy of one digital operation (add, compare, multiply, look-up)
            [A: 1 pJ].
        lanes_per_tile: operations per clock per tile [A: 4096, one per line].
        clock_hz: digital clock [A: 1 GHz].
        area_per_tile_mm2: area of one tile's digital unit [A: 0.5 mm²].
        noise_management: divide each input vector by its maximum before the DAC and multiply the
            outputs back (Gokmen, Onen & Haensch 2017 [V aihwkit ABS_MAX]): one operation per
            input (the max) and one per output (the rescale) per product.
        bound_management_repeats: mean extra forward products per vector due to iterative bound
            management (2017 paper; 0 = none) [A].
    """

    energy_per_op_j: float = 1e-12
    lanes_per_tile: int = 4096
    clock_hz: float = 1e9
    area_per_tile_mm2: float = 0.5
    noise_management: bool = False
    bound_management_repeats: float = 0.0

    def validate(self) -> None:
        self._check_non_negative("energy_per_op_j", "area_per_tile_mm2", "bound_management_repeats")
        self._check_positive("clock_hz")
        _check_int(self, "lanes_per_tile")
        if not isinstance(self.noise_management, bool):
            self._fail("noise_management", "must be true or false.")

    def time_s(self, ops: float, tiles: int) -> float:
        """Time of ``ops`` operations on the digital units of ``tiles`` tiles."""
        if ops <= 0:
            return 0.0
        return math.ceil(ops / (self.lanes_per_tile * max(tiles, 1))) / self.clock_hz


@register_config
@dataclasses.dataclass
class DataMovementConfig(Config):
    """Moving activations and errors between tiles.

    Attributes:
        bits_per_value: bits of one activation or error value [V: 9, aihwkit's default ADC
            resolution 1/(2⁹−2); papers.md §6.4].
        energy_per_bit_j: energy to move one bit to the next tile [A: 1 pJ, ~0.1 pJ/bit/mm over
            ~10 mm of on-chip wire].
        bandwidth_bits_per_s: bandwidth of the link out of one layer [A: 4 Tb/s, 4096 values of
            9 bits in ~9 ns].
    """

    bits_per_value: int = 9
    energy_per_bit_j: float = 1e-12
    bandwidth_bits_per_s: float = 4e12

    def validate(self) -> None:
        _check_int(self, "bits_per_value")
        self._check_non_negative("energy_per_bit_j")
        self._check_positive("bandwidth_bits_per_s")


def _check_int(config: Config, field: str, minimum: int = 1) -> None:
    value = getattr(config, field)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        config._fail(field, f"must be an integer >= {minimum}.")


class CrossbarEstimator(Estimator):
    """Shared cost model of cross-point array systems (RPU, PCM). Subclasses define the cell.

    The config of a subclass must have ``array_rows``, ``array_cols``, ``integration_time_s``,
    ``read_duty``, ``pipeline_layers``, ``backward_first_layer`` and the nested ``periphery``, ``digital`` and
    ``data_movement``, and the subclass implements :meth:`read_energy_per_weight_j`,
    :meth:`cell_area_um2` and :meth:`update_cost`.
    """

    # -- cell-specific ------------------------------------------------------------------------
    def read_energy_per_weight_j(self) -> float:  # pragma: no cover
        """Energy dissipated in the devices of one weight during one integration."""
        raise NotImplementedError

    def cell_area_um2(self) -> float:  # pragma: no cover
        """Area of the devices of one weight."""
        raise NotImplementedError

    def update_cost(self, layer: LayerShape, tiles: int, row_tiles: int, col_tiles: int) -> tuple[dict, dict]:
        """``(time_s, energy_j)`` dicts of the update of one vector of ``layer``."""
        raise NotImplementedError  # pragma: no cover

    def periodic_cost(self, layer: LayerShape, tiles: int) -> tuple[dict, dict]:
        """``(time_s, energy_j)`` per example of work done every so many examples (none here)."""
        return {}, {}

    # -- shared -----------------------------------------------------------------------------
    def grid_of(self, layer: LayerShape) -> TileGrid:
        """The split of one group's ``rows × cols`` array onto this system's ``array_rows ×
        array_cols`` tiles: the :class:`~insitu.mapping.TileGrid` the simulated layers use (a layer
        built with ``TileConfig.max_tile_size = (array_rows, array_cols)`` has these very tiles)."""
        c = self.config
        return TileGrid(layer.rows, layer.cols, c.array_rows, c.array_cols)

    def tiles_of(self, layer: LayerShape) -> tuple[int, int, int]:
        """``(tiles, row_tiles, col_tiles)`` holding ``layer`` (``groups`` grids of :meth:`grid_of`)."""
        grid = self.grid_of(layer)
        return layer.groups * grid.n_tiles, grid.n_row_blocks, grid.n_col_blocks

    def _product(self, inputs: int, outputs: int, in_tiles: int, out_tiles: int, groups: int,
                 weights: int, tiles: int, repeats: float = 1.0) -> tuple[float, dict, float]:
        """One analog product: ``(time_s, energy_j, digital_ops)``.

        ``inputs``/``outputs`` are the lines driven/read per group; ``in_tiles`` tiles share each
        input line (each needs its own DAC conversion), ``out_tiles`` tiles contribute partial
        sums to each output (each its own integrator + ADC conversion, then digital adds).
        """
        c = self.config
        p = c.periphery
        conversions = outputs * groups * out_tiles * repeats
        energy = {
            "array read": self.read_energy_per_weight_j() * weights * repeats,
            "DAC": p.dac_energy_j * inputs * groups * in_tiles * repeats,
            "integrator": p.integrator_power_w * c.integration_time_s * conversions,
            "ADC": p.adc_energy_j * conversions,
        }
        digital_ops = outputs * groups * (out_tiles - 1)  # partial sums of tile columns
        if c.digital.noise_management:
            digital_ops += (inputs + outputs) * groups
        return c.integration_time_s * repeats, energy, digital_ops

    def _move(self, values: int) -> tuple[float, float]:
        d = self.config.data_movement
        bits = values * d.bits_per_value
        return bits / d.bandwidth_bits_per_s, bits * d.energy_per_bit_j

    def estimate_layers(self, network: NetworkShape) -> list[LayerEstimate]:
        c = self.config
        dig = c.digital
        out: list[LayerEstimate] = []
        for index, layer in enumerate(network.layers):
            tiles, row_tiles, col_tiles = self.tiles_of(layer)
            g, n = layer.groups, layer.vectors
            time = dict.fromkeys(("forward", "backward", "update", "digital", "data movement"), 0.0)
            energy: dict[str, float] = {}

            def add(into: dict, values: dict, scale: float = 1.0) -> None:
                for key, value in values.items():
                    into[key] = into.get(key, 0.0) + value * scale

            # forward: inputs = cols drive, outputs = rows read.
            t, e, ops = self._product(layer.cols, layer.rows, row_tiles, col_tiles, g, layer.weights, tiles,
                                      1.0 + dig.bound_management_repeats)
            ops += layer.rows * g if layer.digital_bias else 0
            time["forward"] += n * t
            add(energy, e, n)
            digital_ops = ops
            move_t, move_e = self._move(layer.rows * g)
            # backward (not for the first layer): inputs = rows, outputs = cols.
            if index > 0 or self.first_backward():
                t, e, ops = self._product(layer.rows, layer.cols, col_tiles, row_tiles, g, layer.weights, tiles)
                time["backward"] += n * t
                add(energy, e, n)
                digital_ops += ops
                t2, e2 = self._move(layer.cols * g)
                move_t, move_e = move_t + t2, move_e + e2
            # update
            t_upd, e_upd = self.update_cost(layer, tiles, row_tiles, col_tiles)
            time["update"] += n * sum(t_upd.values())
            add(energy, e_upd, n)
            time["digital"] += n * dig.time_s(digital_ops, tiles)
            energy["digital"] = energy.get("digital", 0.0) + n * digital_ops * dig.energy_per_op_j
            time["data movement"] += n * move_t
            energy["data movement"] = n * move_e
            t_per, e_per = self.periodic_cost(layer, tiles)
            add(time, t_per)
            add(energy, e_per)
            area = {
                "array": tiles * c.array_rows * c.array_cols * self.cell_area_um2() * _UM2_TO_MM2,
                "periphery": tiles * (c.array_rows + c.array_cols) * c.periphery.line_area_um2() * _UM2_TO_MM2,
                "digital": tiles * dig.area_per_tile_mm2,
            }
            out.append(LayerEstimate(layer.name, tiles, time, energy, area))
        if network.digital_ops_per_example:
            ops = 2 * network.digital_ops_per_example  # forward f(x) and backward f'(x)·δ
            # Each layer's activations run on its own tiles' digital units: all lanes share the work.
            all_tiles = sum(layer.tiles for layer in out)
            out.append(LayerEstimate(
                "activations", 0,
                {"digital": dig.time_s(ops, all_tiles)},
                {"digital": ops * dig.energy_per_op_j},
            ))
        return out

    def time_per_example(self, layers: list[LayerEstimate]) -> float:
        if self.config.pipeline_layers:
            # Each layer works on a different example (Gokmen & Vlasov 2016 count all tiles busy):
            # steady-state time per example is that of the slowest layer.
            return max(layer.total_time_s for layer in layers)
        return sum(layer.total_time_s for layer in layers)

    def first_backward(self) -> bool:
        return self.config.backward_first_layer

    def extra(self) -> dict:
        return {"pipeline_layers": self.config.pipeline_layers}


def validate_crossbar_fields(config: Config) -> None:
    """Checks shared by the RPU and PCM system configs (array, timing, pipeline, coincidence
    probability, nested periphery/digital/data-movement configs)."""
    _check_int(config, "array_rows")
    _check_int(config, "array_cols")
    config._check_positive("integration_time_s")
    config._check_non_negative("read_duty")
    if config.read_duty > 1:
        config._fail("read_duty", "is the mean fraction of the integration time an input line is on; use a value in [0, 1].")
    for field in ("pipeline_layers", "backward_first_layer"):
        if not isinstance(getattr(config, field), bool):
            config._fail(field, "must be true or false.")
    config._check_non_negative("coincidence_probability")
    if config.coincidence_probability > 1:
        config._fail("coincidence_probability", "is a probability per pulse slot; use a value in [0, 1].")
    for name, cls in (("periphery", PeripheryConfig), ("digital", DigitalUnitConfig), ("data_movement", DataMovementConfig)):
        if not isinstance(getattr(config, name), cls):
            config._fail(name, f"must be a {cls.__name__}.")
