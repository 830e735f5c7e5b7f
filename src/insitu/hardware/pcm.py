"""PCM multi-conductance training (Ambrogio et al. 2018, Cristiano et al. 2018) as a cost model.

Each weight is ``W = F·(G⁺ − G⁻) + (g⁺ − g⁻)`` on four devices (papers.md §4.1–4.2): the least
significant pair takes every update by **open-loop** pulses (no verify), the most significant pair
is programmed by **closed-loop** tuning (program and verify) at each transfer, every
``transfer_every`` examples, column by column. Forward and backward products read all devices
of a weight. In Ambrogio 2018 the LSP is a 3T1C capacitor cell: set ``update_energy_j`` and
``update_pulse_s`` accordingly. The paper's circuit assumptions behind 28,065 GOP/s/W and
3.6 TOP/s/mm² could not be read: defaults are insitu assumptions [A], each a field.
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

__all__ = ["PCMEstimator", "PCMSystemConfig"]


@register_config
@dataclasses.dataclass
class PCMSystemConfig(Config):
    """Every assumption of the PCM (MSP/LSP) training estimate.

    Attributes:
        array_rows, array_cols: weights per tile [A: 512 × 512].
        devices_per_weight: devices read per weight [V: 4, two pairs, Cristiano 2018 abstract].
        integration_time_s: forward or backward integration time [A: 100 ns].
        read_voltage_v: read voltage [A: 0.2 V, below PCM threshold switching].
        device_conductance_s: mean conductance of one device [A: 5 µS].
        read_duty: mean fraction of the integration an input line is on [A: 1, upper bound].
        update_slots: pulse slots of one open-loop update (like BL) [A: 10].
        update_pulse_s: duration of one update slot [A: 10 ns].
        update_energy_j: energy of one update pulse on one device [A: 1 pJ, a partial SET].
        update_devices_per_weight: devices pulsed per weight in an update (g⁺ or g⁻) [A: 1].
        coincidence_probability: mean fraction of slots with a pulse on a device [A: 1].
        transfer_every: training examples between two transfers to the MSP [A: 1000].
        clt_iterations: mean program-and-verify iterations of closed-loop tuning [A: 5].
        program_pulse_s: one closed-loop program pulse [A: 100 ns].
        program_energy_j: energy of one program pulse on one device [A: 10 pJ].
        devices_programmed_per_weight: devices of the MSP tuned per transfer [A: 2].
        cell_area_um2: area of the devices and access transistors of one weight [A: 0.5 µm²].
        pipeline_layers: see RPUSystemConfig [A: off].
        backward_first_layer: also compute the first layer's backward product (off: the input's
            error is not needed; on: to cost one tile as it works inside a larger network).
        periphery, digital, data_movement: the shared circuit assumptions.
    """

    array_rows: int = 512
    array_cols: int = 512
    devices_per_weight: int = 4
    integration_time_s: float = 100e-9
    read_voltage_v: float = 0.2
    device_conductance_s: float = 5e-6
    read_duty: float = 1.0
    update_slots: int = 10
    update_pulse_s: float = 10e-9
    update_energy_j: float = 1e-12
    update_devices_per_weight: int = 1
    coincidence_probability: float = 1.0
    transfer_every: int = 1000
    clt_iterations: float = 5.0
    program_pulse_s: float = 100e-9
    program_energy_j: float = 10e-12
    devices_programmed_per_weight: int = 2
    cell_area_um2: float = 0.5
    pipeline_layers: bool = False
    backward_first_layer: bool = False
    periphery: PeripheryConfig = dataclasses.field(default_factory=PeripheryConfig)
    digital: DigitalUnitConfig = dataclasses.field(default_factory=DigitalUnitConfig)
    data_movement: DataMovementConfig = dataclasses.field(default_factory=DataMovementConfig)

    def validate(self) -> None:
        validate_crossbar_fields(self)
        for field in ("devices_per_weight", "update_slots", "update_devices_per_weight",
                      "transfer_every", "devices_programmed_per_weight"):
            _check_int(self, field)
        self._check_positive("read_voltage_v", "device_conductance_s", "update_pulse_s", "program_pulse_s",
                             "cell_area_um2", "clt_iterations")
        self._check_non_negative("update_energy_j", "coincidence_probability", "program_energy_j")


@register_estimator("pcm")
class PCMEstimator(CrossbarEstimator):
    """PCM two-pair cell: open-loop LSP updates, periodic closed-loop transfer to the MSP."""

    config_class = PCMSystemConfig

    def read_energy_per_weight_j(self) -> float:
        c = self.config
        return c.devices_per_weight * c.read_voltage_v ** 2 * c.device_conductance_s * c.integration_time_s * c.read_duty

    def cell_area_um2(self) -> float:
        return self.config.cell_area_um2

    def update_cost(self, layer, tiles, row_tiles, col_tiles):
        c = self.config
        pulses = layer.weights * c.update_devices_per_weight * c.update_slots * c.coincidence_probability
        lines = layer.groups * (layer.rows * col_tiles + layer.cols * row_tiles)
        return {"update": c.update_slots * c.update_pulse_s}, {
            "array update": pulses * c.update_energy_j,
            "pulse generation": lines * c.update_slots * c.periphery.dac_energy_j,
        }

    def periodic_cost(self, layer, tiles):
        """Transfer LSP → MSP, amortised over ``transfer_every`` examples.

        Per tile, column by column (papers.md §4.2): read the column's weights (one integration,
        one conversion per row), reset the LSP (one pulse per weight), then ``clt_iterations`` of
        program + verify read. Tiles transfer in parallel.
        """
        c = self.config
        p = c.periphery
        cols_per_tile = min(layer.cols, c.array_cols)
        time = cols_per_tile * (c.integration_time_s + c.update_pulse_s
                                + c.clt_iterations * (c.program_pulse_s + c.integration_time_s))
        reads = layer.weights * (1 + c.clt_iterations)  # weight reads, one conversion each
        energy = {
            "transfer program": layer.weights * (c.update_energy_j * c.update_devices_per_weight
                                                 + c.clt_iterations * c.devices_programmed_per_weight * c.program_energy_j),
            "transfer verify": reads * (p.adc_energy_j + p.integrator_power_w * c.integration_time_s)
            + reads * c.read_voltage_v ** 2 * c.device_conductance_s * c.devices_per_weight * c.integration_time_s,
        }
        k = 1.0 / c.transfer_every
        return {"transfer": time * k}, {key: value * k for key, value in energy.items()}
