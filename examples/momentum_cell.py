"""A learning rule written in Python: a digital momentum accumulator with whole-pulse writes.

The example of ``docs/cells.md`` ("Writing a rule"): a complete unit cell in about forty lines.
The rule keeps a digital buffer ``M`` of the weight's shape; every optimizer step it decays ``M``
by ``beta`` and adds the rank update ``-lr Σ δ xᵀ``; elements whose buffer holds at least one
device step get that many whole pulses (``trunc(M / dw_min)``), and the buffer keeps the rest.
With ``beta = 1`` this is mixed precision (``insitu.cells.MixedPrecisionCell``); with
``beta < 1`` old gradients fade, a heavy-ball-like filter in front of the devices.

Run it: ``python examples/momentum_cell.py`` (trains a small layer on random data and prints the
loss and the pulses sent).
"""

from __future__ import annotations

import dataclasses

import torch

from insitu.cells import Cell, CellConfig
from insitu.cells.base import write_pulses
from insitu.config import register_config


@register_config  # makes the config loadable from YAML/JSON by its type name
@dataclasses.dataclass
class MomentumCell(CellConfig):
    """Digital momentum in front of the devices.

    Attributes:
        beta: what the buffer keeps of itself per optimizer step (1: nothing fades).
    """

    beta: float = 0.9

    def validate(self) -> None:
        self._check_finite("beta")
        if not 0 < self.beta <= 1:
            self._fail("beta", "must be in (0, 1].")

    def build(self, tile) -> "Momentum":
        return Momentum(self, tile)


class Momentum(Cell):
    """The tile's ``weight`` is the device array; ``buffer`` is digital (saved with the tile)."""

    def __init__(self, config: MomentumCell, tile):
        super().__init__(config)
        self.register_buffer("buffer", torch.zeros_like(tile.weight.detach()))
        self.pulses = 0.0

    def effective_weights(self, tile) -> torch.Tensor:
        return tile.weight.detach()

    @torch.no_grad()
    def program(self, tile, target: torch.Tensor) -> None:
        tile.weight.copy_(tile.device_model.clip(target, tile.device_params))
        self.buffer.zero_()

    @torch.no_grad()
    def apply_writes(self, tile, x: torch.Tensor, d: torch.Tensor, lr: float) -> None:
        self.buffer.mul_(self.config.beta).addmm_(d.t(), x, alpha=-lr)
        step = tile.config.device.nominal_step
        counts = torch.trunc(self.buffer / step)
        self.buffer.sub_(counts * step)
        # Exactly |n| pulses per device, with the device's own noise and bounds.
        tile.weight.data.copy_(write_pulses(tile.weight.detach(), tile.device_params, tile.device_model, counts, tile.generator, tile.counters))
        self.pulses += float(counts.abs().sum())
        tile.counters.rank1_updates += x.shape[0]

    def extra_state(self) -> dict:
        return {"pulses": self.pulses}

    def load_extra_state(self, state: dict) -> None:
        self.pulses = state["pulses"]

    def counter_report(self) -> dict:
        return {"momentum_pulses": self.pulses}


def main() -> None:
    from insitu import AnalogSGD
    from insitu.devices import SoftBoundsDevice
    from insitu.nn import AnalogLinear
    from insitu.tile import TileConfig

    torch.manual_seed(0)
    config = TileConfig(device=SoftBoundsDevice(dw_min=0.005, w_max=1.0, w_min=-1.0), cell=MomentumCell(beta=0.9))
    layer = AnalogLinear(8, 4, config=config)
    target = torch.randn(4, 8) * 0.3
    optimizer = AnalogSGD(layer.parameters(), lr=0.05)
    for step in range(301):
        x = torch.randn(16, 8)
        loss = torch.nn.functional.mse_loss(layer(x), x @ target.t())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0:
            print(f"step {step}: loss {loss.item():.4f}, pulses sent {layer.tile.counter_report()['momentum_pulses']:.0f}")


if __name__ == "__main__":
    main()
