"""Mixed-precision training (Nandakumar et al. 2020, Front. Neurosci. 14:406; ``algorithms.md`` §6).

The forward and backward products stay analog; the rank-1 update is computed digitally into a
floating-point accumulator ``χ`` of the weight's shape, and only whole device steps are written:
every ``transfer_every`` optimizer steps, each accumulated element sends ``n = trunc(χ / ε)``
pulses to its device and keeps the remainder ``χ − n ε``. So, exactly,
``χ + ε · (pulses written, signed) = Σ of the rank updates`` (the conservation the tests check);
what the devices do with their pulses (cycle-to-cycle noise, a weight-dependent step, bounds) is
the device's, as on the chip.

Choice (the peer differs): the peer writes the integer counts through its stochastic pulse update
with update management, so an element with ``n`` due gets ``Binomial(BL, n/BL)`` pulses, ``n`` on
average (``algorithms.md`` §6). Here each element gets exactly ``n`` pulses, as the paper's
hardware does (a programmed number of SET/RESET pulses), and the accumulator identity holds exactly.
"""

from __future__ import annotations

import dataclasses

import torch

from ..config import register_config
from ..update import UpdateCounters
from .base import Cell, CellConfig, require_pulses, require_bool, require_positive_int, write_pulses

__all__ = ["MixedPrecisionCell", "MixedPrecision"]


@register_config
@dataclasses.dataclass
class MixedPrecisionCell(CellConfig):
    """Mixed precision: a digital accumulator ``χ`` and whole-pulse writes.

    Attributes:
        granularity: ``ε``, the weight change one pulse stands for; 0: the device's nominal step.
        transfer_every: write pulses after every this many optimizer steps (batches).
        rows_per_transfer: rows of ``χ`` written per transfer, cycling (-1: all rows).
        n_x_bins, n_d_bins: quantise ``x`` and ``δ`` to this many levels (dynamic abs-max per
            vector) before the outer product; 0: full precision.
        stochastic_rounding: round the quantised values stochastically (unbiased) rather than to
            the nearest level.
    """

    granularity: float = 0.0
    transfer_every: int = 1
    rows_per_transfer: int = -1
    n_x_bins: int = 0
    n_d_bins: int = 0
    stochastic_rounding: bool = True

    def validate(self) -> None:
        self._check_non_negative("granularity")
        require_positive_int(self, "transfer_every")
        require_positive_int(self, "rows_per_transfer", allow=(-1,))
        for field in ("n_x_bins", "n_d_bins"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value == 1:
                self._fail(field, "must be 0 (no quantisation) or an integer >= 2 (levels).")
        require_bool(self, "stochastic_rounding")

    def build(self, tile) -> "MixedPrecision":
        require_pulses(type(self).__name__, tile.config.device, "tile's")
        return MixedPrecision(self, tile)


class MixedPrecision(Cell):
    """The module of :class:`MixedPrecisionCell`: the tile's ``weight`` is the device array."""

    def __init__(self, config: MixedPrecisionCell, tile):
        super().__init__(config)
        self.register_buffer("accumulator", torch.zeros_like(tile.weight.detach()))
        self.transfer_counters = UpdateCounters()
        self.since = 0
        self.row = 0
        self.digital_macs = 0  # multiply-accumulates of the digital outer products
        self.transfers = 0

    def granularity(self, tile) -> float:
        return self.config.granularity or tile.config.device.nominal_step

    def effective_weights(self, tile) -> torch.Tensor:
        return tile.weight.detach()

    @torch.no_grad()
    def program(self, tile, target: torch.Tensor) -> None:
        tile.weight.copy_(tile.device_model.clip(target, tile.device_params))
        self.accumulator.zero_()

    @torch.no_grad()
    def apply_writes(self, tile, x: torch.Tensor, d: torch.Tensor, lr: float) -> None:
        config = self.config
        xq = _quantise(x, config.n_x_bins, config.stochastic_rounding, tile.generator)
        dq = _quantise(d, config.n_d_bins, config.stochastic_rounding, tile.generator)
        self.accumulator.addmm_(dq.t(), xq, alpha=-lr)  # χ += −lr Σ_b δ_b x_bᵀ (digital)
        self.digital_macs += x.shape[0] * tile.out_features * tile.in_features
        tile.counters.rank1_updates += x.shape[0]
        self.since += 1
        if self.since >= config.transfer_every:
            self.since = 0
            self._transfer(tile)

    def _transfer(self, tile) -> None:
        out = tile.out_features
        n = out if self.config.rows_per_transfer == -1 else min(self.config.rows_per_transfer, out)
        eps = self.granularity(tile)
        self.transfers += 1
        if n == out:  # every row: no gather
            chi = self.accumulator
        else:
            rows = ((torch.arange(n) + self.row) % out).to(tile.weight.device)
            self.row = (self.row + n) % out
            chi = self.accumulator[rows]
        pulses = torch.trunc(chi / eps)
        # Only the elements due a pulse are written (few per step): gather, pulse, scatter back.
        due = pulses.nonzero(as_tuple=True)
        if due[0].numel() == 0:
            return
        counts = pulses[due]
        chi.index_put_(due, chi[due] - counts * eps)  # χ keeps the remainder, exactly χ − n ε
        if n != out:
            self.accumulator[rows] = chi
            due = (rows[due[0]], due[1])
        weight = tile.weight.data
        params = None if tile.device_params is None else tile.device_params[(slice(None), *due)]
        weight.index_put_(due, write_pulses(weight[due], params, tile.device_model, counts, tile.generator, self.transfer_counters))

    def extra_state(self) -> dict:
        return {
            "since": self.since, "row": self.row, "digital_macs": self.digital_macs, "transfers": self.transfers,
            "transfer_counters": self.transfer_counters.to_dict(),
        }

    def load_extra_state(self, state: dict) -> None:
        for name in ("since", "row", "digital_macs", "transfers"):
            setattr(self, name, state[name])
        self.transfer_counters = UpdateCounters(**state["transfer_counters"])

    def counter_report(self) -> dict:
        return {
            "digital_macs": self.digital_macs,
            "transfers": self.transfers,
            "transfer_pulses": self.transfer_counters.pulses,
        }


def _quantise(values: torch.Tensor, bins: int, stochastic: bool, generator: torch.Generator) -> torch.Tensor:
    """Each row quantised to ``bins`` levels over its own ``±max|v|`` (``algorithms.md`` §6)."""
    if bins == 0:
        return values
    half = bins // 2
    width = values.abs().amax(dim=1, keepdim=True) / half
    width = torch.where(width > 0, width, torch.ones_like(width))
    scaled = values / width
    if stochastic:
        scaled = scaled + torch.rand(values.shape, generator=generator, device=values.device, dtype=values.dtype) - 0.5
    return scaled.round().clamp_(-half, half) * width
