"""The RPU accelerator of Gokmen & Vlasov 2016 (Front. Neurosci. 10:333), as a cost model.

One resistive device per weight on ``array_rows × array_cols`` tiles (4096 × 4096 in the paper).
Forward and backward products integrate for ``integration_time_s`` (80 ns); the update applies
stochastic pulse trains of ``bl`` slots of ``pulse_duration_s`` to all devices at once, so its time
does not depend on the array size (papers.md §1.1–1.2). The paper's Table 2 (chip power, area,
tiles) could not be read: the circuit energies and areas are insitu assumptions [A], each a field
to change; docs/reproductions/hardware-claims.md says what each headline needs.
"""

from __future__ import annotations

import dataclasses

from ..config import Config, register_config
from .base import register_estimator
from .crossbar import (
    CrossbarEstimator,
    DataMovementConfig,
    DigitalUnitConfig,
    PeripheryConfig,
    _check_int,
    validate_crossbar_fields,
)

__all__ = ["RPUEstimator", "RPUSystemConfig"]


@register_config
@dataclasses.dataclass
class RPUSystemConfig(Config):
    """Every assumption of the RPU accelerator estimate.

    Attributes:
        array_rows, array_cols: devices per tile [R: 4096 × 4096, Gokmen & Vlasov 2016].
        integration_time_s: forward or backward integration time [R: 80 ns].
        read_voltage_v: read voltage across a device at full input [R: ~1 V].
        device_resistance_ohm: mean device resistance [R: 24 MΩ, low confidence].
        read_duty: mean fraction of the integration a line is driven (pulse-width-modulated
            inputs; 1 = every input at full scale, an upper bound) [A].
        bl: stochastic pulse-train length of the update [R: 10].
        pulse_duration_s: one update pulse slot [R: ~1 ns].
        update_overhead_s: fixed time per update besides the pulses (pulse-train generation,
            settling) [A: 0, the paper says "plus overhead" without a number].
        update_voltage_v: voltage across a device at a coincidence [A: 1 V].
        coincidence_probability: mean fraction of slots in which a device sees a coincidence
            (1 = every slot, an upper bound; Cx·|x|·Cδ·|δ| in reality) [A].
        pulse_energy_j: energy to generate and drive one pulse slot on one line [A: 10 fJ].
        cell_area_um2: area of one device in the array [R: < 0.01 µm², low confidence].
        pipeline_layers: layers work on successive examples at once, so the time per example is
            that of the slowest layer (needed to keep all tiles busy) [A: off].
        backward_first_layer: also compute the first layer's backward product (off: the input's
            error is not needed; on: to cost one tile as it works inside a larger network).
        periphery, digital, data_movement: the shared circuit assumptions.
    """

    array_rows: int = 4096
    array_cols: int = 4096
    integration_time_s: float = 80e-9
    read_voltage_v: float = 1.0
    device_resistance_ohm: float = 24e6
    read_duty: float = 1.0
    bl: int = 10
    pulse_duration_s: float = 1e-9
    update_overhead_s: float = 0.0
    update_voltage_v: float = 1.0
    coincidence_probability: float = 1.0
    pulse_energy_j: float = 10e-15
    cell_area_um2: float = 0.01
    pipeline_layers: bool = False
    backward_first_layer: bool = False
    periphery: PeripheryConfig = dataclasses.field(default_factory=PeripheryConfig)
    digital: DigitalUnitConfig = dataclasses.field(default_factory=DigitalUnitConfig)
    data_movement: DataMovementConfig = dataclasses.field(default_factory=DataMovementConfig)

    def validate(self) -> None:
        validate_crossbar_fields(self)
        self._check_positive("read_voltage_v", "device_resistance_ohm", "pulse_duration_s", "cell_area_um2")
        self._check_non_negative("update_overhead_s", "update_voltage_v", "coincidence_probability", "pulse_energy_j")
        _check_int(self, "bl")

    @property
    def update_time_s(self) -> float:
        """``BL · pulse duration + overhead``: independent of the array size."""
        return self.bl * self.pulse_duration_s + self.update_overhead_s


@register_estimator("rpu")
class RPUEstimator(CrossbarEstimator):
    """RPU accelerator (Gokmen & Vlasov 2016): one device per weight, stochastic pulse update."""

    config_class = RPUSystemConfig

    def read_energy_per_weight_j(self) -> float:
        # Ohmic dissipation V²/R while the line is driven (papers.md §1.4 device specs [R]).
        c = self.config
        return c.read_voltage_v ** 2 / c.device_resistance_ohm * c.integration_time_s * c.read_duty

    def cell_area_um2(self) -> float:
        return self.config.cell_area_um2

    def update_cost(self, layer, tiles, row_tiles, col_tiles):
        c = self.config
        # All devices see their coincidences in parallel (papers.md §1.2): BL slots per update.
        device_energy = (layer.weights * c.bl * c.coincidence_probability
                         * c.update_voltage_v ** 2 / c.device_resistance_ohm * c.pulse_duration_s)
        # Each row line of every tile column and each column line of every tile row gets a train.
        lines = layer.groups * (layer.rows * col_tiles + layer.cols * row_tiles)
        return {"update": c.update_time_s}, {
            "array update": device_energy,
            "pulse generation": lines * c.bl * c.pulse_energy_j,
        }
